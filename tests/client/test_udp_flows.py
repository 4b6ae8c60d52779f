"""Tests of client.udp_flows."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.reflector_types import Endpoint
from client.udp_flows import UdpDatagram, UdpFlowKey, UdpFlowOpened, UdpFlows
from tests.client.fragments import fragment
from tests.client.packets import addr, ip_header, ipv4_ok, reference_checksum, tcp_packet, udp_packet

A, D, D2 = "10.77.0.1", "192.168.5.9", "192.168.5.10"


def app(payload=b"q", sport=40000, dst=D, dport=53) -> bytes:
    """A datagram from the app, A:sport -> D:dport."""
    return udp_packet(src=A, dst=dst, sport=sport, dport=dport, payload=payload)


def udp_ok(packet: bytes) -> bool:
    """The UDP checksum is present and verifies with the pseudo-header (reference RFC 1071)."""
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    segment = bytes(packet[ihl:total])
    if segment[6:8] == b"\0\0":
        return False
    pseudo = struct.pack("!4s4sxBH", packet[12:16], packet[16:20], 17, len(segment))
    return reference_checksum(pseudo + segment) == 0


def udp_fields(packet: bytes) -> dict:
    """The addresses, ports and payload of a UDP/IPv4 packet, decoded independently."""
    ihl = (packet[0] & 0x0F) * 4
    sport, dport, length = struct.unpack_from("!HHH", packet, ihl)
    return {"src": str(IPv4Address(packet[12:16])), "dst": str(IPv4Address(packet[16:20])),
            "sport": sport, "dport": dport, "proto": packet[9], "ttl": packet[8],
            "total": struct.unpack_from("!H", packet, 2)[0], "payload": packet[ihl + 8:ihl + length]}


def icmp_ok(packet: bytes) -> bool:
    """The ICMP checksum verifies (reference RFC 1071 over the message)."""
    ihl = (packet[0] & 0x0F) * 4
    return reference_checksum(bytes(packet[ihl:])) == 0


def test_first_datagram_opens_a_flow():
    """The first datagram of (A:sport, D:dport) yields UdpFlowOpened with its payload."""
    flows = UdpFlows()
    event = flows.from_tun(app(b"dns query"), 0.0)
    assert event == UdpFlowOpened(flow_id=1, key=UdpFlowKey(client=Endpoint(IPv4Address(A), 40000),
                                                            target=Endpoint(IPv4Address(D), 53)),
                                  first_payload=b"dns query")
    assert flows.lookup(1) == event.key
    assert flows.stats.flows_active == 1 and flows.stats.flows_total == 1


def test_later_datagrams_belong_to_the_flow():
    """Further datagrams of the same four-tuple yield UdpDatagram of the same flow."""
    flows = UdpFlows()
    flows.from_tun(app(b"one"), 0.0)
    assert flows.from_tun(app(b"two"), 1.0) == UdpDatagram(flow_id=1, payload=b"two")
    assert flows.stats.datagrams_in == 2 and flows.stats.flows_total == 1


def test_each_port_and_destination_is_its_own_flow():
    """A different app port or destination opens a new flow with an increasing id."""
    flows = UdpFlows()
    ids = [flows.from_tun(p, 0.0).flow_id for p in (app(), app(sport=40001), app(dst=D2), app(dport=54))]
    assert ids == [1, 2, 3, 4]


def test_to_app_builds_a_packet_from_the_target():
    """to_app gives D:dport -> A:sport carrying the payload, with valid IP and UDP checksums."""
    flows = UdpFlows()
    flows.from_tun(app(sport=40000, dport=53), 0.0)
    packet = flows.to_app(1, b"dns answer")
    f = udp_fields(packet)
    assert (f["src"], f["sport"], f["dst"], f["dport"], f["proto"]) == (D, 53, A, 40000, 17)
    assert f["payload"] == b"dns answer" and f["total"] == len(packet) == 28 + 10
    assert ipv4_ok(packet) and udp_ok(packet)
    assert flows.stats.datagrams_out == 1


@pytest.mark.parametrize("size", [0, 1, 1471, 1472, 65000, 65507])
def test_to_app_sizes_up_to_the_ipv4_maximum(size):
    """Payloads from empty up to 65507 bytes (odd and even) build valid packets."""
    flows = UdpFlows()
    flows.from_tun(app(), 0.0)
    payload = bytes(i * 7 & 0xFF for i in range(size))
    packet = flows.to_app(1, payload)
    assert len(packet) == 28 + size and ipv4_ok(packet) and udp_ok(packet)
    assert udp_fields(packet)["payload"] == payload


def test_to_app_refuses_payloads_too_large_for_ipv4():
    """A 65508-byte payload cannot be an IPv4 packet: None, counted."""
    flows = UdpFlows()
    flows.from_tun(app(), 0.0)
    assert flows.to_app(1, bytes(65508)) is None
    assert flows.stats.dropped_oversize == 1


def test_zero_checksum_is_sent_as_ffff():
    """When the computed UDP checksum is 0 it is written as 0xFFFF (RFC 768)."""
    flows = UdpFlows()
    flows.from_tun(app(), 0.0)
    base = flows.to_app(1, b"\0\0")
    # With a zero payload the checksum is c = ~S; a payload word of c makes the sum
    # 0xFFFF, whose complement is 0.
    payload = base[26:28]
    packet = flows.to_app(1, payload)
    assert struct.unpack_from("!H", packet, 26)[0] == 0xFFFF
    assert udp_ok(packet)


def test_to_app_for_an_unknown_flow_is_none():
    """A payload for a flow that is gone is dropped."""
    assert UdpFlows().to_app(7, b"late") is None


def test_port_unreachable_quotes_the_last_datagram():
    """port_unreachable is ICMP 3/3 from D to A quoting the last datagram's IP and UDP header."""
    flows = UdpFlows()
    flows.from_tun(app(b"first"), 0.0)
    last = app(b"second datagram")
    flows.from_tun(last, 1.0)
    packet = flows.port_unreachable(1)
    assert ipv4_ok(packet) and icmp_ok(packet)
    assert (str(IPv4Address(packet[12:16])), str(IPv4Address(packet[16:20])), packet[9]) == (D, A, 1)
    assert packet[20:22] == bytes([3, 3])
    assert packet[28:] == last[:28]
    assert flows.lookup(1) is not None          # the flow stays


