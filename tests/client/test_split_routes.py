"""The networks routed into the TUN: the pushed include minus exclude."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.errors import GatewayProtocolError
from client.split_routes import MAX_ROUTES, describe_networks, tunnel_routes

N = ipaddress.IPv4Network
BASE = int(ipaddress.IPv4Address("10.0.0.0"))



def _near_base(offset: int, granularity: int, nudge: int, prefixlen: int) -> ipaddress.IPv4Network:
    """A network in and around 10.0.0.0/22 whose address is rounded to a 2**granularity
    boundary and then nudged by one, so that networks start, end or abut together often."""
    return N((BASE + (offset >> granularity << granularity) + nudge, prefixlen), strict=False)


# Networks in and around a small block, so that includes and excludes overlap often; a
# few are near the ends of the address space to find off-by-ones there.
networks = st.one_of(
    st.builds(_near_base, st.integers(0, 2 ** 10 - 1), st.integers(0, 10),
              st.sampled_from([-1, 0, 0, 1]), st.integers(20, 32)),
    st.builds(lambda plen: N((0, plen), strict=False), st.integers(0, 32)),
    st.builds(lambda plen: N((2 ** 32 - 1, plen), strict=False), st.integers(0, 32)),
)
network_lists = st.lists(networks, max_size=8)


def _inside(address: int, nets) -> bool:
    return any(int(n.network_address) <= address <= int(n.broadcast_address) for n in nets)


def _samples(include, exclude, result, extra) -> set[int]:
    """Each network's ends and their neighbours (membership only changes there), plus extras."""
    points = set(extra)
    for net in (*include, *exclude, *result):
        for end in (int(net.network_address), int(net.broadcast_address)):
            points.update(p for p in (end - 1, end, end + 1) if 0 <= p < 2 ** 32)
    return points


@given(network_lists, network_lists, st.lists(st.integers(0, 2 ** 32 - 1), max_size=20))
def test_routes_cover_exactly_the_included_addresses_not_excluded(include, exclude, extra):
    """An address is routed exactly when some include holds it and no exclude does."""
    result = tunnel_routes(include, exclude)
    for address in _samples(include, exclude, result, extra):
        wanted = _inside(address, include) and not _inside(address, exclude)
        assert _inside(address, result) == wanted, ipaddress.IPv4Address(address)


@given(network_lists, network_lists)
def test_routes_are_collapsed_and_sorted(include, exclude):
    """The result has no overlapping or mergeable networks, in address order."""
    result = tunnel_routes(include, exclude)
    assert list(result) == list(ipaddress.collapse_addresses(result)) == sorted(result)


@pytest.mark.parametrize("include,exclude,routes", [
    (["10.0.0.0/8"], ["10.1.0.0/16"],
     ["10.0.0.0/16", "10.2.0.0/15", "10.4.0.0/14", "10.8.0.0/13", "10.16.0.0/12",
      "10.32.0.0/11", "10.64.0.0/10", "10.128.0.0/9"]),
    (["10.0.0.0/24", "10.0.2.0/24"], ["10.0.0.0/22"], []),           # one exclude covers both
    (["10.0.0.0/24", "192.168.0.0/24"], ["172.16.0.0/12"],            # outside every include
     ["10.0.0.0/24", "192.168.0.0/24"]),
    (["10.0.0.0/24", "10.0.1.0/24"], ["10.0.0.128/25", "10.0.1.0/25"],  # overlaps two
     ["10.0.0.0/25", "10.0.1.128/25"]),
    (["10.0.1.0/24", "10.0.0.0/24"], [], ["10.0.0.0/23"]),            # collapsed and sorted
    (["10.0.0.0/30"], ["10.0.0.0/32", "10.0.0.3/32"], ["10.0.0.1/32", "10.0.0.2/32"]),  # the ends
])
def test_known_splits(include, exclude, routes):
    """Whole, partial, outside and overlapping excludes give the expected routes."""
    assert tunnel_routes([N(n) for n in include], [N(n) for n in exclude]) == tuple(map(N, routes))


def test_a_result_beyond_the_limit_is_refused():
    """Every other /32 of a /16 excluded would make thousands of routes: a protocol error."""
    exclude = [N((BASE + 2 * k, 32)) for k in range(2000)]
    with pytest.raises(GatewayProtocolError, match=f"more than {MAX_ROUTES} routes"):
        tunnel_routes([N("10.0.0.0/16")], exclude)
    assert len(tunnel_routes([N("10.0.0.0/16")], exclude, limit=4000)) > MAX_ROUTES


def test_networks_are_described_with_their_exclusions():
    """The description names the excluded networks after the included ones, if any."""
    assert describe_networks([N("10.0.0.0/8")], [N("10.1.0.0/16")]) == "10.0.0.0/8 except 10.1.0.0/16"
    assert describe_networks([N("10.0.0.0/8"), N("172.16.0.0/12")], []) == "10.0.0.0/8,172.16.0.0/12"
    assert describe_networks([], []) == "none"
