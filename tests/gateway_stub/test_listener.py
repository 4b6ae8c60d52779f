"""The per-source connection cap: on the real gateway over loopback TLS, and on the
listener alone where its timeouts are made short."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest
import uvloop

from client.errors import ClientError
from gateway_stub.certs import make_self_signed
from gateway_stub.limits import ConnectionCount
from gateway_stub.listener import Listener
from tests.gateway_stub.rig import Bench, connect, echo_server, raw_tls, run

CAP = 3
#: The gateway runs on uvloop; the tests run on asyncio's loop, and the leak test on both.
RUNNERS = [pytest.param(run, id="asyncio"),
           pytest.param(lambda coro: uvloop.run(asyncio.wait_for(coro, 30)), id="uvloop")]
#: The client's HTTP/2 preface and an empty SETTINGS frame.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def capped(tmp_path, extra: str = "") -> Bench:
    return Bench(tmp_path, extra_server=f"max_connections_per_source = {CAP}\n{extra}")


async def refused(host: str, port: int, *, local: str = "127.0.0.1") -> bool:
    """True if a new plain TCP connection from ``local`` is reset or closed at once
    (an admitted one would wait for a TLS ClientHello instead)."""
    try:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(local, 0))
    except ConnectionResetError:           # the reset came before connect() returned
        return True
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


async def served(bench: Bench, *, local: str | None = None):
    """A TLS connection whose HTTP/2 preface the gateway answered with SETTINGS."""
    reader, writer = await raw_tls(bench, ["h2"], local=local)
    writer.write(PREFACE)
    header = await asyncio.wait_for(reader.readexactly(9), 5)
    assert header[3] == 4, header          # a SETTINGS frame
    return reader, writer


async def settle(count: ConnectionCount, open_: int = 0) -> None:
    """Wait until ``open_`` connections are counted (the gateway closes asynchronously)."""
    for _ in range(100):
        if count.open == open_:
            return
        await asyncio.sleep(0.05)
    assert count.open == open_


async def closed_by_gateway(reader: asyncio.StreamReader) -> None:
    try:
        while await asyncio.wait_for(reader.read(65536), 5):
            pass
    except (ConnectionError, ssl.SSLError):
        pass


def test_a_connection_beyond_the_cap_is_reset_while_the_first_ones_work(tmp_path, caplog):
    """With the cap reached, new connections from that source are reset before TLS and
    logged once, not once each; its logged-in session keeps carrying requests."""
    async def main():
        server, port = await echo_server()
        async with capped(tmp_path) as bench:
            session = await bench.login()
            held = [await served(bench) for _ in range(CAP - 1)]
            address = bench.address
            with caplog.at_level(logging.WARNING, logger="gateway_stub.listener"):
                for _ in range(20):
                    assert await refused(address.host, address.port)
                with pytest.raises(ClientError):
                    await bench.login()
            for text in (b"first", b"second"):
                flow = await connect(session, f"127.0.0.1:{port}")
                assert flow.status.result() == 200
                session.link.send(flow.stream_id, text)
                session.link.end(flow.stream_id)
                await asyncio.wait_for(flow.ended, 10)
                assert bytes(flow.data) == text
            lines = [r.getMessage() for r in caplog.records if r.name == "gateway_stub.listener"]
            assert lines == ["refused 1 connection over max_connections_per_source = 3 "
                             "(latest from 127.0.0.1)"]
            assert bench.gateway.connections.refused == 21
            assert bench.gateway.connections.open_from("127.0.0.1") == CAP
            session.link.close("done")
            for _, writer in held:
                writer.close()
        server.close()
    run(main())


def test_another_source_is_not_affected(tmp_path):
    """A source at its cap does not stop a connection from another address."""
    async def main():
        async with capped(tmp_path) as bench:
            held = [await served(bench) for _ in range(CAP)]
            assert await refused(bench.address.host, bench.address.port)
            _, other = await served(bench, local="127.0.0.2")
            assert bench.gateway.connections.open_from("127.0.0.2") == 1
            assert await refused(bench.address.host, bench.address.port)
            for _, writer in [*held, (None, other)]:
                writer.close()
    run(main())


async def _fill_and_close(bench: Bench) -> None:
    """Every way a connection ends, CAP at a time, each batch closed again."""
    host, port = bench.address.host, bench.address.port
    untrusted = ssl.create_default_context()
    untrusted.set_alpn_protocols(["h2"])

    async def garbage():                       # no TLS at all: the handshake fails
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"\x00\xff" * 1000)
        await closed_by_gateway(reader)
        writer.close()

    async def vanish():                        # gone in the middle of the handshake
        _, writer = await asyncio.open_connection(host, port)
        writer.transport.abort()

    async def distrust():                      # the client refuses the certificate
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(host, port, ssl=untrusted)

    async def http1():                         # TLS, but no h2: the gateway closes it
        reader, writer = await raw_tls(bench, ["http/1.1"])
        await closed_by_gateway(reader)
        writer.close()

    async def bad_h2():                        # h2 ALPN, then not HTTP/2
        reader, writer = await raw_tls(bench, ["h2"])
        writer.write(b"this is not http/2" * 100)
        await closed_by_gateway(reader)
        writer.close()

    async def dropped():                       # served, then cut without close_notify
        _, writer = await served(bench)
        writer.transport.abort()

    async def closed():                        # the usual end: the client closes
        session = await bench.login()
        session.link.close("done")

    for ending in (garbage, vanish, distrust, http1, bad_h2, dropped, closed):
        await asyncio.gather(*(ending() for _ in range(CAP)))
        await settle(bench.gateway.connections)


@pytest.mark.parametrize("runner", RUNNERS)
def test_no_way_of_closing_leaks_a_place(tmp_path, runner):
    """After failed handshakes, garbage, refused certificates, protocol errors, dropped and
    normal connections, the source gets its full quota again, and no more."""
    async def main():
        async with capped(tmp_path) as bench:
            for _ in range(2):
                await _fill_and_close(bench)
            held = [await served(bench) for _ in range(CAP - 1)]
            session = await bench.login()
            assert await refused(bench.address.host, bench.address.port)
            session.link.close("done")
            for _, writer in held:
                writer.close()
            await settle(bench.gateway.connections)
    runner(main())


def test_a_connection_closed_for_silence_gives_its_place_back(tmp_path):
    """The idle watchdog's close frees the place like any other."""
    async def main():
        async with capped(tmp_path, "session_idle_timeout = 0.3\n") as bench:
            held = [await served(bench) for _ in range(CAP)]
            assert await refused(bench.address.host, bench.address.port)
            for reader, _ in held:
                await closed_by_gateway(reader)
            await settle(bench.gateway.connections)
            await served(bench)
    run(main())


