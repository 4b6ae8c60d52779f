"""StreamPipe on real loopback sockets, through two Links joined by a socket pair.

The flows a user sees: an app's connection piped into a stream on the
client, the stream piped into a connection to the server on the gateway.
A peer that writes and closes at once (an HTTP server answering
``Connection: close``) must reach the other end as one segment holding
the data and the FIN, as it left the peer, or the other app closes first
and keeps a TIME_WAIT for every connection it makes.
"""

from __future__ import annotations

import asyncio
import socket
import threading

from client.wire import mux as m
from client.wire.link import Link
from client.wire.pipe import StreamPipe, eof_pending
from tests.client.wire.fake_link import FakeLink

REQUEST = b"GET / HTTP/1.1\r\nHost: intranet\r\nConnection: close\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


def test_eof_pending_is_true_only_for_a_waiting_fin():
    listener = socket.create_server(("127.0.0.1", 0))
    near = socket.create_connection(listener.getsockname())
    far, _ = listener.accept()
    with listener, near, far:
        assert not eof_pending(far.fileno())          # nothing there
        near.sendall(b"x")
        assert not eof_pending(far.fileno())          # data, no FIN
        assert far.recv(1) == b"x"
        near.shutdown(socket.SHUT_WR)
        assert eof_pending(far.fileno())
        assert far.recv(1) == b""                     # the peek consumed nothing
    assert not eof_pending(-1)


class Intranet(threading.Thread):
    """A server that reads a whole request, notes whether its FIN came with it, answers and
    closes in one segment (corked), as a server that writes and closes at once often does."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.fin_with_request: list[bool] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(len(REQUEST), socket.MSG_WAITALL)
                assert request == REQUEST
                self.fin_with_request.append(eof_pending(conn.fileno()))
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                conn.sendall(RESPONSE)


class RecordingMux(m.Mux):
    """A Mux that keeps a copy of every byte it sends."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.sent = bytearray()

    def data_to_send(self) -> bytes:
        out = super().data_to_send()
        self.sent += out
        return out


def bare_ends(wire: bytes) -> int:
    """Empty DATA frames with END_STREAM in a stream of frames (a FIN sent apart from its data)."""
    count, at = 0, 24 if wire.startswith(b"PRI * HTTP/2.0") else 0
    while at + 9 <= len(wire):
        length, kind, flags = int.from_bytes(wire[at:at + 3], "big"), wire[at + 3], wire[at + 4]
        if kind == 0 and flags & 0x1 and length == 0:
            count += 1
        at += 9 + length
    return count


async def tunnel(intranet_port: int, muxes: list[RecordingMux]) -> asyncio.AbstractServer:
    """A local listener whose connections are piped, through the Links, to the intranet port."""
    loop = asyncio.get_running_loop()
    near, far = socket.socketpair()

    async def open_upstream(request: m.RequestReceived) -> None:
        host, port = request.headers[":authority"].rsplit(":", 1)
        pipe = StreamPipe(gateway)
        pipe.attach_stream(request.stream_id)        # payload before the socket is kept
        await loop.create_connection(lambda: pipe, host, int(port))
        gateway.respond(request.stream_id, 200)

    muxes += [RecordingMux(client_side=True), RecordingMux(client_side=False)]
    gateway = Link(muxes[1], on_request=lambda r: loop.create_task(open_upstream(r)))
    await loop.connect_accepted_socket(lambda: gateway, far)
    client = Link(muxes[0])
    await loop.connect_accepted_socket(lambda: client, near)

    def accepted() -> StreamPipe:
        pipe = StreamPipe(client)
        headers = [(":method", "CONNECT"), (":authority", f"127.0.0.1:{intranet_port}")]
        pipe.attach_stream(client.open(headers, pipe))
        return pipe

    return await loop.create_server(accepted, "127.0.0.1", 0)


def exchange(port: int, *, fin_with_request: bool) -> tuple[bytes, bool]:
    """One app connection: the response, and whether its FIN was there with its last byte."""
    with socket.create_connection(("127.0.0.1", port)) as app:
        if fin_with_request:                          # request and FIN in one segment
            app.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            app.sendall(REQUEST)
            app.shutdown(socket.SHUT_WR)
        else:
            app.sendall(REQUEST)
        response = app.recv(len(RESPONSE), socket.MSG_WAITALL)
        return response, eof_pending(app.fileno())


