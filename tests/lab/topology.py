"""The lab's addresses and how its three namespaces are wired.

    client (<p>c)                 gateway (<p>g)                 intranet (<p>i)
    outer 192.0.2.2/24 ──veth── outer 192.0.2.1/24
                                  inner 10.77.0.1/24 ──veth── inner 10.77.0.10/24
                                        10.88.0.1/24                10.77.0.11/24
                                                                    10.77.0.53/24
                                                                    10.88.0.10/24

The client has no default route and no route to the intranet networks: the
only way in is the tunnel (or `Lab.direct_path(True)`, which turns the gateway
into a plain router for comparison). The gateway does not forward by default.
"""

from __future__ import annotations

import ipaddress
import typing

if typing.TYPE_CHECKING:
    from tests.lab.netns import Lab

CLIENT_OUTER = ipaddress.IPv4Address("192.0.2.2")
GATEWAY_OUTER = ipaddress.IPv4Address("192.0.2.1")
OUTER_NET = ipaddress.IPv4Network("192.0.2.0/24")
GATEWAY_INNER = ipaddress.IPv4Address("10.77.0.1")
GATEWAY_DENIED_SIDE = ipaddress.IPv4Address("10.88.0.1")
INTRANET_HOST = ipaddress.IPv4Address("10.77.0.10")
INTRANET_HOST2 = ipaddress.IPv4Address("10.77.0.11")
INTRANET_DNS = ipaddress.IPv4Address("10.77.0.53")
DENIED_HOST = ipaddress.IPv4Address("10.88.0.10")
INTRANET_NET = ipaddress.IPv4Network("10.77.0.0/24")
DENIED_NET = ipaddress.IPv4Network("10.88.0.0/24")

OUTER_IF = "outer"
"""Name of the client<->gateway veth end, in both namespaces."""
INNER_IF = "inner"
"""Name of the gateway<->intranet veth end, in both namespaces."""

DIRECT_PATH_METRIC = 1000
"""Metric of the direct-path routes, so the tunnel's routes win when both exist."""


def build(lab: Lab) -> None:
    """Wire the namespaces `lab.client`, `lab.gateway`, `lab.intranet`."""
    c, g, i = lab.client, lab.gateway, lab.intranet
    for ns in (c, g, i):
        lab.run(ns, ["ip", "link", "set", "lo", "up"])
    # Create each veth pair straight in its namespaces, so the names never
    # meet (or clash with) the host's interfaces.
    lab.run(c, ["ip", "link", "add", OUTER_IF, "type", "veth", "peer", "name", OUTER_IF, "netns", g])
    lab.run(g, ["ip", "link", "add", INNER_IF, "type", "veth", "peer", "name", INNER_IF, "netns", i])
    _addresses(lab, c, OUTER_IF, [f"{CLIENT_OUTER}/24"])
    _addresses(lab, g, OUTER_IF, [f"{GATEWAY_OUTER}/24"])
    _addresses(lab, g, INNER_IF, [f"{GATEWAY_INNER}/24", f"{GATEWAY_DENIED_SIDE}/24"])
    _addresses(lab, i, INNER_IF, [f"{INTRANET_HOST}/24", f"{INTRANET_HOST2}/24",
                                  f"{INTRANET_DNS}/24", f"{DENIED_HOST}/24"])
    lab.run(i, ["ip", "route", "add", str(OUTER_NET), "via", str(GATEWAY_INNER)])
    set_forwarding(lab, False)


def _addresses(lab: Lab, ns: str, ifname: str, addresses: list[str]) -> None:
    for address in addresses:
        lab.run(ns, ["ip", "addr", "add", address, "dev", ifname])
    lab.run(ns, ["ip", "link", "set", ifname, "up"])


def set_forwarding(lab: Lab, enabled: bool) -> None:
    """Turn IPv4 forwarding on or off in the gateway namespace."""
    lab.run(lab.gateway, ["sysctl", "-q", "-w", f"net.ipv4.ip_forward={int(enabled)}"])


def set_direct_routes(lab: Lab, enabled: bool) -> None:
    """Add or remove the client's routes to the intranet via the gateway."""
    for net in (INTRANET_NET, DENIED_NET):
        route = [str(net), "via", str(GATEWAY_OUTER), "dev", OUTER_IF, "metric", str(DIRECT_PATH_METRIC)]
        if enabled:
            lab.run(lab.client, ["ip", "route", "replace", *route])
        else:
            lab.run(lab.client, ["ip", "route", "del", *route], check=False)
