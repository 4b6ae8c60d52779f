"""Tests of client.tcp_flow: how a flow reads the gateway's answer (a 2xx that ends the
stream, a stream refused unprocessed) and how it drains at its end (held until the app
has everything, up to our FIN)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import h2.events

from client.wire import mux as m
from tests.client.engine_rig import Rig, run
from tests.client.tcp_rig import FAKE, MemoryPath, connect_from, released_syn, until
from tests.client.wire.h2peer import H2Peer

RESPONSE = bytes(range(256)) * 8192     # 2 MiB: within one stream window, so it all arrives
#: What the app's buffer takes with SO_RCVBUF 4096 before its window closes (Linux, loopback).
FULL_WINDOW = bytes(range(256)) * 16
FIN_WAIT2 = 5                           # tcpi_state (include/net/tcp_states.h)


class HalfCloseServer(threading.Thread):
    """Reads a request to its end (the app's FIN), then answers ``answer``, waits ``pause``
    seconds and closes."""

    def __init__(self, answer: bytes = RESPONSE, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.answer, self.pause = answer, pause
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while conn.recv(65536):
                pass
            conn.sendall(self.answer)
            time.sleep(self.pause)


async def read_all(sock: socket.socket) -> bytes:
    """What ``sock`` receives up to its EOF."""
    loop, chunks = asyncio.get_running_loop(), []
    while chunk := await loop.sock_recv(sock, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_half_closed_flow_is_held_until_the_app_has_read_everything(tmp_path):
    """The app half-closes, then reads the answer only later: the flow is not released (its
    reflection would lapse) while the answer waits in our socket; once the app has it all,
    up to the FIN, the flow is released."""
    async def main():
        server = HalfCloseServer()
        server.start()
        rig = Rig(tmp_path)
        engine = await rig.start()
        await rig.connected()
        app = await connect_from(FAKE, await released_syn(rig, server.port, 40100), rcvbuf=4096)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(app, b"GET /big\n")
        app.shutdown(socket.SHUT_WR)

        assert await until(lambda: engine.stats.flows_draining == 1, 10)
        assert engine.stats.open_flows == 0           # its stream is over
        await asyncio.sleep(0.5)
        assert engine.stats.flows_draining == 1       # still held: the app has not read

        assert await read_all(app) == RESPONSE
        app.close()
        assert await until(lambda: engine.stats.flows_draining == 0, 12)   # the 5 s tick
        await rig.close()
        server.join(5)
    run(main())


def test_a_flow_is_held_while_the_apps_closed_window_keeps_our_fin_back(tmp_path):
    """The app half-closes; the answer fills its buffer (every byte acknowledged, its window
    closed) and only then does the server close: the app's kernel holds our FIN back until
    the app reads, so the flow is not released (the FIN would arrive after the mapping
    lapsed, and never reach the app); once the app has read up to the FIN, it is."""
    async def main():
        server = HalfCloseServer(FULL_WINDOW, pause=0.3)
        server.start()
        rig = Rig(tmp_path)
        engine = await rig.start()
        await rig.connected()
        app = await connect_from(FAKE, await released_syn(rig, server.port, 40101), rcvbuf=4096)
        await asyncio.get_running_loop().sock_sendall(app, b"GET /\n")
        app.shutdown(socket.SHUT_WR)
        assert await until(lambda: not server.is_alive(), 5)     # answered and closed
        await asyncio.sleep(0.3)
        if app.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != FIN_WAIT2:
            pytest.skip("this kernel's window did not close on the answer: nothing held back")
        assert engine.stats.open_flows == 0 and engine.stats.flows_draining == 1

        assert await read_all(app) == FULL_WINDOW     # then the FIN
        app.close()
        assert await until(lambda: engine.stats.flows_draining == 0, 12)   # the 5 s tick
        await rig.close()
    run(main())


def test_a_2xx_that_ends_the_stream_is_an_accepted_flow_whose_server_closed():
    """A gateway answers 200 with END_STREAM (its target closed at once): the app's
    connection is accepted and then gets a clean EOF; when the app closes too, the stream is
    over on both ends and the flow is gone."""
    async def main():
        memory = MemoryPath(H2Peer(client_side=False))
        gateway = memory.session.joined.gateway
        (request,) = [e for e in await memory.syn(40300) if isinstance(e, h2.events.RequestReceived)]
        gateway.conn.send_headers(request.stream_id, [(":status", "200")], end_stream=True)
        memory.session.joined.to_client()
        app = await memory.app_connection()
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(app, 16), 5) == b""
        app.close()
        assert await until(lambda: memory.path.open_flows == 0, 5)
        events = await memory.session.joined.flushed()
        assert [e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)] \
            == [request.stream_id]
        assert memory.session.link.mux.open_streams == 0 and not gateway.conn.open_inbound_streams
        memory.path.close()
    run(main())


def test_a_flow_refused_unprocessed_is_retried_by_the_apps_next_syn():
    """A stream reset with REFUSED_STREAM before any answer (the gateway did not process it)
    tells the app nothing: its SYN retransmission opens a new stream."""
    async def main():
        memory = MemoryPath()
        (first,) = [e for e in await memory.syn(40301) if isinstance(e, m.RequestReceived)]
        memory.session.joined.gateway.reset(first.stream_id, 0x7)
        memory.session.joined.to_client()
        assert memory.written == [] and memory.path.flows_refused == 0
        assert memory.path.open_flows == 0
        (again,) = [e for e in await memory.syn(40301) if isinstance(e, m.RequestReceived)]
        assert again.stream_id > first.stream_id and memory.path.open_flows == 1
        memory.path.close()
    run(main())
