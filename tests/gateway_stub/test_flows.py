"""Flows through the real gateway over loopback TLS: how they end (idle, their
session ended), what bounds them (a target that stops reading, the session's
flow limit), and UDP flows with hostile capsules."""

from __future__ import annotations

import asyncio

from tests.gateway_stub.rig import Bench, Flow, connect, echo_server, run, udp_headers
from tests.support import UdpEcho


async def _reset_and_audited(bench, flow, reason: str, *, within: float) -> None:
    """The flow is reset (not ended) by the gateway, whose audit line gives ``reason``."""
    assert await asyncio.wait_for(flow.ended, within) is False
    await asyncio.sleep(0.1)
    assert any(r["reason"] == reason for r in bench.audit())


def test_idle_flow_is_ended_by_the_gateway(tmp_path):
    """A flow with no traffic for idle_timeout is reset by the gateway and audited as such."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path, extra_server="idle_timeout = 0.5") as bench:
            session = await bench.login()
            flow = await connect(session, f"127.0.0.1:{port}")
            assert flow.status.result() == 200
            await _reset_and_audited(bench, flow, "idle timeout", within=10)
            await session.logout()
        server.close()
    run(main())


def test_flows_of_a_session_that_ended_are_ended(tmp_path):
    """When a session ends (here evicted by a newer login of the same user beyond
    max_sessions_per_user), its open flows end too, long before they would idle out."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path, extra_server="max_sessions_per_user = 1\nidle_timeout = 8") as bench:
            first = await bench.login()
            flow = await connect(first, f"127.0.0.1:{port}")
            assert flow.status.result() == 200
            second = await bench.login()                                # evicts the first
            await _reset_and_audited(bench, flow, "session ended", within=5)   # within 2 s
            await second.logout()
        server.close()
    run(main())


def test_a_connect_that_ends_its_stream_at_once_gives_the_target_its_fin(tmp_path):
    """A CONNECT whose HEADERS carry END_STREAM (a client with nothing to send) half-closes
    the flow: the target reads EOF, answers, and its answer and end come back."""
    async def main():
        async def answer_after_eof(reader, writer):
            got = await reader.read()                     # until the FIN
            writer.write(b"eof after %d bytes" % len(got))
            writer.close()
        server = await asyncio.start_server(answer_after_eof, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            flow = Flow(session.link)
            flow.stream_id = session.link.open(session.connect_headers(f"127.0.0.1:{port}"), flow,
                                               end=True)
            assert await asyncio.wait_for(flow.status, 10) == 200
            assert await asyncio.wait_for(flow.ended, 5) is True
            assert bytes(flow.data) == b"eof after 0 bytes"
            await session.logout()
        server.close()
    run(main())


def test_connect_udp_survives_garbage_unknown_and_oversized_capsules(tmp_path):
    """Unknown capsule types are skipped, an oversized or odd-context datagram is dropped, a malformed
    capsule resets only its stream; the session and other flows keep working."""
    from client.wire.capsule import CapsuleParser, encode_capsule, encode_datagram, encode_varint

    async def main():
        echo = UdpEcho()
        port = echo.port
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            flow = Flow(session.link)
            flow.stream_id = session.link.open(udp_headers(session, port), flow)
            # First datagram right behind the headers, before any answer.
            session.link.send(flow.stream_id, encode_datagram(b"first"))
            assert await asyncio.wait_for(flow.status, 10) == 200
            session.link.send(flow.stream_id, encode_capsule(0x1234567, b"unknown type"))
            session.link.send(flow.stream_id, encode_datagram(b"odd context", context_id=3))
            session.link.send(flow.stream_id, encode_datagram(b"x" * 65528))   # > 65527: dropped
            session.link.send(flow.stream_id, encode_datagram(b"second"))
            parser = CapsuleParser()
            for _ in range(200):
                got = [c.value for c in parser.feed(bytes(flow.data))]
                if len(got) >= 2:
                    break
                await asyncio.sleep(0.02)
            assert got == [b"\x00first", b"\x00second"]
            # A malformed capsule (length beyond the limit) resets that stream only.
            bad = Flow(session.link)
            bad.stream_id = session.link.open(udp_headers(session, port), bad)
            session.link.send(bad.stream_id, b"\x00" + encode_varint(1 << 40))
            assert await asyncio.wait_for(bad.ended, 10) is False
            assert session.link.is_open
            flow.data.clear()
            session.link.send(flow.stream_id, encode_datagram(b"still fine"))
            for _ in range(200):
                if bytes(flow.data).endswith(b"still fine"):
                    break
                await asyncio.sleep(0.02)
            assert bytes(flow.data).endswith(b"still fine")
            await session.logout()
        echo.close()
    run(main())


def test_denied_udp_never_opens_a_socket(tmp_path):
    """connect-udp to a denied network is answered 403 with proxy-status and audited as a denial."""
    async def main():
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            flow = Flow(session.link)
            flow.stream_id = session.link.open(session.extended_connect_headers(
                "connect-udp", "/.well-known/masque/udp/10.88.0.10/53/"), flow)
            assert await asyncio.wait_for(flow.status, 10) == 403
            assert "destination_ip_prohibited" in flow.headers["proxy-status"]
            assert any(r["protocol"] == "udp" and r["verdict"] == "deny" for r in bench.audit())
            await session.logout()
    run(main())


def test_a_target_that_stops_reading_closes_the_window_instead_of_filling_memory(tmp_path):
    """Flow control is end to end: when the intranet server stops reading, the gateway stops
    crediting the stream, so the sender's data waits on the sender's side."""
    async def main():
        stalled = asyncio.Event()

        async def never_reads(reader, writer):
            await stalled.wait()
            writer.close()

        server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            flow = await connect(session, f"127.0.0.1:{port}")
            assert flow.status.result() == 200
            total = 64 * 1024 * 1024
            session.link.send(flow.stream_id, bytes(total))
            await asyncio.sleep(2.0)
            waiting = session.link.buffered(flow.stream_id)
            # In flight at most: the stream window (4 MiB) + the gateway's socket
            # buffer limit (1 MiB) + what the kernels hold.
            assert waiting > total - 24 * 1024 * 1024, waiting
            stalled.set()
            await session.logout()
        server.close()
    run(main())


def test_one_token_on_many_connections_shares_the_sessions_flow_limit(tmp_path):
    """max_streams_per_session holds for the session, not per TLS connection: a second
    connection with the same token gets 503 connection_limit_reached; a closed flow frees a slot."""
    from client.gateway_link import connect_link

    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path, extra_server="max_streams_per_session = 2") as bench:
            session = await bench.login()
            other = await connect_link(bench.address, bench.trust)
            first = await connect(session, f"127.0.0.1:{port}")
            second = Flow(other)
            second.stream_id = other.open(session.connect_headers(f"127.0.0.1:{port}"), second)
            assert await asyncio.wait_for(second.status, 10) == 200
            third = Flow(other)
            third.stream_id = other.open(session.connect_headers(f"127.0.0.1:{port}"), third)
            assert await asyncio.wait_for(third.status, 10) == 503
            assert "connection_limit_reached" in third.headers["proxy-status"]
            other.reset(third.stream_id)         # frees its HTTP/2 stream slot
            session.link.end(first.stream_id)
            assert await asyncio.wait_for(first.ended, 10)
            await asyncio.sleep(0.1)
            fourth = Flow(other)
            fourth.stream_id = other.open(session.connect_headers(f"127.0.0.1:{port}"), fourth)
            assert await asyncio.wait_for(fourth.status, 10) == 200
            other.close()
            await session.logout()
        server.close()
    run(main())
