"""The values the TCP reflector exchanges with the engine (see ``client.reflector``).

Endpoints and flow descriptions, the event that asks for a gateway stream, how
a refused flow is answered (and which answer a gateway's refusal calls for, for
the UDP and ICMP paths too), the counters, and the interface of the in-kernel
fast path. ``client.reflector`` re-exports the types.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import typing
from dataclasses import dataclass

from client import packet as pk


@dataclass(frozen=True)
class Endpoint:
    """An IPv4 address and a port."""

    address: ipaddress.IPv4Address
    port: int

    def __str__(self) -> str:
        return f"{pk.address_text(self.address)}:{self.port}"


@dataclass(frozen=True)
class FlowInfo:
    """What the NAT table knows about one flow."""

    nat_port: int       #: the flow's NAT slot: N's port, + 65536 x the listener's index (see Reflector)
    client: Endpoint    #: the app's end, A:sport
    target: Endpoint    #: where the app connects, D:dport


@dataclass(frozen=True)
class FlowRequested:
    """A new SYN arrived and is held: the engine must ask the gateway for ``target``."""

    nat_port: int       #: names the flow in accept_flow / refuse_flow / lookup
    client: Endpoint    #: A:sport
    target: Endpoint    #: D:dport


class Refusal(enum.Enum):
    """How a refused flow is answered to the app (the packet appears to come from D)."""

    REFUSED = "refused"             #: TCP RST (ECONNREFUSED)
    HOST_UNREACHABLE = "host"       #: ICMP type 3 code 1 (also used for timeouts)
    NET_UNREACHABLE = "net"         #: ICMP type 3 code 0
    PROHIBITED = "prohibited"       #: ICMP type 3 code 13


_PROXY_ERROR = re.compile(r";\s*error=([A-Za-z0-9_.*-]+)")


def refusal_for(status: int, proxy_status: str) -> Refusal:
    """Map the gateway's error answer (its status and the ``error`` parameter of its
    RFC 9209 ``proxy-status``, never words in the details) to what the app should see."""
    found = _PROXY_ERROR.search(proxy_status.partition('"')[0])    # details come quoted, last
    error = found.group(1) if found else ""
    if status == 403 or error == "destination_ip_prohibited":
        return Refusal.PROHIBITED
    if error == "connection_refused":
        return Refusal.REFUSED
    if error == "destination_ip_unroutable":
        return Refusal.NET_UNREACHABLE
    if status in (401, 407):
        return Refusal.PROHIBITED
    return Refusal.HOST_UNREACHABLE


@dataclass(frozen=True)
class ReflectorStats:
    """Counters of the reflector."""

    flows_active: int       #: flows in the table (pending, established or settling)
    flows_total: int        #: flows ever created
    dropped_malformed: int  #: packets that are not well-formed TCP/IPv4
    dropped_unknown: int    #: segments of no known flow (or of a flow still pending)
    dropped_fragments: int  #: IPv4 fragments of TCP
    ports_exhausted: int    #: SYNs dropped because no NAT port was free
    not_ours: int           #: packets that are not TCP/IPv4 (IPv6, UDP, ICMP, ...)
    reflected: int = 0      #: packets rewritten here (both legs)
    flows_offloaded: int = 0    #: flows ever handed to the FlowOffload
    offloaded_active: int = 0   #: flows currently offloaded
    slots_held: int = 0     #: NAT slots of forgotten flows, held while their TIME_WAIT lasts


class FlowOffload(typing.Protocol):
    """Where established flows are rewritten instead of here (the kernel's flow map)."""

    def add(self, four_tuple: bytes, rewrite: pk.Rewrite) -> bool:
        """Rewrite packets carrying ``four_tuple`` (12 bytes) with ``rewrite``; False if refused."""

    def remove(self, four_tuple: bytes) -> None:
        """Stop rewriting ``four_tuple``; unknown tuples are ignored."""
