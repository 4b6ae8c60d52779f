"""Tests of client.nat_table, through the Reflector that extends it (a flow is made by
its SYN): expiry, release and settling, NAT ports, four-tuple reuse, and the fast
path's entries following the flows."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from client.bpf.offload import MemoryOffload
from client.reflector import Reflector, Refusal
from tests.client.packets import ACK, FIN, SYN, fields
from tests.client.reflector_rig import A, D, L, LP, N, app, four, kernel, make, open_flow


def test_expiry_of_pending_released_and_idle_flows():
    """expire drops pending flows after pending_timeout, released after settle (their slots held
    until linger), idle after idle_timeout."""
    r = make(idle_timeout=100.0, settle=10.0, linger=60.0, pending_timeout=5.0)
    pending = (r.from_tun(app(SYN, sport=1), 0.0), r.pop_events()[0].nat_port)[1]
    idle = open_flow(r, now=0.0, sport=2)
    busy = open_flow(r, now=0.0, sport=3)
    released = open_flow(r, now=0.0, sport=4)
    r.release(released, 50.0)
    assert r.expire(4.9) == []
    assert r.expire(5.0) == [pending]
    r.from_tun(app(sport=3), 90.0)                 # forward traffic refreshes
    r.from_tun(kernel(busy), 150.0)                # and so does return traffic
    assert r.expire(59.9) == []
    assert r.expire(60.0) == [released]
    assert r.stats.slots_held == 1
    assert r.expire(100.0) == [idle]
    assert r.expire(249.9) == []
    assert r.expire(250.0) == [busy]
    assert r.stats.flows_active == 0 and r.stats.slots_held == 0


def test_released_flow_still_carries_final_segments():
    """A released flow still rewrites FIN/ACKs both ways until it has settled."""
    r = make(settle=5.0)
    np = open_flow(r)
    r.release(np, 10.0)
    assert r.from_tun(app(FIN | ACK), 11.0) is not None
    assert r.from_tun(kernel(np, FIN | ACK), 11.0) is not None
    assert r.expire(15.0) == [np]
    assert r.from_tun(app(ACK), 16.0) is None


def test_syn_on_lingering_tuple_gets_a_new_port():
    """A new SYN for a released four-tuple replaces it with a new pending flow on a new port."""
    r = make()
    old = open_flow(r)
    r.release(old, 1.0)
    assert r.from_tun(app(SYN, seq=7), 2.0) is None
    (event,) = r.pop_events()
    assert event.nat_port != old
    assert r.lookup(old) is None
    assert r.from_tun(kernel(old), 2.0) is None
    assert fields(r.accept_flow(event.nat_port, 2.0))["dport"] == LP


def test_release_of_pending_flow_discards_syn():
    """Releasing a pending flow drops its held SYN: accept returns None."""
    r = make()
    r.from_tun(app(SYN), 0.0)
    r.release(10000, 0.0)
    assert r.accept_flow(10000, 0.0) is None
    r.release(424, 0.0)                            # unknown port: ignored


def test_ports_round_robin_and_exhaustion():
    """NAT ports go round-robin over the range; when all are in use the SYN is dropped and counted."""
    r = make(first_port=20000, last_port=20002)
    for sport in (1, 2, 3):
        r.from_tun(app(SYN, sport=sport), 0.0)
    assert [e.nat_port for e in r.pop_events()] == [20000, 20001, 20002]
    assert r.from_tun(app(SYN, sport=4), 0.0) is None
    assert r.pop_events() == []
    assert r.stats.ports_exhausted == 1


def test_ports_are_reused_after_expiry_skipping_busy_ones():
    """After expiry a freed port is allocated again, skipping ports still in use."""
    r = make(first_port=20000, last_port=20002, pending_timeout=5.0)
    r.from_tun(app(SYN, sport=1), 0.0)
    r.pop_events()
    open_flow(r, now=3.0, sport=2)             # 20001 stays established
    r.from_tun(app(SYN, sport=3), 3.0)
    r.pop_events()
    assert r.expire(8.0) == [20000, 20002]
    for sport in (4, 5):
        r.from_tun(app(SYN, sport=sport), 9.0)
    assert [e.nat_port for e in r.pop_events()] == [20000, 20002]


def test_constructor_rejects_bad_arguments():
    """Same L and N, a bad listener port or an empty port range is a ValueError."""
    with pytest.raises(ValueError):
        Reflector(tun_address=IPv4Address(L), fake_address=IPv4Address(L), listener_port=LP)
    with pytest.raises(ValueError):
        make(first_port=3, last_port=2)
    with pytest.raises(ValueError):
        Reflector(tun_address=IPv4Address(L), fake_address=IPv4Address(N), listener_port=0)


# -- the fast path (FlowOffload) ----------------------------------------------------------------
def test_accept_offloads_both_legs_and_forget_takes_them_back():
    """accept_flow puts both legs in the offload; expiry after release removes them."""
    offload = MemoryOffload()
    r = make(offload=offload)
    port = open_flow(r)
    assert set(offload.entries) == {four(A, D, 40000, 80), four(L, N, LP, port)}
    assert offload.entries[four(A, D, 40000, 80)].four_tuple == four(N, L, port, LP)
    assert r.stats.flows_offloaded == 1 and r.stats.offloaded_active == 1
    r.release(port, 5.0)
    assert r.expire(5.0 + 60) == [port]
    assert offload.entries == {} and r.stats.offloaded_active == 0


def test_offloaded_flow_is_not_idle_expired():
    """An offloaded flow's traffic bypasses the table, so idleness here means nothing."""
    r = make(offload=MemoryOffload(), idle_timeout=100)
    port = open_flow(r)
    assert r.expire(10_000.0) == []
    assert r.lookup(port) is not None


