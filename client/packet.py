"""IPv4, TCP, UDP and ICMP packet helpers for the client's packet paths (IPv4 only).

Everything here is sans-IO and works on ``bytes``, ``bytearray`` or
``memoryview``. Malformed input raises ``MalformedPacket`` and nothing else.

Checksums rest on one identity: because 2**16 = 1 (mod 0xFFFF), the ones'
complement sum of a run of 16-bit big-endian words equals the run read as one
big-endian integer, modulo 0xFFFF. So a 64 KB segment is summed by one
``int.from_bytes`` and one ``%`` in C, and the RFC 1624 incremental update
(eqn. 3, ``HC' = ~(~HC + ~m + m')``) becomes ``(HC + sum(m) - sum(m')) % 0xFFFF``,
which yields exactly what a full recomputation would (never the -0 form 0xFFFF).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

ICMP_DEST_UNREACHABLE = 3

#: Dotted-quad text of an ``IPv4Address``, cached: ``ipaddress``'s own ``str`` is slow,
#: and a busy tunnel names the same few servers thousands of times a second.
address_text = functools.lru_cache(maxsize=4096)(str)

_IP_FIELDS = struct.Struct("!BxHHHBBH")         # ver/ihl, total, id, frag, ttl, proto, checksum
_TCP_FIELDS = struct.Struct("!HHIIBB")          # sport, dport, seq, ack, offset, flags
_PSEUDO = struct.Struct("!4s4sxBH")             # src, dst, zero, proto, TCP length
_CHECKSUM = struct.Struct("!H")
_UDP_HEADER = struct.Struct("!HHHH")            # sport, dport, length, checksum
_ICMP_HEADER = struct.Struct("!BBH4s")          # type, code, checksum, rest of header


class MalformedPacket(ValueError):
    """The bytes are not a well-formed packet of the kind asked for."""


# -- IPv4 header -----------------------------------------------------------------------
def ipv4_header_length(packet) -> int:
    """Validate the IPv4 header and return its length in bytes (IHL * 4, options included).

    Checks: at least 20 bytes, version 4, IHL >= 5, IHL <= total length <= buffer length.
    """
    size = len(packet)
    if size < 20:
        raise MalformedPacket(f"{size} bytes is shorter than an IPv4 header")
    if packet[0] >> 4 != 4:
        raise MalformedPacket(f"IP version {packet[0] >> 4}, not 4")
    ihl = (packet[0] & 0x0F) << 2
    if ihl < 20:
        raise MalformedPacket(f"IPv4 header length {ihl} is below 20")
    total = packet[2] << 8 | packet[3]
    if total < ihl or total > size:
        raise MalformedPacket(f"IPv4 total length {total} does not fit header {ihl} / buffer {size}")
    return ihl


def ip_version(packet) -> int:
    """The IP version nibble (no other validation)."""
    if len(packet) < 1:
        raise MalformedPacket("empty packet")
    return packet[0] >> 4


def ipv4_total_length(packet) -> int:
    """The validated IPv4 total length field."""
    ipv4_header_length(packet)
    return packet[2] << 8 | packet[3]


def ip_protocol(packet) -> int:
    """The IPv4 protocol number (6 TCP, 1 ICMP, ...)."""
    ipv4_header_length(packet)
    return packet[9]


def ip_source(packet) -> bytes:
    """The 4-byte IPv4 source address."""
    ipv4_header_length(packet)
    return bytes(packet[12:16])


def ip_destination(packet) -> bytes:
    """The 4-byte IPv4 destination address."""
    ipv4_header_length(packet)
    return bytes(packet[16:20])


def is_fragment(packet) -> bool:
    """True for any IPv4 fragment (more-fragments flag set or a non-zero offset)."""
    ipv4_header_length(packet)
    return (packet[6] << 8 | packet[7]) & 0x3FFF != 0


# -- TCP header -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TcpHeader:
    """The fields of a TCP/IPv4 segment that the client looks at."""

    ip_header_length: int   #: bytes of IPv4 header (options included)
    source: bytes           #: 4-byte source address
    destination: bytes      #: 4-byte destination address
    source_port: int
    destination_port: int
    seq: int
    ack: int
    flags: int              #: FIN/SYN/RST/PSH/ACK/URG bits
    header_length: int      #: bytes of TCP header (options included)
    payload_length: int     #: bytes of TCP payload


def parse_tcp(packet) -> TcpHeader:
    """Validate a TCP/IPv4 packet (not a fragment, whole TCP header present) and parse it."""
    ihl = ipv4_header_length(packet)
    total = packet[2] << 8 | packet[3]
    if packet[9] != PROTO_TCP:
        raise MalformedPacket(f"IP protocol {packet[9]} is not TCP")
    if (packet[6] << 8 | packet[7]) & 0x3FFF:
        raise MalformedPacket("an IPv4 fragment, not a whole TCP segment")
    if total < ihl + 20:
        raise MalformedPacket("truncated TCP header")
    sport, dport, seq, ack, offset, flags = _TCP_FIELDS.unpack_from(packet, ihl)
    thl = (offset >> 4) << 2
    if thl < 20 or ihl + thl > total:
        raise MalformedPacket(f"TCP header length {thl} does not fit the packet")
    return TcpHeader(ip_header_length=ihl, source=bytes(packet[12:16]),
                     destination=bytes(packet[16:20]), source_port=sport, destination_port=dport,
                     seq=seq, ack=ack, flags=flags & 0x3F, header_length=thl,
                     payload_length=total - ihl - thl)


# -- checksums ------------------------------------------------------------------------------
def _word_sum(data) -> int:
    """The ones' complement sum of ``data`` as 16-bit words (odd length zero-padded), mod 0xFFFF."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def internet_checksum(data, initial: int = 0) -> int:
    """RFC 1071 checksum of ``data``; ``initial`` is a ones' complement sum to fold in."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    if value == 0 and initial == 0:
        return 0xFFFF      # the sum of all-zero data is +0
    return -(value + initial) % 0xFFFF


def ipv4_header_checksum(packet) -> int:
    """What the IPv4 header checksum field should hold (the field itself counts as zero)."""
    ihl = ipv4_header_length(packet)
    stored = packet[10] << 8 | packet[11]
    return -(_word_sum(packet[:ihl]) - stored) % 0xFFFF


def tcp_checksum(packet) -> int:
    """What the TCP checksum field should hold, pseudo-header included (field counts as zero)."""
    ihl = parse_tcp(packet).ip_header_length
    total = packet[2] << 8 | packet[3]
    stored = packet[ihl + 16] << 8 | packet[ihl + 17]
    pseudo = _PSEUDO.pack(bytes(packet[12:16]), bytes(packet[16:20]), PROTO_TCP, total - ihl)
    return -(_word_sum(pseudo) + _word_sum(packet[ihl:total]) - stored) % 0xFFFF


def checksum_update(checksum: int, old, new) -> int:
    """RFC 1624 eqn. 3: the checksum after the word-aligned bytes ``old`` became ``new``."""
    return (checksum + _word_sum(old) - _word_sum(new)) % 0xFFFF


# -- rewriting addresses and ports ----------------------------------------------------------
def four_tuple(source: bytes, destination: bytes, source_port: int, destination_port: int) -> bytes:
    """The 12 bytes a rewrite replaces: source and destination address, then both ports."""
    return source + destination + source_port.to_bytes(2, "big") + destination_port.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A precomputed change of a TCP/IPv4 four-tuple, with its checksum deltas."""

    four_tuple: bytes   #: new source + destination address, then both ports (12 bytes)
    ip_delta: int       #: to add (mod 0xFFFF) to the IPv4 header checksum
    tcp_delta: int      #: to add (mod 0xFFFF) to the TCP checksum

    @classmethod
    def between(cls, old: bytes, new: bytes) -> "Rewrite":
        """The rewrite from the ``four_tuple`` ``old`` to ``new`` (valid for every packet of ``old``)."""
        if len(old) != 12 or len(new) != 12:
            raise ValueError("four-tuples are 12 bytes")
        ip_delta = (_word_sum(old[:8]) - _word_sum(new[:8])) % 0xFFFF
        tcp_delta = (_word_sum(old) - _word_sum(new)) % 0xFFFF
        return cls(four_tuple=bytes(new), ip_delta=ip_delta, tcp_delta=tcp_delta)


