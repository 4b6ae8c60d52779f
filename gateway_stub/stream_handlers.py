"""Stream handlers of the gateway's own requests (``client.wire.link.StreamHandler``).

``Body`` collects a login request's small body; ``Connecting`` stands in for
a TCP flow's pipe while the gateway connects to the target.
"""

from __future__ import annotations

import asyncio
import time

from client.wire.link import Link

MAX_BODY = 64 * 1024


class Body:
    """Collects a small request body, then calls back ``done(body)``; ``left()`` is called
    once when it stops holding a body (complete, too large, or reset)."""

    def __init__(self, link: Link, stream_id: int, done, left=lambda: None) -> None:
        self._link, self._stream_id, self._done = link, stream_id, done
        self._left = left
        self._data = bytearray()

    def _leave(self) -> None:
        left, self._left = self._left, lambda: None
        left()

    def on_response(self, status, headers, ended) -> None:
        pass

    def on_data(self, data: bytes, flow_length: int) -> None:
        self._data += data
        self._link.consumed(self._stream_id, flow_length)
        if len(self._data) > MAX_BODY:
            self._link.unregister(self._stream_id)
            self._leave()
            self._link.respond(self._stream_id, 413, body=b'{"error": "request body too large"}')

    def on_end(self) -> None:
        self._link.unregister(self._stream_id)
        self._leave()
        self._done(bytes(self._data))

    def on_reset(self, error_code: int) -> None:
        self._leave()

    def on_writable(self) -> None:
        pass


class Connecting:
    """A TCP flow's stream while the gateway connects to its target: a reset
    cancels the connect, so streams opened and reset at once cannot pile up
    connects beyond the stream limit. It also ends the flow exactly once
    (``end``), however the connect and the pipe behind it finish."""

    def __init__(self, link, stream_id: int, session, target: str) -> None:
        self._link, self._stream_id = link, stream_id
        self._session, self._target = session, target
        self.started = time.monotonic()
        self.task: asyncio.Task | None = None
        self.ended = False           # the client half-closed before the answer
        self._accounted = False

    def end(self, verdict: str, reason: str, up: int, down: int) -> None:
        """Audit the flow and give its slot back, once."""
        if not self._accounted:
            self._accounted = True
            self._link.end_flow(self._session, "tcp", self._target, verdict, reason, up, down,
                                 time.monotonic() - self.started)

    def cancelled(self, task: asyncio.Task) -> None:
        """Done callback of the connect task: a cancelled connect (even one that
        never started) still ends its flow."""
        if task.cancelled():
            self.end("fail", "stream reset while connecting", 0, 0)

    def on_response(self, status, headers, ended) -> None:
        pass

    def on_data(self, data: bytes, flow_length: int) -> None:
        # Payload before the 200 is refused: the stream is reset.
        self._link.consumed(self._stream_id, flow_length)
        self._link.reset(self._stream_id)
        self.on_reset(-1)

    def on_end(self) -> None:
        self.ended = True

    def on_reset(self, error_code: int) -> None:
        if self.task is not None:
            self.task.cancel()

    def on_writable(self) -> None:
        pass
