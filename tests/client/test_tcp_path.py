"""The TCP path: the end of a flow and which connection takes it (with the real engine
and gateway on loopback), and how the gateway's refusals map to what the app sees.
Answers our gateway never gives (a 2xx that ends the stream, REFUSED_STREAM, a GOAWAY
while flows are open) come from a gateway ``Mux`` or ``h2`` the test drives, joined in
memory to the path's link (``MemoryLink``), with the real reflector and listeners.

The kernel's part (the reflected connection reaching our listener) is played
by a real socket bound to the fake source address and the flow's NAT port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time

import pytest

import h2.events

from client.reflector import Reflector, Refusal
from client.tcp_path import TcpPath, bind_listeners, refusal_for
from client.wire import mux as m
from tests.client.engine_rig import APP, REFLECT, SYN, Rig, run
from tests.client.packets import fields, tcp_packet
from tests.client.wire.h2peer import H2Peer
from tests.client.wire.memory_link import MemoryLink

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


async def until(predicate, timeout: float) -> bool:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def read_all(sock: socket.socket) -> bytes:
    loop, chunks = asyncio.get_running_loop(), []
    while chunk := await loop.sock_recv(sock, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


async def released_syn(rig: Rig, port: int, sport: int) -> dict:
    """An app's SYN to 127.0.0.1:``port``, as the engine releases it once the gateway connected
    (N:np -> L:lp)."""
    rig.tun.inject(tcp_packet(src=APP, dst="127.0.0.1", sport=sport, dport=port, flags=SYN, seq=7))
    return fields(await rig.written(lambda p: p[9] == 6 and fields(p)["flags"] == SYN))


async def connect_from(source: str, syn: dict, rcvbuf: int = 0, *,
                       to: str = str(REFLECT.network_address + 1)) -> socket.socket:
    """A connection from ``source``, port np, to the listener L:lp (L is ``to``) that ``syn``
    is reflected to: from N it is what the kernel makes of the released SYN."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # np may be in TIME_WAIT
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, syn["sport"]))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (to, syn["dport"]))
    return sock


FAKE = str(REFLECT.network_address + 2)


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


#: The path under test in memory: its own loopback addresses (L, N), apart from the rig's.
LOCAL, NAT = "127.79.0.1", "127.79.0.2"
TARGET = "10.9.9.9"


class JoinedSession:
    """What the TCP path uses of a session: a link joined in memory to a gateway the test
    drives, and the CONNECT headers."""

    def __init__(self, gateway=None) -> None:
        self.joined = MemoryLink(gateway)
        self.link = self.joined.link

    def connect_headers(self, authority: str) -> list[tuple[str, str]]:
        return [(":method", "CONNECT"), (":authority", authority)]


class MemoryPath:
    """A ``TcpPath`` on a ``JoinedSession``, with the real reflector and one listener on
    LOCAL; ``written`` holds what it wrote to the TUN."""

    def __init__(self, gateway=None) -> None:
        self.session = JoinedSession(gateway)
        listeners = bind_listeners(LOCAL, 1)
        reflector = Reflector(tun_address=ipaddress.IPv4Address(LOCAL),
                              fake_address=ipaddress.IPv4Address(NAT),
                              listener_port=[listeners[0].getsockname()[1]])
        self.written: list[bytes] = []
        self.path = TcpPath(self.session, reflector, listeners, self.written.append,
                            fake_address=NAT)

    async def syn(self, sport: int) -> list:
        """The app's SYN to TARGET:80 from ``sport``; returns the gateway's events."""
        self.path.on_packet(tcp_packet(src=LOCAL, dst=TARGET, sport=sport, dport=80, flags=SYN,
                                       seq=7), time.monotonic())
        self.path.after_batch()
        return await self.session.joined.flushed()

    async def app_connection(self) -> socket.socket:
        """The app's side of the connection the last released SYN makes (N:np -> L:lp)."""
        (syn,) = [fields(p) for p in self.written if p[9] == 6 and fields(p)["flags"] == SYN]
        return await connect_from(NAT, syn, to=LOCAL)


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


@pytest.mark.parametrize(("status", "proxy_status", "refusal"), [
    (502, "tunnelgate; error=connection_refused", Refusal.REFUSED),
    (502, 'tunnelgate; error=destination_ip_unroutable; details="no route"', Refusal.NET_UNREACHABLE),
    (403, 'tunnelgate; error=destination_ip_prohibited; details="policy"', Refusal.PROHIBITED),
    (502, 'tunnelgate; error=destination_unavailable; details="not connection_refused"',
     Refusal.HOST_UNREACHABLE),
    (504, 'tunnelgate; error=connection_timeout; details="x; error=connection_refused"',
     Refusal.HOST_UNREACHABLE),
    (401, "", Refusal.PROHIBITED),
    (502, "garbage", Refusal.HOST_UNREACHABLE),
])
def test_refusal_follows_the_error_parameter_not_words_in_the_details(status, proxy_status, refusal):
    """The app sees what the gateway's RFC 9209 error names; text in the details never counts."""
    assert refusal_for(status, proxy_status) is refusal
