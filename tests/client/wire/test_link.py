"""The asyncio Link: when it hands queued frames to the transport."""

from __future__ import annotations

import asyncio
import socket

from client.wire import mux as m
from client.wire.link import EAGER_FLUSH, Link
from client.wire.pipe import StreamPipe
from tests.client.wire.h2peer import H2Peer


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


def test_an_h2_answer_ended_then_reset_without_error_reaches_the_app_whole():
    """A gateway that ends its answer and then sends RST_STREAM NO_ERROR (RFC 9113 8.1; Go's
    server does when its handler returns first): the app still reads every byte and a clean
    EOF, and its flow still ends when the session does."""
    payload = bytes(range(256)) * 4096                # 1 MiB

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        transport, gateway = RecordingTransport(), H2Peer(client_side=False)
        link = Link(m.Mux(client_side=True))
        link.connection_made(transport)

        def to_gateway() -> None:
            gateway.receive(b"".join(transport.writes))
            transport.writes.clear()

        ours, app = socket.socketpair()
        app.setblocking(False)
        done = loop.create_future()
        pipe = StreamPipe(link, on_done=done.set_result)
        pipe.stream_id = sid = link.open([(":method", "CONNECT"), (":authority", "10.0.0.1:80")], pipe)
        await asyncio.sleep(0)
        to_gateway()
        link.data_received(gateway.data_to_send())   # its SETTINGS
        gateway.conn.send_headers(sid, [(":status", "200")])
        link.data_received(gateway.data_to_send())
        await loop.connect_accepted_socket(lambda: pipe, ours)
        to_gateway()
        for at in range(0, len(payload), 65536):
            gateway.conn.send_data(sid, payload[at:at + 65536], end_stream=at + 65536 >= len(payload))
        gateway.conn.reset_stream(sid, 0)
        link.data_received(gateway.data_to_send())
        got = bytearray()
        while chunk := await loop.sock_recv(app, 1 << 20):
            got += chunk
        link.connection_lost(None)                    # the session ends, the app never closed
        await asyncio.wait_for(done, 5)              # without it, the flow would linger
        app.close()
        return bytes(got)

    assert asyncio.run(main()) == payload