def test_data_and_fin_cross_the_tunnel_together_both_ways():
    intranet = Intranet()
    intranet.start()

    muxes: list[RecordingMux] = []

    async def main() -> list[tuple[bytes, bool]]:
        server = await tunnel(intranet.listener.getsockname()[1], muxes)
        port = server.sockets[0].getsockname()[1]
        results = []
        for i in range(20):
            results.append(await asyncio.to_thread(exchange, port, fin_with_request=i % 2 == 1))
        server.close()
        return results

    results = asyncio.run(main())
    intranet.listener.close()
    assert [response for response, _ in results] == [RESPONSE] * 20
    assert bare_ends(muxes[1].sent) == 0, "the gateway sent a FIN apart from its data"
    # The app's FIN comes alone in the ten exchanges where it closes after the response.
    assert bare_ends(muxes[0].sent) == 10, "the client sent a FIN apart from its data"
    assert all(fin for _, fin in results), "the response's FIN came apart from its data"
    assert intranet.fin_with_request == [False, True] * 10


class CreditLink(FakeLink):
    """A stand-in Link that counts the payload credited back to the peer."""

    def __init__(self) -> None:
        super().__init__()
        self.credited = 0

    def consumed(self, stream_id, flow_length) -> None:
        self.credited += flow_length


class SlowSocket(asyncio.Transport):
    """A socket transport whose peer does not read: everything stays in its buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name, default=None): return default
    def set_write_buffer_limits(self, high=None, low=None): pass
    def write(self, data): pass
    def write_eof(self): pass
    def is_closing(self): return self.closing

    def abort(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True


def test_a_flow_that_dies_gives_back_the_credit_it_held():
    """Payload held uncredited (the socket's buffer was full, or the socket never came) is
    credited to the connection when the flow ends anyway: otherwise each such flow shrinks
    the connection window for good, until no stream of the session can receive."""
    for ending in ("socket reset", "stream reset", "abort before the socket"):
        link = CreditLink()
        pipe = StreamPipe(link, 1)
        if ending != "abort before the socket":
            pipe.connection_made(SlowSocket())
            pipe.pause_writing()
        for _ in range(4):
            pipe.on_data(b"x" * 1000, 1000 + 9)      # padding counts as flow
        if ending == "socket reset":
            pipe.connection_lost(ConnectionResetError())
        elif ending == "stream reset":
            pipe.on_reset(0x8)
        else:
            pipe.abort()
        assert link.credited == 4 * 1009, ending
        pipe.resume_writing()                        # a late drain must not credit it twice
        assert link.credited == 4 * 1009, ending


def test_a_reset_without_error_after_the_end_keeps_what_was_delivered():
    """RST_STREAM NO_ERROR right after END_STREAM (a peer that finished its answer asks us
    to stop sending, RFC 9113 8.1, as Go's HTTP/2 server does) keeps the payload: the app
    reads it all and a clean EOF, not a connection reset, also when its socket comes only
    after the reset; the flow ends when the app closes."""
    payload = bytes(range(256)) * 16384              # 4 MiB: most of it still buffered

    async def one(socket_first: bool) -> tuple[bytes, bool]:
        loop = asyncio.get_running_loop()
        ours, app = socket.socketpair()
        app.setblocking(False)
        link, done = CreditLink(), loop.create_future()
        pipe = StreamPipe(link, 1, on_done=done.set_result)
        if socket_first:
            await loop.connect_accepted_socket(lambda: pipe, ours)
        pipe.on_data(payload, len(payload))
        pipe.on_end()
        pipe.on_reset(0)                             # NO_ERROR
        if not socket_first:
            await loop.connect_accepted_socket(lambda: pipe, ours)
        got = bytearray()
        while True:
            try:
                chunk = await loop.sock_recv(app, 1 << 20)
            except ConnectionResetError:
                return bytes(got), False
            if not chunk:
                break
            got += chunk
        app.close()
        await asyncio.wait_for(done, 5)
        return bytes(got), not link.reset_ids and link.credited == len(payload)

    async def main() -> list[tuple[bytes, bool]]:
        return [await one(socket_first) for socket_first in (True, False)]

    for got, clean in asyncio.run(main()):
        assert len(got) == len(payload) and got == payload and clean
