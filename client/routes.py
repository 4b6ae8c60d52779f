"""Addresses and routes for the tunnel: declarative, journaled, reversible.

Theory of operation. The engine turns the pushed config into a `HostState`
and calls `apply(state)`. The manager turns the state into a list of items
(addresses on the TUN, a pinned host route for the gateway, routes into the
TUN). Before it changes anything it appends the item to a JSON journal and
fsyncs it; only then does it talk to the kernel. `restore()` undoes the
journal in reverse and deletes it. If the process dies, the TUN (non-persistent)
takes its own addresses and routes with it, but the gateway host route on the
real interface stays: `RouteManager.recover(path)` at the next start undoes
whatever the dead owner's journal lists.

The gateway host route is learned with a route lookup *before* any pushed
route goes in, so it points where the gateway's traffic went before the tunnel
(otherwise the TLS session itself would be routed into the TUN).

A full tunnel blocks IPv6 (``HostState.block_ipv6``): IPv6 is not tunnelled, so
the manager routes ::/1 and 8000::/1 into the TUN, where the datapath refuses
it. Longer than any IPv6 default route, they take everything but on-link and
more specific networks, as the IPv4 halves do; they are journaled like the
rest. A host with IPv6 off has nothing to leak and gets no IPv6 routes.

pyroute2 is used only in this module. `MemoryRoutes` is the fake for engine
tests.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import os
import pathlib
import typing

from client.errors import HostSetupError
from client.journal import Journal
from client.route_items import add, describe, exists, index_of, key, undo, undo_all
from client.tun import IPV6_CONF, enable_ipv6

__all__ = ["HostState", "HostRoutes", "RouteManager", "MemoryRoutes", "IPV6_HALVES"]

log = logging.getLogger(__name__)

_RTN_UNICAST = 1


@dataclasses.dataclass(frozen=True)
class HostState:
    """What the host should look like while the tunnel is up."""

    interface: str
    """Name of the TUN device."""
    addresses: tuple[ipaddress.IPv4Interface, ...]
    """Addresses to put on the TUN (pool address, reflector prefix)."""
    routes: tuple[ipaddress.IPv4Network, ...]
    """Networks to send into the TUN."""
    gateway: ipaddress.IPv4Address
    """The gateway's outer address; pinned with a host route if a route covers it."""
    preferred_source: ipaddress.IPv4Address | None = None
    """Source address for the pushed routes (the pool address when pools are on)."""
    block_ipv6: bool = False
    """Route all of IPv6 into the TUN (a full tunnel: IPv6 must not leave by other routes)."""

    def __post_init__(self) -> None:
        if not self.interface or len(self.interface) > 15:
            raise ValueError(f"bad interface name {self.interface!r}")
        object.__setattr__(self, "addresses", tuple(ipaddress.IPv4Interface(a) for a in self.addresses))
        object.__setattr__(self, "routes", tuple(ipaddress.IPv4Network(r) for r in self.routes))
        object.__setattr__(self, "gateway", ipaddress.IPv4Address(self.gateway))
        if self.preferred_source is not None:
            object.__setattr__(self, "preferred_source", ipaddress.IPv4Address(self.preferred_source))
        object.__setattr__(self, "block_ipv6", bool(self.block_ipv6))

    @property
    def gateway_covered(self) -> bool:
        """True when a pushed route would capture the gateway's own traffic."""
        return any(self.gateway in net for net in self.routes)


class HostRoutes(typing.Protocol):
    """The boundary the engine uses; `RouteManager` and `MemoryRoutes` fit it."""

    def apply(self, state: HostState) -> None: ...

    def restore(self) -> None: ...


_HALVES = (ipaddress.IPv4Network("0.0.0.0/1"), ipaddress.IPv4Network("128.0.0.0/1"))


def _installable(routes: tuple[ipaddress.IPv4Network, ...]) -> list[ipaddress.IPv4Network]:
    """The routes as they go into the kernel: a full tunnel's 0.0.0.0/0 becomes its two
    halves, which win over the host's own default route by being longer, instead of
    clashing with it (a second default route in the main table is refused, EEXIST) or
    replacing it (the host's route must stay, for the session itself and for afterwards)."""
    return [half for net in routes for half in (_HALVES if net.prefixlen == 0 else (net,))]


