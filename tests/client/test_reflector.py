"""Tests of client.reflector: the packet path (parsing, the two legs, held SYNs) and the
answers the engine gives (accept, refuse)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.reflector import Endpoint, FlowInfo, FlowRequested, Refusal
from tests.client.packets import ACK, FIN, PSH, RST, SYN, fields, ipv4_ok, tcp_ok, udp_packet
from tests.client.reflector_rig import A, D, L, LP, N, app, kernel, make, open_flow


def test_syn_is_held_and_requested():
    """A bare SYN to an unknown flow is held and raises one FlowRequested with A and D."""
    r = make()
    assert r.from_tun(app(SYN), 1.0) is None
    assert r.pop_events() == [FlowRequested(nat_port=10000, client=Endpoint(IPv4Address(A), 40000),
                                            target=Endpoint(IPv4Address(D), 80))]
    assert r.pop_events() == []
    assert r.lookup(10000) == FlowInfo(nat_port=10000, client=Endpoint(IPv4Address(A), 40000),
                                       target=Endpoint(IPv4Address(D), 80))
    assert str(r.lookup(10000).target) == "192.168.5.9:80"
    assert r.stats.flows_active == 1 and r.stats.flows_total == 1


def test_accept_releases_the_held_syn_rewritten():
    """accept_flow returns the original SYN as N:np -> L:lp with valid checksums; only once."""
    r = make()
    r.from_tun(app(SYN, seq=555, tcp_options=b"\x02\x04\x05\xb4"), 0.0)
    syn = r.accept_flow(10000, 0.0)
    f = fields(syn)
    assert (f["src"], f["sport"], f["dst"], f["dport"]) == (N, 10000, L, LP)
    assert (f["flags"], f["seq"]) == (SYN, 555)
    assert ipv4_ok(syn) and tcp_ok(syn)
    assert r.accept_flow(10000, 0.0) is None
    assert r.accept_flow(12345, 0.0) is None


def test_forward_and_return_round_trip():
    """Forward segments become N:np -> L:lp, return segments L:lp -> N:np become D -> A, checksums valid."""
    r = make()
    np = open_flow(r)
    out = r.from_tun(app(PSH | ACK, seq=1, ack=2, payload=b"GET / HTTP/1.1\r\n\r\n"), 1.0)
    f = fields(out)
    assert (f["src"], f["sport"], f["dst"], f["dport"]) == (N, np, L, LP)
    assert f["payload"] == b"GET / HTTP/1.1\r\n\r\n" and ipv4_ok(out) and tcp_ok(out)
    back = r.from_tun(kernel(np, SYN | ACK, seq=9, ack=2, payload=b"x" * 3000), 1.0)
    f = fields(back)
    assert (f["src"], f["sport"], f["dst"], f["dport"]) == (D, 80, A, 40000)
    assert (f["flags"], f["seq"], f["ack"]) == (SYN | ACK, 9, 2)
    assert ipv4_ok(back) and tcp_ok(back)


def test_round_trip_with_ip_options():
    """Packets carrying IP options are rewritten both ways with valid checksums."""
    r = make()
    np = open_flow(r)
    out = r.from_tun(app(ip_options=b"\x01" * 12, payload=b"abc"), 1.0)
    assert fields(out)["dport"] == LP and fields(out)["payload"] == b"abc" and ipv4_ok(out) and tcp_ok(out)
    back = r.from_tun(kernel(np, ip_options=b"\x01" * 4), 1.0)
    assert fields(back)["src"] == D and ipv4_ok(back) and tcp_ok(back)


def test_bytearray_and_memoryview_input():
    """from_tun accepts bytearray and memoryview packets as well as bytes."""
    r = make()
    np = open_flow(r)
    for packet in (bytearray(app()), memoryview(app()), memoryview(kernel(np))):
        out = r.from_tun(packet, 1.0)
        assert out is not None and tcp_ok(out)


def test_retransmitted_syn_is_swallowed():
    """A second SYN of a pending flow returns None, adds no event, keeps the first held SYN."""
    r = make()
    r.from_tun(app(SYN, seq=1), 0.0)
    r.pop_events()
    assert r.from_tun(app(SYN, seq=1), 1.0) is None
    assert r.pop_events() == []
    assert fields(r.accept_flow(10000, 1.0))["seq"] == 1
    assert r.stats.flows_total == 1


def test_unknown_segments_are_dropped():
    """Non-SYN segments of unknown flows, SYN+ACK, and returns to unknown ports are dropped and counted."""
    r = make()
    for flags in (ACK, PSH | ACK, FIN | ACK, RST, SYN | ACK):
        assert r.from_tun(app(flags), 0.0) is None
    assert r.from_tun(kernel(10000), 0.0) is None
    assert r.pop_events() == []
    assert r.stats.dropped_unknown == 6 and r.stats.flows_active == 0


def test_pending_flow_passes_nothing():
    """Until accepted, neither other app segments nor listener segments pass."""
    r = make()
    r.from_tun(app(SYN), 0.0)
    assert r.from_tun(app(ACK), 0.0) is None
    assert r.from_tun(kernel(10000), 0.0) is None
    assert r.stats.dropped_unknown == 2


def test_refused_flow_gets_rst_from_target():
    """refuse_flow(REFUSED) returns D's RST|ACK to A acking seq+1, and forgets the flow."""
    r = make()
    r.from_tun(app(SYN, seq=99), 0.0)
    rst = r.refuse_flow(10000, Refusal.REFUSED)
    f = fields(rst)
    assert (f["src"], f["sport"], f["dst"], f["dport"]) == (D, 80, A, 40000)
    assert (f["flags"], f["seq"], f["ack"]) == (RST | ACK, 0, 100)
    assert ipv4_ok(rst) and tcp_ok(rst)
    assert r.lookup(10000) is None and r.accept_flow(10000, 0.0) is None
    assert r.refuse_flow(10000, Refusal.REFUSED) is None


