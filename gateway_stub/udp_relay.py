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

from client.wire.capsule import UNREACHABLE, encode_capsule, encode_datagram
from client.wire.link import Link
from gateway_stub.capsule_stream import CapsuleStream

log = logging.getLogger(__name__)

#: Queued capsule bytes on the stream past which replies are dropped.
BACKLOG = 1024 * 1024
MAX_DATAGRAM = 65527


class UdpRelay(CapsuleStream):
    """One connect-udp stream and its UDP socket."""

    def __init__(self, link: Link, stream_id: int, host: str, port: int,
                 on_done: typing.Callable[["UdpRelay"], None]) -> None:
        super().__init__(link, stream_id, on_done)
        self.target = (host, port)
        self._loop = asyncio.get_running_loop()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        try:
            self._sock.connect(self.target)
        except OSError:
            self._sock.close()
            raise
        self._loop.add_reader(self._sock.fileno(), self._readable)
        self.start()

    # -- from the client -----------------------------------------------------------
    def on_datagram(self, payload: bytes) -> None:
        if len(payload) > MAX_DATAGRAM:
            self.dropped += 1
            return
        try:
            self._sock.send(payload)
        except ConnectionRefusedError:   # an earlier datagram's ICMP error; this one was not sent
            self._unreachable()
            self.dropped += 1
            return
        except OSError:
            self.dropped += 1
            return
        self.bytes_up += len(payload)
        self.last_active = time.monotonic()

    # -- from the target ----------------------------------------------------------------
    def _readable(self) -> None:
        # Everything read in one wakeup leaves as one DATA frame: the capsule
        # protocol is a byte stream, so capsules can share a frame.
        out: list[bytes] = []
        try:
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
                    out.clear()
                    return
                if self.link.buffered(self.stream_id) > BACKLOG:
                    self.dropped += 1
                    continue
                self.bytes_down += len(data)
                out.append(encode_datagram(data))
        finally:
            if out:
                self.last_active = time.monotonic()
                self.link.send(self.stream_id, b"".join(out))

    def _unreachable(self) -> None:
        """The target said ICMP port unreachable: pass it on (code 3)."""
        self.link.send(self.stream_id, encode_capsule(UNREACHABLE, bytes([3])))

    def pause_reading(self) -> None:
        if not self._done:
            self._loop.remove_reader(self._sock.fileno())

    def resume_reading(self) -> None:
        if not self._done:
            self._loop.add_reader(self._sock.fileno(), self._readable)

    def close_io(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
