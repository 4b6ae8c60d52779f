"""A running gateway on loopback, and the client side of its flows, for the tests."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl

from client.gateway_address import GatewayAddress
from client.session import open_session
from client.trust import Trust
from client.wire.link import Link
from gateway_stub.config import load_config
from gateway_stub.server import Gateway
from tests.support import PASSWORDS, write_gateway


class Flow:
    """A stream handler that records what the gateway says on a CONNECT."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.status = asyncio.get_running_loop().create_future()
        self.headers: dict[str, str] = {}
        self.data = bytearray()
        self.ended = asyncio.get_running_loop().create_future()
        self.stream_id = 0

    def on_response(self, status, headers, ended):
        self.headers = headers
        self.status.set_result(status)

    def on_data(self, data, flow_length):
        self.data += data
        self.link.consumed(self.stream_id, flow_length)

    def on_end(self):
        if not self.ended.done():
            self.ended.set_result(True)

    def on_reset(self, code):
        if not self.status.done():
            self.status.set_result(-1)
        if not self.ended.done():
            self.ended.set_result(False)

    def on_writable(self):
        pass


class Bench:
    """A running gateway plus loopback servers for one test."""

    def __init__(self, tmp_path, **kw) -> None:
        self.setup = write_gateway(tmp_path, listen="127.0.0.1:0", hosts=["127.0.0.1"],
                                   allowed_networks=["127.0.0.0/8"],
                                   denied_networks=["10.88.0.0/24"], **kw)
        self.gateway = Gateway(load_config(self.setup.config))
        self.address: GatewayAddress | None = None

    async def __aenter__(self) -> "Bench":
        (host, port), *_ = await self.gateway.start()
        self.address = GatewayAddress(host, port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.gateway.close()

    @property
    def trust(self) -> Trust:
        return Trust(ca_file=self.setup.certs.ca_cert)

    async def login(self, user: str = "alice"):
        return await open_session(self.address, self.trust, user, PASSWORDS[user])

    def audit(self) -> list[dict]:
        path = self.setup.config.parent / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def echo_server() -> tuple[asyncio.base_events.Server, int]:
    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def connect(session, authority: str) -> Flow:
    """Open a CONNECT to ``authority`` on the session's link; returns once answered."""
    flow = Flow(session.link)
    flow.stream_id = session.link.open(session.connect_headers(authority), flow)
    await asyncio.wait_for(flow.status, 10)
    return flow


async def raw_tls(bench: Bench, alpn: list[str], *, local: str | None = None):
    """A bare TLS connection to the gateway offering ``alpn``, from the address ``local``
    if given (reader, writer)."""
    ctx = ssl.create_default_context(cafile=str(bench.setup.certs.ca_cert))
    ctx.set_alpn_protocols(alpn)
    return await asyncio.open_connection(bench.address.host, bench.address.port, ssl=ctx,
                                         local_addr=(local, 0) if local else None)


def udp_headers(session, port: int) -> list[tuple[str, str]]:
    """connect-udp request headers for 127.0.0.1:``port`` (RFC 9298 path)."""
    return session.extended_connect_headers("connect-udp", f"/.well-known/masque/udp/127.0.0.1/{port}/")
