"""Both ends of a TCP flow for the TCP path's tests. The kernel's part (the reflected
connection reaching our listener) is played by a real socket bound to the fake source
address and the flow's NAT port: with the real engine and gateway on loopback
(``engine_rig.Rig``), or with a ``MemoryPath``, whose link is joined in memory
(``MemoryLink``) to a gateway ``Mux`` or ``h2`` the test drives, for the answers our
gateway never gives (a 2xx that ends the stream, REFUSED_STREAM, a GOAWAY while flows
are open).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

from client.reflector import Reflector
from client.tcp_path import TcpPath
from client.tcp_sockets import bind_listeners
from tests.client.engine_rig import APP, REFLECT, SYN, Rig
from tests.client.packets import fields, tcp_packet
from tests.client.wire.memory_link import MemoryLink

#: N, the fake source of the rig's reflected connections.
FAKE = str(REFLECT.network_address + 2)
#: The path under test in memory: its own loopback addresses (L, N), apart from the rig's.
LOCAL, NAT = "127.79.0.1", "127.79.0.2"
TARGET = "10.9.9.9"


async def until(predicate, timeout: float) -> bool:
    """Whether ``predicate()`` holds within ``timeout`` seconds (polled every 50 ms)."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


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
