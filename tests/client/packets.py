"""Hand-built TCP/IPv4 packets for the client tests, checksummed by a plain RFC 1071 reference."""

from __future__ import annotations

import ipaddress
import struct

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def reference_checksum(data: bytes) -> int:
    """RFC 1071, word by word, independent of client.packet."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def addr(text: str) -> bytes:
    """The 4 bytes of a dotted-quad address."""
    return ipaddress.IPv4Address(text).packed


def ip_header(*, src: bytes, dst: bytes, proto: int, payload_length: int, options: bytes = b"",
              frag: int = 0, ttl: int = 64) -> bytes:
    """An IPv4 header (options padded to 4 bytes) with a correct checksum."""
    options += b"\0" * (-len(options) % 4)
    ihl = 20 + len(options)
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ihl + payload_length, 0x1234,
                                   frag, ttl, proto, 0, src, dst) + options)
    struct.pack_into("!H", header, 10, reference_checksum(bytes(header)))
    return bytes(header)


def tcp_packet(*, src: str | bytes, dst: str | bytes, sport: int, dport: int, flags: int,
               seq: int = 1000, ack: int = 0, payload: bytes = b"", tcp_options: bytes = b"",
               ip_options: bytes = b"", frag: int = 0) -> bytes:
    """A whole TCP/IPv4 packet with correct IPv4 and TCP checksums."""
    src_b = addr(src) if isinstance(src, str) else src
    dst_b = addr(dst) if isinstance(dst, str) else dst
    tcp_options += b"\0" * (-len(tcp_options) % 4)
    thl = 20 + len(tcp_options)
    segment = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (thl // 4) << 4, flags,
                                    65535, 0, 0) + tcp_options + payload)
    pseudo = struct.pack("!4s4sxBH", src_b, dst_b, 6, len(segment))
    struct.pack_into("!H", segment, 16, reference_checksum(pseudo + bytes(segment)))
    return ip_header(src=src_b, dst=dst_b, proto=6, payload_length=len(segment), options=ip_options,
                     frag=frag) + bytes(segment)


def udp_packet(*, src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    """A UDP/IPv4 packet (UDP checksum left zero)."""
    datagram = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return ip_header(src=addr(src), dst=addr(dst), proto=17, payload_length=len(datagram)) + datagram


def ipv4_ok(packet: bytes) -> bool:
    """The IPv4 header checksum verifies (the reference sum over the header is 0)."""
    ihl = (packet[0] & 0x0F) * 4
    return reference_checksum(bytes(packet[:ihl])) == 0


def tcp_ok(packet: bytes) -> bool:
    """The TCP checksum verifies, pseudo-header included."""
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    segment = bytes(packet[ihl:total])
    pseudo = struct.pack("!4s4sxBH", bytes(packet[12:16]), bytes(packet[16:20]), 6, len(segment))
    return reference_checksum(pseudo + segment) == 0


def fields(packet: bytes) -> dict:
    """The fields of a TCP/IPv4 packet, decoded independently of client.packet."""
    ihl = (packet[0] & 0x0F) * 4
    sport, dport, seq, ack, offset, flags = struct.unpack_from("!HHIIBB", packet, ihl)
    total = struct.unpack_from("!H", packet, 2)[0]
    return {"src": str(ipaddress.IPv4Address(bytes(packet[12:16]))),
            "dst": str(ipaddress.IPv4Address(bytes(packet[16:20]))),
            "sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": flags & 0x3F,
            "payload": bytes(packet[ihl + (offset >> 4) * 4:total])}
