"""Whole exchanges over a ``Link``: API requests, answers to requests, and PINGs.

Theory of operation: unlike a tunnel stream, whose owner registers a
``StreamHandler`` and sees every event, these are one question and one
answer. ``request`` opens a stream with a ``_Collector`` as its handler and
waits for the whole (bounded) response, a ``Response``; ``respond`` answers a
request the peer opened, with or without a body; ``ping`` waits for the PING
answer with the same 8 random bytes and returns the round-trip time. Each
only queues frames and marks the link, which writes them at its next flush.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import typing

from client.wire import mux as m
from client.wire.closing import LinkClosed

if typing.TYPE_CHECKING:
    from client.wire.link import Link, StreamHandler


@dataclasses.dataclass(frozen=True)
class Response:
    """A complete (small) HTTP response, for the API requests."""

    status: int
    """The HTTP status code."""
    headers: dict[str, str]
    """Response headers."""
    body: bytes
    """The whole body."""


class _Collector:
    """Collects one whole response with a bounded body."""

    LIMIT = 1024 * 1024

    def __init__(self, link: "Link", stream_id: int) -> None:
        self._link, self._stream_id = link, stream_id
        self.future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._status, self._headers, self._body = 0, {}, bytearray()

    def on_response(self, status: int, headers: dict[str, str], ended: bool) -> None:
        self._status, self._headers = status, headers     # on_end follows if ended

    def on_data(self, data: bytes, flow_length: int) -> None:
        self._body += data
        self._link.consumed(self._stream_id, flow_length)
        if len(self._body) > self.LIMIT:
            self._link.reset(self._stream_id)
            self._fail(LinkClosed("response body too large"))

    def on_end(self) -> None:
        if not self.future.done():
            self.future.set_result(Response(self._status, self._headers, bytes(self._body)))

    def on_reset(self, error_code: int) -> None:
        self._fail(LinkClosed(f"request reset by peer (HTTP/2 error {error_code})"))

    def on_writable(self) -> None:
        pass

    def _fail(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class LinkExchanges:
    """Requests, answers and PINGs, mixed into ``link.Link``, which sets the state below
    in its ``__init__`` and provides ``_mark`` and the checks of ``closing.LinkClosing``."""

    mux: m.Mux
    closed: asyncio.Future[str]
    _handlers: dict[int, StreamHandler]
    _pings: dict[bytes, asyncio.Future[None]]
    _loop: asyncio.AbstractEventLoop

    _mark: typing.Callable[[], None]
    _check_open: typing.Callable[[], None]
    _check_can_open: typing.Callable[[], None]

    async def request(self, headers: list[tuple[str, str]], body: bytes = b"",
                      timeout: float = 15.0) -> Response:
        """Make one API request and wait for the whole response (raises as ``open``)."""
        self._check_can_open()
        stream_id = self.mux.request(headers, end=not body)
        collector = _Collector(self, stream_id)
        self._handlers[stream_id] = collector
        if body:
            self.mux.send(stream_id, body)
            self.mux.end(stream_id)
        self._mark()
        try:
            return await asyncio.wait_for(collector.future, timeout)
        finally:
            self._handlers.pop(stream_id, None)

    def respond(self, stream_id: int, status: int, headers: list[tuple[str, str]] = (),
                *, body: bytes = b"", end: bool | None = None) -> bool:
        """Answer a request; with a body, the stream is ended after it.

        Without a body, ``end`` says whether the answer ends the stream; by
        default only an error does (a 2xx opens a CONNECT tunnel). Returns
        False when the stream or the session is already gone.
        """
        if self.closed.done():
            return False
        try:
            if body:
                self.mux.respond(stream_id, status, headers)
                self.mux.send(stream_id, body)
                self.mux.end(stream_id)
            else:
                self.mux.respond(stream_id, status, headers, end=status >= 300 if end is None else end)
        except m.StreamGone:
            return False
        self._mark()
        return True

    async def ping(self, timeout: float) -> float:
        """Send a PING and return the round-trip time; raises TimeoutError."""
        self._check_open()
        payload = os.urandom(8)
        fut = self._loop.create_future()
        self._pings[payload] = fut
        start = self._loop.time()
        self.mux.ping(payload)
        self._mark()
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._pings.pop(payload, None)
        return self._loop.time() - start