# With a 20-byte IPv4 header the addresses and ports are contiguous (bytes 12..24), right
# after the IP checksum: one pack_into writes all three. Slice assignment is slower.
_PLAIN_IN = struct.Struct("!2xH6xH24xH")     # total length, IP checksum, TCP checksum
_PLAIN_OUT = struct.Struct("!H12s")          # IP checksum, four-tuple
_ADDRESSES = struct.Struct("!8s")
_PORTS = struct.Struct("!4s")


def apply_rewrite(packet, ihl: int, rewrite: Rewrite) -> bytearray:
    """A copy of a validated TCP/IPv4 packet with ``rewrite`` applied and checksums updated.

    ``ihl`` comes from validation; the packet's four-tuple must be the rewrite's ``old``
    (otherwise the checksums come out wrong). Bytes past the IPv4 total length are dropped.
    This is the per-packet hot path: one copy, no full checksum.
    """
    if ihl == 20:
        total, ip_sum, tcp_sum = _PLAIN_IN.unpack_from(packet)
        buf = bytearray(packet)
        if total != len(buf):
            del buf[total:]
        _PLAIN_OUT.pack_into(buf, 10, (ip_sum + rewrite.ip_delta) % 0xFFFF, rewrite.four_tuple)
        _CHECKSUM.pack_into(buf, 36, (tcp_sum + rewrite.tcp_delta) % 0xFFFF)
        return buf
    buf = bytearray(packet)
    total = buf[2] << 8 | buf[3]
    if total != len(buf):
        del buf[total:]
    _ADDRESSES.pack_into(buf, 12, rewrite.four_tuple[:8])
    _PORTS.pack_into(buf, ihl, rewrite.four_tuple[8:])
    _CHECKSUM.pack_into(buf, 10, (_CHECKSUM.unpack_from(buf, 10)[0] + rewrite.ip_delta) % 0xFFFF)
    at = ihl + 16
    _CHECKSUM.pack_into(buf, at, (_CHECKSUM.unpack_from(buf, at)[0] + rewrite.tcp_delta) % 0xFFFF)
    return buf