@pytest.mark.parametrize("refusal,code", [(Refusal.HOST_UNREACHABLE, 1), (Refusal.NET_UNREACHABLE, 0),
                                          (Refusal.PROHIBITED, 13)])
def test_refused_flow_gets_icmp_from_target(refusal, code):
    """Unreachable and prohibited refusals become ICMP type 3 from D quoting the app's SYN."""
    r = make()
    original = app(SYN)
    r.from_tun(original, 0.0)
    icmp = r.refuse_flow(10000, refusal)
    assert icmp[9] == 1 and (icmp[20], icmp[21]) == (3, code) and ipv4_ok(icmp)
    assert fields(icmp)["src"] == D and fields(icmp)["dst"] == A
    assert icmp[28:] == original[:28]


def test_new_syn_after_refusal_starts_a_new_flow():
    """After a refusal the app's next SYN is a fresh request."""
    r = make()
    r.from_tun(app(SYN), 0.0)
    r.pop_events()
    r.refuse_flow(10000, Refusal.REFUSED)
    r.from_tun(app(SYN), 1.0)
    assert [e.nat_port for e in r.pop_events()] == [10001]


def test_same_source_port_to_two_destinations_are_two_flows():
    """The NAT key is the full four-tuple, so one source port to two targets gets two ports."""
    r = make()
    r.from_tun(app(SYN, dst="192.168.5.9"), 0.0)
    r.from_tun(app(SYN, dst="192.168.5.10"), 0.0)
    assert [str(e.target) for e in r.pop_events()] == ["192.168.5.9:80", "192.168.5.10:80"]


def test_not_ours_fragments_and_malformed_are_counted():
    """UDP and IPv6 are not ours; TCP fragments and broken packets are dropped and counted."""
    r = make()
    assert r.from_tun(udp_packet(src=A, dst=D, sport=1, dport=53), 0.0) is None
    assert r.from_tun(b"\x60" + bytes(59), 0.0) is None
    assert r.from_tun(app(SYN, frag=0x2000), 0.0) is None
    assert r.from_tun(b"", 0.0) is None
    assert r.from_tun(app(SYN)[:30], 0.0) is None
    s = r.stats
    assert (s.not_ours, s.dropped_fragments, s.dropped_malformed, s.flows_total) == (2, 1, 2, 0)


def test_every_truncation_and_lie_is_dropped():
    """Any truncation, bad IHL or lying total/data-offset field is dropped as malformed."""
    r = make()
    np = open_flow(r)
    whole = kernel(np, payload=b"abcdef")
    for cut in range(len(whole)):
        assert r.from_tun(whole[:cut], 1.0) is None
    bad = [bytearray(whole) for _ in range(4)]
    bad[0][0] = 0x44
    bad[1][0] = 0x4F
    bad[2][2:4] = (len(whole) + 1).to_bytes(2, "big")
    bad[3][32] = 0x30
    for packet in bad:
        assert r.from_tun(packet, 1.0) is None
    assert r.stats.dropped_malformed == len(whole) + 4


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=100), prefix=st.sampled_from([b"", b"\x45", b"\x46", b"\x4f", b"\x45\x00"]))
def test_from_tun_never_raises(data, prefix):
    """from_tun on arbitrary bytes returns None or a packet and never raises."""
    r = make()
    open_flow(r)
    r.from_tun(prefix + data, 0.0)


@settings(max_examples=200, deadline=None)
@given(packet=st.builds(lambda cut, byte, value, np: (cut, byte, value, np),
                        st.integers(0, 80), st.integers(0, 79), st.integers(0, 255), st.booleans()))
def test_from_tun_never_raises_on_mutated_packets(packet):
    """Valid packets with one byte changed and then truncated never make from_tun raise."""
    cut, byte, value, from_kernel = packet
    r = make()
    np = open_flow(r)
    raw = bytearray(kernel(np, payload=b"0123456789" * 4) if from_kernel else app(payload=b"z" * 40))
    raw[byte % len(raw)] = value
    out = r.from_tun(bytes(raw[:cut]), 0.0)
    assert out is None or len(out) <= cut


def test_retransmitted_syn_on_an_established_flow_is_forwarded():
    """The same SYN again (same sequence number) is the same connection: reflected as before."""
    r = make()
    port = open_flow(r, seq=1000)
    again = r.from_tun(app(SYN, seq=1000), 1.0)
    assert fields(again)["sport"] == port and r.pop_events() == []
