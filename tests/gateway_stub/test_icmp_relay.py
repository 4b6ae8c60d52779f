"""gateway_stub.icmp_relay's EchoRelay, sans-IO: a fake link and a fake raw socket."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from client.icmp_echo import validate_echo_packet
from client.wire.capsule import encode_datagram
from gateway_stub.icmp_relay import MAX_OUTSTANDING, EchoRelay, echo_message
from tests.client.packets import addr, ip_header
from tests.client.wire.fake_link import FakeLink

CLIENT, TARGET, OTHER = IPv4Address("10.200.0.2"), IPv4Address("10.77.0.10"), IPv4Address("10.77.0.11")


class FakeEchoSocket:
    """The shared raw socket: records what the relay sends; ``answer`` plays the target."""

    IDENT = 0x4242

    def __init__(self) -> None:
        self.relays: dict[int, EchoRelay] = {}
        self.sent: list[tuple[str, bytes]] = []

    def register(self, relay: EchoRelay) -> int:
        self.relays[self.IDENT] = relay
        return self.IDENT

    def unregister(self, ident: int) -> None:
        self.relays.pop(ident, None)

    def send(self, target: str, message: bytes) -> None:
        self.sent.append((target, message))

    def answer(self, index: int, source: IPv4Address = TARGET) -> None:
        """The target's echo reply to the ``index``-th request sent, as the raw socket hands it on."""
        _, message = self.sent[index]
        kind, _, _, ident, seq = struct.unpack_from("!BBHHH", message)
        assert (kind, ident) == (8, self.IDENT)
        self.relays[ident].on_reply(source, seq, message[8:])


def request(ident: int, seq: int, payload: bytes) -> bytes:
    """An app's echo request to TARGET, as the client sends it over connect-ip."""
    message = echo_message(8, ident, seq, payload)
    return ip_header(src=CLIENT.packed, dst=addr(str(TARGET)), proto=1, payload_length=len(message)) + message


def replies(link: FakeLink, stream_id: int) -> list[tuple[int, int, bytes]]:
    """(identifier, sequence, data) of every echo reply the relay put on the stream."""
    got = []
    for packet in link.datagrams(stream_id):
        message = validate_echo_packet(packet, expect_type=0, target=TARGET)
        got.append((*struct.unpack_from("!HH", message, 4), message[8:]))
    return got


def relay() -> tuple[EchoRelay, FakeLink, FakeEchoSocket]:
    link, sock = FakeLink(), FakeEchoSocket()
    return EchoRelay(link, 1, TARGET, CLIENT, sock, lambda flow: None), link, sock


def test_two_apps_pinging_one_target_with_the_same_sequence_get_their_own_replies():
    """Two pings to one target, identifiers 100 and 200, both at sequence 1 (as every ping
    starts): each reply goes back with its own app's identifier, whatever the order."""
    echo, link, sock = relay()
    link.deliver_data(1, encode_datagram(request(100, 1, b"from app one")))
    link.deliver_data(1, encode_datagram(request(200, 1, b"from app two")))
    assert len(sock.sent) == 2
    sock.answer(1)
    sock.answer(0)
    assert replies(link, 1) == [(200, 1, b"from app two"), (100, 1, b"from app one")]


def test_a_reply_from_another_address_is_ignored_and_spoils_nothing():
    """An echo reply with our identifier from some other host is dropped, and the target's
    own reply to that request still reaches the app."""
    echo, link, sock = relay()
    link.deliver_data(1, encode_datagram(request(7, 9, b"x")))
    sock.answer(0, source=OTHER)
    assert replies(link, 1) == []
    sock.answer(0)
    assert replies(link, 1) == [(7, 9, b"x")]


def test_each_request_is_answered_once_and_the_memory_is_bounded():
    """A duplicate reply is not passed on twice, and after more requests than the relay
    remembers, the newest ones are still answered."""
    echo, link, sock = relay()
    for seq in range(MAX_OUTSTANDING + 10):
        link.deliver_data(1, encode_datagram(request(5, seq & 0xFFFF, b"")))
    sock.answer(len(sock.sent) - 1)
    sock.answer(len(sock.sent) - 1)
    sock.answer(0)
    assert replies(link, 1) == [(5, MAX_OUTSTANDING + 9, b"")]