class _Plain(asyncio.Protocol):
    """A protocol that only gives its place back when its connection ends."""

    def __init__(self, slot) -> None:
        self.slot = slot

    def connection_lost(self, exc) -> None:
        self.slot.release()


async def _listener(tmp_path, count: ConnectionCount, host: str = "127.0.0.1") -> tuple[Listener, int]:
    certs = make_self_signed(tmp_path, [host])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.certificate, certs.private_key)
    listener = Listener(_Plain, ctx, count, handshake_timeout=0.2)
    (_, port), = await listener.start(host, 0)
    return listener, port


def test_a_handshake_that_never_comes_times_out_and_frees_its_place(tmp_path):
    """A connection that sends nothing holds its place only until the handshake timeout."""
    async def main():
        count = ConnectionCount(max_per_source=1)
        listener, port = await _listener(tmp_path, count)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await refused("127.0.0.1", port)
        await closed_by_gateway(reader)
        writer.close()
        await settle(count)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await settle(count, 1)
        writer.close()
        listener.close()
    run(main())


def test_refusals_after_the_first_are_reported_later_in_one_line(tmp_path, caplog):
    """A burst of refusals gives one line at once and one for the rest after the interval."""
    async def main():
        count = ConnectionCount(max_per_source=1, report_every=0.3)
        listener, port = await _listener(tmp_path, count)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        with caplog.at_level(logging.WARNING, logger="gateway_stub.listener"):
            for _ in range(5):
                assert await refused("127.0.0.1", port)
            await asyncio.sleep(0.5)
        lines = [r.getMessage() for r in caplog.records if r.name == "gateway_stub.listener"]
        assert [line.split(" over ")[0] for line in lines] == [
            "refused 1 connection", "refused 4 connections"]
        writer.close()
        listener.close()
    run(main())


def test_ipv6_sources_are_capped_too(tmp_path):
    """An IPv6 listener counts its peers (as their /64) like IPv4 ones."""
    async def main():
        count = ConnectionCount(max_per_source=2)
        listener, port = await _listener(tmp_path, count, "::1")
        held = [await asyncio.open_connection("::1", port) for _ in range(2)]
        assert await refused("::1", port, local="::1")
        assert count.open_from("::1") == 2
        for _, writer in held:
            writer.close()
        await settle(count)
        listener.close()
    run(main())
