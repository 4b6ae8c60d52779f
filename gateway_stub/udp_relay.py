"""The gateway's side of a connect-udp stream (RFC 9298).

Theory of operation: the relay is registered for its stream as soon as the
request arrives, so the client's first datagram -- sent right after the
request headers, without waiting for the answer -- is never lost. Each
DATAGRAM capsule (context 0) is sent from the gateway's own connected UDP
socket (reverse NAT); every datagram the target sends back becomes a DATAGRAM
capsule on the stream. When the target answers with ICMP port unreachable,
the socket reports ECONNREFUSED and the relay tells the client with an
``UNREACHABLE`` capsule, a type of our own that other peers ignore (RFC 9297
says unknown capsule types are skipped). UDP stays UDP: when the stream is
backed up, datagrams are dropped, not queued without bound.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import typing

from client.wire.capsule import (DATAGRAM, UNREACHABLE, CapsuleError, CapsuleParser,
                                 encode_capsule, encode_datagram, parse_datagram)
from client.wire.link import Link

log = logging.getLogger(__name__)

#: Queued capsule bytes on the stream past which replies are dropped.
BACKLOG = 1024 * 1024
MAX_DATAGRAM = 65527


class UdpRelay:
    """One connect-udp stream and its UDP socket."""

    def __init__(self, link: Link, stream_id: int, host: str, port: int,
                 on_done: typing.Callable[["UdpRelay"], None]) -> None:
        self.link = link
        self.stream_id = stream_id
        self.target = (host, port)
        self.bytes_up = 0
        self.bytes_down = 0
        self.dropped = 0
        self.error: str | None = None
        self.started = self.last_active = time.monotonic()
        self._on_done = on_done
        self._parser = CapsuleParser()
        self._loop = asyncio.get_running_loop()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._done = False
        try:
            self._sock.connect(self.target)
        except OSError:
            self._sock.close()
            raise
        self._loop.add_reader(self._sock.fileno(), self._readable)
        link.register(stream_id, self)

    # -- from the client -----------------------------------------------------------
    def on_response(self, status: int, headers: dict[str, str], ended: bool) -> None:
        pass

    def on_data(self, data: bytes, flow_length: int) -> None:
        self.link.consumed(self.stream_id, flow_length)
        try:
            capsules = self._parser.feed(data)
        except CapsuleError as exc:
            log.info("connect-udp stream %d: %s", self.stream_id, exc)
            self.error = f"malformed capsule: {exc}"
            self.abort()
            return
        for capsule in capsules:
            if capsule.type != DATAGRAM:
                continue                      # unknown capsule types are skipped
            try:
                context, payload = parse_datagram(capsule.value)
            except CapsuleError:
                self.dropped += 1
                continue
            if context != 0 or len(payload) > MAX_DATAGRAM:
                self.dropped += 1
                continue
            self._send(payload)

    def _send(self, payload: bytes) -> None:
        try:
            self._sock.send(payload)
        except ConnectionRefusedError:
            self._unreachable()
        except OSError:
            self.dropped += 1
            return
        self.bytes_up += len(payload)
        self.last_active = time.monotonic()

    def on_end(self) -> None:
        self._finish()

    def on_reset(self, error_code: int) -> None:
        self._finish()

    def on_writable(self) -> None:
        pass

    # -- from the target ----------------------------------------------------------------
    def _readable(self) -> None:
        for _ in range(64):
            try:
                data = self._sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                self._unreachable()
                continue
            except OSError as exc:
                self.error = str(exc)
                self.abort()
                return
            if self.link.buffered(self.stream_id) > BACKLOG:
                self.dropped += 1
                continue
            self.bytes_down += len(data)
            self.last_active = time.monotonic()
            self.link.send(self.stream_id, encode_datagram(data))

    def _unreachable(self) -> None:
        """The target said ICMP port unreachable: pass it on (code 3)."""
        self.link.send(self.stream_id, encode_capsule(UNREACHABLE, bytes([3])))

    # -- life -----------------------------------------------------------------------------
    def abort(self) -> None:
        """Reset the stream and close the socket."""
        if not self._done and self.link.is_open:
            self.link.reset(self.stream_id)
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self.link.unregister(self.stream_id)
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._on_done(self)
