"""One client's TLS connection to the gateway: its requests, its logins, its watchdog.

Theory of operation: ``listener`` hands every accepted TLS connection to a
``GatewayConnection`` (ALPN must be h2, or it is closed at once). Requests on
it go to ``GatewayApi`` for the decision: logins, the pushed config and logouts
are answered here; CONNECTs (TCP, connect-udp, connect-ip) go to the
connection's ``Flows``. A client that stops reading is held back
(``backpressure``, through ``Flows.pause``).

Until the connection has logged in (a login on it succeeded, or a request on it
carried a valid token) its header blocks are held to ``PRE_LOGIN_HEADER_BYTES``;
then ``max_header_bytes`` applies. A watchdog closes the connection once it is
quiet for ``session_idle_timeout``, ends flows that are idle or whose session
ended, and keeps the sessions used on it from expiring while it lives.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing

from client.wire import mux as m
from client.wire.link import Link
from gateway_stub.api_types import ApiResponse, Session
from gateway_stub.flows import Flows
from gateway_stub.limits import ConnectionSlot, header_limit
from gateway_stub.login import ChallengeAnswer
from gateway_stub.stream_handlers import Body
from gateway_stub.targets import proxy_status_header

if typing.TYPE_CHECKING:
    from gateway_stub.server import Gateway

log = logging.getLogger(__name__)

#: Login requests whose body may be arriving at once on one connection (a client sends one).
MAX_LOGIN_BODIES = 8


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
        self._flows = Flows(self, logged_in=self._logged_in)
        self.sessions: set[Session] = set()
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
        self._flows.hold_back(transport)
        super().connection_made(transport)
        self.gateway.connections_open.add(self)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    def pause_writing(self) -> None:
        self._flows.pause()

    def resume_writing(self) -> None:
        self._flows.resume()

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        super().data_received(data)

    def connection_lost(self, exc) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._slot.release()
        self.gateway.connections_open.discard(self)
        super().connection_lost(exc)

    def end_flow(self, session: Session, protocol: str, target: str, verdict: str,
                 reason: str, up: int, down: int, duration: float) -> None:
        """Every allowed flow ends here once (``Flows.end``); a TCP flow's
        ``stream_handlers.Connecting`` calls it on its link."""
        self._flows.end(session, protocol, target, verdict, reason, up, down, duration)

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
            self._flows.expire(now, limits.idle_timeout)

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
                self._flows.connect_tcp(ev.stream_id, api.authorize_connect(h, "tcp", now),
                                        ended=ev.ended)
            elif protocol == "connect-udp":
                self._flows.connect_datagrams(ev.stream_id, "udp",
                                              api.authorize_connect(h, "udp", now))
            elif protocol == "connect-ip":
                self._flows.connect_datagrams(ev.stream_id, "icmp",
                                              api.authorize_connect(h, "icmp", now))
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


def end_stream_headers() -> list[tuple[str, str]]:
    """Headers for an empty answer."""
    return [("content-length", "0")]
