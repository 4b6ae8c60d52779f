"""The real gateway and the real client session code over loopback TLS."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl

import pytest

from client.errors import LoginFailed, TrustError
from client.session import GatewayAddress, open_session
from client.trust import Trust
from client.wire.link import Link
from gateway_stub.certs import fingerprint_sha256
from gateway_stub.config import load_config
from gateway_stub.server import Gateway
from tests.support import PASSWORDS, UdpEcho, write_gateway


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


def test_login_returns_config_with_pool_address_and_routes(tmp_path):
    """A good password gives a session whose config carries the lease and the allowed networks only."""
    async def main():
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            assert str(session.config.address) == "10.200.0.2/24"
            assert [str(n) for n in session.config.include] == ["127.0.0.0/8"]
            assert session.config.resources == ("intranet",)
            await session.logout()
    run(main())


def test_wrong_password_is_refused_clearly(tmp_path):
    """A wrong password ends in LoginFailed with a message that says so."""
    async def main():
        async with Bench(tmp_path) as bench:
            with pytest.raises(LoginFailed, match="wrong user name or password"):
                await open_session(bench.address, bench.trust, "alice", "nope")
            with pytest.raises(LoginFailed, match="wrong user name or password"):
                await open_session(bench.address, bench.trust, "mallory", "nope")
    run(main())


def test_repeated_failures_are_throttled(tmp_path):
    """After the allowed number of failures even the right password is refused for a while."""
    async def main():
        async with Bench(tmp_path) as bench:
            for _ in range(5):
                with pytest.raises(LoginFailed):
                    await open_session(bench.address, bench.trust, "alice", "nope")
            with pytest.raises(LoginFailed, match="too many failed attempts"):
                await bench.login()
    run(main())


def test_untrusted_certificate_is_refused_with_fingerprint(tmp_path):
    """Without the CA the client refuses the gateway and names its fingerprint."""
    async def main():
        async with Bench(tmp_path) as bench:
            expected = fingerprint_sha256(bench.setup.certs.certificate.read_bytes())
            with pytest.raises(TrustError) as info:
                await open_session(bench.address, Trust(), "alice", PASSWORDS["alice"])
            assert expected in str(info.value)
            assert info.value.fingerprint == expected
    run(main())


def test_pinned_fingerprint_is_accepted_and_a_wrong_pin_refused(tmp_path):
    """The right pin connects without a CA; a wrong pin is refused before login."""
    async def main():
        async with Bench(tmp_path) as bench:
            pin = fingerprint_sha256(bench.setup.certs.certificate.read_bytes())
            session = await open_session(bench.address, Trust(pin=pin), "alice", PASSWORDS["alice"])
            await session.logout()
            with pytest.raises(TrustError, match="does not match the pinned"):
                await open_session(bench.address, Trust(pin="sha256:" + "0" * 64), "alice",
                                   PASSWORDS["alice"])
    run(main())


async def _connect(session, authority: str) -> Flow:
    flow = Flow(session.link)
    flow.stream_id = session.link.open(session.connect_headers(authority), flow)
    await asyncio.wait_for(flow.status, 10)
    return flow


def test_connect_carries_bytes_both_ways_and_is_audited(tmp_path):
    """An allowed CONNECT is answered 200 after the target accepted; bytes echo back; the audit has the flow."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            flow = await _connect(session, f"127.0.0.1:{port}")
            assert flow.status.result() == 200
            payload = bytes(range(256)) * 4096
            session.link.send(flow.stream_id, payload)
            session.link.end(flow.stream_id)
            assert await asyncio.wait_for(flow.ended, 10)
            assert bytes(flow.data) == payload
            await asyncio.sleep(0.1)
            await session.logout()
            records = [r for r in bench.audit() if r["verdict"] == "allow"]
            assert records and records[0]["user"] == "alice"
            assert records[0]["bytes_up"] == len(payload) == records[0]["bytes_down"]
        server.close()
    run(main())


