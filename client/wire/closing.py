"""How a ``Link`` goes away and closes, and the errors that say it did.

Theory of operation: a link is open, then possibly going away, then closed.
A graceful GOAWAY, received (``Link.going_away`` resolves, and ``_draining``
holds its reason) or sent (``go_away``), stops new streams -- ``open`` and
``request`` raise ``LinkGoingAway`` -- while the open ones run to their end.
Each flush looks whether any stream or handler is left; once none is, the
link closes itself with the reason it went away for. ``close`` (ours), the
end of the TLS connection and ``ConnectionEnded`` (the peer's error) all end
in ``_finish``, which runs once: it resolves ``closed``, fails the pings
still waiting, tells every handler left ``on_reset(-1)`` and calls
``on_closed``.
"""

from __future__ import annotations

import asyncio
import logging
import typing

if typing.TYPE_CHECKING:
    from client.wire import mux as m
    from client.wire.link import StreamHandler

log = logging.getLogger(__name__)


class LinkClosed(ConnectionError):
    """The TLS connection or the HTTP/2 session ended."""


class LinkGoingAway(LinkClosed):
    """GOAWAY was sent or received: the link takes no new stream (its open ones go on)."""


class LinkClosing:
    """Going away and closing, mixed into ``link.Link``, which sets the state below in
    its ``__init__`` and provides ``_mark`` and ``_write_out``."""

    mux: m.Mux
    closed: asyncio.Future[str]
    _handlers: dict[int, StreamHandler]
    _pings: dict[bytes, asyncio.Future[None]]
    _transport: asyncio.Transport | None
    _on_closed: typing.Callable[[str], None] | None
    _draining: str | None          # going away: close with this once all ended

    _mark: typing.Callable[[], None]
    _write_out: typing.Callable[[], None]

    def go_away(self, reason: str = "going away") -> None:
        """Send GOAWAY (NO_ERROR, the last stream the peer opened): the peer opens no
        more streams, ours go on, and the link closes with ``reason`` once they ended."""
        if self.closed.done():
            return
        self.mux.close()
        if self._draining is None:
            self._draining = reason
        self._mark()

    def close(self, reason: str = "closed") -> None:
        """Send GOAWAY and close the TLS connection."""
        self._draining = None
        if self._transport is not None and not self._transport.is_closing():
            self.mux.close()
            self._write_out()
            self._transport.close()
        self._finish(reason)

    @property
    def remote_address(self) -> tuple | None:
        """The remote address of the TLS connection, once connected."""
        return self._transport.get_extra_info("peername") if self._transport else None

    @property
    def is_open(self) -> bool:
        """False once the session ended for any reason (its streams may still be
        going while it goes away)."""
        return not self.closed.done()

    @property
    def can_open(self) -> bool:
        """True while ``open`` takes new streams: open, and not going away."""
        return self._draining is None and not self.closed.done()

    def _check_open(self) -> None:
        if self.closed.done():
            raise LinkClosed(self.closed.result())

    def _check_can_open(self) -> None:
        self._check_open()
        if self._draining is not None:
            raise LinkGoingAway(f"the connection is going away ({self._draining}): "
                                "no new streams on it")

    def _finish(self, reason: str) -> None:
        if self.closed.done():
            return
        log.debug("link closed: %s", reason)
        self.closed.set_result(reason)
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(LinkClosed(reason))
        handlers, self._handlers = self._handlers, {}
        for handler in handlers.values():
            try:
                handler.on_reset(-1)
            except Exception:  # one broken handler must not keep the others open
                log.exception("stream handler failed while closing")
        if self._on_closed is not None:
            self._on_closed(reason)
