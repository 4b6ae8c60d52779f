"""Tests of client.tcp_path: which connection takes a flow (with the real engine and
gateway on loopback), and flows while the gateway goes away (with a ``MemoryPath``)."""

from __future__ import annotations

import asyncio
import socket
import threading

from client.wire import mux as m
from tests.client.engine_rig import APP, Rig, run
from tests.client.tcp_rig import FAKE, MemoryPath, connect_from, released_syn, until


class GreetingServer(threading.Thread):
    """Greets the one connection it accepts, then reads it to its end."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(b"hello")
            try:
                while conn.recv(65536):
                    pass
            except ConnectionResetError:
                pass


def test_while_the_gateway_goes_away_open_flows_finish_and_new_ones_wait_for_the_next_link():
    """After a graceful GOAWAY a new SYN gets no stream on the old link and no refusal
    either (the engine is moving the session to a new link, where the app's SYN
    retransmission lands), while a flow the gateway took still carries its answer."""
    async def main():
        memory = MemoryPath()
        joined = memory.session.joined
        (kept,) = [e for e in await memory.syn(40302) if isinstance(e, m.RequestReceived)]
        joined.gateway.respond(kept.stream_id, 200)
        joined.gateway.close()
        joined.to_client()
        assert memory.session.link.going_away.done()
        assert not [e for e in await memory.syn(40303) if isinstance(e, m.RequestReceived)]
        assert not [p for p in memory.written if p[9] == 1]            # no ICMP to the app
        assert memory.path.flows_refused == 0
        app = await memory.app_connection()
        joined.gateway.send(kept.stream_id, b"answer", end=True)
        joined.to_client()
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(app, 16), 5) == b"answer"
        assert await asyncio.wait_for(loop.sock_recv(app, 16), 5) == b""
        app.close()
        assert await until(lambda: memory.session.link.closed.done(), 5)
        memory.path.close()
    run(main())


def test_only_the_reflected_connection_takes_its_flow(tmp_path):
    """Any local process may connect to a reflection listener; one that does so from a
    waiting flow's NAT port, but not from the fake source N, is turned away, and the flow
    stays for the reflected connection from N."""
    async def main():
        server = GreetingServer()
        server.start()
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        syn = await released_syn(rig, server.port, 40102)
        loop = asyncio.get_running_loop()
        impostor = await connect_from(APP, syn)
        assert await loop.sock_recv(impostor, 16) == b""
        impostor.close()
        app = await connect_from(FAKE, syn)
        assert await loop.sock_recv(app, 16) == b"hello"
        app.close()
        await rig.close()
        server.join(5)
    run(main())
