"""Tests of client.icmp_echo."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.icmp_echo import (ECHO_REPLY, ECHO_REQUEST, EchoRequest, IcmpEcho,
                              encode_ip_packet_datagram, validate_echo_packet)
from client.wire.capsule import CapsuleParser, encode_datagram, parse_datagram
from tests.client.fragments import fragment
from tests.client.packets import addr, ip_header, ipv4_ok, reference_checksum, tcp_packet, udp_packet

A, D, OTHER = "10.77.0.1", "192.168.5.9", "192.168.5.10"


def icmp_packet(*, src=A, dst=D, icmp_type=8, code=0, ident=0x1234, seq=1, payload=b"ping",
                ttl=64, frag=0, bad_checksum=False) -> bytes:
    """An ICMP echo-shaped IPv4 packet checksummed by the reference RFC 1071."""
    message = bytearray(struct.pack("!BBHHH", icmp_type, code, 0, ident, seq) + payload)
    checksum = reference_checksum(bytes(message))
    struct.pack_into("!H", message, 2, checksum ^ (1 if bad_checksum else 0))
    return ip_header(src=addr(src), dst=addr(dst), proto=1, payload_length=len(message),
                     frag=frag, ttl=ttl) + bytes(message)


def icmp_ok(packet: bytes) -> bool:
    """The ICMP checksum verifies (reference RFC 1071 over the message)."""
    ihl = (packet[0] & 0x0F) * 4
    return reference_checksum(bytes(packet[ihl:])) == 0


def test_echo_request_is_parsed():
    """An echo request yields its target, client, identifier, sequence, data and TTL."""
    echo = IcmpEcho()
    request = echo.from_tun(icmp_packet(ident=7, seq=42, payload=b"abc", ttl=61))
    assert request == EchoRequest(target=IPv4Address(D), client=IPv4Address(A), ident=7, seq=42,
                                  payload=b"abc", ttl=61)
    assert echo.stats.requests == 1


@pytest.mark.parametrize("icmp_type,code", [(0, 0), (3, 3), (11, 0), (13, 0), (8, 1)])
def test_other_icmp_is_dropped(icmp_type, code):
    """Any ICMP other than type 8 code 0 is dropped and counted as another type."""
    echo = IcmpEcho()
    assert echo.from_tun(icmp_packet(icmp_type=icmp_type, code=code)) is None
    assert echo.stats.dropped_other_types == 1 and echo.stats.requests == 0


def test_bad_checksums_are_malformed():
    """A wrong ICMP checksum, a wrong IP checksum or a truncated message are malformed."""
    echo = IcmpEcho()
    good = icmp_packet()
    bad_ip = good[:10] + bytes([good[10] ^ 1]) + good[11:]
    short = ip_header(src=addr(A), dst=addr(D), proto=1, payload_length=4) + b"\x08\x00\xf7\xff"
    for packet in (icmp_packet(bad_checksum=True), bad_ip, short, good[:-1], b"\x45", b""):
        assert echo.from_tun(packet) is None
    assert echo.stats.dropped_malformed == 6


def test_fragments_and_foreign_packets_are_counted():
    """ICMP fragments count as fragments; TCP, UDP and IPv6 as not ours."""
    echo = IcmpEcho()
    assert echo.from_tun(icmp_packet(frag=0x2000)) is None
    assert echo.from_tun(tcp_packet(src=A, dst=D, sport=1, dport=2, flags=2)) is None
    assert echo.from_tun(udp_packet(src=A, dst=D, sport=1, dport=2)) is None
    assert echo.from_tun(b"\x60" + bytes(47)) is None
    stats = echo.stats
    assert (stats.dropped_fragments, stats.not_ours, stats.requests) == (1, 3, 0)


def test_a_ping_larger_than_the_mtu_is_reassembled():
    """An echo request the kernel fragmented (ping -s 3000 at MTU 1500) becomes one request
    whose packet is the whole original, ready for connect-ip."""
    echo = IcmpEcho()
    packet = icmp_packet(payload=bytes(range(256)) * 12, seq=5)
    pieces = fragment(packet, 1500)
    assert [echo.from_tun(piece, 1.0) for piece in pieces[:-1]] == [None] * (len(pieces) - 1)
    request = echo.from_tun(pieces[-1], 1.0)
    assert request.seq == 5 and request.payload == bytes(range(256)) * 12
    assert request.packet == packet and echo.stats.requests == 1


def test_reply_packet_mirrors_the_request():
    """The reply is type 0 from target to client with the same ident, seq and data, TTL 64."""
    echo = IcmpEcho()
    request = echo.from_tun(icmp_packet(ident=9, seq=3, payload=b"0123456789", ttl=5))
    reply = echo.reply_packet(request)
    assert ipv4_ok(reply) and icmp_ok(reply)
    assert (reply[8], reply[9], reply[12:16], reply[16:20]) == (64, 1, addr(D), addr(A))
    assert reply[20:22] == b"\x00\x00" and struct.unpack_from("!HH", reply, 24) == (9, 3)
    assert reply[28:] == b"0123456789"
    assert validate_echo_packet(reply, expect_type=ECHO_REPLY, target=IPv4Address(D)) == reply[20:]


def test_reply_packet_with_other_data():
    """An explicit reply payload replaces the request's data."""
    request = EchoRequest(target=IPv4Address(D), client=IPv4Address(A), ident=1, seq=1,
                          payload=b"x", ttl=64)
    reply = IcmpEcho().reply_packet(request, b"other data")
    assert reply[28:] == b"other data" and icmp_ok(reply)


