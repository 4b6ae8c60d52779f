"""The configuration the gateway pushes to a logged-in client.

``ClientConfig.from_json`` validates the gateway's config document (address,
networks, DNS, MTU, keepalive) and turns any malformed field into a
``GatewayProtocolError``, never a crash.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from client.errors import GatewayProtocolError


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """What the gateway told this client to set up."""

    address: ipaddress.IPv4Interface | None
    """The pool address for the TUN, when pools are on."""
    include: tuple[ipaddress.IPv4Network, ...]
    """Networks to send through the tunnel."""
    exclude: tuple[ipaddress.IPv4Network, ...]
    """Networks inside ``include`` to leave out."""
    dns_servers: tuple[ipaddress.IPv4Address, ...]
    """Resolvers for the search domains."""
    dns_search: tuple[str, ...]
    """Split-DNS domains."""
    mtu: int
    """MTU hint for the TUN."""
    keepalive: float
    """Seconds between PINGs."""
    resources: tuple[str, ...]
    """Names of what the user may reach (for display)."""
    session: str
    """The gateway's public id of this session."""

    @classmethod
    def from_json(cls, doc: object) -> "ClientConfig":
        """Validate the gateway's config document."""
        try:
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            address = doc.get("address")
            dns = doc.get("dns") or {}
            return cls(
                address=ipaddress.IPv4Interface(address) if address else None,
                include=tuple(ipaddress.IPv4Network(n) for n in doc.get("include", [])),
                exclude=tuple(ipaddress.IPv4Network(n) for n in doc.get("exclude", [])),
                dns_servers=tuple(ipaddress.IPv4Address(s) for s in dns.get("servers", [])),
                dns_search=tuple(str(s) for s in dns.get("search", [])),
                mtu=max(1280, min(65535, int(doc.get("mtu", 65000)))),
                keepalive=max(1.0, float(doc.get("keepalive", 15.0))),
                resources=tuple(str(r) for r in doc.get("resources", [])),
                session=str(doc.get("session", "")),
            )
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:  # Overflow: int(Infinity)
            raise GatewayProtocolError(f"the gateway sent an invalid config: {exc}") from None