def rewrite_tcp(packet, *, source: bytes, destination: bytes, source_port: int,
                destination_port: int) -> bytearray:
    """A copy of a TCP/IPv4 packet with a new four-tuple and incrementally updated checksums."""
    tcp = parse_tcp(packet)
    old = four_tuple(tcp.source, tcp.destination, tcp.source_port, tcp.destination_port)
    new = four_tuple(source, destination, source_port, destination_port)
    return apply_rewrite(packet, tcp.ip_header_length, Rewrite.between(old, new))


# -- building packets -----------------------------------------------------------------------
def build_ipv4_header(*, source: bytes, destination: bytes, protocol: int, payload_length: int,
                      ttl: int = 64, dont_fragment: bool = False) -> bytes:
    """A 20-byte IPv4 header with a correct checksum."""
    header = bytearray(_IP_FIELDS.pack(0x45, 20 + payload_length, 0, 0x4000 if dont_fragment else 0,
                                       ttl, protocol, 0) + source + destination)
    struct.pack_into("!H", header, 10, internet_checksum(header))
    return bytes(header)


def build_tcp_rst(syn_packet) -> bytes:
    """The RST that the SYN's destination would send back for a closed port (RFC 9293 3.10.7.1).

    For a SYN without ACK (the usual case): from D:dport to A:sport, seq 0,
    ack = seq + segment length (seq + 1 for a bare SYN), flags RST|ACK. For a
    segment that carries an ACK: seq = its ack number, flags RST.
    """
    tcp = parse_tcp(syn_packet)
    if tcp.flags & ACK:
        seq, ack, flags = tcp.ack, 0, RST
    else:
        length = tcp.payload_length + (1 if tcp.flags & SYN else 0) + (1 if tcp.flags & FIN else 0)
        seq, ack, flags = 0, (tcp.seq + length) & 0xFFFFFFFF, RST | ACK
    segment = bytearray(struct.pack("!HHIIBBHHH", tcp.destination_port, tcp.source_port,
                                    seq, ack, 5 << 4, flags, 0, 0, 0))
    pseudo = _PSEUDO.pack(tcp.destination, tcp.source, PROTO_TCP, 20)
    struct.pack_into("!H", segment, 16, internet_checksum(segment, _word_sum(pseudo)))
    header = build_ipv4_header(source=tcp.destination, destination=tcp.source, protocol=PROTO_TCP,
                               payload_length=20, dont_fragment=True)
    return header + segment


