"""The listening gateway: what its connections share, how it serves, how it shuts down.

Theory of operation: ``Gateway`` holds what all connections share -- the
``GatewayApi`` that decides every request, the audit log, the per-source
connection count and the raw ICMP socket -- and listens through ``listener``,
which holds each source to ``max_connections_per_source`` and does the TLS
handshake (TLS 1.3, ALPN h2). Every accepted connection becomes a
``connection.GatewayConnection``, which answers the API requests on it and
hands its CONNECTs to its ``flows.Flows``. A sweeper ends the sessions nobody
used for ``session_idle_timeout``.

On shutdown every connection gets GOAWAY (NO_ERROR, the last stream it
opened): clients open no more streams here, the open ones may finish for
``SHUTDOWN_GRACE`` seconds, then what is left is closed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time

from client.wire.runloop import run_loop
from gateway_stub.api import GatewayApi
from gateway_stub.audit import AuditLog
from gateway_stub.config import GatewayConfig
from gateway_stub.connection import GatewayConnection
from gateway_stub.errors import ConfigError
from gateway_stub.icmp_relay import EchoSocket
from gateway_stub.limits import ConnectionCount
from gateway_stub.listener import Listener

log = logging.getLogger(__name__)

#: Seconds the open streams of a gateway shutting down may take to finish.
SHUTDOWN_GRACE = 5.0


class Gateway:
    """The listening gateway."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.api = GatewayApi(config)
        try:
            self.audit = AuditLog(config.server.audit_log)
        except OSError as exc:
            raise ConfigError(f"cannot open {config.server.audit_log}: {exc.strerror or exc}",
                              file=str(config.source), key="server.audit_log") from None
        self.connections = ConnectionCount(config.server.max_connections_per_source)
        """Open client connections per source; its counts are the gateway's statistics."""
        self.connections_open: set[GatewayConnection] = set()
        """The client connections whose HTTP/2 session is up, until they are lost."""
        self._listener: Listener | None = None
        self._echo: EchoSocket | None = None

    def echo_socket(self) -> EchoSocket:
        """The shared raw ICMP socket, opened on first use (needs CAP_NET_RAW)."""
        if self._echo is None:
            self._echo = EchoSocket()
        return self._echo

    def ssl_context(self) -> ssl.SSLContext:
        """TLS 1.3 only, ALPN h2; files that do not load are a ConfigError naming the key."""
        server = self.config.server
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        try:
            ctx.load_cert_chain(server.certificate, server.private_key)
        except OSError as exc:          # ssl.SSLError included
            try:
                ssl.create_default_context(cafile=server.certificate)
            except OSError:
                key, problem = "server.certificate", f"{server.certificate} holds no PEM certificate"
            else:
                key, problem = "server.private_key", (
                    f"{server.private_key} is not a PEM private key for server.certificate "
                    f"({getattr(exc, 'reason', None) or exc})")
            raise ConfigError(problem, file=str(self.config.source), key=key) from None
        ctx.set_alpn_protocols(["h2"])
        return ctx

    async def start(self) -> list[tuple[str, int]]:
        """Start listening; returns the bound addresses."""
        host, port = self.config.server.listen_host, self.config.server.listen_port
        self._listener = Listener(lambda slot: GatewayConnection(self, slot),
                                  self.ssl_context(), self.connections)
        return await self._listener.start(host or None, port)

    def close(self) -> None:
        """Stop accepting connections (established sessions end with their connections)."""
        if self._listener is not None:
            self._listener.close()
        if self._echo is not None:
            self._echo.close()
            self._echo = None

    def go_away(self, reason: str) -> list:
        """Send every open connection GOAWAY (NO_ERROR): its client opens its next streams
        on a new connection while the ones it has finish here. Returns those connections."""
        connections = list(self.connections_open)
        for connection in connections:
            connection.go_away(reason)
        return connections

    async def shut_down(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting; send every connection GOAWAY (NO_ERROR, the last stream it opened)
        so its client opens no more streams here and knows which ones were taken; each
        connection closes once its streams ended, and any left after ``grace`` seconds are
        closed then."""
        self.close()
        connections = self.go_away("gateway shutting down")
        if connections:
            await asyncio.wait([c.closed for c in connections], timeout=grace)
        for connection in connections:
            connection.close("gateway shut down")

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully."""
        for addr in await self.start():
            log.info("gateway listening on %s:%d", *addr)
        sweeper = asyncio.get_running_loop().create_task(self._sweep())
        try:
            await stop.wait()
            await self.shut_down()
        finally:
            sweeper.cancel()
            self.close()

    async def _sweep(self) -> None:
        """End sessions nobody used for session_idle_timeout (frees tokens and leases)."""
        max_idle = self.config.server.session_idle_timeout
        while True:
            await asyncio.sleep(min(max_idle / 4, 30.0))
            for session in self.api.expire(time.monotonic(), max_idle):
                log.info("session %s of %s expired", session.id, session.user.name)


def serve(config: GatewayConfig) -> int:
    """Run the gateway until SIGINT/SIGTERM; returns the exit status."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Gateway(config).run(stop)

    run_loop(main())
    return 0