def test_all_zero_reply_checksum_is_ffff():
    """An echo reply of all-zero fields and no data gets checksum 0xFFFF, not 0 (+0 is invalid)."""
    request = EchoRequest(target=IPv4Address(D), client=IPv4Address(A), ident=0, seq=0,
                          payload=b"", ttl=64)
    reply = IcmpEcho().reply_packet(request)
    assert reply[22:24] == b"\xff\xff" and icmp_ok(reply)


def test_validate_accepts_requests_to_the_target():
    """The gateway's check passes an echo request to the stream's target and returns the message."""
    packet = icmp_packet(payload=b"data")
    message = validate_echo_packet(packet, expect_type=ECHO_REQUEST, target=IPv4Address(D))
    assert message == packet[20:] and len(message) == 12


def test_validate_rejects_other_targets_and_types():
    """Requests to another address, replies where requests are expected, and junk raise ValueError."""
    with pytest.raises(ValueError):
        validate_echo_packet(icmp_packet(dst=OTHER), expect_type=ECHO_REQUEST, target=IPv4Address(D))
    with pytest.raises(ValueError):
        validate_echo_packet(icmp_packet(icmp_type=0), expect_type=ECHO_REQUEST, target=None)
    with pytest.raises(ValueError):
        validate_echo_packet(icmp_packet(src=OTHER, dst=A, icmp_type=0), expect_type=ECHO_REPLY,
                             target=IPv4Address(D))
    with pytest.raises(ValueError):
        validate_echo_packet(icmp_packet(bad_checksum=True), expect_type=ECHO_REQUEST, target=None)
    with pytest.raises(ValueError):
        validate_echo_packet(b"junk", expect_type=ECHO_REQUEST, target=None)
    with pytest.raises(ValueError):
        validate_echo_packet(icmp_packet(), expect_type=3, target=None)


def test_validate_without_target_checks_only_the_message():
    """With target None any source or destination passes."""
    packet = icmp_packet(src=OTHER, dst=A, icmp_type=0)
    assert validate_echo_packet(packet, expect_type=ECHO_REPLY, target=None) == packet[20:]


def test_ip_packet_datagram_round_trip():
    """A whole IP packet travels as a context-0 DATAGRAM capsule and comes back unchanged."""
    packet = icmp_packet(payload=bytes(32))
    capsule = encode_ip_packet_datagram(packet)
    assert capsule == encode_datagram(packet) and capsule[:3] == bytes([0x00, 0x3D, 0x00])
    (parsed,) = CapsuleParser().feed(capsule)
    assert parse_datagram(parsed.value) == (0, packet)


@settings(max_examples=500)
@given(st.binary(max_size=100))
def test_from_tun_never_raises_on_garbage(garbage):
    """Random bytes are dropped or parsed, never an exception."""
    echo = IcmpEcho()
    echo.from_tun(garbage)
    echo.from_tun(b"\x45" + garbage)


@given(st.binary(max_size=30), st.binary(max_size=200))
def test_validate_raises_only_value_error(noise, payload):
    """A corrupted echo packet either validates or raises ValueError."""
    packet = icmp_packet(payload=payload)
    try:
        validate_echo_packet(noise + packet[len(noise):], expect_type=ECHO_REQUEST, target=None)
    except ValueError:
        pass


@settings(max_examples=200)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=2000))
def test_reply_round_trip_verifies_independently(ident, seq, payload):
    """Request -> reply keeps ident/seq/data and passes the reference checksums."""
    echo = IcmpEcho()
    request = echo.from_tun(icmp_packet(ident=ident, seq=seq, payload=payload))
    assert request is not None
    reply = echo.reply_packet(request)
    assert ipv4_ok(reply) and icmp_ok(reply)
    message = validate_echo_packet(reply, expect_type=ECHO_REPLY, target=IPv4Address(D))
    assert struct.unpack_from("!HH", message, 4) == (ident, seq) and message[8:] == payload
