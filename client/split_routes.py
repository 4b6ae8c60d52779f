"""Which networks go into the TUN: the pushed ``include`` minus ``exclude``.

Theory of operation. Both lists become integer address ranges, sorted, with
overlapping and adjacent ones merged (what ``ipaddress.collapse_addresses`` does,
but on plain integers: on a config near the link's 1 MiB body limit, some 100 000
networks, collapse_addresses takes seconds). The exclude ranges are then swept
off the include ranges in one pass over the two sorted lists. Each range left
is summarised into the fewest CIDR networks (``ipaddress.summarize_address_range``).
The ranges are disjoint and never adjacent, so the networks of one range never
merge with another's: the
concatenation is already collapsed and sorted, and its length is final as it
grows. That lets ``tunnel_routes`` refuse a result beyond ``limit`` networks
as soon as it gets there, so a hostile config (say, every other /32 of a /8
excluded) costs neither thousands of routes nor the time to build them.

Sans-IO: plain values in, plain values out.
"""

from __future__ import annotations

import ipaddress
import typing

from client.errors import GatewayProtocolError

__all__ = ["MAX_ROUTES", "tunnel_routes", "describe_networks"]

#: The most networks the client routes into the TUN for one session.
MAX_ROUTES = 1024

Network = ipaddress.IPv4Network
_Range = tuple[int, int]                 # first and last address, inclusive
_HOST_BITS = 0xFFFF_FFFF                 # shifted right by the prefix length: the host part


def tunnel_routes(include: typing.Iterable[Network], exclude: typing.Iterable[Network], *,
                  limit: int = MAX_ROUTES) -> tuple[Network, ...]:
    """The networks of ``include`` with every address of ``exclude`` taken out.

    The result is collapsed and sorted. Exclude networks may cover whole include
    networks, overlap several, or lie outside all of them. Raises
    GatewayProtocolError when the result would be more than ``limit`` networks.
    """
    routes: list[Network] = []
    for first, last in _subtract(_ranges(include), _ranges(exclude)):
        for net in ipaddress.summarize_address_range(ipaddress.IPv4Address(first),
                                                     ipaddress.IPv4Address(last)):
            if len(routes) == limit:
                raise GatewayProtocolError(
                    f"the gateway's networks minus its excluded ones make more than "
                    f"{limit} routes; refusing them")
            routes.append(net)
    return tuple(routes)


def describe_networks(include: typing.Sequence[Network], exclude: typing.Sequence[Network]) -> str:
    """The pushed networks for people: ``10.0.0.0/8 except 10.1.0.0/16`` ("none" if none)."""
    text = ",".join(map(str, include)) or "none"
    if exclude:
        text += " except " + ",".join(map(str, exclude))
    return text


def _ranges(networks: typing.Iterable[Network]) -> list[_Range]:
    """Sorted, disjoint, non-adjacent address ranges covering exactly ``networks``."""
    merged: list[_Range] = []
    for first, last in sorted((int(n.network_address),
                               int(n.network_address) | (_HOST_BITS >> n.prefixlen))
                              for n in networks):
        if merged and first <= merged[-1][1] + 1:       # overlaps or abuts the previous one
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _subtract(keep: list[_Range], drop: list[_Range]) -> typing.Iterator[_Range]:
    """The parts of ``keep`` outside every range of ``drop`` (both sorted and disjoint)."""
    i = 0
    for first, last in keep:
        while i < len(drop) and drop[i][1] < first:    # entirely before this range
            i += 1
        j = i                       # a drop range may reach into the next keep range too
        while first <= last and j < len(drop) and drop[j][0] <= last:
            if drop[j][0] > first:
                yield first, drop[j][0] - 1
            first = max(first, drop[j][1] + 1)
            j += 1
        if first <= last:
            yield first, last