#: All of IPv6 in two halves, longer than any IPv6 default route (see _installable).
IPV6_HALVES = ("::/1", "8000::/1")


class RouteManager:
    """Applies a `HostState` with pyroute2 and can always put the host back."""

    def __init__(self, journal_path: pathlib.Path, *, ipv6_conf: pathlib.Path = IPV6_CONF) -> None:
        self._journal = Journal(journal_path, what="route")
        self._items: list[dict] = []
        self._ipv6_conf = ipv6_conf

    @property
    def journal_path(self) -> pathlib.Path:
        return self._journal.path

    def apply(self, state: HostState) -> None:
        """Make the host match `state`; idempotent. Raises HostSetupError."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        if not self._items and self._journal.path.exists():
            self._adopt_journal()
        try:
            with IPRoute() as ipr:
                tun = index_of(ipr, state.interface)
                if tun is None:
                    raise HostSetupError(f"interface {state.interface} does not exist")
                desired = [{"kind": "address", "interface": state.interface, "address": str(a)}
                           for a in state.addresses]
                if state.gateway_covered:
                    pin = self._gateway_pin(ipr, state, tun)
                    if pin is not None:
                        desired.append(pin)
                src = str(state.preferred_source) if state.preferred_source else None
                desired += [{"kind": "route", "dst": str(net), "interface": state.interface, "prefsrc": src}
                            for net in _installable(state.routes)]
                desired += self._ipv6_block(state)
                wanted = {key(i) for i in desired}
                for item in reversed(list(self._items)):
                    if key(item) not in wanted:
                        undo(ipr, item)
                        self._items.remove(item)
                        self._journal.write(self._items)
                for item in desired:
                    self._ensure(ipr, item)
        except NetlinkError as exc:
            raise HostSetupError(f"netlink: {exc}") from None
        except OSError as exc:
            raise HostSetupError(f"cannot change routes: {exc}") from None

    def restore(self) -> None:
        """Undo everything this manager applied, newest first; never raises for one item."""
        from pyroute2 import IPRoute

        if not self._items:
            if self._journal.path.exists() and self._owned_by_us():
                self._items = self._journal.read()["items"]
            else:
                return
        with IPRoute() as ipr:
            undo_all(ipr, self._items, self._journal)
        self._items = []

    @staticmethod
    def recover(journal_path: pathlib.Path) -> bool:
        """Undo a journal left by a dead process; True if there was one to undo."""
        from pyroute2 import IPRoute

        journal = Journal(journal_path, what="route")
        items = journal.orphaned()
        if items is None:
            return False
        with IPRoute() as ipr:
            undo_all(ipr, items, journal)
        return True

    # -- internals ---------------------------------------------------------

    def _ipv6_block(self, state: HostState) -> list[dict]:
        """The routes taking all of IPv6 into the TUN, when ``state`` blocks it and the
        host has IPv6; raises HostSetupError when the TUN cannot take them."""
        if not state.block_ipv6:
            return []
        try:
            usable = enable_ipv6(state.interface, self._ipv6_conf)
        except OSError as exc:
            raise HostSetupError(f"cannot block IPv6 on {state.interface}: {exc}") from None
        if not usable:
            log.info("IPv6 is off on this host: nothing to block")
            return []
        return [{"kind": "route", "dst": dst, "interface": state.interface, "prefsrc": None}
                for dst in IPV6_HALVES]

    def _owned_by_us(self) -> bool:
        try:
            owner = self._journal.read().get("owner") or {}
        except (ValueError, OSError):
            return False
        return owner.get("pid") == os.getpid()

    def _adopt_journal(self) -> None:
        if self._owned_by_us():
            self._items = self._journal.read()["items"]
        elif not RouteManager.recover(self._journal.path):
            raise HostSetupError(f"route journal {self._journal.path} is in use by another process")
        else:
            log.warning("undid host changes left by a previous run before applying")

    def _gateway_pin(self, ipr, state: HostState, tun: int) -> dict | None:
        dst = f"{state.gateway}/32"
        for item in self._items:
            if item.get("role") == "gateway" and item["dst"] == dst:
                if exists(ipr, item):
                    return item  # still pinned; a fresh lookup would only find our own pin
                # The kernel dropped it with the address or link it went through (a new
                # network): the lookup would now find our own routes, so ask the table.
                log.info("the route pinning the gateway %s went away; pinning it again", state.gateway)
                return self._underlay_pin(ipr, state, tun)
        try:
            found = ipr.route("get", dst=str(state.gateway))
        except Exception as exc:
            raise HostSetupError(f"no route to the gateway {state.gateway}: {exc}") from None
        route = list(found)[0]
        if route.get("type") != _RTN_UNICAST:
            return None  # local/broadcast: the local table wins over anything we push
        oif = route.get("RTA_OIF")
        if oif == tun:
            raise HostSetupError(f"the gateway {state.gateway} is already routed into {state.interface}")
        return _pin_along(ipr, state, route)

    @staticmethod
    def _underlay_pin(ipr, state: HostState, tun: int) -> dict | None:
        """A pin along the main table's best route to the gateway that is not into the TUN
        (longest prefix, then lowest metric); None when there is none (offline for now)."""
        best = None
        for r in ipr.get_routes(family=2, table=254):
            net = ipaddress.IPv4Network(f"{r.get('RTA_DST', '0.0.0.0')}/{r.get('dst_len')}")
            if r.get("type") != _RTN_UNICAST or r.get("RTA_OIF") in (None, tun) or state.gateway not in net:
                continue
            rank = (net.prefixlen, -(r.get("RTA_PRIORITY") or 0))
            if best is None or rank > best[0]:
                best = (rank, r)
        if best is None:
            log.info("no route to the gateway %s outside the tunnel for now", state.gateway)
            return None
        return _pin_along(ipr, state, best[1])

    def _ensure(self, ipr, item: dict) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        owned = any(key(i) == key(item) for i in self._items)
        if not owned and exists(ipr, item):
            # Someone else's: never write it down, or a crash before the add
            # below fails would have recovery remove a route we do not own.
            log.info("%s was already there; leaving it to its owner", describe(item))
            return
        if not owned:
            self._journal.write([*self._items, item])  # write down first, then change
            self._items.append(item)
        try:
            add(ipr, item)
            log.info("added %s", describe(item))
        except NetlinkError as exc:
            if exc.code == errno.EEXIST and owned:
                return
            if not owned:
                self._items.remove(item)
                self._journal.write(self._items)
            if exc.code == errno.EEXIST and exists(ipr, item):
                log.info("%s was already there; leaving it to its owner", describe(item))
                return
            raise HostSetupError(f"cannot add {describe(item)}: {exc.args[-1]}") from None


def _pin_along(ipr, state: HostState, route) -> dict:
    """The item pinning the gateway with a host route along ``route`` (a netlink route)."""
    link = ipr.get_links(route.get("RTA_OIF"))[0]
    return {"kind": "route", "role": "gateway", "dst": f"{state.gateway}/32",
            "gateway": route.get("RTA_GATEWAY"), "interface": link.get("IFLA_IFNAME"),
            "oif": route.get("RTA_OIF"), "prefsrc": None}


class MemoryRoutes:
    """In-memory stand-in for `RouteManager`: records what the engine asked for."""

    def __init__(self, journal_path: pathlib.Path | None = None) -> None:
        self.state: HostState | None = None
        """The state currently applied, None when restored."""
        self.applied: list[HostState] = []
        """Every state passed to apply(), in order."""
        self.restore_count = 0
        """How many times restore() was called."""
        self.fail_with: Exception | None = None
        """Set to make the next apply() raise this."""

    @property
    def pinned_gateway(self) -> ipaddress.IPv4Address | None:
        """The gateway a real manager would pin a host route for."""
        return self.state.gateway if self.state and self.state.gateway_covered else None

    def apply(self, state: HostState) -> None:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        self.state = state
        self.applied.append(state)

    def restore(self) -> None:
        self.state = None
        self.restore_count += 1

    @staticmethod
    def recover(journal_path: pathlib.Path) -> bool:
        return False
