"""Tests of client.wire.capsule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.wire.capsule import (DATAGRAM, MAX_CAPSULE, UNREACHABLE, Capsule, CapsuleError,
                                 CapsuleParser, NeedMore, decode_varint, encode_capsule,
                                 encode_datagram, encode_varint, parse_datagram)
from client.wire.errors import ProtocolViolation

varints = st.integers(min_value=0, max_value=2**62 - 1)
capsules = st.lists(st.tuples(varints, st.binary(max_size=300)), max_size=8)


def non_minimal(n: int, size: int) -> bytes:
    """``n`` encoded as a ``size``-byte varint (RFC 9000 16, written out independently)."""
    prefix = {1: 0, 2: 1, 4: 2, 8: 3}[size]
    return (n | prefix << (8 * size - 2)).to_bytes(size, "big")


def test_varint_examples_from_rfc9000():
    """The RFC 9000 appendix A.1 examples encode and decode."""
    assert encode_varint(37) == bytes.fromhex("25")
    assert encode_varint(15293) == bytes.fromhex("7bbd")
    assert encode_varint(494878333) == bytes.fromhex("9d7f3e7d")
    assert encode_varint(151288809941952652) == bytes.fromhex("c2197c5eff14e88c")
    assert decode_varint(bytes.fromhex("4025"), 0) == (37, 2)


@pytest.mark.parametrize("n,size", [(0, 1), (63, 1), (64, 2), (16383, 2), (16384, 4),
                                    (2**30 - 1, 4), (2**30, 8), (2**62 - 1, 8)])
def test_varint_is_minimal_at_the_boundaries(n, size):
    """Each value takes the smallest of the four sizes."""
    assert len(encode_varint(n)) == size


@pytest.mark.parametrize("n", [-1, 2**62, 2**64])
def test_varint_out_of_range_is_rejected(n):
    """Negative values and values of 2**62 or more raise ValueError."""
    with pytest.raises(ValueError):
        encode_varint(n)


@given(varints, st.binary(max_size=4), st.binary(max_size=4))
def test_varint_round_trip(n, before, after):
    """decode(encode(n)) gives n and the offset just past the varint, at any offset."""
    buf = before + encode_varint(n) + after
    assert decode_varint(buf, len(before)) == (n, len(before) + len(encode_varint(n)))


@given(varints, st.sampled_from([1, 2, 4, 8]))
def test_varint_non_minimal_encodings_decode(n, size):
    """Any size wide enough decodes to the same value (RFC 9000 allows non-minimal forms)."""
    if n >= 1 << (8 * size - 2):
        size = 8
    assert decode_varint(non_minimal(n, size), 0) == (n, size)


@given(varints)
def test_truncated_varint_needs_more(n):
    """Every proper prefix of an encoding raises NeedMore."""
    data = encode_varint(n)
    for cut in range(len(data)):
        with pytest.raises(NeedMore):
            decode_varint(data[:cut], 0)


def test_datagram_examples_from_the_reference():
    """DATAGRAM capsules of 60- and 1400-byte packets start 00 3d 00 and 00 45 79 00."""
    packet60, packet1400 = bytes(range(60)), bytes(1400)
    assert encode_datagram(packet60) == bytes.fromhex("003d00") + packet60
    assert encode_datagram(packet1400) == bytes.fromhex("00457900") + packet1400
    assert encode_capsule(DATAGRAM, b"\x00" + packet60) == encode_datagram(packet60)


def test_datagram_with_context_id():
    """A non-zero context id is encoded as a varint before the payload and parsed back."""
    capsule = encode_datagram(b"hi", context_id=100)
    assert capsule == bytes.fromhex("0004") + encode_varint(100) + b"hi"
    (parsed,) = CapsuleParser().feed(capsule)
    assert parse_datagram(parsed.value) == (100, b"hi")


def test_parse_datagram_without_context_is_malformed():
    """An empty DATAGRAM value, or a truncated context id, raises CapsuleError."""
    for value in (b"", b"\x40", b"\xc0\x00"):
        with pytest.raises(CapsuleError):
            parse_datagram(value)


def test_parser_byte_by_byte():
    """Capsules fed one byte at a time come out whole, in order, once each."""
    stream = (encode_datagram(b"a" * 60) + encode_capsule(0x1234, b"skip me")
              + encode_datagram(bytes(1400)) + encode_capsule(UNREACHABLE, b"\x03"))
    parser = CapsuleParser()
    out = []
    for i in range(len(stream)):
        out += parser.feed(stream[i:i + 1])
    assert [c.type for c in out] == [DATAGRAM, 0x1234, DATAGRAM, UNREACHABLE]
    assert out[1] == Capsule(type=0x1234, value=b"skip me")
    assert parse_datagram(out[2].value) == (0, bytes(1400))
    assert parser.buffered == 0
    parser.finish()


def test_parser_accepts_a_maximal_udp_capsule():
    """A DATAGRAM carrying 65527 bytes (the connect-udp maximum) fits the default bound."""
    capsule = encode_datagram(b"\x55" * 65527)
    parser = CapsuleParser()
    got = parser.feed(capsule[:1000]) + parser.feed(capsule[1000:])
    assert parse_datagram(got[0].value) == (0, b"\x55" * 65527)


def test_parser_rejects_an_oversized_declared_length_before_buffering():
    """A header declaring more than max_capsule raises CapsuleError at once, and again later."""
    parser = CapsuleParser()
    header = encode_varint(DATAGRAM) + encode_varint(MAX_CAPSULE + 1)
    with pytest.raises(CapsuleError) as info:
        parser.feed(header)
    assert isinstance(info.value, ProtocolViolation)
    assert parser.buffered == 0
    with pytest.raises(CapsuleError):
        parser.feed(b"\x00\x00")


def test_parser_bound_is_configurable():
    """With max_capsule=10 an 11-byte DATAGRAM is refused and a 10-byte capsule accepted."""
    assert CapsuleParser(max_capsule=10).feed(encode_capsule(5, bytes(10))) == [Capsule(5, bytes(10))]
    with pytest.raises(CapsuleError):
        CapsuleParser(max_capsule=10).feed(encode_capsule(DATAGRAM, bytes(11))[:3])


@pytest.mark.parametrize("chunk", [1, 7, 1000, 300_000])
def test_oversized_capsules_of_other_types_are_skipped_unbuffered(chunk):
    """RFC 9297: a capsule of an unknown type is skipped whatever its length. One longer than
    max_capsule is passed over as it arrives (never buffered, never returned); the capsules
    around it parse, fed in any chunks."""
    data = (encode_datagram(b"before") + encode_capsule(0x2A, bytes(200_000))
            + encode_capsule(UNREACHABLE, b"\x03" * 70_000) + encode_datagram(b"after"))
    parser = CapsuleParser()
    got = []
    for at in range(0, len(data), chunk):
        got += parser.feed(data[at:at + chunk])
        assert parser.buffered <= MAX_CAPSULE + 16
    assert got == [Capsule(DATAGRAM, b"\x00before"), Capsule(DATAGRAM, b"\x00after")]
    parser.finish()
    cut = CapsuleParser()
    cut.feed(encode_capsule(0x2A, bytes(200_000))[:100_000])
    with pytest.raises(CapsuleError):
        cut.finish()


def test_parser_buffers_at_most_one_capsule():
    """Partial input is held only up to one capsule's header plus value."""
    parser = CapsuleParser(max_capsule=100)
    assert parser.feed(encode_capsule(1, bytes(100))[:50]) == []
    assert parser.buffered == 50


