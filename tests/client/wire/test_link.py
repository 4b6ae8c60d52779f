"""The asyncio Link: when it hands queued frames to the transport."""

from __future__ import annotations

import asyncio
import socket

import pytest

from client.wire import frames as f
from client.wire import mux as m
from client.wire.link import EAGER_FLUSH, Link, LinkGoingAway
from client.wire.pipe import StreamPipe
from tests.client.wire.h2peer import H2Peer
from tests.client.wire.memory_link import MemoryLink, RecordingTransport


class Recorder:
    """A stream handler that records its events and, at the stream's end, ends its own half
    and lets go of the stream, as a flow's owner does."""

    def __init__(self, link: Link) -> None:
        self.link, self.stream_id, self.events = link, 0, []

    def on_response(self, status, headers, ended): self.events.append(("response", status, ended))
    def on_data(self, data, flow_length): self.events.append(("data", data))
    def on_reset(self, error_code): self.events.append(("reset", error_code))
    def on_writable(self): pass

    def on_end(self):
        self.events.append(("end",))
        self.link.end(self.stream_id)
        self.link.unregister(self.stream_id)


async def open_flow(joined: MemoryLink) -> Recorder:
    """A CONNECT on the joined link that reached its gateway (not answered yet)."""
    flow = Recorder(joined.link)
    flow.stream_id = joined.link.open([(":method", "CONNECT"), (":authority", "10.0.0.1:80")], flow)
    await joined.flushed()
    return flow


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


def test_a_2xx_that_ends_the_stream_reaches_the_handler_as_answer_then_end():
    """A 200 with END_STREAM is handed on as the answer and then the end of the stream: the
    handler needs no special case, and once it ended its half the stream is gone."""
    async def main() -> tuple[list, int]:
        joined = MemoryLink()
        flow = await open_flow(joined)
        status_200 = b"\x88"                       # HPACK: static entry 8, ":status: 200"
        joined.link.data_received(
            f.head(1, f.HEADERS, f.END_STREAM | f.END_HEADERS, flow.stream_id) + status_200)
        return flow.events, joined.link.mux.open_streams

    events, left = asyncio.run(main())
    assert events == [("response", 200, True), ("end",)] and left == 0


def test_a_graceful_goaway_lets_open_streams_finish_and_then_closes_the_link():
    """On GOAWAY(NO_ERROR): ``going_away`` resolves with the last stream id and code, a stream
    opened after it is refused, ``open`` raises LinkGoingAway at once, the stream the gateway
    took still carries its answer to its end, and only then does ``closed`` resolve."""
    async def main() -> None:
        joined = MemoryLink()
        link, gateway = joined.link, joined.gateway
        kept = await open_flow(joined)
        gateway.respond(kept.stream_id, 200)
        refused = Recorder(link)
        refused.stream_id = link.open([(":method", "CONNECT"), (":authority", "10.0.0.1:2")], refused)
        gateway.close()                           # before it sees the second request
        joined.to_client()
        goaway = link.going_away.result()
        assert (goaway.last_stream_id, goaway.error_code) == (kept.stream_id, 0)
        assert refused.events == [("reset", 7)] and kept.events == [("response", 200, False)]
        assert not link.can_open and link.is_open
        with pytest.raises(LinkGoingAway):
            link.open([(":method", "CONNECT"), (":authority", "10.0.0.1:3")], Quiet())
        await asyncio.sleep(0.01)
        assert not link.closed.done()
        joined.to_gateway()
        gateway.send(kept.stream_id, b"last words", end=True)
        joined.to_client()
        assert kept.events[1:] == [("data", b"last words"), ("end",)]
        await asyncio.sleep(0)
        assert "gateway closed the session" in await asyncio.wait_for(link.closed, 1)
        assert joined.transport.closing

    asyncio.run(main())


def test_a_graceful_goaway_on_an_idle_link_closes_it_at_once():
    """GOAWAY(NO_ERROR) with no stream open: there is nothing to wait for, so the link closes."""
    async def main() -> str:
        joined = MemoryLink()
        joined.gateway.close()
        joined.to_client()
        return await asyncio.wait_for(joined.link.closed, 1)

    assert "gateway closed the session" in asyncio.run(main())


def test_going_away_the_gateway_refuses_new_streams_and_closes_once_they_ended():
    """``go_away`` sends GOAWAY with the last stream the client opened; a request sent after it
    is refused, the open stream finishes, and then the link closes by itself."""
    async def main() -> None:
        client = m.Mux(client_side=True)
        transport = RecordingTransport()
        link = Link(m.Mux(client_side=False), on_request=lambda request: None)
        link.connection_made(transport)
        client.receive(transport.take())
        sid = client.request([(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
        link.data_received(client.data_to_send())
        link.respond(sid, 200)
        flow = Recorder(link)
        flow.stream_id = sid
        link.register(sid, flow)
        late = client.request([(":method", "CONNECT"), (":authority", "10.0.0.1:81")])
        link.go_away("shutting down")
        await asyncio.sleep(0)
        events = client.receive(transport.take())
        assert [e.last_stream_id for e in events if isinstance(e, m.GoawayReceived)] == [sid]
        assert [e.stream_id for e in events if isinstance(e, m.StreamReset)] == [late]
        client.send(sid, b"bye", end=True)
        link.data_received(client.data_to_send())
        assert flow.events == [("data", b"bye"), ("end",)]
        await asyncio.sleep(0)
        assert await asyncio.wait_for(link.closed, 1) == "shutting down"

    asyncio.run(main())
