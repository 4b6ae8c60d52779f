"""The values ``GatewayApi`` hands to the server (see ``gateway_stub.api``).

An answer to a request (``ApiResponse``), the logged-in ``Session`` that
connections and flows hold on to, and the ``ConnectDecision`` on a tunnel
request. The login's own value, ``ChallengeAnswer``, is in ``gateway_stub.login``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json

from gateway_stub.config import UserConfig


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

