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

__all__ = ["HostState", "HostRoutes", "RouteManager", "MemoryRoutes"]

log = logging.getLogger(__name__)

# Undo errors meaning "the thing is not there any more": not a failure.
_GONE = {errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENOENT}
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

    def __post_init__(self) -> None:
        if not self.interface or len(self.interface) > 15:
            raise ValueError(f"bad interface name {self.interface!r}")
        object.__setattr__(self, "addresses", tuple(ipaddress.IPv4Interface(a) for a in self.addresses))
        object.__setattr__(self, "routes", tuple(ipaddress.IPv4Network(r) for r in self.routes))
        object.__setattr__(self, "gateway", ipaddress.IPv4Address(self.gateway))
        if self.preferred_source is not None:
            object.__setattr__(self, "preferred_source", ipaddress.IPv4Address(self.preferred_source))

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


def _key(item: dict) -> tuple:
    if item["kind"] == "address":
        return ("address", item["interface"], item["address"])
    return ("route", item["dst"], item["interface"], item.get("gateway"), item.get("prefsrc"))


def _describe(item: dict) -> str:
    if item["kind"] == "address":
        return f"address {item['address']} on {item['interface']}"
    via = f" via {item['gateway']}" if item.get("gateway") else ""
    src = f" src {item['prefsrc']}" if item.get("prefsrc") else ""
    return f"route {item['dst']}{via} dev {item['interface']}{src}"


class RouteManager:
    """Applies a `HostState` with pyroute2 and can always put the host back."""

    def __init__(self, journal_path: pathlib.Path) -> None:
        self._journal = Journal(journal_path, what="route")
        self._items: list[dict] = []

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
                tun = self._index(ipr, state.interface)
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
                wanted = {_key(i) for i in desired}
                for item in reversed(list(self._items)):
                    if _key(item) not in wanted:
                        _undo(ipr, item)
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
            _undo_all(ipr, self._items, self._journal)
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
            _undo_all(ipr, items, journal)
        return True

    # -- internals ---------------------------------------------------------

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

    @staticmethod
    def _index(ipr, name: str) -> int | None:
        found = ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def _gateway_pin(self, ipr, state: HostState, tun: int) -> dict | None:
        dst = f"{state.gateway}/32"
        for item in self._items:
            if item.get("role") == "gateway" and item["dst"] == dst:
                if _exists(ipr, item):
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
        link = ipr.get_links(oif)[0]
        return {"kind": "route", "role": "gateway", "dst": dst, "gateway": route.get("RTA_GATEWAY"),
                "interface": link.get("IFLA_IFNAME"), "oif": oif, "prefsrc": None}

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
        route = best[1]
        link = ipr.get_links(route.get("RTA_OIF"))[0]
        return {"kind": "route", "role": "gateway", "dst": f"{state.gateway}/32",
                "gateway": route.get("RTA_GATEWAY"), "interface": link.get("IFLA_IFNAME"),
                "oif": route.get("RTA_OIF"), "prefsrc": None}

    def _ensure(self, ipr, item: dict) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        owned = any(_key(i) == _key(item) for i in self._items)
        if not owned and _exists(ipr, item):
            # Someone else's: never write it down, or a crash before the add
            # below fails would have recovery remove a route we do not own.
            log.info("%s was already there; leaving it to its owner", _describe(item))
            return
        if not owned:
            self._journal.write([*self._items, item])  # write down first, then change
            self._items.append(item)
        try:
            _add(ipr, item)
            log.info("added %s", _describe(item))
        except NetlinkError as exc:
            if exc.code == errno.EEXIST and owned:
                return
            if not owned:
                self._items.remove(item)
                self._journal.write(self._items)
            if exc.code == errno.EEXIST and _exists(ipr, item):
                log.info("%s was already there; leaving it to its owner", _describe(item))
                return
            raise HostSetupError(f"cannot add {_describe(item)}: {exc.args[-1]}") from None


def _args(ipr, item: dict) -> dict | None:
    index = RouteManager._index(ipr, item["interface"])
    if index is None:
        return None
    if item["kind"] == "address":
        iface = ipaddress.IPv4Interface(item["address"])
        return {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    args = {"dst": item["dst"], "oif": index}
    if item.get("gateway"):
        args["gateway"] = item["gateway"]
    if item.get("prefsrc"):
        args["prefsrc"] = item["prefsrc"]
    return args


def _add(ipr, item: dict) -> None:
    args = _args(ipr, item)
    if args is None:
        raise HostSetupError(f"interface {item['interface']} disappeared")
    if item["kind"] == "address":
        ipr.addr("add", **args)
    else:
        ipr.route("add", **args)


def _exists(ipr, item: dict) -> bool:
    """Whether an equivalent address or route is present (someone else's)."""
    args = _args(ipr, item)
    if args is None:
        return False
    if item["kind"] == "address":
        return any(a.get("IFA_ADDRESS") == args["address"] and a.get("prefixlen") == args["prefixlen"]
                   for a in ipr.get_addr(index=args["index"]))
    net = ipaddress.IPv4Network(item["dst"])
    for r in ipr.get_routes(family=2, table=254):
        if (r.get("dst_len") == net.prefixlen and r.get("RTA_DST", "0.0.0.0") == str(net.network_address)
                and r.get("RTA_OIF") == args["oif"] and r.get("RTA_GATEWAY") == args.get("gateway")):
            return True
    return False


def _undo(ipr, item: dict) -> None:
    """Remove one item; raises on failure, returns quietly if it is already gone."""
    from pyroute2.netlink.exceptions import NetlinkError

    args = _args(ipr, item)
    if args is None:
        log.info("%s already gone (no interface)", _describe(item))
        return
    try:
        if item["kind"] == "address":
            ipr.addr("del", **args)
        else:
            # proto 0 and scope "nowhere" match any protocol and scope, as `ip route del` does.
            ipr.route("del", proto=0, scope=255, **args)
    except NetlinkError as exc:
        if exc.code in _GONE:
            log.info("%s already gone", _describe(item))
            return
        raise
    log.info("removed %s", _describe(item))


def _undo_all(ipr, items: list[dict], journal: Journal) -> None:
    """Undo items newest first; log each failure at WARNING and carry on."""
    journal.undo(items, lambda item: _undo(ipr, item))


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