def test_port_unreachable_with_the_original_payload():
    """Given the original payload, the quote is its rebuilt header followed by its first bytes."""
    flows = UdpFlows()
    flows.from_tun(app(b"x"), 0.0)
    packet = flows.port_unreachable(1, original_payload=b"hello")
    quoted = packet[28:]
    assert ipv4_ok(packet) and icmp_ok(packet) and ipv4_ok(quoted[:20])
    assert struct.unpack_from("!HHH", quoted, 20) == (40000, 53, 13)
    assert quoted[28:] == b"hello"
    long = flows.port_unreachable(1, original_payload=bytes(2000))
    assert len(long) <= 576 and icmp_ok(long)


def test_prohibited_answers_and_forgets_the_flow():
    """prohibited is ICMP 3/13 from D to A, and the flow is gone afterwards."""
    flows = UdpFlows()
    flows.from_tun(app(), 0.0)
    packet = flows.prohibited(1)
    assert packet[20:22] == bytes([3, 13]) and ipv4_ok(packet) and icmp_ok(packet)
    assert packet[28:] == app()[:28]
    assert flows.lookup(1) is None and flows.prohibited(1) is None and flows.port_unreachable(1) is None
    assert isinstance(flows.from_tun(app(), 1.0), UdpFlowOpened)     # a new flow now


def test_close_forgets_the_flow():
    """After close the four-tuple opens a new flow; closing twice is harmless."""
    flows = UdpFlows()
    flows.from_tun(app(), 0.0)
    flows.close(1)
    flows.close(1)
    assert flows.stats.flows_active == 0
    assert flows.from_tun(app(), 0.0).flow_id == 2


