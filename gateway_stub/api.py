"""The gateway's request logic, without I/O.

Theory of operation: the server hands every HTTP/2 request to ``GatewayApi``
with the time and the peer's address. Login checks the throttle first, then
the scrypt hash (the caller runs ``verify_login`` off the event loop, it is
slow on purpose), then leases a pool address and issues a random session
token that lives only in memory. Config and tunnel requests carry the token
as ``authorization: Bearer``; a tunnel request is answered with a
``ConnectDecision`` that says whether to open the real connection, so the
policy check happens before a single packet goes to the intranet.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import secrets

import pyotp

from gateway_stub.config import GatewayConfig, UserConfig
from gateway_stub.limits import LoginThrottle
from gateway_stub.passwords import verify_password_or_dummy
from gateway_stub.policy import Policy
from gateway_stub.pool import AddressPool, PoolExhausted
from gateway_stub.targets import parse_authority, parse_ip_path, parse_udp_path


@dataclasses.dataclass(frozen=True)
class ApiResponse:
    """An answer to an API request."""

    status: int
    """HTTP status."""
    body: dict
    """JSON body."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra headers."""

    def encoded(self) -> bytes:
        """The body as JSON bytes."""
        return json.dumps(self.body, sort_keys=True).encode()


@dataclasses.dataclass(eq=False)
class Session:
    """One logged-in user."""

    id: str
    """Short public id, used in logs and the audit (never the token)."""
    user: UserConfig
    """Who logged in."""
    source: str
    """The client's address at login."""
    address: ipaddress.IPv4Interface | None
    """The pool lease, if pools are on."""
    created: float
    """Login time."""
    last_used: float
    """Last request time."""
    flows: int = 0
    """Tunnel flows open now, on all of the session's connections."""
    ended: bool = False
    """Logged out, expired or evicted: its open flows are ended too."""


@dataclasses.dataclass(frozen=True)
class ConnectDecision:
    """What to do with a tunnel request."""

    allowed: bool
    """Open the real connection."""
    status: int
    """HTTP status to answer with when not allowed."""
    proxy_status: str
    """RFC 9209 error token when not allowed (empty when allowed)."""
    reason: str
    """Why, for the audit log."""
    session: Session | None = None
    """The session, when the token was valid."""
    host: ipaddress.IPv4Address | None = None
    """Target address, when the authority parsed."""
    port: int | None = None
    """Target port (None for ICMP)."""


CHALLENGE_TTL = 120.0
#: One-time-code requests a user may have open at once (one per login in progress).
CHALLENGES_PER_USER = 4


@dataclasses.dataclass(frozen=True)
class ChallengeAnswer:
    """The second login step: a one-time code for a challenge."""

    id: str
    """The challenge id the gateway sent."""
    response: str
    """The code the user typed."""


@dataclasses.dataclass(eq=False)
class _Pending:
    user: UserConfig
    source: str
    created: float
    attempts: int = 0


