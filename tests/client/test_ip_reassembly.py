"""Tests of client.ip_reassembly."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from client.ip_reassembly import Reassembler
from tests.client.fragments import fragment
from tests.client.packets import ipv4_ok, udp_packet

A, D = "10.77.0.1", "192.168.5.9"


def big(size: int = 4000, *, src: str = A, sport: int = 40000) -> bytes:
    """A UDP/IPv4 packet with a ``size``-byte patterned payload."""
    return udp_packet(src=src, dst=D, sport=sport, dport=7007,
                      payload=bytes(i * 7 & 0xFF for i in range(size)))


def with_ident(packet: bytes, ident: int) -> bytes:
    """The packet, whole, with another IPv4 identification."""
    return fragment(packet, 1 << 17, ident=ident)[0]


def push_all(reassembler: Reassembler, pieces, now: float = 0.0) -> list[bytes]:
    """What pushing each fragment returned, the Nones left out."""
    return [whole for piece in pieces if (whole := reassembler.push(piece, now)) is not None]


def test_fragments_in_order_give_back_the_packet():
    """The fragments of a 4000-byte datagram at MTU 1500 join into the original packet, byte for byte."""
    packet = big()
    pieces = fragment(packet, 1500)
    reassembler = Reassembler()
    assert len(pieces) == 3 and push_all(reassembler, pieces) == [packet]
    assert ipv4_ok(packet) and reassembler.held == 0 and reassembler.dropped == 0


def test_fragments_out_of_order_and_repeated():
    """Order does not matter and a repeated fragment is harmless."""
    packet = big(9000)
    pieces = fragment(packet, 1500)
    shuffled = pieces[3:] + pieces[:1] + pieces[1:3] + pieces[:1]
    assert push_all(Reassembler(), shuffled) == [packet]


def test_interleaved_datagrams_are_kept_apart():
    """Datagrams of different sources and identifications, fragments interleaved, each come out whole."""
    first, second = big(3000), big(3100, src="10.77.0.2", sport=1234)
    a = fragment(first, 1000, ident=7)
    b = fragment(second, 1000, ident=7)
    c = fragment(first, 1000, ident=8)
    mixed = [p for trio in zip(a, b, c) for p in trio]
    got = push_all(Reassembler(), mixed)
    assert sorted(got) == sorted([with_ident(first, 7), with_ident(second, 7), with_ident(first, 8)])


def test_overlapping_fragment_drops_the_datagram():
    """A fragment overlapping another drops the whole datagram; a fresh copy later is reassembled."""
    packet = big()
    pieces = fragment(packet, 1500)
    shifted = bytearray(pieces[1])
    struct.pack_into("!H", shifted, 6, 0x2000 | (struct.unpack_from("!H", shifted, 6)[0] & 0x1FFF) - 1)
    reassembler = Reassembler()
    assert push_all(reassembler, [pieces[0], bytes(shifted), pieces[1], pieces[2]]) == []
    assert reassembler.dropped >= 2
    assert push_all(reassembler, pieces) == [packet]


def test_ragged_middle_fragment_and_too_long_datagram_are_dropped():
    """Only the last fragment may have a length that is not a multiple of 8, and no datagram
    may end past what an IPv4 packet can hold."""
    reassembler = Reassembler()
    pieces = fragment(big(), 1500)
    ragged = pieces[0][:-1]
    ragged = ragged[:2] + struct.pack("!H", len(ragged)) + ragged[4:]
    assert reassembler.push(ragged, 0.0) is None
    beyond = bytearray(pieces[2])
    struct.pack_into("!H", beyond, 6, 65512 // 8)
    assert reassembler.push(bytes(beyond), 0.0) is None
    assert reassembler.dropped == 2 and reassembler.held == 0


def test_incomplete_datagrams_time_out():
    """A datagram still incomplete ``timeout`` seconds after its first fragment is dropped."""
    pieces = fragment(big(), 1500)
    reassembler = Reassembler(timeout=30.0)
    push_all(reassembler, pieces[:2], now=100.0)
    assert reassembler.push(pieces[2], 130.0) is None
    assert reassembler.dropped == 2 and reassembler.held == len(pieces[2]) - 20


def test_bounded_in_datagrams_and_bytes():
    """Beyond max_datagrams or max_bytes the oldest datagram in progress makes room."""
    reassembler = Reassembler(max_datagrams=2)
    heads = [fragment(big(), 1500, ident=i) for i in range(3)]
    for pieces in heads:
        reassembler.push(pieces[0], 0.0)
    assert push_all(reassembler, heads[0][1:]) == []             # the first was evicted
    assert push_all(reassembler, heads[2][1:]) == [with_ident(big(), 2)]
    small = Reassembler(max_bytes=5000)
    pieces = fragment(big(), 1500, ident=1)
    other = fragment(big(), 1500, ident=2)
    push_all(small, pieces[:2] + other[:2])
    assert small.held <= 5000
    assert push_all(small, other[2:]) == [with_ident(big(), 2)]


@settings(max_examples=200)
@given(st.integers(0, 65507), st.integers(576, 9000), st.randoms(use_true_random=False))
def test_any_fragmentation_in_any_order_reassembles(size, mtu, rnd):
    """Whatever the payload size, MTU and arrival order, the original packet comes back once."""
    packet = udp_packet(src=A, dst=D, sport=1, dport=2, payload=bytes(size % 251 for _ in range(size)))
    pieces = fragment(packet, mtu)
    rnd.shuffle(pieces)
    reassembler = Reassembler()
    assert push_all(reassembler, pieces) == [packet] and reassembler.held == 0
