"""The gateway's side of ICMP echo: connect-ip streams scoped to one target and
IP protocol 1 (RFC 9484).

Theory of operation: the client sends whole IPv4 packets in DATAGRAM
capsules. Only echo requests (type 8) to the stream's own target pass; the
gateway sends them from its own address through one shared raw ICMP socket,
with an identifier of its own so replies can be told apart, and returns each
echo reply (type 0) to the stream as an IPv4 packet from the target, carrying
the client's identifier again. Anything else is dropped and counted.

Several apps on the client may ping the same target over one stream, each
with its own identifier and all counting their sequence numbers from 1. So
each request leaves with the next sequence number of the relay's own, and
the reply's number finds the app's identifier and sequence number again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import struct
import time
import typing

from client.icmp_echo import validate_echo_packet
from client.packet import build_ipv4_header, internet_checksum
from client.wire.capsule import encode_datagram
from client.wire.link import Link
from gateway_stub.capsule_stream import CapsuleStream

log = logging.getLogger(__name__)

ECHO_REQUEST, ECHO_REPLY = 8, 0
#: Echo requests a relay remembers while their reply is due; the oldest is forgotten first.
MAX_OUTSTANDING = 4096


def echo_message(kind: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo message (header and payload) with its checksum."""
    head = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    checksum = internet_checksum(head + payload)
    return struct.pack("!BBHHH", kind, 0, checksum, ident, seq) + payload


class EchoSocket:
    """One raw ICMP socket for the whole gateway; replies go to relays by identifier."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self._sock.setblocking(False)
        self._relays: dict[int, "EchoRelay"] = {}
        self._idents = itertools.cycle(range(1, 0x10000))
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def register(self, relay: "EchoRelay") -> int:
        """A free identifier for a relay."""
        if len(self._relays) >= 0xFFFF:
            raise OSError("no free ICMP identifiers")
        ident = next(self._idents)
        while ident in self._relays:
            ident = next(self._idents)
        self._relays[ident] = relay
        return ident

    def unregister(self, ident: int) -> None:
        """Forget a relay."""
        self._relays.pop(ident, None)

    def send(self, target: str, message: bytes) -> None:
        """Send one ICMP message; a full send buffer drops it (ping semantics)."""
        try:
            self._sock.sendto(message, (target, 0))
        except OSError as exc:
            log.debug("ICMP send to %s failed: %s", target, exc)

    def _readable(self) -> None:
        for _ in range(64):
            try:
                packet = self._sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            ihl = (packet[0] & 0x0F) * 4 if packet else 0
            if len(packet) < ihl + 8 or packet[ihl] != ECHO_REPLY:
                continue
            ident, seq = struct.unpack_from("!HH", packet, ihl + 4)
            relay = self._relays.get(ident)
            if relay is not None:
                relay.on_reply(ipaddress.IPv4Address(packet[12:16]), seq, bytes(packet[ihl + 8:]))

    def close(self) -> None:
        """Stop listening."""
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class EchoRelay(CapsuleStream):
    """One connect-ip stream scoped to a single target, ICMP only."""

    def __init__(self, link: Link, stream_id: int, target: ipaddress.IPv4Address,
                 client_address: ipaddress.IPv4Address, sock: EchoSocket,
                 on_done: typing.Callable[["EchoRelay"], None]) -> None:
        super().__init__(link, stream_id, on_done)
        self.target = target
        self.client_address = client_address
        self._sock = sock
        self._ident = sock.register(self)
        self._next_seq = 0
        self._outstanding: dict[int, int] = {}   # our seq -> the app's ident << 16 | its seq
        self.start()

    def on_datagram(self, packet: bytes) -> None:
        try:
            message = validate_echo_packet(packet, expect_type=ECHO_REQUEST, target=self.target)
        except ValueError:
            self.dropped += 1
            return
        ours = self._next_seq
        self._next_seq = (ours + 1) & 0xFFFF
        self._outstanding.pop(ours, None)         # unanswered since the numbers wrapped
        while len(self._outstanding) >= MAX_OUTSTANDING:
            del self._outstanding[next(iter(self._outstanding))]
        self._outstanding[ours] = struct.unpack_from("!I", message, 4)[0]
        self.bytes_up += len(message)
        self.last_active = time.monotonic()
        self._sock.send(str(self.target), echo_message(ECHO_REQUEST, self._ident, ours,
                                                       bytes(message[8:])))

    def on_reply(self, source: ipaddress.IPv4Address, seq: int, payload: bytes) -> None:
        """An echo reply for our identifier arrived."""
        if source != self.target or seq not in self._outstanding:
            return
        theirs = self._outstanding.pop(seq)
        ident, seq = theirs >> 16, theirs & 0xFFFF
        message = echo_message(ECHO_REPLY, ident, seq, payload)
        header = build_ipv4_header(source=self.target.packed, destination=self.client_address.packed,
                                   protocol=1, payload_length=len(message))
        self.bytes_down += len(message)
        self.last_active = time.monotonic()
        self.link.send(self.stream_id, encode_datagram(header + message))

    def close_io(self) -> None:
        self._sock.unregister(self._ident)