def test_expire_removes_idle_flows_only():
    """Flows idle for idle_timeout expire; a flow that sent recently stays."""
    flows = UdpFlows(idle_timeout=60.0)
    flows.from_tun(app(sport=1), 0.0)
    flows.from_tun(app(sport=2), 0.0)
    flows.from_tun(app(sport=2), 30.0)
    assert flows.expire(59.9) == []
    assert flows.expire(60.0) == [1]
    assert flows.expire(90.0) == [2]
    assert flows.stats.flows_active == 0


def test_replies_with_now_keep_a_flow_alive():
    """to_app with now refreshes the flow; without it, only the app's datagrams do."""
    flows = UdpFlows(idle_timeout=60.0)
    flows.from_tun(app(dport=5060), 0.0)
    flows.to_app(1, b"r", now=50.0)
    assert flows.expire(100.0) == []
    flows.to_app(1, b"r")
    assert flows.expire(110.0) == [1]


def test_an_answered_dns_flow_goes_soon_an_unanswered_one_waits():
    """Resolvers ask each query from a new port: once every query has its answer the flow is
    over (answered_timeout), while a query still waiting, or any other flow, keeps idle_timeout."""
    flows = UdpFlows(idle_timeout=60.0, answered_timeout=2.0)
    flows.from_tun(app(sport=1), 0.0)                  # answered
    flows.from_tun(app(sport=2), 0.0)                  # two queries (a retry), one answer
    flows.from_tun(app(sport=2), 1.0)
    flows.from_tun(app(sport=3), 0.0)                  # never answered
    flows.from_tun(app(sport=4, dport=5060), 0.0)      # not DNS: answered, but a stream
    for flow_id in (1, 2, 4):
        flows.to_app(flow_id, b"answer", now=0.5)
    assert flows.expire(2.4) == []
    assert flows.expire(2.5) == [1]
    assert flows.expire(59.9) == []
    assert flows.expire(61.0) == [2, 3, 4]
    flows.from_tun(app(sport=5), 70.0)
    flows.to_app(5, b"answer", now=70.1)
    flows.to_app(5, b"duplicate answer", now=70.2)     # more answers than queries
    flows.from_tun(app(sport=5), 70.3)                 # then another query: waits again
    assert flows.expire(80.0) == []
    flows.to_app(5, b"answer", now=80.0)
    assert flows.expire(82.0) == [5]


def test_timeouts_are_checked():
    with pytest.raises(ValueError, match="answered_timeout"):
        UdpFlows(idle_timeout=1.0, answered_timeout=2.0)
    with pytest.raises(ValueError):
        UdpFlows(idle_timeout=0.0, answered_timeout=0.0)


def test_full_table_drops_new_flows():
    """With max_flows open, a datagram of a new flow is dropped and counted; known flows go on."""
    flows = UdpFlows(max_flows=2)
    flows.from_tun(app(sport=1), 0.0)
    flows.from_tun(app(sport=2), 0.0)
    assert flows.from_tun(app(sport=3), 0.0) is None
    assert flows.stats.dropped_full == 1
    assert flows.from_tun(app(sport=1), 0.0) == UdpDatagram(flow_id=1, payload=b"q")
    flows.close(2)
    assert flows.from_tun(app(sport=3), 0.0).flow_id == 3


@pytest.mark.parametrize("size, mtu", [(1473, 1500), (4000, 1500), (65100, 65000), (65507, 576)])
def test_a_datagram_larger_than_the_mtu_is_reassembled(size, mtu):
    """A datagram the kernel fragmented for the TUN's MTU opens its flow with the whole payload
    once its last fragment is in; its ICMP errors quote the whole datagram's header."""
    flows = UdpFlows()
    payload = bytes(i * 7 & 0xFF for i in range(size))
    pieces = fragment(app(payload), mtu)
    assert [flows.from_tun(piece, 0.0) for piece in pieces[:-1]] == [None] * (len(pieces) - 1)
    event = flows.from_tun(pieces[-1], 0.0)
    assert isinstance(event, UdpFlowOpened) and event.first_payload == payload
    assert flows.from_tun(app(b"next"), 1.0) == UdpDatagram(flow_id=1, payload=b"next")
    error = flows.port_unreachable(1)
    assert struct.unpack_from("!HHH", error, 48) == (40000, 53, 8 + len(b"next"))


