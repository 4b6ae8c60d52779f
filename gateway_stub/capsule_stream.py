"""What the gateway's datagram relays (connect-udp, connect-ip) have in common.

A ``CapsuleStream`` is the stream handler: it credits received bytes back at
once (datagrams are handed on or dropped, never queued), parses capsules,
skips unknown types, drops DATAGRAMs with a context other than 0, and
passes each payload to ``on_datagram``. A malformed capsule resets only this
stream. Subclasses free their own resources in ``close_io``.
"""

from __future__ import annotations

import time
import typing

from client.wire.capsule import DATAGRAM, CapsuleError, CapsuleParser, parse_datagram
from client.wire.link import Link


class CapsuleStream:
    """Base of the gateway's datagram relays."""

    def __init__(self, link: Link, stream_id: int,
                 on_done: typing.Callable[["CapsuleStream"], None]) -> None:
        self.link = link
        self.stream_id = stream_id
        self.bytes_up = 0
        self.bytes_down = 0
        self.dropped = 0
        self.error: str | None = None
        self.started = self.last_active = time.monotonic()
        self._on_done = on_done
        self._parser = CapsuleParser()
        self._done = False

    def start(self) -> None:
        """Receive the stream's events (call once the relay is ready)."""
        self.link.register(self.stream_id, self)

    def on_datagram(self, payload: bytes) -> None:
        """One datagram (context 0) from the client."""
        raise NotImplementedError

    def close_io(self) -> None:
        """Release what the relay holds (sockets, identifiers)."""

    def pause_reading(self) -> None:
        """Stop reading the target while the client does not read (see backpressure)."""

    def resume_reading(self) -> None:
        """Read the target again."""

    # -- StreamHandler ---------------------------------------------------------------
    def on_response(self, status: int, headers: dict[str, str], ended: bool) -> None:
        pass

    def on_data(self, data: bytes, flow_length: int) -> None:
        self.link.consumed(self.stream_id, flow_length)
        try:
            capsules = self._parser.feed(data)
        except CapsuleError as exc:
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
            if context != 0:
                self.dropped += 1
                continue
            self.on_datagram(payload)

    def on_end(self) -> None:
        # The client closed the tunnel: close our half too, or the stream would stay
        # half-closed and hold one of the connection's stream slots until it ends.
        if not self._done and self.link.is_open:
            self.link.end(self.stream_id)
        self._finish()

    def on_reset(self, error_code: int) -> None:
        self._finish()

    def on_writable(self) -> None:
        pass

    # -- life --------------------------------------------------------------------------
    def abort(self) -> None:
        """Reset the stream and release everything."""
        if not self._done and self.link.is_open:
            self.link.reset(self.stream_id)
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self.link.unregister(self.stream_id)
        self.close_io()
        self._on_done(self)
