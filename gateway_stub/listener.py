"""The gateway's listening sockets: accept, hold each source to its cap, then TLS.

Theory of operation: the listener binds its sockets itself and accepts in the
event loop's reader callback, at most ``ACCEPT_BATCH`` connections a turn, so a
flood of new connections cannot starve the established ones. Every accepted
socket is counted against its source first (``limits.ConnectionCount``; an
IPv6 source counts as its /64). A source already at
``max_connections_per_source`` has the new socket closed at once with a reset,
before the TLS handshake costs any CPU and without a TIME_WAIT left here; its
open connections go on. Refusals are logged at most every ``report_every``
seconds, as one line with their number, so a flood does not flood the log.

An admitted socket gets its TLS handshake from ``connect_accepted_socket``, and
its place in the count is given back exactly when the connection is gone: when
the handshake fails (error, timeout, reset, the gateway shutting down), the
handshake's exception gives it back; once it succeeded, the connection's
protocol does, in ``connection_lost``. Giving back twice is harmless, so every
path may do it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable

from gateway_stub.limits import ConnectionCount, ConnectionSlot

log = logging.getLogger(__name__)

#: Connections accepted in one loop turn at most.
ACCEPT_BATCH = 64
#: Seconds to wait before accepting again when descriptors or memory ran out.
ACCEPT_RETRY = 1.0
#: accept() errors that belong to one pending connection, not to the listener (accept(2)).
_ONE_CONNECTION_ERRORS = frozenset({
    errno.ECONNABORTED, errno.EPROTO, errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTDOWN,
    errno.EHOSTUNREACH, errno.ENOPROTOOPT, errno.ENONET, errno.EOPNOTSUPP, errno.EPERM,
})
#: SO_LINGER on, zero seconds: close() sends a reset and keeps no state.
_RESET = struct.pack("ii", 1, 0)


class Listener:
    """Listening sockets whose accepted connections are capped per source, then wrapped in TLS."""

    def __init__(self, protocol_factory: Callable[[ConnectionSlot], asyncio.Protocol],
                 ssl_context: ssl.SSLContext, connections: ConnectionCount, *,
                 handshake_timeout: float = 10.0, backlog: int = 1024) -> None:
        self._factory = protocol_factory
        self._ssl = ssl_context
        self.connections = connections
        """Open connections per source; its counts are the listener's statistics."""
        self._handshake_timeout = handshake_timeout
        self._backlog = backlog
        self._sockets: list[socket.socket] = []
        self._handshakes: set[asyncio.Task] = set()
        self._report_timer: asyncio.TimerHandle | None = None
        self._latest_refused = "?"
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, host: str | None, port: int) -> list[tuple[str, int]]:
        """Bind and listen on every address of ``host`` (None: all); returns them."""
        self._loop = asyncio.get_running_loop()
        infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                             flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:     # as asyncio does: [::] means IPv6 only
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot listen on {address[0]}:{address[1]}: "
                                             f"{exc.strerror}") from None
                sock.listen(self._backlog)
                sock.setblocking(False)
        except BaseException:
            self.close()
            raise
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)
        return [sock.getsockname()[:2] for sock in self._sockets]

    def close(self) -> None:
        """Stop accepting; connections already accepted go on."""
        for sock in self._sockets:
            if sock.fileno() >= 0 and self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_late()

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ONE_CONNECTION_ERRORS:
                    continue
                # Out of descriptors or memory, say: wait for some to be freed, not spin.
                log.warning("cannot accept connections (%s); trying again in %g s",
                            exc.strerror or exc, ACCEPT_RETRY)
                self._loop.remove_reader(listener.fileno())
                self._loop.call_later(ACCEPT_RETRY, self._resume, listener)
                return
            self._admit(sock, address[0])

    def _resume(self, listener: socket.socket) -> None:
        if listener.fileno() >= 0:        # not closed meanwhile
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _admit(self, sock: socket.socket, peer: str) -> None:
        slot = self.connections.admit(peer)
        if slot is None:
            self._refuse(sock, peer)
            return
        sock.setblocking(False)
        task = self._loop.create_task(self._handshake(sock, peer, slot))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket, peer: str, slot: ConnectionSlot) -> None:
        try:
            await self._loop.connect_accepted_socket(
                lambda: self._factory(slot), sock, ssl=self._ssl,
                ssl_handshake_timeout=self._handshake_timeout)
        except BaseException as exc:
            slot.release()         # the connection is gone, or never reached its protocol
            if not isinstance(exc, Exception):
                raise
            log.debug("TLS handshake with %s failed: %s", peer, exc)

    def _refuse(self, sock: socket.socket, peer: str) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        except OSError:            # already reset by the peer: a plain close does
            pass
        sock.close()
        self._latest_refused = peer
        count = self.connections.note_refused(time.monotonic())
        if count:
            self._report(count)
        elif self._report_timer is None:
            self._report_timer = self._loop.call_later(self.connections.report_every,
                                                       self._report_late)

    def _report_late(self) -> None:
        self._report_timer = None
        count = self.connections.take_unreported(time.monotonic())
        if count:
            self._report(count)

    def _report(self, count: int) -> None:
        log.warning("refused %d connection%s over max_connections_per_source = %d "
                    "(latest from %s)", count, "" if count == 1 else "s",
                    self.connections.max_per_source, self._latest_refused)
