"""The host's network as the network watcher sees it: a monitor socket that turns
readable on any change of links, addresses or routes, a route lookup, and the two
clocks that tell a suspend. `LinuxNetwork` is the real one (rtnetlink and
pyroute2), `MemoryNetwork` the fake beside it for tests.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
import typing

from client.netchange import Clocks, IPAddress, RouteSnapshot

__all__ = ["LinuxNetwork", "MemoryNetwork", "NetworkHost"]

#: rtnetlink multicast groups (RTMGRP_*): links, IPv4 and IPv6 addresses and routes.
_GROUPS = 0x1 | 0x10 | 0x40 | 0x100 | 0x400
#: A lookup failing with one of these means "no usable route" (unreachable, prohibit and
#: blackhole routes answer EHOSTUNREACH, EACCES and EINVAL), not a broken watcher.
_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EINVAL, errno.ENODEV}
_IFF_LOWER_UP = 0x10000


class NetworkHost(typing.Protocol):
    """The host's network as the watcher sees it."""

    def open_monitor(self) -> socket.socket:
        """A non-blocking datagram socket that turns readable when links, addresses or
        routes change. Raises OSError."""

    def lookup_route(self, address: IPAddress) -> RouteSnapshot | None:
        """Where packets for ``address`` go now; None when there is no route. Blocking:
        the watcher calls it in a worker thread. Raises OSError on failure."""

    def clocks(self) -> Clocks:
        """CLOCK_MONOTONIC and CLOCK_BOOTTIME, read together."""


class LinuxNetwork:
    """rtnetlink and the kernel's clocks."""

    def open_monitor(self) -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                             | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, _GROUPS))
        except OSError:
            sock.close()
            raise
        return sock

    def lookup_route(self, address: IPAddress) -> RouteSnapshot | None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        with IPRoute(groups=0) as ipr:
            try:
                route = list(ipr.route("get", dst=str(address)))[0]
                oif = route.get("RTA_OIF")
                link = list(ipr.get_links(oif))[0]
            except NetlinkError as exc:
                if exc.code in _NO_ROUTE:  # ENODEV: the interface went between the two calls
                    return None
                raise OSError(exc.code, f"netlink: {exc}") from None
        return RouteSnapshot(interface=link.get("IFLA_IFNAME") or f"if{oif}", index=oif,
                             next_hop=_address(route.get("RTA_GATEWAY")),
                             source=_address(route.get("RTA_PREFSRC")),
                             link_up=bool(link["flags"] & _IFF_LOWER_UP))

    def clocks(self) -> Clocks:
        return Clocks(monotonic=time.clock_gettime(time.CLOCK_MONOTONIC),
                      boottime=time.clock_gettime(time.CLOCK_BOOTTIME))


def _address(text: str | None) -> IPAddress | None:
    return ipaddress.ip_address(text) if text else None


class MemoryNetwork:
    """The fake beside `LinuxNetwork`: a route the test sets, events it announces, and
    a machine it can put to sleep. ``lookup_failure``/``monitor_failure``, when set, are
    raised by `lookup_route()`/`open_monitor()`; ``lookups`` counts the lookups made."""

    def __init__(self, route: RouteSnapshot | None = None) -> None:
        self.route = route
        self.lookup_failure: OSError | None = None
        self.monitor_failure: OSError | None = None
        self.lookups = 0
        self._slept = 0.0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []

    def open_monitor(self) -> socket.socket:
        if self.monitor_failure is not None:
            raise self.monitor_failure
        pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        pair[0].setblocking(False)
        self._pairs.append(pair)
        return pair[0]

    def lookup_route(self, address: IPAddress) -> RouteSnapshot | None:
        self.lookups += 1
        if self.lookup_failure is not None:
            raise self.lookup_failure
        return self.route

    def clocks(self) -> Clocks:
        now = time.monotonic()
        return Clocks(monotonic=now, boottime=now + self._slept)

    def announce(self) -> None:
        """Send one event to every open monitor (as the kernel does on any change)."""
        for ours, theirs in self._pairs:
            if ours.fileno() != -1:
                theirs.send(b"event")

    def sleep(self, seconds: float) -> None:
        """The machine was suspended for ``seconds``: CLOCK_BOOTTIME jumps ahead."""
        self._slept += seconds

    def close(self) -> None:
        """Close every socket it handed out (and its own ends)."""
        for pair in self._pairs:
            for sock in pair:
                sock.close()

    @property
    def open_monitors(self) -> int:
        """How many monitor sockets handed out are still open."""
        return sum(ours.fileno() != -1 for ours, _ in self._pairs)