def test_finish_inside_a_capsule_is_malformed():
    """A stream that ends mid-capsule is malformed; one that ends between capsules is not."""
    parser = CapsuleParser()
    parser.feed(encode_datagram(b"abc")[:-1])
    with pytest.raises(CapsuleError):
        parser.finish()
    CapsuleParser().finish()


def test_parser_accepts_memoryview_and_bytearray():
    """Input may be any bytes-like object."""
    data = encode_datagram(b"xyz")
    assert CapsuleParser().feed(memoryview(data)) == CapsuleParser().feed(bytearray(data))


@settings(max_examples=200)
@given(capsules, st.data())
def test_parser_random_split_points(items, data):
    """Any split of a capsule stream into chunks yields exactly the encoded capsules."""
    stream = b"".join(encode_capsule(t, v) for t, v in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    parser = CapsuleParser()
    out = []
    for start, end in zip([0] + cuts, cuts + [len(stream)]):
        out += parser.feed(stream[start:end])
    assert out == [Capsule(type=t, value=v) for t, v in items]
    parser.finish()


@settings(max_examples=200)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_parser_on_garbage_raises_only_capsule_error(garbage, chunk):
    """Random bytes either parse or raise CapsuleError, and never buffer past the bound."""
    parser = CapsuleParser(max_capsule=64)
    try:
        for i in range(0, len(garbage), chunk):
            parser.feed(garbage[i:i + chunk])
            assert parser.buffered <= 64 + 16
    except CapsuleError:
        pass
