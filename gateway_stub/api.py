"""The gateway's request logic, without I/O.

Theory of operation: the server hands every HTTP/2 request to ``GatewayApi``
with the time and the peer's address. Login (``gateway_stub.login``, mixed
in) checks the throttle, the scrypt hash and, where the user has one, a
one-time code; then ``GatewayApi`` leases a pool address and issues a random
session token that lives only in memory. Config and tunnel requests carry the
token as ``authorization: Bearer``; a tunnel request is answered with a
``ConnectDecision`` that says whether to open the real connection, so the
policy check happens before a single packet goes to the intranet. The values
it answers with are in ``gateway_stub.api_types``.
"""

from __future__ import annotations

import secrets

from gateway_stub.api_types import ApiResponse, ConnectDecision, Session
from gateway_stub.config import GatewayConfig, UserConfig
from gateway_stub.limits import LoginThrottle
from gateway_stub.login import Login, Pending
from gateway_stub.policy import Policy
from gateway_stub.pool import AddressPool, PoolExhausted
from gateway_stub.targets import parse_authority, parse_ip_path, parse_udp_path


class GatewayApi(Login):
    """Sessions, login, config and tunnel authorization."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.policy = Policy(config)
        self.pool = AddressPool(config.pool) if config.pool is not None else None
        limits = config.server
        self.throttle = LoginThrottle(limits.login_attempts_per_user,
                                      limits.login_attempts_per_source, limits.login_window)
        self._users = {u.name: u for u in config.users}
        self._challenges: dict[str, Pending] = {}
        self._last_step: dict[str, int] = {}     # user -> last TOTP step accepted
        self._sessions: dict[str, Session] = {}   # token -> session

    # -- sessions -------------------------------------------------------------------
    def _issue(self, user: UserConfig, source: str, now: float) -> tuple[ApiResponse, Session | None]:
        username = user.name
        mine = [t for t, s in self._sessions.items() if s.user.name == username]
        if len(mine) >= self.config.server.max_sessions_per_user:
            # The oldest session makes room: a user who reconnects from a new
            # network must not be locked out by their own stale sessions.
            oldest = min(mine, key=lambda t: self._sessions[t].last_used)
            self.logout(oldest)
        token = secrets.token_urlsafe(32)
        session_id = secrets.token_hex(4)
        address = None
        if self.pool is not None:
            try:
                address = self.pool.lease(session_id, owner=username)
            except PoolExhausted:
                return ApiResponse(503, {"error": "the gateway's address pool is exhausted"}), None
        session = Session(id=session_id, user=user, source=source, address=address,
                          created=now, last_used=now)
        self._sessions[token] = session
        return ApiResponse(201, {"token": token, "session": session_id}), session

    def logout(self, token: str) -> Session | None:
        """End a session and release its lease."""
        session = self._sessions.pop(token, None)
        if session is not None:
            session.ended = True
            if self.pool is not None:
                self.pool.release(session.id)
        return session

    def session_for(self, headers: dict[str, str], now: float) -> Session | None:
        """The session whose token the request carries, if any."""
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        session = self._sessions.get(auth[7:])
        if session is not None:
            session.last_used = now
        return session

    def token_of(self, headers: dict[str, str]) -> str:
        """The bearer token a request carries ('' if none)."""
        auth = headers.get("authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else ""

    # -- config -------------------------------------------------------------------
    def client_config(self, session: Session) -> ApiResponse:
        """What the client should set up for this user."""
        server = self.config.server
        dns = self.policy.dns_servers_for(session.user, self.config.dns.servers)
        body = {
            "address": str(session.address) if session.address else None,
            "include": [str(n) for n in self.policy.networks_for(session.user)],
            "exclude": [str(n) for n in self.policy.exclude_for(session.user)],
            "dns": {"servers": [str(s) for s in dns],
                    "search": list(self.config.dns.search) if dns else []},
            "mtu": server.mtu,
            "keepalive": server.keepalive,
            "session_idle_timeout": server.session_idle_timeout,
            "resources": list(self.policy.resources_for(session.user)),
            "user": session.user.name,
            "session": session.id,
        }
        return ApiResponse(200, body)

    # -- tunnels --------------------------------------------------------------------
    def authorize_connect(self, headers: dict[str, str], protocol: str, now: float) -> ConnectDecision:
        """Check a tunnel request: token, target, policy, the session's flow limit.

        ``protocol`` is ``tcp`` (plain CONNECT, target in ``:authority``),
        ``udp`` (connect-udp, target in the RFC 9298 path) or ``icmp``
        (connect-ip scoped to one address and IP protocol 1, RFC 9484 path).
        An allowed flow counts against the limit until ``flow_ended``.
        """
        session = self.session_for(headers, now)
        if session is None:
            return ConnectDecision(False, 407, "http_request_denied", "no valid session token")
        try:
            if protocol == "tcp":
                host, port = parse_authority(headers.get(":authority", ""))
            elif protocol == "udp":
                host, port = parse_udp_path(headers.get(":path", ""))
            else:
                host, port = parse_ip_path(headers.get(":path", "")), None
        except ValueError as exc:
            return ConnectDecision(False, 400, "http_request_error", str(exc), session)
        verdict = self.policy.check(session.user, protocol, host, port)
        if not verdict.allowed:
            return ConnectDecision(False, 403, "destination_ip_prohibited", verdict.reason,
                                   session, host, port)
        # Per session, not per connection: one token may be used on many.
        if session.flows >= self.config.server.max_streams_per_session:
            return ConnectDecision(False, 503, "connection_limit_reached",
                                   f"session has {session.flows} flows open, the most allowed",
                                   session, host, port)
        session.flows += 1
        return ConnectDecision(True, 200, "", verdict.reason, session, host, port)

    def flow_ended(self, session: Session) -> None:
        """A flow that ``authorize_connect`` allowed has ended (or failed to start)."""
        session.flows -= 1

    def expire(self, now: float, max_idle: float) -> list[Session]:
        """End sessions unused for ``max_idle`` seconds (tokens and leases)."""
        stale = [t for t, s in self._sessions.items() if now - s.last_used > max_idle]
        return [s for s in (self.logout(t) for t in stale) if s is not None]

    def sessions(self) -> list[Session]:
        """Live sessions (for status and tests)."""
        return list(self._sessions.values())