def test_four_tuple_reuse_replaces_the_offloaded_entries():
    """A new SYN on a lingering tuple removes the old legs; the new flow is offloaded on accept."""
    offload = MemoryOffload()
    r = make(offload=offload)
    old = open_flow(r)
    r.release(old, 1.0)
    assert r.from_tun(app(SYN), 2.0) is None
    assert offload.entries == {}
    (event,) = r.pop_events()
    r.accept_flow(event.nat_port, 2.0)
    assert set(offload.entries) == {four(A, D, 40000, 80), four(L, N, LP, event.nat_port)}


def test_four_tuple_reuse_before_the_local_socket_closed_orphans_the_old_flow():
    """The app may reuse its port as soon as its end is closed, before our local socket has
    noticed: a SYN with a new sequence number is a new flow on a new port. The old flow
    loses its fast-path entries and its return leg at once, but keeps its NAT port until
    its socket is released and has lingered."""
    offload = MemoryOffload()
    r = make(offload=offload)
    old = open_flow(r, seq=1000)
    assert r.from_tun(app(SYN, seq=90_000), 1.0) is None
    (event,) = r.pop_events()
    assert event.nat_port != old and offload.entries == {}
    assert r.from_tun(kernel(old, flags=FIN | ACK), 1.0) is None     # old leg: dropped
    assert r.lookup(old) is not None                                  # port still taken
    r.accept_flow(event.nat_port, 1.0)
    assert set(offload.entries) == {four(A, D, 40000, 80), four(L, N, LP, event.nat_port)}
    r.release(old, 2.0)
    assert r.expire(2.0 + 60) == [old]
    assert set(offload.entries) == {four(A, D, 40000, 80), four(L, N, LP, event.nat_port)}
    assert fields(r.from_tun(app(ACK), 70.0))["sport"] == event.nat_port


def test_refused_flows_are_never_offloaded_and_refusal_keeps_python_path():
    """A refused flow never reaches the offload; a full map leaves the flow in Python, idle rules intact."""
    offload = MemoryOffload()
    r = make(offload=offload)
    r.from_tun(app(SYN), 0.0)
    (event,) = r.pop_events()
    r.refuse_flow(event.nat_port, Refusal.REFUSED)
    assert offload.entries == {}
    full = make(offload=MemoryOffload(refuse=True), idle_timeout=100)
    port = open_flow(full)
    assert full.stats.flows_offloaded == 0
    assert full.from_tun(app(ACK), 1.0) is not None and full.stats.reflected == 1
    assert full.expire(200.0) == [port]
