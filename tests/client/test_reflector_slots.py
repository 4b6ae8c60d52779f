"""The reflector's NAT slots: several listener ports, and slots that linger.

Each connection leaves its local four-tuple N:np -> L:lp in TIME_WAIT for a
minute, so the NAT slot lingers that long; listeners multiply the slots.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from client.bpf.offload import MemoryOffload
from client.reflector import Reflector
from tests.client.packets import ACK, PSH, SYN, fields, ipv4_ok, tcp_ok, tcp_packet

L, N = "198.18.255.253", "198.18.255.254"
A, D = "10.200.0.2", "10.77.0.10"
LP0, LP1 = 4321, 4322


def make(last_port: int = 20001, **kw) -> Reflector:
    return Reflector(tun_address=IPv4Address(L), fake_address=IPv4Address(N),
                     listener_port=(LP0, LP1), first_port=20000, last_port=last_port, **kw)


def one_slot(**kw) -> Reflector:
    """A reflector with a single NAT slot: port 20000 of one listener."""
    return Reflector(tun_address=IPv4Address(L), fake_address=IPv4Address(N), listener_port=LP0,
                     first_port=20000, last_port=20000, **kw)


def syn(sport: int) -> bytes:
    return tcp_packet(src=A, dst=D, sport=sport, dport=80, flags=SYN, seq=sport)


def test_slots_go_over_every_port_then_the_next_listener_until_exhausted():
    """Slots are np + 65536 x listener index, round-robin; the fifth SYN finds none left."""
    r = make()
    for sport in (1, 2, 3, 4, 5):
        r.from_tun(syn(sport), 0.0)
    assert [e.nat_port for e in r.pop_events()] == [20000, 20001, 65536 + 20000, 65536 + 20001]
    assert r.stats.ports_exhausted == 1


def test_the_same_nat_port_on_two_listeners_is_two_flows():
    """Forward legs go to each flow's own listener; each listener's answers reach their own app."""
    r = make(last_port=20000)
    slots = []
    for sport in (1, 2):
        r.from_tun(syn(sport), 0.0)
        (event,) = r.pop_events()
        slots.append(event.nat_port)
        out = r.accept_flow(event.nat_port, 0.0)
        f = fields(out)
        assert (f["src"], f["sport"], f["dst"], f["dport"]) == (N, 20000, L, (LP0, LP1)[sport - 1])
    assert slots == [20000, 65536 + 20000]
    for sport, listener in ((1, LP0), (2, LP1)):
        back = r.from_tun(tcp_packet(src=L, dst=N, sport=listener, dport=20000, flags=PSH | ACK,
                                     payload=b"hi"), 1.0)
        f = fields(back)
        assert (f["src"], f["sport"], f["dst"], f["dport"]) == (D, 80, A, sport)
        assert ipv4_ok(back) and tcp_ok(back)
    assert r.lookup(65536 + 20000).client.port == 2


def test_a_lingering_slot_leaves_its_port_free_on_the_other_listener():
    """A released flow keeps its slot for the linger time; the next SYN takes the same port
    on the other listener instead of waiting."""
    r = make(last_port=20000, linger=60.0)
    r.from_tun(syn(1), 0.0)
    (first,) = r.pop_events()
    r.accept_flow(first.nat_port, 0.0)
    r.release(first.nat_port, 1.0)
    r.from_tun(syn(2), 2.0)
    (second,) = r.pop_events()
    assert second.nat_port == 65536 + 20000
    r.accept_flow(second.nat_port, 2.0)
    assert r.expire(61.0) == [first.nat_port]


@pytest.mark.parametrize("ports", [(), (LP0, LP0), (LP0, 0), (LP0, 70000)])
def test_listener_ports_must_be_distinct_and_in_range(ports):
    """No listener, a repeated one or a port out of range is a ValueError."""
    with pytest.raises(ValueError):
        Reflector(tun_address=IPv4Address(L), fake_address=IPv4Address(N), listener_port=ports)


def test_released_flows_go_in_release_order_and_only_once():
    """Released flows go when they have settled, oldest first; one forgotten meanwhile
    (its four-tuple reused) is not reported again."""
    r = make(last_port=20009, settle=10.0)
    slots = []
    for sport in (1, 2, 3):
        r.from_tun(syn(sport), 0.0)
        (event,) = r.pop_events()
        r.accept_flow(event.nat_port, 0.0)
        slots.append(event.nat_port)
    for at, slot in zip((1.0, 2.0, 3.0), slots):
        r.release(slot, at)
    r.from_tun(syn(3), 4.0)                     # the app reuses flow 3's four-tuple
    (reused,) = r.pop_events()
    assert r.expire(10.5) == []
    assert r.expire(11.0) == [slots[0]]
    assert r.expire(13.0) == [slots[1]]         # slots[2] was forgotten at the reuse
    assert r.lookup(reused.nat_port) is not None
    assert r.stats.flows_active == 1


def test_a_released_offloaded_flow_keeps_only_what_finds_its_map_entries():
    """After release the kernel still carries the flow (its entries stay until expiry), and a
    segment of it that reaches Python anyway is dropped: the flow no longer keeps rewrites."""
    offload = MemoryOffload()
    r = make(offload=offload)
    r.from_tun(syn(7), 0.0)
    (event,) = r.pop_events()
    r.accept_flow(event.nat_port, 0.0)
    entries = dict(offload.entries)
    assert len(entries) == 2
    r.release(event.nat_port, 1.0)
    assert offload.entries == entries
    fin = tcp_packet(src=A, dst=D, sport=7, dport=80, flags=ACK | 0x01, seq=8)
    assert r.from_tun(fin, 2.0) is None
    back = tcp_packet(src=L, dst=N, sport=LP0, dport=event.nat_port, flags=ACK)
    assert r.from_tun(back, 2.0) is None
    assert r.stats.dropped_unknown == 2
    assert r.expire(61.0) == [event.nat_port]
    assert offload.entries == {}


def test_a_forgotten_flow_holds_its_slot_until_its_time_wait_is_over():
    """A released flow is forgotten once settled, but its slot (our socket's four-tuple, in
    TIME_WAIT) is not taken again before ``linger`` after the release."""
    r = one_slot(settle=5.0, linger=60.0)
    r.from_tun(syn(1), 0.0)
    (first,) = r.pop_events()
    r.accept_flow(first.nat_port, 0.0)
    r.release(first.nat_port, 1.0)
    assert r.expire(6.0) == [first.nat_port] and r.lookup(first.nat_port) is None
    r.from_tun(syn(2), 7.0)
    assert r.pop_events() == [] and r.stats.ports_exhausted == 1
    r.expire(61.0)
    r.from_tun(syn(3), 62.0)
    assert [e.nat_port for e in r.pop_events()] == [first.nat_port]


def test_a_reused_four_tuple_of_a_released_flow_leaves_its_slot_held():
    """When the app starts a new connection on a released flow's four-tuple, the old flow goes
    at once but its slot stays held: the new flow cannot land on the old socket's TIME_WAIT."""
    r = one_slot(linger=60.0)
    r.from_tun(syn(1), 0.0)
    (first,) = r.pop_events()
    r.accept_flow(first.nat_port, 0.0)
    r.release(first.nat_port, 1.0)
    r.from_tun(tcp_packet(src=A, dst=D, sport=1, dport=80, flags=SYN, seq=99), 2.0)
    assert r.pop_events() == [] and r.stats.ports_exhausted == 1 and r.stats.slots_held == 1


def test_each_release_forgets_the_flows_that_have_settled():
    """Under load the settled flows go as new ones are released, not only at the next tick:
    a flow released 5 s before another is gone when that one is released."""
    r = make(last_port=20009, settle=5.0)
    slots = []
    for sport in (1, 2):
        r.from_tun(syn(sport), 0.0)
        (event,) = r.pop_events()
        r.accept_flow(event.nat_port, 0.0)
        slots.append(event.nat_port)
    r.release(slots[0], 1.0)
    r.release(slots[1], 6.0)
    assert r.lookup(slots[0]) is None and r.lookup(slots[1]) is not None
    assert r.stats.slots_held == 1
