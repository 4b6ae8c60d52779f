"""Both ends of a control conversation for tests: a real ControlServer with its
EngineHost on a Unix socket (the fake engine, or the real Engine against an
in-process gateway), and a client that records its notifications."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import pathlib

from client.control import protocol as p
from client.control.client import ControlClient
from client.control.errors import NotAllowed
from client.control.host import EngineHost
from client.control.server import ControlServer
from client.dns import MemoryDns
from client.routes import MemoryRoutes
from client.tun import MemoryTun
from tests.client.control.fakes import FakeEngine

PASSWORD = "pa55-w0rd-never-logged"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


class Notes:
    """Collects notifications; lets a test wait for one that matches."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []
        self._changed = asyncio.Event()

    def __call__(self, method: str, params: dict) -> None:
        self.seen.append((method, params))
        self._changed.set()

    async def wait_for(self, method: str, match=lambda params: True, timeout: float = 10.0) -> dict:
        async def look() -> dict:
            start = 0
            while True:
                for m, params in self.seen[start:]:
                    if m == method and match(params):
                        return params
                start = len(self.seen)
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(look(), timeout)

    def states(self) -> list[str]:
        return [params["state"] for m, params in self.seen if m == "state"]


class Service:
    """A ControlServer with its EngineHost on a socket in ``folder``."""

    def __init__(self, folder: pathlib.Path, *, engine_factory=FakeEngine, **host_kw) -> None:
        self.path = folder / "control.sock"
        self.routes = MemoryRoutes()
        self.dns = MemoryDns()
        self.host = EngineHost(tun_factory=lambda mtu: MemoryTun(mtu=mtu),
                               routes_factory=lambda: self.routes, dns_factory=lambda: self.dns,
                               engine_factory=engine_factory, sample_interval=0.05, **host_kw)
        self.server = ControlServer(self.path, self.host)

    async def __aenter__(self) -> "Service":
        await self.server.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.server.close()

    async def client(self) -> ControlClient:
        return await ControlClient.open(self.path)

    async def subscriber(self, **subscribe_kw) -> tuple[ControlClient, "Notes"]:
        """A client subscribed to notifications, and what it has seen."""
        client = await self.client()
        notes = Notes()
        await client.subscribe(notes, **subscribe_kw)
        return client, notes

    async def answerer(self, decision: str, code=lambda: "") -> tuple[ControlClient, "Notes"]:
        """A subscribed client that answers each certificate question with ``decision`` and
        each challenge with ``code()``, and what it has seen."""
        client = await self.client()
        notes = Notes()

        async def answer(method: str, params: dict) -> None:
            notes(method, params)
            if method == "certificate":
                await client.answer_certificate(params["id"], decision)
            elif method == "challenge":
                await client.answer_challenge(params["id"], code())
        await client.subscribe(answer)
        return client, notes


def bare_host(notes: Notes, *, listeners: int = 1, **host_kw) -> EngineHost:
    """An EngineHost on the fake engine, without a server: its notifications go to
    ``notes``, and it is told ``listeners`` subscribers heard each one."""
    host = EngineHost(tun_factory=lambda mtu: MemoryTun(mtu=mtu), routes_factory=MemoryRoutes,
                      dns_factory=MemoryDns, engine_factory=FakeEngine, sample_interval=0.05,
                      **host_kw)
    host.set_notifier(lambda method, params: notes(method, params) or listeners)
    return host


async def raw_call(path: pathlib.Path, *requests: p.Request) -> list[p.Message]:
    """Send raw requests on a fresh connection; return the answers in order."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    answers = []
    for request in requests:
        writer.write(p.encode(request))
        answers.append(p.parse((await reader.readline()).rstrip(b"\n")))
    writer.close()
    return answers


class Gw:
    """An in-process gateway on loopback for the real Engine."""

    def __init__(self, tmp_path: pathlib.Path) -> None:
        from gateway_stub.config import load_config
        from gateway_stub.server import Gateway
        from tests.support import write_gateway
        self.setup = write_gateway(tmp_path / "gw", listen="127.0.0.1:0", hosts=["127.0.0.1"],
                                   allowed_networks=["10.77.0.0/24"])
        self.gateway = Gateway(load_config(self.setup.config))
        self.url = ""

    async def __aenter__(self) -> "Gw":
        (host, port), *_ = await self.gateway.start()
        self.url = f"https://{host}:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.gateway.close()


def real_service(tmp_path: pathlib.Path) -> Service:
    from client.engine import Engine
    return Service(tmp_path, engine_factory=Engine,
                   reflect_network=ipaddress.IPv4Network("127.0.0.0/30"))


def as_nobody(path: pathlib.Path, act=None) -> str:
    """Fork; the child drops to nobody, opens a ControlClient and returns what
    ``await act(client)`` returns ("allowed" without ``act``), or how opening failed.

    A forked child rather than a new interpreter: the interpreter may live
    where nobody cannot read it (e.g. under /root), and SO_PEERCRED records
    the uid at connect(), which happens after the switch either way.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

            async def attempt() -> str:
                try:
                    client = await ControlClient.open(path)
                except NotAllowed as exc:
                    return f"not-allowed {exc.code} {exc}"
                except Exception as exc:
                    return f"other {type(exc).__name__} {exc}"
                try:
                    return "allowed" if act is None else await act(client)
                finally:
                    await client.close()
            result = asyncio.run(attempt())
        except BaseException as exc:
            result = f"crash {exc!r}"
        os.write(wfd, result.encode())
        os._exit(0)
    os.close(wfd)
    os.waitpid(pid, 0)
    with os.fdopen(rfd, "rb") as pipe:
        return pipe.read().decode()
