"""The asyncio Link: when it hands queued frames to the transport."""

from __future__ import annotations

import asyncio

from client.wire import mux as m
from client.wire.link import EAGER_FLUSH, Link


class RecordingTransport(asyncio.Transport):
    """Keeps every write apart, as the socket would get them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


class Quiet:
    """A stream handler that ignores everything."""

    def on_response(self, status, headers, ended): pass
    def on_data(self, data, flow_length): pass
    def on_end(self): pass
    def on_reset(self, error_code): pass
    def on_writable(self): pass


def test_a_big_batch_leaves_in_parts_during_the_turn_and_in_order():
    """Opening many streams in one turn writes every EAGER_FLUSH of them at once, the rest at
    the end of the turn; the peer reads the parts as one valid sequence of requests."""
    count = 3 * EAGER_FLUSH + 5

    async def main() -> tuple[list[int], list[bytes]]:
        transport = RecordingTransport()
        link = Link(m.Mux(client_side=True))
        link.connection_made(transport)
        after_preface = len(transport.writes)
        sizes = []
        for i in range(count):
            link.open([(":method", "CONNECT"), (":authority", f"10.77.0.10:{1000 + i}")], Quiet())
            sizes.append(len(transport.writes) - after_preface)
        await asyncio.sleep(0)                       # the end of the turn flushes the rest
        return sizes, transport.writes

    sizes, writes = asyncio.run(main())
    assert sizes[EAGER_FLUSH - 1] == 0               # the first EAGER_FLUSH wait for more
    assert sizes[-1] == 3                            # three parts went out during the turn
    gateway = m.Mux(client_side=False)
    events = gateway.receive(b"".join(writes))
    ports = [int(e.headers[":authority"].rsplit(":", 1)[1]) for e in events
             if isinstance(e, m.RequestReceived)]
    assert ports == [1000 + i for i in range(count)]