def totp_step(secret: str | None, code: str, wall: float) -> int | None:
    """The TOTP time step (RFC 6238, 30 s) that ``code`` belongs to, allowing one
    step of clock skew either way; None when it matches none."""
    if not secret or not code.isascii() or not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(wall // 30)
    for step in (now_step, now_step - 1, now_step + 1):
        if hmac.compare_digest(totp.at(step * 30), code):
            return step
    return None


class GatewayApi:
    """Sessions, login, config and tunnel authorization."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.policy = Policy(config)
        self.pool = AddressPool(config.pool) if config.pool is not None else None
        limits = config.server
        self.throttle = LoginThrottle(limits.login_attempts_per_user,
                                      limits.login_attempts_per_source, limits.login_window)
        self._users = {u.name: u for u in config.users}
        self._challenges: dict[str, _Pending] = {}
        self._last_step: dict[str, int] = {}     # user -> last TOTP step accepted
        self._sessions: dict[str, Session] = {}   # token -> session

    # -- login ------------------------------------------------------------------
    def parse_login(self, body: bytes) -> tuple[str, str] | ChallengeAnswer | ApiResponse:
        """Extract (username, password) or a challenge answer from a login
        body, or an error answer."""
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and "challenge" in doc:
                answer = ChallengeAnswer(id=doc["challenge"], response=doc["response"])
                if not isinstance(answer.id, str) or not isinstance(answer.response, str):
                    raise TypeError
                return answer
            username, password = doc["username"], doc["password"]
            if not isinstance(username, str) or not isinstance(password, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return ApiResponse(400, {"error": "login needs a JSON object with username and password"})
        if len(username) > 256 or len(password) > 1024:
            return ApiResponse(400, {"error": "username or password too long"})
        try:   # lone surrogates (valid JSON escapes) cannot be hashed
            username.encode("utf-8")
            password.encode("utf-8")
        except UnicodeEncodeError:
            return ApiResponse(400, {"error": "username and password must be valid Unicode text"})
        return username, password

    def throttled(self, username: str, source: str, now: float) -> ApiResponse | None:
        """An answer when this user or source has failed too often lately.

        None lets the attempt go ahead; it then counts as in flight until
        ``finish_login``, so concurrent guesses cannot overtake the throttle.
        """
        if self.throttle.allowed(username, source, now):
            self.throttle.begin(username, source)
            return None
        return self._too_many()

    def _too_many(self) -> ApiResponse:
        return ApiResponse(429, {"error": "too many failed login attempts; try again later"},
                           headers=(("retry-after", str(int(self.config.server.login_window))),))

    def verify_login(self, username: str, password: str) -> bool:
        """Slow (scrypt): run off the event loop. Unknown users cost the same."""
        user = self._users.get(username)
        return verify_password_or_dummy(password, user.password_hash if user else None)

    def finish_login(self, username: str, ok: bool, source: str, now: float) -> tuple[ApiResponse, Session | None]:
        """Record the result of ``verify_login`` and issue a session."""
        self.throttle.end(username, source)
        if not ok:
            self.throttle.record_failure(username, source, now)
            return ApiResponse(401, {"error": "invalid username or password"}), None
        user = self._users[username]
        if user.totp_secret:
            return self._challenge(user, source, now), None
        self.throttle.record_success(username, source)
        return self._issue(user, source, now)

    # -- one-time codes (TOTP, RFC 6238) -------------------------------------------
    def _challenge(self, user: UserConfig, source: str, now: float) -> ApiResponse:
        for cid in [c for c, p in self._challenges.items() if now - p.created > CHALLENGE_TTL]:
            del self._challenges[cid]
        mine = [c for c, p in self._challenges.items() if p.user.name == user.name]
        if len(mine) >= CHALLENGES_PER_USER:    # one user cannot fill the table below
            del self._challenges[mine[0]]       # the oldest (insertion order)
        if len(self._challenges) >= 10000:
            self._challenges.pop(next(iter(self._challenges)))
        cid = secrets.token_urlsafe(16)
        self._challenges[cid] = _Pending(user=user, source=source, created=now)
        return ApiResponse(200, {"challenge": {"id": cid, "kind": "totp",
                                               "prompt": "One-time code"}})

    def answer_challenge(self, answer: "ChallengeAnswer", source: str, now: float,
                         wall: float) -> tuple[ApiResponse, Session | None]:
        """Check a one-time code (``wall`` is the Unix time, for TOTP)."""
        pending = self._challenges.get(answer.id)
        if pending is None or now - pending.created > CHALLENGE_TTL:
            self._challenges.pop(answer.id, None)
            return ApiResponse(401, {"error": "the one-time code request expired; log in again"}), None
        user = pending.user
        if not self.throttle.allowed(user.name, source, now):
            return self._too_many(), None
        step = totp_step(user.totp_secret, answer.response.strip(), wall)
        if step is None or step <= self._last_step.get(user.name, -1):
            pending.attempts += 1
            self.throttle.record_failure(user.name, source, now)
            if pending.attempts >= 3:
                del self._challenges[answer.id]
            text = "wrong one-time code" if step is None else "that one-time code was already used"
            return ApiResponse(401, {"error": text}), None
        del self._challenges[answer.id]
        self._last_step[user.name] = step
        self.throttle.record_success(user.name, source)
        return self._issue(user, source, now)

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
