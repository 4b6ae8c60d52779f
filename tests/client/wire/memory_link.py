"""A client ``Link`` joined in memory to a gateway the test drives (our ``Mux`` or ``h2``)."""

from __future__ import annotations

import asyncio

from client.wire import mux as m
from client.wire.link import Link


class RecordingTransport(asyncio.Transport):
    """Keeps every write apart, as the socket would get them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def take(self) -> bytes:
        """Everything written so far, once."""
        data, self.writes[:] = b"".join(self.writes), []
        return data


class MemoryLink:
    """A client Link on a recording transport, settings exchanged with ``gateway`` (anything
    with ``receive`` and ``data_to_send``: a gateway ``Mux`` by default, or ``H2Peer``)."""

    def __init__(self, gateway=None) -> None:
        self.gateway = gateway if gateway is not None else m.Mux(client_side=False)
        self.transport = RecordingTransport()
        self.link = Link(m.Mux(client_side=True))
        self.link.connection_made(self.transport)
        self.to_gateway()
        self.to_client()
        self.to_gateway()

    def to_gateway(self) -> list:
        """Hand the gateway what the client wrote; returns the gateway's events."""
        return self.gateway.receive(self.transport.take())

    def to_client(self) -> None:
        """Hand the client what the gateway has to send."""
        data = self.gateway.data_to_send()
        if data:
            self.link.data_received(data)

    async def flushed(self) -> list:
        """Let the client's link flush at the end of the turn, then ``to_gateway``."""
        await asyncio.sleep(0)
        return self.to_gateway()
