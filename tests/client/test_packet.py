"""Tests of client.packet."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client import packet as pk
from tests.client.packets import (ACK, FIN, PSH, RST, SYN, addr, fields, ip_header, ipv4_ok,
                                  reference_checksum, tcp_ok, tcp_packet, udp_packet)

addresses = st.binary(min_size=4, max_size=4)
ports = st.integers(min_value=0, max_value=65535)


def syn(**kw) -> bytes:
    args = dict(src="10.77.0.2", dst="10.1.2.3", sport=40000, dport=80, flags=SYN, seq=123456)
    args.update(kw)
    return tcp_packet(**args)


def test_parse_tcp_reads_every_field():
    """parse_tcp returns addresses, ports, seq, ack, flags and lengths as built."""
    packet = tcp_packet(src="1.2.3.4", dst="5.6.7.8", sport=1, dport=2, flags=PSH | ACK,
                        seq=7, ack=9, payload=b"hello", tcp_options=b"\x01\x01\x01\x01")
    tcp = pk.parse_tcp(packet)
    assert (tcp.source, tcp.destination) == (addr("1.2.3.4"), addr("5.6.7.8"))
    assert (tcp.source_port, tcp.destination_port, tcp.seq, tcp.ack) == (1, 2, 7, 9)
    assert tcp.flags == PSH | ACK
    assert (tcp.ip_header_length, tcp.header_length, tcp.payload_length) == (20, 24, 5)


def test_ip_field_helpers():
    """The IPv4 helpers read version, header length, total length, protocol and addresses."""
    packet = syn(ip_options=b"\x01" * 8, payload=b"xy")
    assert pk.ip_version(packet) == 4
    assert pk.ipv4_header_length(packet) == 28
    assert pk.ipv4_total_length(packet) == len(packet)
    assert pk.ip_protocol(packet) == 6
    assert pk.ip_source(memoryview(packet)) == addr("10.77.0.2")
    assert pk.ip_destination(bytearray(packet)) == addr("10.1.2.3")
    assert not pk.is_fragment(packet)


@pytest.mark.parametrize("frag", [0x2000, 0x0001, 0x2010])
def test_fragments_are_detected(frag):
    """More-fragments or a non-zero offset marks a fragment, which parse_tcp rejects."""
    packet = syn(frag=frag)
    assert pk.is_fragment(packet)
    with pytest.raises(pk.MalformedPacket):
        pk.parse_tcp(packet)


def test_ip_options_are_accepted():
    """A TCP packet with IP options parses and rewrites with valid checksums."""
    packet = syn(ip_options=b"\x94\x04\x00\x00", payload=b"data")
    out = pk.rewrite_tcp(packet, source=addr("9.9.9.9"), destination=addr("8.8.8.8"),
                         source_port=5, destination_port=6)
    assert pk.parse_tcp(out).ip_header_length == 24
    assert ipv4_ok(out) and tcp_ok(out)
    assert fields(out)["payload"] == b"data"


def test_every_truncation_is_malformed():
    """A TCP packet cut at any length raises MalformedPacket, never another error."""
    packet = syn(payload=b"abc", ip_options=b"\x01" * 4, tcp_options=b"\x01" * 4)
    for cut in range(len(packet)):
        with pytest.raises(pk.MalformedPacket):
            pk.parse_tcp(packet[:cut])
        # the total length field now lies about the buffer too
        with pytest.raises(pk.MalformedPacket):
            pk.tcp_checksum(packet[:cut])


def test_bad_ihl_and_lying_lengths_are_malformed():
    """IHL below 5, IHL past the packet, total length too big or too small are malformed."""
    packet = bytearray(syn())
    for mutate in (lambda b: b.__setitem__(0, 0x44), lambda b: b.__setitem__(0, 0x4F),
                   lambda b: struct.pack_into("!H", b, 2, len(b) + 1),
                   lambda b: struct.pack_into("!H", b, 2, 19),
                   lambda b: struct.pack_into("!H", b, 2, 30),
                   lambda b: b.__setitem__(32, 0x40)):       # TCP data offset 4
        bad = bytearray(packet)
        mutate(bad)
        with pytest.raises(pk.MalformedPacket):
            pk.parse_tcp(bad)


def test_non_ipv4_and_non_tcp_are_rejected():
    """IPv6 and UDP packets are not TCP/IPv4 for parse_tcp."""
    with pytest.raises(pk.MalformedPacket):
        pk.parse_tcp(b"\x60" + bytes(59))
    with pytest.raises(pk.MalformedPacket):
        pk.parse_tcp(udp_packet(src="1.1.1.1", dst="2.2.2.2", sport=1, dport=2))
    with pytest.raises(pk.MalformedPacket):
        pk.ip_version(b"")


@given(st.binary(max_size=2000))
def test_internet_checksum_matches_reference(data):
    """internet_checksum agrees with the word-by-word RFC 1071 reference on any bytes."""
    assert pk.internet_checksum(data) == reference_checksum(data)


@settings(max_examples=150, deadline=None)
@given(src=addresses, dst=addresses, sport=ports, dport=ports,
       new_src=addresses, new_dst=addresses, new_sport=ports, new_dport=ports,
       size=st.integers(min_value=0, max_value=65000 - 40), fill=st.binary(min_size=1, max_size=64),
       flags=st.integers(min_value=0, max_value=0x3F), seq=st.integers(0, 2**32 - 1),
       ip_options=st.sampled_from([b"", b"\x01" * 4, b"\x01" * 40]))
def test_incremental_rewrite_equals_full_recompute(src, dst, sport, dport, new_src, new_dst,
                                                     new_sport, new_dport, size, fill, flags, seq,
                                                     ip_options):
    """After rewrite_tcp both checksums equal a full recomputation, for any tuple, options and size."""
    payload = (fill * (size // len(fill) + 1))[:size]
    packet = tcp_packet(src=src, dst=dst, sport=sport, dport=dport, flags=flags, seq=seq,
                        payload=payload, ip_options=ip_options)
    out = pk.rewrite_tcp(packet, source=new_src, destination=new_dst, source_port=new_sport,
                         destination_port=new_dport)
    assert struct.unpack_from("!H", out, 10)[0] == pk.ipv4_header_checksum(out)
    ihl = 20 + len(ip_options)
    assert struct.unpack_from("!H", out, ihl + 16)[0] == pk.tcp_checksum(out)
    assert ipv4_ok(out) and tcp_ok(out)
    f = fields(out)
    assert (bytes(out[12:16]), bytes(out[16:20]), f["sport"], f["dport"]) == \
        (new_src, new_dst, new_sport, new_dport)
    assert f["payload"] == payload and f["seq"] == seq


@given(old=st.binary(min_size=8, max_size=8), new=st.binary(min_size=8, max_size=8),
       rest=st.binary(min_size=0, max_size=64).filter(lambda b: len(b) % 2 == 0))
def test_checksum_update_is_rfc1624(old, new, rest):
    """checksum_update gives the checksum of the changed data, as a full RFC 1071 computation does."""
    before = pk.internet_checksum(old + rest)
    after = pk.checksum_update(before, old, new)
    assert after == reference_checksum(new + rest) % 0xFFFF     # 0xFFFF only for all-zero data


def test_rewrite_then_back_restores_the_packet():
    """Rewriting a packet to a new tuple and back yields the original bytes."""
    packet = syn(payload=b"x" * 1001, flags=PSH | ACK)
    there = pk.rewrite_tcp(packet, source=addr("10.77.0.3"), destination=addr("10.77.0.1"),
                           source_port=10000, destination_port=4321)
    back = pk.rewrite_tcp(there, source=addr("10.77.0.2"), destination=addr("10.1.2.3"),
                          source_port=40000, destination_port=80)
    assert bytes(back) == packet


def test_rewrite_drops_bytes_past_total_length():
    """Trailing bytes beyond the IPv4 total length are not part of the rewritten packet."""
    packet = syn(payload=b"abc")
    out = pk.rewrite_tcp(packet + b"\xff" * 7, source=addr("1.1.1.1"), destination=addr("2.2.2.2"),
                         source_port=1, destination_port=2)
    assert len(out) == len(packet) and tcp_ok(out)


def test_rst_answers_a_syn():
    """build_tcp_rst: from D:dport to A:sport, seq 0, ack = seq + 1, RST|ACK, valid checksums."""
    rst = pk.build_tcp_rst(syn(seq=0xFFFFFFFF))
    f = fields(rst)
    assert (f["src"], f["dst"], f["sport"], f["dport"]) == ("10.1.2.3", "10.77.0.2", 80, 40000)
    assert (f["seq"], f["ack"], f["flags"]) == (0, 0, RST | ACK)     # seq + 1 wraps
    assert len(rst) == 40 and rst[8] == 64 and ipv4_ok(rst) and tcp_ok(rst)
    assert fields(pk.build_tcp_rst(syn(seq=41)))["ack"] == 42


def test_rst_for_segments_with_data_or_ack():
    """The RST acks the whole segment length, or takes its seq from an ACK (RFC 9293)."""
    f = fields(pk.build_tcp_rst(syn(flags=SYN | FIN, seq=10, payload=b"12345")))
    assert (f["ack"], f["flags"]) == (17, RST | ACK)
    f = fields(pk.build_tcp_rst(syn(flags=ACK, seq=10, ack=777)))
    assert (f["seq"], f["flags"]) == (777, RST)


@pytest.mark.parametrize("code", [0, 1, 3, 13])
def test_icmp_unreachable_quotes_the_original(code):
    """build_icmp_unreachable: type 3/code, D -> A, TTL 64, quotes IP header + 8 bytes, checksums valid."""
    original = syn(payload=b"payload-longer-than-eight", ip_options=b"\x01" * 4)
    icmp = pk.build_icmp_unreachable(original, code)
    assert icmp[9] == 1 and icmp[8] == 64 and ipv4_ok(icmp)
    assert (bytes(icmp[12:16]), bytes(icmp[16:20])) == (addr("10.1.2.3"), addr("10.77.0.2"))
    assert struct.unpack_from("!H", icmp, 2)[0] == len(icmp)
    message = icmp[20:]
    assert (message[0], message[1]) == (3, code)
    assert reference_checksum(message) == 0
    assert message[8:] == original[:24 + 8]


def test_icmp_unreachable_rejects_bad_code_and_garbage():
    """An out-of-range code is a ValueError; a malformed original is MalformedPacket."""
    with pytest.raises(ValueError):
        pk.build_icmp_unreachable(syn(), 16)
    with pytest.raises(pk.MalformedPacket):
        pk.build_icmp_unreachable(b"\x45" + bytes(10), 1)
    with pytest.raises(pk.MalformedPacket):
        pk.build_tcp_rst(ip_header(src=addr("1.1.1.1"), dst=addr("2.2.2.2"), proto=6, payload_length=0))


@given(st.binary(max_size=120))
def test_parsers_raise_only_malformed(data):
    """On arbitrary bytes the parsers either succeed or raise MalformedPacket."""
    for parse in (pk.parse_tcp, pk.ipv4_header_length, pk.is_fragment, pk.tcp_checksum,
                  pk.build_tcp_rst, lambda b: pk.build_icmp_unreachable(b, 1)):
        try:
            parse(data)
        except pk.MalformedPacket:
            pass
