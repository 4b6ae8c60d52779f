"""Access policy: which user may reach which address, protocol and port.

Default deny. A flow is allowed only if some resource matches it (network,
protocol and, for TCP and UDP, port) and some policy rule that covers the user
(by name or by one of their groups) allows that resource. The per-user set of
allowed resources is computed on demand from the frozen config. Verdicts are
memoized per (user, groups, protocol, address, port): a busy session asks the
same question thousands of times a second, and the answer can only change
with a new config, which builds a new ``Policy``.
"""

from __future__ import annotations

import ipaddress
import typing
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address

from gateway_stub.config import PROTOCOLS, GatewayConfig, Resource, UserConfig

_PORTED = frozenset({"tcp", "udp"})
#: Memoized verdicts kept at most; the memo starts afresh when full.
MEMO_SIZE = 65536


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The outcome of a policy check."""

    allowed: bool
    """True if the flow may go ahead."""
    resource: str | None
    """Name of the resource that allowed it, or that matched but is not allowed."""
    reason: str
    """Why, in words fit for the audit log."""


class Policy:
    """Answers policy questions for one configuration."""

    def __init__(self, config: GatewayConfig) -> None:
        self._resources = config.resources
        self._rules = config.policies
        self._exclude = config.exclude
        self._memo: dict[tuple, Verdict] = {}

    def _allowed_resources(self, user: UserConfig) -> tuple[Resource, ...]:
        groups = set(user.groups)
        names: set[str] = set()
        for rule in self._rules:
            if user.name in rule.users or groups.intersection(rule.groups):
                names.update(rule.allow)
        # Keep the config's order, so results are stable and readable.
        return tuple(r for r in self._resources if r.name in names)

    def check(
        self,
        user: UserConfig,
        protocol: str,
        address: IPv4Address | IPv6Address,
        port: int | None,
    ) -> Verdict:
        """May ``user`` open a ``protocol`` flow to ``address``:``port``?

        ``port`` is required for tcp and udp and ignored for icmp; an unknown
        protocol or a missing port is the caller's bug and raises ValueError.
        """
        key = (user.name, tuple(user.groups), protocol, address, port)
        verdict = self._memo.get(key)
        if verdict is None:
            verdict = self._check(user, protocol, address, port)
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = verdict
        return verdict

    def _check(self, user: UserConfig, protocol: str, address: IPv4Address | IPv6Address,
               port: int | None) -> Verdict:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}")
        if protocol in _PORTED and (port is None or not 0 <= port <= 65535):
            raise ValueError(f"{protocol} needs a port from 0 to 65535, not {port!r}")
        target = _describe(protocol, address, port)
        if not isinstance(address, IPv4Address):
            return Verdict(allowed=False, resource=None,
                           reason=f"{target}: only IPv4 destinations are supported")
        for resource in self._allowed_resources(user):
            if resource.matches(protocol, address, port):
                return Verdict(allowed=True, resource=resource.name,
                               reason=f"{target} allowed by resource {resource.name}")
        for resource in self._resources:
            if resource.matches(protocol, address, port):
                return Verdict(allowed=False, resource=resource.name,
                               reason=f"{target} is in resource {resource.name}, "
                                      f"which no policy allows for user {user.name}")
        return Verdict(allowed=False, resource=None, reason=f"{target} is in no resource")

    def resources_for(self, user: UserConfig) -> tuple[str, ...]:
        """Names of the resources ``user`` may reach, in config order."""
        return tuple(r.name for r in self._allowed_resources(user))

    def dns_servers_for(self, user: UserConfig,
                        servers: typing.Iterable[IPv4Address]) -> tuple[IPv4Address, ...]:
        """The DNS servers to push to ``user``: those they may reach on UDP port 53.
        A server they may not reach would leave their host with no working DNS."""
        return tuple(s for s in servers if self.check(user, "udp", s, 53).allowed)

    def networks_for(self, user: UserConfig) -> tuple[IPv4Network, ...]:
        """The routes to push to ``user``: their resources' networks, collapsed."""
        networks = [n for r in self._allowed_resources(user) for n in r.networks]
        return tuple(ipaddress.collapse_addresses(networks))

    def exclude_for(self, user: UserConfig) -> tuple[IPv4Network, ...]:
        """The configured split-exclude networks that overlap ``user``'s routes (the
        others would mean nothing to that user's client)."""
        routes = self.networks_for(user)
        return tuple(n for n in self._exclude if any(n.overlaps(r) for r in routes))


def _describe(protocol: str, address: IPv4Address | IPv6Address, port: int | None) -> str:
    if port is None or protocol not in _PORTED:
        return f"{protocol} {address}"
    host = f"[{address}]" if isinstance(address, IPv6Address) else str(address)
    return f"{protocol} {host}:{port}"
