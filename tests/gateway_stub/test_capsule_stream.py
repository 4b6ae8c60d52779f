"""gateway_stub.capsule_stream, sans-IO over a fake link."""

from __future__ import annotations

from client.wire.capsule import encode_capsule, encode_datagram, encode_varint
from gateway_stub.capsule_stream import CapsuleStream
from tests.client.wire.fake_link import FakeLink


class Recorder(CapsuleStream):
    """A relay that keeps the payloads it is handed."""

    def __init__(self, link: FakeLink) -> None:
        self.payloads: list[bytes] = []
        self.done = 0
        super().__init__(link, 1, self._on_done)
        self.start()

    def on_datagram(self, payload: bytes) -> None:
        self.payloads.append(payload)

    def _on_done(self, flow) -> None:
        self.done += 1


def test_a_client_that_ends_its_stream_gets_the_stream_ended_back():
    """The client's END_STREAM closes the flow once, and the gateway ends its half too,
    so the stream does not linger half-closed holding a stream slot."""
    link = FakeLink()
    relay = Recorder(link)
    link.deliver_end(1)
    assert link.closed(1) and relay.done == 1 and 1 not in link.handlers


def test_datagrams_are_parsed_across_data_frames_and_odd_capsules_are_skipped():
    """Capsules split across frames are joined; unknown types (of any size), non-zero
    contexts and empty DATAGRAMs are passed over; the payloads arrive in order."""
    link = FakeLink()
    relay = Recorder(link)
    data = (encode_datagram(b"one") + encode_capsule(0x17, bytes(200_000)) + b"\x00\x00"
            + encode_datagram(b"ctx", context_id=4) + encode_datagram(b"") + encode_datagram(b"two"))
    for at in range(0, len(data), 7000):
        link.deliver_data(1, data[at:at + 7000])
    assert relay.payloads == [b"one", b"", b"two"] and relay.dropped == 2
    assert not link.closed(1)


def test_an_oversized_datagram_capsule_resets_only_its_stream():
    """A DATAGRAM capsule declaring more than any IP packet holds is malformed: reset, flow done."""
    link = FakeLink()
    relay = Recorder(link)
    link.deliver_data(1, b"\x00" + encode_varint(1 << 40))
    assert 1 in link.reset_ids and relay.done == 1 and relay.error.startswith("malformed capsule")