def test_fragments_that_never_complete_are_counted():
    """A first fragment (MF set) and a later fragment (offset) that make no whole datagram
    open no flow, and are counted once they time out (30 s)."""
    flows = UdpFlows()
    datagram = struct.pack("!HHHH", 40000, 53, 16, 0) + b"abcdefgh"
    for frag in (0x2000, 0x0003):
        packet = ip_header(src=addr(A), dst=addr(D), proto=17, payload_length=16, frag=frag) + datagram
        assert flows.from_tun(packet, 0.0) is None
    assert flows.expire(29.0) == [] and flows.stats.dropped_fragments == 0
    flows.expire(30.0)
    assert flows.stats.dropped_fragments == 2 and flows.stats.flows_total == 0


def test_malformed_and_foreign_packets_are_counted():
    """Bad UDP lengths and port 0 are malformed; TCP and IPv6 are not ours."""
    flows = UdpFlows()
    good = app(b"abcd")
    bad_length = good[:24] + struct.pack("!H", 100) + good[26:]
    short_length = good[:24] + struct.pack("!H", 7) + good[26:]
    truncated_ip = good[:-1]
    for packet in (bad_length, short_length, truncated_ip, b"\x45", b"", app(sport=0), app(dport=0)):
        assert flows.from_tun(packet, 0.0) is None
    assert flows.stats.dropped_malformed == 7
    assert flows.from_tun(tcp_packet(src=A, dst=D, sport=1, dport=2, flags=2), 0.0) is None
    assert flows.from_tun(b"\x60" + bytes(47), 0.0) is None
    assert flows.stats.not_ours == 2 and flows.stats.flows_total == 0


def test_udp_length_shorter_than_ip_payload_trims():
    """Bytes past the UDP length (IP padding) are not part of the payload."""
    flows = UdpFlows()
    datagram = struct.pack("!HHHH", 40000, 53, 11, 0) + b"abc" + b"PAD"
    packet = ip_header(src=addr(A), dst=addr(D), proto=17, payload_length=len(datagram)) + datagram
    assert flows.from_tun(packet, 0.0).first_payload == b"abc"


def test_ip_options_are_quoted_whole():
    """With IP options, the ICMP quote carries the whole header and the UDP header."""
    flows = UdpFlows()
    datagram = struct.pack("!HHHH", 40000, 53, 10, 0) + b"hi"
    packet = ip_header(src=addr(A), dst=addr(D), proto=17, payload_length=10,
                       options=b"\x01\x01\x01\x01") + datagram
    assert isinstance(flows.from_tun(packet, 0.0), UdpFlowOpened)
    error = flows.port_unreachable(1)
    assert error[28:] == packet[:32] and icmp_ok(error)


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_from_tun_never_raises_on_garbage(garbage):
    """Random bytes are dropped or parsed, never an exception."""
    flows = UdpFlows()
    flows.from_tun(garbage, 0.0)
    flows.from_tun(b"\x45" + garbage, 0.0)


@given(st.binary(max_size=40), st.binary(max_size=2000))
def test_from_tun_never_raises_on_corrupted_udp(noise, payload):
    """A valid UDP packet with random bytes overwritten at the front never raises."""
    packet = app(payload)
    UdpFlows().from_tun(noise + packet[len(noise):], 0.0)


@settings(max_examples=200)
@given(st.binary(max_size=3000), st.integers(1, 65535), st.integers(1, 65535))
def test_built_packets_verify_independently(payload, sport, dport):
    """to_app's packets pass the reference IPv4 and UDP checksums and carry the payload."""
    flows = UdpFlows()
    flows.from_tun(app(sport=sport, dport=dport), 0.0)
    packet = flows.to_app(1, payload)
    assert ipv4_ok(packet) and udp_ok(packet)
    f = udp_fields(packet)
    assert (f["sport"], f["dport"], f["payload"]) == (dport, sport, payload)
