"""The TCP path: the end of a flow (with the real engine and gateway on loopback),
and how the gateway's refusals map to what the app sees.

The kernel's part (the reflected connection reaching our listener) is played
by a real socket bound to the fake source address and the flow's NAT port.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from client.reflector import Refusal
from client.tcp_path import refusal_for
from tests.client.engine_rig import APP, REFLECT, SYN, Rig, run
from tests.client.packets import fields, tcp_packet

RESPONSE = bytes(range(256)) * 8192     # 2 MiB: within one stream window, so it all arrives


class HalfCloseServer(threading.Thread):
    """Reads a request to its end (the app's FIN), then answers RESPONSE and closes."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while conn.recv(65536):
                pass
            conn.sendall(RESPONSE)


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
        rig.tun.inject(tcp_packet(src=APP, dst="127.0.0.1", sport=40100, dport=server.port,
                                  flags=SYN, seq=7))
        syn = fields(await rig.written(lambda p: p[9] == 6 and fields(p)["flags"] == SYN))
        # What the kernel does with the released SYN: a connection from N:np to L:lp.
        app = socket.socket()
        app.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Every engine's first NAT port is the same: another run's socket (or its TIME_WAIT)
        # may hold it, which only a connect to the same listener port would clash with.
        app.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        app.bind((str(REFLECT.network_address + 2), syn["sport"]))
        app.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(app, (str(REFLECT.network_address + 1), syn["dport"]))
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
