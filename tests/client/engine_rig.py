"""The engine test rig: the real engine against the real gateway on loopback, with an
in-memory TUN, routes and DNS."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from client.dns import MemoryDns
from client.engine import Engine, EngineOptions
from client.netchange import RouteSnapshot
from client.nethost import MemoryNetwork
from client.routes import MemoryRoutes
from client.gateway_address import GatewayAddress
from client.states import State
from client.trust import Trust
from client.tun import MemoryTun
from gateway_stub.config import load_config
from gateway_stub.server import Gateway
from tests.support import PASSWORDS, write_gateway

REFLECT = ipaddress.IPv4Network("127.77.0.0/30")   # loopback: bindable without configuring
APP = "127.77.0.1"
SYN, RST = 0x02, 0x04


class Prompts:
    """A prompter that answers from a script and counts the questions."""

    def __init__(self, codes=(), decision="cancel") -> None:
        self.codes = list(codes)
        self.decision = decision
        self.asked_codes = 0
        self.asked_certs = []

    async def one_time_code(self, prompt):
        self.asked_codes += 1
        return self.codes.pop(0) if self.codes else None

    async def trust_certificate(self, info):
        self.asked_certs.append(info)
        return self.decision


class Rig:
    """Gateway on loopback plus an engine with fakes, for one test."""

    def __init__(self, tmp_path, *, user="alice", prompter=None, trust=None, dns=True,
                 password=None, extra_server="", proxy=False, **options) -> None:
        extra = '[dns]\nservers = ["127.0.0.53"]\nsearch = ["corp.example"]\n' if dns else ""
        self.setup = write_gateway(tmp_path, listen="127.0.0.1:0", hosts=["127.0.0.1"],
                                   allowed_networks=["127.0.0.0/8"], extra=extra,
                                   extra_server=extra_server)
        self.gateway = Gateway(load_config(self.setup.config))
        self.user, self.prompter, self.trust = user, prompter, trust
        #: With ``proxy``, the engine reaches the gateway through this (see ``Proxy``).
        self.proxy: Proxy | None = Proxy() if proxy else None
        self.options = {"reconnect_delays": (0.1, 0.2), **options}
        self.password = PASSWORDS[user] if password is None else password
        #: The host network the engine's watcher sees (``network.route``, ``announce()``).
        self.network = MemoryNetwork(RouteSnapshot(interface="lo", index=1))
        self.tun = MemoryTun()
        self.routes, self.dns = MemoryRoutes(), MemoryDns()
        self.states: list[tuple[State, str]] = []

    async def start(self) -> Engine:
        (host, port), *_ = await self.gateway.start()
        if self.proxy is not None:
            host, port = await self.proxy.start(host, port)
        options = EngineOptions(gateway=GatewayAddress(host, port),
                                trust=self.trust or Trust(ca_file=self.setup.certs.ca_cert),
                                username=self.user, reflect_network=REFLECT, **self.options)
        self.engine = Engine(options, self.password, tun_factory=self._tun_with,
                             routes=self.routes, dns=self.dns, prompter=self.prompter,
                             on_state=lambda s, d: self.states.append((s, d)), network=self.network)
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(self.engine.run(self.stop))
        return self.engine

    def push(self, monkeypatch, **fields) -> None:
        """From now on the gateway's config document for every session carries ``fields``
        (``exclude``, ``mtu``…), on login and on resume alike."""
        api = self.gateway.api
        pushed = api.client_config

        def with_fields(session):
            response = pushed(session)
            response.body.update(fields)
            return response
        monkeypatch.setattr(api, "client_config", with_fields)

    def _tun_with(self, mtu: int) -> MemoryTun:
        """The rig's TUN, made with the MTU the engine asks for (as a KernelTun would be)."""
        self.tun.mtu = mtu
        return self.tun

    async def connected(self) -> None:
        for _ in range(200):
            if self.engine.state is State.CONNECTED or self.task.done():
                break
            await asyncio.sleep(0.02)
        if self.task.done():
            self.task.result()
        assert self.engine.state is State.CONNECTED

    async def written(self, predicate, timeout=5.0) -> bytes:
        """Wait for a packet the engine wrote to the TUN."""
        for _ in range(int(timeout / 0.02)):
            for packet in self.tun.written:
                if predicate(packet):
                    return packet
            await asyncio.sleep(0.02)
        raise AssertionError(f"no such packet among {len(self.tun.written)} written")

    async def close(self) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(self.task, 10)
        finally:
            self.gateway.close()
            if self.proxy is not None:
                self.proxy.close()


class Proxy:
    """A TCP relay in front of the gateway whose open connections can go silent, as when
    a cable is pulled or a laptop sleeps: no FIN, no RST, every byte dropped. Connections
    made afterwards are relayed again (the network is back)."""

    def __init__(self) -> None:
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._silenced: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.target = (host, port)
        """Where new connections go (``retarget`` changes it)."""

        async def relay(reader, writer):
            while data := await reader.read(65536):
                if writer not in self._silenced:
                    writer.write(data)
            if writer not in self._silenced:   # a pulled cable carries no FIN either
                writer.close()

        async def accepted(reader, writer):
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:        # nothing listens there: the client sees its connection end
                writer.close()
                return
            self._writers += [writer, up_writer]
            await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer),
                                 return_exceptions=True)
        self._server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[:2]

    def go_silent(self) -> None:
        """Drop every byte of the connections open now, in both directions."""
        self._silenced.update(self._writers)

    def drop(self) -> None:
        """Close the connections open now (the gateway dropped them); new ones get through."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def close(self) -> None:
        self._server.close()
        self.drop()


def open_and_closed_ports() -> tuple[socket.socket, int, int]:
    """A listening socket, its port, and a loopback port nothing listens on."""
    listener = socket.create_server(("127.0.0.1", 0))
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    return listener, listener.getsockname()[1], closed_port


async def until(predicate, timeout=10.0) -> None:
    """Wait until ``predicate()`` is true; AssertionError after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))

