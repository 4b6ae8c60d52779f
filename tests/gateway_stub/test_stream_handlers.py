"""gateway_stub.stream_handlers through the real server: a TCP flow's stream while connecting."""

from __future__ import annotations

import asyncio
import os
import socket

from tests.gateway_stub.rig import Bench, Flow, connect, echo_server, run


def _hanging_target() -> tuple[socket.socket, socket.socket, int]:
    """A listener whose accept queue is full: connects to it hang (SYNs are dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    return listener, filler, port


def test_streams_reset_while_connecting_end_their_connects_at_once(tmp_path):
    """A client that opens CONNECTs and resets them at once (rapid reset) leaves no connect
    attempt behind: each ends at once, holds no socket, and gets its audit line."""
    async def main():
        listener, filler, port = _hanging_target()
        async with Bench(tmp_path, extra_server="connect_timeout = 20") as bench:
            session = await bench.login()
            before = len(os.listdir("/proc/self/fd"))
            for _ in range(50):
                flow = Flow(session.link)
                flow.stream_id = session.link.open(session.connect_headers(f"127.0.0.1:{port}"), flow)
                if _ % 2:
                    await asyncio.sleep(0.01)        # some reach the connect, some not yet
                session.link.reset(flow.stream_id)
            await asyncio.sleep(0.5)
            assert len(os.listdir("/proc/self/fd")) < before + 5
            reasons = [r["reason"] for r in bench.audit()]
            assert reasons.count("stream reset while connecting") == 50
            # Their slots are free again: a normal flow still works.
            server, echo_port = await echo_server()
            flow = await connect(session, f"127.0.0.1:{echo_port}")
            assert flow.status.result() == 200
            await session.logout()
            server.close()
        filler.close()
        listener.close()
    run(main())


def test_a_client_that_half_closes_before_the_answer_still_ends_the_flow(tmp_path):
    """END_STREAM sent while the gateway is still connecting reaches the target as a FIN."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            flow = Flow(session.link)
            flow.stream_id = session.link.open(session.connect_headers(f"127.0.0.1:{port}"), flow)
            session.link.end(flow.stream_id)
            assert await asyncio.wait_for(flow.status, 10) == 200
            assert await asyncio.wait_for(flow.ended, 5) is True
            await session.logout()
        server.close()
    run(main())


LOGIN = [(":method", "POST"), (":scheme", "https"), (":authority", "gateway"),
         (":path", "/api/v1/session"), ("content-type", "application/json")]


def test_logins_whose_body_is_still_coming_are_capped_per_connection(tmp_path):
    """A connection may have a few login bodies arriving at once (each is held until it ends);
    beyond them a new login gets 429 at once, and ended ones give their places back."""
    from gateway_stub.connection import MAX_LOGIN_BODIES

    async def main():
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            link = session.link
            flows = []
            for _ in range(MAX_LOGIN_BODIES + 3):
                flow = Flow(link)
                flow.stream_id = link.open(LOGIN, flow)
                link.send(flow.stream_id, b'{"username": "ali')
                flows.append(flow)
            await asyncio.sleep(0.3)
            assert [f.status.result() for f in flows if f.status.done()] == [429] * 3
            assert not any(f.status.done() for f in flows[:MAX_LOGIN_BODIES])
            for flow in flows[:MAX_LOGIN_BODIES]:
                link.reset(flow.stream_id)
            await asyncio.sleep(0.2)
            again = Flow(link)
            again.stream_id = link.open(LOGIN, again)
            link.send(again.stream_id, b'{"username": "alice", "password": "wrong"}', end=True)
            assert await asyncio.wait_for(again.status, 10) == 401
            await session.logout()
    run(main())
