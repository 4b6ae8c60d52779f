"""Tests of gateway_stub.pool."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_stub.errors import GatewayError, PoolExhausted
from gateway_stub.pool import AddressPool


def test_gateway_keeps_first_address_and_leases_follow():
    """The first host is the gateway's; leases start after it, with the pool's prefix."""
    pool = AddressPool(IPv4Network("10.200.0.0/24"))
    assert pool.gateway == IPv4Interface("10.200.0.1/24")
    assert pool.lease("a") == IPv4Interface("10.200.0.2/24")
    assert pool.lease("b") == IPv4Interface("10.200.0.3/24")
    assert pool.in_use == 2


def test_same_session_gets_same_lease():
    """Leasing twice for one session returns the same address and uses one slot."""
    pool = AddressPool(IPv4Network("10.200.0.0/24"))
    first = pool.lease("s1")
    assert pool.lease("s1") == first
    assert pool.in_use == 1
    assert pool.address_of("s1") == first


def test_exhaustion_raises_pool_exhausted():
    """A /29 has 5 leasable addresses; the sixth lease raises PoolExhausted."""
    pool = AddressPool(IPv4Network("10.0.0.0/29"))
    assert pool.capacity == 5
    leased = {pool.lease(f"s{i}") for i in range(5)}
    assert len(leased) == 5
    assert IPv4Interface("10.0.0.7/29") not in leased  # broadcast
    with pytest.raises(PoolExhausted) as info:
        pool.lease("one-too-many")
    assert isinstance(info.value, GatewayError)


def test_release_frees_the_address_for_reuse():
    """A released address is leased again once fresh ones run out."""
    pool = AddressPool(IPv4Network("10.0.0.0/30"))
    only = pool.lease("a")
    pool.release("a")
    assert pool.in_use == 0
    assert pool.address_of("a") is None
    assert pool.lease("b") == only


def test_fresh_addresses_are_preferred_over_released_ones():
    """Released addresses go to the back of the queue."""
    pool = AddressPool(IPv4Network("10.0.0.0/29"))
    first = pool.lease("a")
    pool.release("a")
    assert pool.lease("b") != first


def test_release_of_unknown_session_is_a_no_op():
    """Releasing a session without a lease changes nothing."""
    pool = AddressPool(IPv4Network("10.0.0.0/29"))
    pool.lease("a")
    pool.release("nobody")
    pool.release("nobody")
    assert pool.in_use == 1


def test_too_small_network_is_refused():
    """A /31 or /32 leaves no room for the gateway plus a lease."""
    with pytest.raises(ValueError):
        AddressPool(IPv4Network("10.0.0.0/31"))


def test_an_owner_gets_the_same_address_in_every_session_and_every_pool_instance():
    """A user's own address depends on the name alone: a later session, or a new pool
    (a restarted gateway), leases them the same one, whatever others took meanwhile."""
    first = AddressPool(IPv4Network("10.200.0.0/24"))
    mine = first.lease("s1", owner="alice")
    first.release("s1")
    for i in range(5):
        first.lease(f"other{i}")
    assert first.lease("s2", owner="alice") == mine
    restarted = AddressPool(IPv4Network("10.200.0.0/24"))
    restarted.lease("x", owner="bob")
    assert restarted.lease("s3", owner="alice") == mine
    assert mine != first.gateway


def test_an_owners_address_taken_by_another_session_gives_the_next_free_one():
    """Two sessions of one user (or a clash of two names) still get distinct addresses,
    and order-given leases step over an address an owner took out of turn."""
    pool = AddressPool(IPv4Network("10.0.0.0/29"))
    a = pool.lease("s1", owner="alice")
    b = pool.lease("s2", owner="alice")
    rest = [pool.lease(f"n{i}") for i in range(3)]
    assert len({a, b, *rest}) == 5
    with pytest.raises(PoolExhausted):
        pool.lease("s3", owner="alice")


@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=9),
                          st.sampled_from([None, "alice", "bob", "carol"])), max_size=60))
def test_leases_stay_unique_and_inside_the_pool(operations):
    """Under any lease/release sequence, with or without owners, live leases are distinct
    pool hosts, never the gateway, and a lease fails only when the pool is full."""
    pool = AddressPool(IPv4Network("10.0.0.0/29"))
    for is_lease, n, owner in operations:
        if is_lease:
            try:
                pool.lease(f"s{n}", owner=owner)
            except PoolExhausted:
                assert pool.in_use == pool.capacity
        else:
            pool.release(f"s{n}")
        live = [pool.address_of(f"s{i}") for i in range(10)]
        live = [a for a in live if a is not None]
        assert len(live) == len(set(live)) == pool.in_use
        hosts = set(pool.network.hosts()) - {pool.gateway.ip}
        assert all(a.ip in hosts and a.network == pool.network for a in live)
