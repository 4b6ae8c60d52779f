"""Tests of client.ipv6_block: the ICMPv6 refusal of IPv6 while a full tunnel blocks it."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.ipv6_block import IPV6_MIN_MTU, Ipv6Refusal, icmpv6_prohibited
from tests.client.packets import SYN, reference_checksum, tcp_packet

APP = "fd00:77::2"
SERVER = "2001:db8::80"
TCP, UDP, ICMPV6, HOP_BY_HOP, DEST_OPTIONS, FRAGMENT, NO_NEXT = 6, 17, 58, 0, 60, 44, 59


def ipv6(payload: bytes, *, next_header: int = TCP, src: str = APP, dst: str = SERVER,
         payload_length: int | None = None) -> bytes:
    """An IPv6 packet, built here independently of the code under test."""
    length = len(payload) if payload_length is None else payload_length
    return struct.pack("!IHBB16s16s", 6 << 28, length, next_header, 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + payload


def syn6(**kw) -> bytes:
    """An IPv6 packet carrying a TCP SYN (its TCP checksum does not matter here)."""
    return ipv6(struct.pack("!HHIIBBHHH", 40000, 443, 1000, 0, 5 << 4, SYN, 65535, 0, 0), **kw)


def extension(next_header: int, body: bytes = bytes(6)) -> bytes:
    """A hop-by-hop or destination options header (8 bytes per unit)."""
    return bytes([next_header, (2 + len(body)) // 8 - 1]) + body


def icmpv6_ok(reply: bytes) -> bool:
    """The ICMPv6 checksum verifies over the IPv6 pseudo-header (the reference sum is 0)."""
    message = reply[40:]
    pseudo = reply[8:24] + reply[24:40] + struct.pack("!I3xB", len(message), ICMPV6)
    return reference_checksum(pseudo + message) == 0


def test_a_syn_is_answered_with_administratively_prohibited_from_its_destination():
    """The answer is ICMPv6 type 1 code 1 from the packet's destination to its source,
    hop limit 64, quoting the whole packet, with a checksum that verifies."""
    packet = syn6()
    reply = icmpv6_prohibited(packet)
    version, length, next_header, hop_limit = struct.unpack_from("!IHBB", reply)
    assert (version >> 28, next_header, hop_limit, length) == (6, ICMPV6, 64, len(reply) - 40)
    assert ipaddress.IPv6Address(reply[8:24]) == ipaddress.IPv6Address(SERVER)
    assert ipaddress.IPv6Address(reply[24:40]) == ipaddress.IPv6Address(APP)
    assert (reply[40], reply[41], reply[44:48]) == (1, 1, bytes(4))
    assert reply[48:] == packet and icmpv6_ok(reply)


def test_a_large_packet_is_quoted_as_far_as_fits_in_1280_bytes():
    """A 9000-byte packet is quoted from its start; the answer is exactly 1280 bytes."""
    packet = ipv6(bytes(range(256)) * 35, next_header=UDP)
    reply = icmpv6_prohibited(packet)
    assert len(reply) == IPV6_MIN_MTU and reply[48:] == packet[:IPV6_MIN_MTU - 48] and icmpv6_ok(reply)


def test_bytes_past_the_payload_length_are_not_quoted():
    """Trailing bytes after the packet proper stay out of the quote."""
    packet = syn6()
    reply = icmpv6_prohibited(packet + b"trailing junk")
    assert reply[48:] == packet and icmpv6_ok(reply)


def test_a_jumbogram_and_a_lying_payload_length_are_quoted_as_received():
    """Payload length 0 (a jumbogram) or larger than the buffer: what was read is quoted,
    within 1280 bytes, and nothing raises."""
    jumbo = ipv6(extension(TCP, bytes([0xC2, 4]) + struct.pack("!I", 70000)) + bytes(3000),
                 next_header=HOP_BY_HOP, payload_length=0)
    lying = syn6(payload_length=65535)
    for packet, quoted in ((jumbo, IPV6_MIN_MTU - 48), (lying, len(lying))):
        reply = icmpv6_prohibited(packet)
        assert reply[48:] == packet[:quoted] and icmpv6_ok(reply)


@pytest.mark.parametrize("icmp_type", [1, 2, 3, 4, 127])
def test_icmpv6_errors_are_never_answered(icmp_type):
    """An ICMPv6 error message (type below 128) gets no answer, also behind extension headers."""
    message = bytes([icmp_type, 0, 0, 0]) + bytes(4) + syn6()[:48]
    assert icmpv6_prohibited(ipv6(message, next_header=ICMPV6)) is None
    chained = extension(DEST_OPTIONS) + extension(ICMPV6) + message
    assert icmpv6_prohibited(ipv6(chained, next_header=HOP_BY_HOP)) is None


def test_icmpv6_informational_messages_and_extension_headers_are_answered():
    """An echo request (type 128) is answered; so is TCP behind hop-by-hop, destination
    options and a first fragment, and a packet with no next header."""
    echo = ipv6(bytes([128, 0, 0, 0, 0, 1, 0, 1]), next_header=ICMPV6)
    first_fragment = ipv6(bytes([TCP, 0, 0, 1, 0, 0, 0, 7]) + bytes(20), next_header=FRAGMENT)
    chained = ipv6(extension(DEST_OPTIONS) + extension(TCP) + bytes(20), next_header=HOP_BY_HOP)
    for packet in (echo, first_fragment, chained, ipv6(b"", next_header=NO_NEXT)):
        reply = icmpv6_prohibited(packet)
        assert reply is not None and icmpv6_ok(reply)


@pytest.mark.parametrize("packet", [
    pytest.param(syn6(src="::"), id="unspecified-source"),
    pytest.param(syn6(src="ff02::1"), id="multicast-source"),
    pytest.param(syn6(dst="ff02::2"), id="multicast-destination"),
    pytest.param(ipv6(bytes([TCP, 0, 0, 0x08, 0, 0, 0, 7]) + bytes(20), next_header=FRAGMENT),
                 id="non-first-fragment"),
    pytest.param(ipv6(bytes([TCP, 3]) + bytes(6), next_header=HOP_BY_HOP), id="cut-short-chain"),
    pytest.param(ipv6(b"", next_header=HOP_BY_HOP), id="no-extension-header"),
    pytest.param(ipv6(bytes([TCP, 0]), next_header=FRAGMENT), id="cut-fragment-header"),
    pytest.param(ipv6(bytes([ICMPV6]) + bytes(7), next_header=HOP_BY_HOP), id="no-icmpv6-type"),
    pytest.param(syn6()[:39], id="truncated-header"),
    pytest.param(tcp_packet(src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2, flags=SYN), id="ipv4"),
    pytest.param(b"", id="empty"),
])
def test_what_must_not_be_answered_gets_none(packet):
    """Unspecified or multicast addresses, non-first fragments, headers cut short and
    anything that is not IPv6 get no answer (and raise nothing)."""
    assert icmpv6_prohibited(packet) is None


@given(st.binary(max_size=200), st.booleans())
def test_any_bytes_give_none_or_a_valid_answer(data, as_ipv6):
    """On arbitrary bytes (made to look like IPv6 or not) the builder never raises, and
    what it answers is a checksummed ICMPv6 message within 1280 bytes."""
    packet = bytes([0x60]) + data[1:] if as_ipv6 and data else data
    reply = icmpv6_prohibited(packet)
    assert reply is None or (len(reply) <= IPV6_MIN_MTU and icmpv6_ok(reply))


def test_answers_are_rate_limited_to_a_burst_then_the_rate():
    """50 answers at once, then 100 a second: a flood of 10 000 packets a second for ten
    seconds gets at most 50 + 1000 answers; unanswerable packets use no tokens."""
    refusal, packet = Ipv6Refusal(rate=100.0, burst=50), syn6()
    assert sum(refusal.answer(packet, 0.0) is not None for _ in range(60)) == 50
    assert refusal.answer(syn6(src="::"), 0.0) is None and refusal.limited == 10
    assert refusal.answer(packet, 0.01) is not None and refusal.answer(packet, 0.01) is None
    answered = sum(refusal.answer(packet, 1.0 + k / 10_000) is not None for k in range(100_000))
    assert 1000 <= answered <= 1001 + 50
    assert refusal.answered == 51 + answered


def test_a_rate_limit_without_room_is_refused():
    """A rate or burst that allows nothing is a ValueError."""
    with pytest.raises(ValueError):
        Ipv6Refusal(rate=0.0)
    with pytest.raises(ValueError):
        Ipv6Refusal(burst=0)