def build_icmp_unreachable(original_packet, code: int) -> bytes:
    """ICMP destination unreachable (type 3, ``code``) from the packet's destination to its source.

    Carries the original IP header (options included) and the first 8 bytes of its payload.
    Codes used: 0 net, 1 host, 3 port, 13 administratively prohibited.
    """
    if not 0 <= code <= 15:
        raise ValueError(f"ICMP unreachable code {code} is not 0..15")
    ihl = ipv4_header_length(original_packet)
    total = original_packet[2] << 8 | original_packet[3]
    quoted = bytes(original_packet[:min(total, ihl + 8)])
    message = bytearray(struct.pack("!BBHI", ICMP_DEST_UNREACHABLE, code, 0, 0) + quoted)
    struct.pack_into("!H", message, 2, internet_checksum(message))
    header = build_ipv4_header(source=bytes(original_packet[16:20]),
                               destination=bytes(original_packet[12:16]),
                               protocol=PROTO_ICMP, payload_length=len(message))
    return header + message


def build_udp_packet(*, source: bytes, destination: bytes, source_port: int, destination_port: int,
                     payload, ttl: int = 64) -> bytes:
    """A whole UDP/IPv4 packet with correct IPv4 and UDP checksums.

    A computed UDP checksum of 0 is sent as 0xFFFF (RFC 768: 0 means "none").
    Payloads up to 65507 bytes (the IPv4 maximum) fit; larger ones raise ValueError.
    """
    length = 8 + len(payload)
    if 20 + length > 0xFFFF:
        raise ValueError(f"a {len(payload)}-byte UDP payload does not fit in an IPv4 packet")
    header = _UDP_HEADER.pack(source_port, destination_port, length, 0)
    pseudo = _PSEUDO.pack(source, destination, PROTO_UDP, length)
    # The header is 8 bytes, so the payload starts word-aligned and the sums simply add.
    checksum = -(_word_sum(pseudo) + _word_sum(header) + _word_sum(payload)) % 0xFFFF or 0xFFFF
    ip = build_ipv4_header(source=source, destination=destination, protocol=PROTO_UDP,
                           payload_length=length, ttl=ttl)
    return b"".join((ip, _UDP_HEADER.pack(source_port, destination_port, length, checksum), payload))


def build_icmp(*, source: bytes, destination: bytes, icmp_type: int, code: int,
               rest: bytes = bytes(4), body=b"", ttl: int = 64) -> bytes:
    """An ICMP/IPv4 packet: type, code, checksum, the 4 ``rest`` bytes (identifier and
    sequence for echo, unused for errors), then ``body``; both checksums correct."""
    if len(rest) != 4:
        raise ValueError("the rest of an ICMP header is 4 bytes")
    if not (0 <= icmp_type <= 255 and 0 <= code <= 255):
        raise ValueError(f"ICMP type {icmp_type} / code {code} out of range")
    header = bytearray(_ICMP_HEADER.pack(icmp_type, code, 0, rest))
    _CHECKSUM.pack_into(header, 2, internet_checksum(body, _word_sum(header)))
    ip = build_ipv4_header(source=source, destination=destination, protocol=PROTO_ICMP,
                           payload_length=len(header) + len(body), ttl=ttl)
    return b"".join((ip, header, body))
