"""The gateway's network side: TLS 1.3 + HTTP/2, API requests and TCP flows.

Theory of operation: every accepted TLS connection (ALPN must be h2) gets a
``Link``. Requests on it go to ``GatewayApi`` for the decision; for an allowed
CONNECT the gateway opens its own connection to the intranet target and only
then answers 200, piping bytes between that connection and the stream
(reverse NAT: the intranet host sees the gateway). A refused, unreachable or
denied target gets an error status with an RFC 9209 ``proxy-status``. Every
flow is written to the audit log when it ends. A client that stops reading
is held back (``backpressure``). Connections come from ``listener``, which
holds each source to ``max_connections_per_source``.

Until a connection has logged in (a login on it succeeded, or a request on it
carried a valid token) its header blocks are held to ``PRE_LOGIN_HEADER_BYTES``;
then ``max_header_bytes`` applies. On shutdown every connection gets GOAWAY
(NO_ERROR, the last stream it opened): clients open no more streams here, the
open ones may finish for ``SHUTDOWN_GRACE`` seconds, then what is left is closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import ssl
import time

from client.packet import address_text
from client.wire import mux as m
from client.wire.link import Link
from client.wire.pipe import StreamPipe
from client.wire.runloop import run_loop
from gateway_stub.api import ApiResponse, ChallengeAnswer, ConnectDecision, GatewayApi, Session
from gateway_stub.audit import AuditLog, AuditRecord
from gateway_stub.backpressure import OutputHold
from gateway_stub.config import GatewayConfig
from gateway_stub.errors import ConfigError
from gateway_stub.icmp_relay import EchoRelay, EchoSocket
from gateway_stub.limits import ConnectionCount, ConnectionSlot, header_limit
from gateway_stub.listener import Listener
from gateway_stub.stream_handlers import Body, Connecting
from gateway_stub.targets import connect_failure, proxy_status_header
from gateway_stub.udp_relay import UdpRelay

log = logging.getLogger(__name__)

#: Login requests whose body may be arriving at once on one connection (a client sends one).
MAX_LOGIN_BODIES = 8
#: Seconds the open streams of a gateway shutting down may take to finish.
SHUTDOWN_GRACE = 5.0

class GatewayConnection(Link):
    """One client's TLS connection, holding ``slot`` in its source's count until it is gone."""

    def __init__(self, gateway: "Gateway", slot: ConnectionSlot) -> None:
        self.gateway = gateway
        self._slot = slot
        limits = gateway.config.server
        super().__init__(m.Mux(client_side=False,
                               max_concurrent_streams=limits.max_streams_per_session,
                               max_header_list_size=header_limit(limits.max_header_bytes,
                                                                 logged_in=False)),
                         on_request=self._on_request)
        self.peer = "?"
        self.last_rx = time.monotonic()
        self._watchdog: asyncio.Task | None = None
        self._flows: dict = {}     # StreamPipe, UdpRelay, EchoRelay -> its Session
        self.sessions: set[Session] = set()
        self._hold: OutputHold | None = None
        self._bodies = 0           # login requests whose body is still arriving

    def connection_made(self, transport) -> None:
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "?"
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            log.info("closing connection from %s: the client did not negotiate h2", self.peer)
            transport.close()
            self._finish("client did not negotiate h2")
            return
        self._hold = OutputHold(transport)
        super().connection_made(transport)
        self.gateway.connections_open.add(self)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    def pause_writing(self) -> None:
        self._hold.pause(self._flows)

    def resume_writing(self) -> None:
        self._hold.resume()

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        super().data_received(data)

    def connection_lost(self, exc) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._slot.release()
        self.gateway.connections_open.discard(self)
        super().connection_lost(exc)

    async def _watch(self) -> None:
        """Close the connection when it goes quiet; end flows idle too long, and those of
        sessions that ended (logged out, expired, evicted); keep the sessions used on a
        live connection from expiring."""
        limits = self.gateway.config.server
        idle = limits.session_idle_timeout
        while self.is_open:
            await asyncio.sleep(min(idle / 4, limits.idle_timeout / 4, 15.0))
            now = time.monotonic()
            if now - self.last_rx > idle:
                log.info("closing idle connection from %s", self.peer)
                self.close("idle")
                return
            for session in self.sessions:
                session.last_used = now
            for flow, session in list(self._flows.items()):
                if session.ended or now - flow.last_active > limits.idle_timeout:
                    flow.error = "session ended" if session.ended else "idle timeout"
                    flow.abort()

    def _body_left(self) -> None:
        self._bodies -= 1

    def _logged_in(self, session: Session) -> None:
        """A request on this connection proved ``session``: keep it fresh while the
        connection lives, and accept header blocks up to ``max_header_bytes`` from now on."""
        if session not in self.sessions:
            self.sessions.add(session)
            self.mux.limit_header_lists(header_limit(self.gateway.config.server.max_header_bytes,
                                                     logged_in=True))

    # -- requests -------------------------------------------------------------
    def _on_request(self, ev: m.RequestReceived) -> None:
        h = ev.headers
        method, path = h.get(":method", ""), h.get(":path", "")
        api = self.gateway.api
        now = time.monotonic()
        if method == "CONNECT":
            protocol = h.get(":protocol")
            if protocol is None:
                self._connect_tcp(ev.stream_id, api.authorize_connect(h, "tcp", now), ended=ev.ended)
            elif protocol == "connect-udp":
                self._connect_datagrams(ev.stream_id, "udp", api.authorize_connect(h, "udp", now))
            elif protocol == "connect-ip":
                self._connect_datagrams(ev.stream_id, "icmp", api.authorize_connect(h, "icmp", now))
            else:
                self.respond(ev.stream_id, 501, [proxy_status_header("http_request_error",
                                                                     "unsupported protocol")])
        elif method == "POST" and path == "/api/v1/session":
            if ev.ended:
                self._answer(ev.stream_id, ApiResponse(400, {"error": "login needs a body"}))
            elif self._bodies >= MAX_LOGIN_BODIES:      # each holds up to MAX_BODY
                self._answer(ev.stream_id, ApiResponse(
                    429, {"error": "too many logins in progress on this connection"}))
            else:
                self._bodies += 1
                self.register(ev.stream_id, Body(self, ev.stream_id,
                                                 lambda body: self._login(ev.stream_id, body),
                                                 left=self._body_left))
        elif method == "GET" and path == "/api/v1/config":
            session = api.session_for(h, now)
            if session is not None:
                self._logged_in(session)
            if session is None:
                self._answer(ev.stream_id, ApiResponse(401, {"error": "not logged in"}))
            else:
                self._answer(ev.stream_id, api.client_config(session))
        elif method == "DELETE" and path == "/api/v1/session":
            session = api.logout(api.token_of(h))
            if session is not None:
                log.info("session %s of %s logged out", session.id, session.user.name)
            self.respond(ev.stream_id, 204, end_stream_headers(), end=True)
        else:
            self._answer(ev.stream_id, ApiResponse(404, {"error": "no such resource"}))

    def _answer(self, stream_id: int, response: ApiResponse) -> None:
        headers = [("content-type", "application/json"), *response.headers]
        self.respond(stream_id, response.status, headers, body=response.encoded())

    def _login(self, stream_id: int, body: bytes) -> None:
        asyncio.get_running_loop().create_task(self._login_task(stream_id, body))

    async def _login_task(self, stream_id: int, body: bytes) -> None:
        api = self.gateway.api
        parsed = api.parse_login(body)
        if isinstance(parsed, ApiResponse):
            self._answer(stream_id, parsed)
            return
        if isinstance(parsed, ChallengeAnswer):
            response, session = api.answer_challenge(parsed, self.peer, time.monotonic(), time.time())
            if session is None:
                log.warning("one-time code from %s refused (%d)", self.peer, response.status)
            else:
                self._logged_in(session)
                log.info("session %s: %s logged in with a one-time code from %s (address %s)",
                         session.id, session.user.name, self.peer, session.address)
            self._answer(stream_id, response)
            return
        username, password = parsed
        refusal = api.throttled(username, self.peer, time.monotonic())
        if refusal is not None:
            log.warning("login for %r from %s refused: throttled", username[:64], self.peer)
            self._answer(stream_id, refusal)
            return
        try:
            ok = await asyncio.to_thread(api.verify_login, username, password)
        except Exception as exc:   # a failure, never left in flight; no traceback (secrets)
            log.error("checking the password of %r failed: %s", username[:64], type(exc).__name__)
            ok = False
        response, session = api.finish_login(username, ok, self.peer, time.monotonic())
        if session is None:
            log.warning("login for %r from %s failed (%d)", username[:64], self.peer, response.status)
        else:
            self._logged_in(session)
            log.info("session %s: %s logged in from %s (address %s)", session.id,
                     username, self.peer, session.address)
        self._answer(stream_id, response)

    # -- TCP flows ------------------------------------------------------------
    def _connect_tcp(self, stream_id: int, decision: ConnectDecision, *, ended: bool = False) -> None:
        """``ended``: the CONNECT itself ended the client's side (END_STREAM on its
        HEADERS): the target gets its FIN as soon as it is connected."""
        target = f"{address_text(decision.host)}:{decision.port}" if decision.host else "-"
        if not self._allowed(stream_id, "tcp", target, decision):
            return
        connecting = Connecting(self, stream_id, decision.session, target)
        connecting.ended = ended
        self.register(stream_id, connecting)
        connecting.task = asyncio.get_running_loop().create_task(
            self._open_tcp(stream_id, decision, target, connecting))
        connecting.task.add_done_callback(connecting.cancelled)

    def _allowed(self, stream_id: int, protocol: str, target: str, decision: ConnectDecision) -> bool:
        """Answer and audit a denied request; True when it may go ahead."""
        if decision.allowed:
            if decision.session is not None:
                self._logged_in(decision.session)
            return True
        self._audit(decision.session, protocol, target, "deny", decision.reason, 0, 0, 0.0)
        self.respond(stream_id, decision.status,
                     [proxy_status_header(decision.proxy_status, decision.reason[:200])])
        return False

    def _flow_done(self, flow, session: Session | None, protocol: str, target: str) -> None:
        self._flows.pop(flow, None)
        self.end_flow(session, protocol, target, "allow", flow.error or "closed",
                      flow.bytes_up, flow.bytes_down, time.monotonic() - flow.started)

    def end_flow(self, session: Session, protocol: str, target: str, verdict: str,
                 reason: str, up: int, down: int, duration: float) -> None:
        """Every allowed flow ends here once: its audit line, and its slot back."""
        self.gateway.api.flow_ended(session)
        self._audit(session, protocol, target, verdict, reason, up, down, duration)

    def _connect_datagrams(self, stream_id: int, protocol: str, decision: ConnectDecision) -> None:
        """connect-udp (RFC 9298) or connect-ip for ICMP echo (RFC 9484)."""
        port = f":{decision.port}" if decision.port else ""
        target = f"{decision.host}{port}" if decision.host else "-"
        if not self._allowed(stream_id, protocol, target, decision):
            return
        session = decision.session
        done = lambda flow: self._flow_done(flow, session, protocol, target)  # noqa: E731
        try:
            if protocol == "udp":
                flow = UdpRelay(self, stream_id, str(decision.host), decision.port, done)
            else:
                client = session.address.ip if session.address else ipaddress.IPv4Address(0)
                flow = EchoRelay(self, stream_id, decision.host, client,
                                 self.gateway.echo_socket(), done)
        except OSError as exc:
            status, error = connect_failure(exc)
            self.end_flow(session, protocol, target, "fail", error, 0, 0, 0.0)
            self.respond(stream_id, status, [proxy_status_header(error)])
            return
        self._flows[flow] = session
        if self._hold.active:
            self._hold.hold(flow)
        self.respond(stream_id, 200, [("capsule-protocol", "?1")])

    async def _open_tcp(self, stream_id: int, decision: ConnectDecision, target: str,
                        connecting: Connecting) -> None:
        loop = asyncio.get_running_loop()

        def done(pipe: StreamPipe) -> None:
            # The pipe counts socket-side bytes: "up" (client to target) is
            # what it wrote to the target socket.
            self._flows.pop(pipe, None)
            connecting.end("allow", pipe.error or "closed", pipe.bytes_down, pipe.bytes_up)

        pipe = StreamPipe(self, stream_id, on_done=done)
        timeout = self.gateway.config.server.connect_timeout
        try:
            async with asyncio.timeout(timeout):     # no extra task, unlike wait_for
                await loop.create_connection(lambda: pipe, address_text(decision.host), decision.port)
        except (OSError, asyncio.TimeoutError) as exc:
            status, error = connect_failure(exc)
            connecting.end("fail", error, 0, 0)
            self.unregister(stream_id)
            self.respond(stream_id, status, [proxy_status_header(error)])
            return
        if not self.respond(stream_id, 200):
            pipe.abort()
            return
        self._flows[pipe] = decision.session
        pipe.attach_stream(stream_id)
        if self._hold.active:
            self._hold.hold(pipe)
        if connecting.ended:
            pipe.on_end()

    def _audit(self, session: Session | None, protocol: str, target: str, verdict: str,
               reason: str, up: int, down: int, duration: float) -> None:
        self.gateway.audit.write(AuditRecord(
            time=time.time(), session_id=session.id if session else "-",
            user=session.user.name if session else "-", source=self.peer, protocol=protocol,
            target=target, verdict=verdict, reason=reason, bytes_up=up, bytes_down=down,
            duration=round(duration, 3)))


def end_stream_headers() -> list[tuple[str, str]]:
    """Headers for an empty answer."""
    return [("content-length", "0")]


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