def test_connect_errors_map_to_statuses(tmp_path):
    """Refused port, denied network, malformed authority and missing token each get their status."""
    async def main():
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            refused = await _connect(session, f"127.0.0.1:{free_port()}")
            assert refused.status.result() == 502
            assert "connection_refused" in refused.headers["proxy-status"]
            denied = await _connect(session, "10.88.0.10:80")
            assert denied.status.result() == 403
            assert "destination_ip_prohibited" in denied.headers["proxy-status"]
            bad = await _connect(session, "not-an-address")
            assert bad.status.result() == 400
            anonymous = Flow(session.link)
            anonymous.stream_id = session.link.open(
                [(":method", "CONNECT"), (":authority", "127.0.0.1:1")], anonymous)
            assert await asyncio.wait_for(anonymous.status, 10) == 407
            verdicts = [r["verdict"] for r in bench.audit()]
            assert verdicts.count("deny") >= 3 and "fail" in verdicts
            await session.logout()
    run(main())


def test_user_without_policy_reaches_nothing(tmp_path):
    """bob has no policy: no routes are pushed and every CONNECT is denied."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path) as bench:
            session = await bench.login("bob")
            assert session.config.include == ()
            flow = await _connect(session, f"127.0.0.1:{port}")
            assert flow.status.result() == 403
            await session.logout()
        server.close()
    run(main())


async def _raw_tls(bench: Bench, alpn: list[str]):
    ctx = ssl.create_default_context(cafile=str(bench.setup.certs.ca_cert))
    ctx.set_alpn_protocols(alpn)
    return await asyncio.open_connection(bench.address.host, bench.address.port, ssl=ctx)


def test_hostile_clients_do_not_disturb_a_working_session(tmp_path):
    """Garbage, plain TCP, a non-h2 client, oversized headers and a stream flood are cut off; a session keeps working."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path) as bench:
            good = await bench.login()
            # Plain TCP garbage (no TLS).
            r, w = await asyncio.open_connection(bench.address.host, bench.address.port)
            w.write(b"\x00\xff" * 1000)
            assert await asyncio.wait_for(r.read(), 10) == b""
            # TLS but HTTP/1.1.
            r, w = await _raw_tls(bench, ["http/1.1"])
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(r.read(), 10) == b""
            # h2 ALPN but garbage instead of the preface.
            r, w = await _raw_tls(bench, ["h2"])
            w.write(b"this is not http/2" * 100)
            await asyncio.wait_for(r.read(), 10)
            assert r.at_eof()
            # Oversized headers and a flood of streams on a logged-in link.
            evil = await bench.login()
            flow = Flow(evil.link)
            flow.stream_id = evil.link.open(
                [*evil.connect_headers(f"127.0.0.1:{port}"), ("x-junk", "a" * 20000)], flow)
            await asyncio.wait_for(evil.link.closed, 10)
            flood = await bench.login()
            for _ in range(3000):
                f = Flow(flood.link)
                try:
                    f.stream_id = flood.link.open(flood.connect_headers("10.88.0.10:1"), f)
                except Exception:
                    break
            await asyncio.sleep(1)
            # The good session still works.
            flow = await _connect(good, f"127.0.0.1:{port}")
            assert flow.status.result() == 200
            good.link.send(flow.stream_id, b"still here")
            good.link.end(flow.stream_id)
            await asyncio.wait_for(flow.ended, 10)
            assert bytes(flow.data) == b"still here"
            await good.logout()
        server.close()
    run(main())


def test_idle_flow_is_ended_by_the_gateway(tmp_path):
    """A flow with no traffic for idle_timeout is reset by the gateway and audited as such."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path, extra_server="idle_timeout = 0.5") as bench:
            session = await bench.login()
            flow = await _connect(session, f"127.0.0.1:{port}")
            assert flow.status.result() == 200
            assert await asyncio.wait_for(flow.ended, 10) is False      # reset, not ended
            await asyncio.sleep(0.1)
            assert any(r["reason"] == "idle timeout" for r in bench.audit())
            await session.logout()
        server.close()
    run(main())


def _udp_headers(session, port: int) -> list[tuple[str, str]]:
    return session.extended_connect_headers("connect-udp", f"/.well-known/masque/udp/127.0.0.1/{port}/")


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
            flow.stream_id = session.link.open(_udp_headers(session, port), flow)
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
            bad.stream_id = session.link.open(_udp_headers(session, port), bad)
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
            flow = await _connect(session, f"127.0.0.1:{port}")
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
    from client.session import connect_link

    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path, extra_server="max_streams_per_session = 2") as bench:
            session = await bench.login()
            other = await connect_link(bench.address, bench.trust)
            first = await _connect(session, f"127.0.0.1:{port}")
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
