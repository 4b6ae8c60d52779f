"""Login: the password step, its throttle and the one-time-code step (TOTP, RFC 6238).

Theory of operation: a login request carries a username and password, or the
answer to a challenge. The throttle is checked first, then the scrypt hash
(the caller runs ``verify_login`` off the event loop, it is slow on purpose).
A user with a TOTP secret then gets a challenge instead of a session, and
answers it with a code from the current 30 s step (one step of clock skew
either way). A code from a step no later than the last one accepted for that
user is refused as used. Failed codes count against the same throttle as
failed passwords, and a challenge goes after three of them or two minutes.

``Login`` is mixed into ``GatewayApi``, which sets up the state listed on the
class and issues the session once a login succeeds (``_issue``).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import secrets

import pyotp

from gateway_stub.api_types import ApiResponse, Session
from gateway_stub.config import GatewayConfig, UserConfig
from gateway_stub.limits import LoginThrottle
from gateway_stub.passwords import verify_password_or_dummy


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
class Pending:
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


class Login:
    """The login requests of ``GatewayApi``: password, throttle and one-time code."""

    # Set up by GatewayApi.__init__.
    config: GatewayConfig
    throttle: LoginThrottle
    _users: dict[str, UserConfig]
    _challenges: dict[str, Pending]
    _last_step: dict[str, int]     # user -> last TOTP step accepted

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
        self._challenges[cid] = Pending(user=user, source=source, created=now)
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

