"""One journal item of the route manager (an address on the TUN or a route) against
the kernel, through pyroute2: its identity, its description for people, and adding,
finding and removing it. The family (IPv4 or IPv6) of a route follows from its
destination.
"""

from __future__ import annotations

import errno
import ipaddress
import logging

from client.errors import HostSetupError
from client.journal import Journal

__all__ = ["add", "describe", "exists", "family", "index_of", "kernel_args", "key", "undo", "undo_all"]

log = logging.getLogger(__name__)

# Undo errors meaning "the thing is not there any more": not a failure.
_GONE = {errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENOENT}
_AF_INET, _AF_INET6 = 2, 10


def index_of(ipr, name: str) -> int | None:
    """The interface index of ``name``, None when there is no such interface."""
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def family(item: dict) -> int:
    """The address family of a route item, from its destination (only IPv6 text has a
    colon): journals written before IPv6 routes existed read the same, and a malformed
    item still gets a family (its undo fails later, with a warning)."""
    return _AF_INET6 if ":" in str(item["dst"]) else _AF_INET


def key(item: dict) -> tuple:
    if item["kind"] == "address":
        return ("address", item["interface"], item["address"])
    return ("route", family(item), item["dst"], item["interface"], item.get("gateway"),
            item.get("prefsrc"))


def describe(item: dict) -> str:
    if item["kind"] == "address":
        return f"address {item['address']} on {item['interface']}"
    via = f" via {item['gateway']}" if item.get("gateway") else ""
    src = f" src {item['prefsrc']}" if item.get("prefsrc") else ""
    six = "IPv6 " if family(item) == _AF_INET6 else ""
    return f"{six}route {item['dst']}{via} dev {item['interface']}{src}"


def kernel_args(ipr, item: dict) -> dict | None:
    index = index_of(ipr, item["interface"])
    if index is None:
        return None
    if item["kind"] == "address":
        iface = ipaddress.IPv4Interface(item["address"])
        return {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    args = {"dst": item["dst"], "oif": index, "family": family(item)}
    if item.get("gateway"):
        args["gateway"] = item["gateway"]
    if item.get("prefsrc"):
        args["prefsrc"] = item["prefsrc"]
    return args


def add(ipr, item: dict) -> None:
    args = kernel_args(ipr, item)
    if args is None:
        raise HostSetupError(f"interface {item['interface']} disappeared")
    if item["kind"] == "address":
        ipr.addr("add", **args)
    else:
        ipr.route("add", **args)


def exists(ipr, item: dict) -> bool:
    """Whether an equivalent address or route is present (someone else's)."""
    args = kernel_args(ipr, item)
    if args is None:
        return False
    if item["kind"] == "address":
        return any(a.get("IFA_ADDRESS") == args["address"] and a.get("prefixlen") == args["prefixlen"]
                   for a in ipr.get_addr(index=args["index"]))
    net = ipaddress.ip_network(item["dst"])
    unset = "::" if net.version == 6 else "0.0.0.0"     # the kernel leaves a default's out
    for r in ipr.get_routes(family=args["family"], table=254):
        # Text comparison: pyroute2 and ipaddress both write addresses in their short form.
        if (r.get("dst_len") == net.prefixlen and r.get("RTA_DST", unset) == str(net.network_address)
                and r.get("RTA_OIF") == args["oif"] and r.get("RTA_GATEWAY") == args.get("gateway")):
            return True
    return False


def undo(ipr, item: dict) -> None:
    """Remove one item; raises on failure, returns quietly if it is already gone."""
    from pyroute2.netlink.exceptions import NetlinkError

    args = kernel_args(ipr, item)
    if args is None:
        log.info("%s already gone (no interface)", describe(item))
        return
    try:
        if item["kind"] == "address":
            ipr.addr("del", **args)
        else:
            # proto 0 and scope "nowhere" match any protocol and scope, as `ip route del` does.
            ipr.route("del", proto=0, scope=255, **args)
    except NetlinkError as exc:
        if exc.code in _GONE:
            log.info("%s already gone", describe(item))
            return
        raise
    log.info("removed %s", describe(item))


def undo_all(ipr, items: list[dict], journal: Journal) -> None:
    """Undo items newest first; log each failure at WARNING and carry on."""
    journal.undo(items, lambda item: undo(ipr, item))
