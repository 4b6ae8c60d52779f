"""ICMP echo (ping) over connect-ip: the client's filter and the checks both ends share.

Theory of operation. Only echo requests (type 8, code 0) read from the TUN
become ``EchoRequest``s; the engine sends each one, as a whole IPv4 packet in a
DATAGRAM capsule (context 0), on a connect-ip stream scoped to its target and
IP protocol 1 (RFC 9484); a ping larger than the TUN's MTU arrives as IPv4
fragments, which are reassembled first. Every other ICMP message is dropped
and counted.
``validate_echo_packet`` is the one gate for echo packets crossing the tunnel:
the gateway accepts only type 8 to the stream's target, the client only
type 0 from it. ``reply_packet`` builds an echo reply as the target would
send it (used by tests and fakes; the real reply comes back from the gateway).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from client import packet as pk
from client.ip_reassembly import Reassembler
from client.wire.capsule import encode_datagram

ECHO_REPLY = 0
ECHO_REQUEST = 8

_IP = struct.Struct("!BxH2xHBB2x4s4s")    # ver/ihl, total length, frag, ttl, protocol, src, dst
_ECHO = struct.Struct("!BBHHH")           # type, code, checksum, identifier, sequence


class NotAnEcho(ValueError):
    """A well-formed packet that is not the echo message expected (other type, code or target)."""


class _Fragment(pk.MalformedPacket):
    """An IPv4 fragment: the ICMP message cannot be checked whole."""


@dataclass(frozen=True)
class EchoRequest:
    """An echo request an app sent to a secured target."""

    target: ipaddress.IPv4Address   #: the pinged address (the IPv4 destination)
    client: ipaddress.IPv4Address   #: the app's address (the IPv4 source)
    ident: int                      #: ICMP identifier
    seq: int                        #: ICMP sequence number
    payload: bytes                  #: the echo data, returned unchanged in the reply
    ttl: int                        #: the request's IPv4 TTL
    packet: bytes = field(default=b"", compare=False, repr=False)
    """The whole IPv4 packet, as it goes over connect-ip (reassembled if it came in fragments)."""


@dataclass(frozen=True)
class IcmpEchoStats:
    """Counters of the echo filter."""

    requests: int               #: echo requests accepted
    dropped_other_types: int    #: well-formed ICMP that is not an echo request
    dropped_malformed: int      #: bad IPv4/ICMP structure or checksum
    dropped_fragments: int      #: IPv4 fragments of ICMP that could not be reassembled
    not_ours: int               #: packets that are not ICMP/IPv4 at all


def _parse(packet, expect_type: int):
    """Validate an ICMP echo packet; return (ihl, total, ttl, src, dst, ident, seq).

    Raises ``MalformedPacket`` for broken structure or checksums and ``NotAnEcho``
    for a well-formed packet of the wrong protocol, type or code.
    """
    size = len(packet)
    if size < 20:
        raise pk.MalformedPacket(f"{size} bytes is shorter than an IPv4 header")
    ver_ihl, total, frag, ttl, proto, src, dst = _IP.unpack_from(packet)
    if ver_ihl >> 4 != 4:
        raise NotAnEcho(f"IP version {ver_ihl >> 4}, not 4")
    ihl = (ver_ihl & 0x0F) << 2
    if ihl < 20 or total < ihl or total > size:
        raise pk.MalformedPacket(f"IPv4 lengths do not fit (header {ihl}, total {total}, buffer {size})")
    if pk.internet_checksum(packet[:ihl]) != 0:
        raise pk.MalformedPacket("bad IPv4 header checksum")
    if proto != pk.PROTO_ICMP:
        raise NotAnEcho(f"IP protocol {proto} is not ICMP")
    if frag & 0x3FFF:
        raise _Fragment("an IPv4 fragment, not a whole ICMP message")
    if total - ihl < 8:
        raise pk.MalformedPacket("truncated ICMP header")
    icmp_type, code, _, ident, seq = _ECHO.unpack_from(packet, ihl)
    if pk.internet_checksum(packet[ihl:total]) != 0:
        raise pk.MalformedPacket("bad ICMP checksum")
    if icmp_type != expect_type or code != 0:
        raise NotAnEcho(f"ICMP type {icmp_type} code {code}, not {expect_type}/0")
    return ihl, total, ttl, src, dst, ident, seq


def validate_echo_packet(packet, *, expect_type: int, target: ipaddress.IPv4Address | None) -> bytes:
    """The ICMP message (header and data) of a valid echo packet, or ValueError.

    ``expect_type`` is ECHO_REQUEST (8) or ECHO_REPLY (0); the code must be 0 and
    the IPv4 and ICMP checksums must hold. With a ``target``, a request must be
    addressed to it and a reply must come from it.
    """
    if expect_type not in (ECHO_REQUEST, ECHO_REPLY):
        raise ValueError(f"expect_type {expect_type} is not an echo type (0 or 8)")
    ihl, total, _, src, dst, _, _ = _parse(packet, expect_type)
    if target is not None:
        remote = dst if expect_type == ECHO_REQUEST else src
        if remote != target.packed:
            raise NotAnEcho(f"echo {'to' if expect_type == ECHO_REQUEST else 'from'} "
                            f"{ipaddress.IPv4Address(remote)}, not the stream's target {target}")
    return bytes(packet[ihl:total])


def encode_ip_packet_datagram(packet) -> bytes:
    """A whole IP packet as a CONNECT-IP HTTP Datagram: a DATAGRAM capsule, context 0."""
    return encode_datagram(packet, 0)


class IcmpEcho:
    """The client's filter of ICMP from the TUN: echo requests pass, the rest is counted."""

    def __init__(self) -> None:
        self._requests = 0
        self._other = 0
        self._malformed = 0
        self._fragments = Reassembler()
        self._not_ours = 0

    def from_tun(self, packet, now: float = 0.0) -> EchoRequest | None:
        """An echo request to any destination, or None (dropped and counted, or a fragment
        of a ping not yet complete; ``now`` times those out). Never raises."""
        try:
            _, total, ttl, src, dst, ident, seq = _parse(packet, ECHO_REQUEST)
            ihl = (packet[0] & 0x0F) << 2
            payload = bytes(packet[ihl + 8:total])
        except NotAnEcho:
            if len(packet) >= 20 and packet[0] >> 4 == 4 and packet[9] == pk.PROTO_ICMP:
                self._other += 1
            else:
                self._not_ours += 1
            return None
        except _Fragment:
            whole = self._fragments.push(packet, now)
            return None if whole is None else self.from_tun(whole, now)
        except pk.MalformedPacket:
            self._malformed += 1
            return None
        except (IndexError, TypeError, struct.error):   # belt and braces
            self._malformed += 1
            return None
        self._requests += 1
        return EchoRequest(target=ipaddress.IPv4Address(dst), client=ipaddress.IPv4Address(src),
                           ident=ident, seq=seq, payload=payload, ttl=ttl, packet=bytes(packet[:total]))

    def expire(self, now: float) -> None:
        """Drop fragments of pings that never completed."""
        self._fragments.expire(now)

    def reply_packet(self, request: EchoRequest, payload: bytes | None = None) -> bytes:
        """The echo reply (type 0) from the request's target to its client, with the same
        identifier, sequence and data (or ``payload``), correct checksums and TTL 64."""
        data = request.payload if payload is None else payload
        return pk.build_icmp(source=request.target.packed, destination=request.client.packed,
                             icmp_type=ECHO_REPLY, code=0, rest=struct.pack("!HH", request.ident, request.seq),
                             body=data, ttl=64)

    @property
    def stats(self) -> IcmpEchoStats:
        """A snapshot of the counters."""
        return IcmpEchoStats(requests=self._requests, dropped_other_types=self._other,
                             dropped_malformed=self._malformed, dropped_fragments=self._fragments.dropped,
                             not_ours=self._not_ours)
