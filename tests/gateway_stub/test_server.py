"""The real gateway and the real client session code over loopback TLS."""

from __future__ import annotations

import asyncio

import pytest

from client.errors import LoginFailed, TrustError
from client.gateway_link import connect_link
from client.session import open_session
from client.trust import Trust
from client.wire.link import LinkGoingAway
from gateway_stub.certs import fingerprint_sha256
from gateway_stub.limits import PRE_LOGIN_HEADER_BYTES
from tests.gateway_stub.rig import Bench, Flow, connect, echo_server, free_port, raw_tls, run
from tests.client.wire.h2peer import client_start, frame
from tests.support import ALICE_ADDRESS, PASSWORDS


def test_login_returns_config_with_pool_address_and_routes(tmp_path):
    """A good password gives a session whose config carries the lease and the allowed networks only."""
    async def main():
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            assert str(session.config.address) == ALICE_ADDRESS
            assert [str(n) for n in session.config.include] == ["127.0.0.0/8"]
            assert session.config.resources == ("intranet",)
            await session.logout()
    run(main())


def test_logout_is_answered_with_a_complete_204(tmp_path):
    """DELETE /api/v1/session ends its stream with the 204, so logging out does not wait for a timeout."""
    async def main():
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            answer = await session.link.request(session._api("DELETE", "/api/v1/session"), timeout=5.0)
            assert answer.status == 204
            assert bench.gateway.api.session_for(dict([session.auth_header()]), 0.0) is None
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


def test_connect_carries_bytes_both_ways_and_is_audited(tmp_path):
    """An allowed CONNECT is answered 200 after the target accepted; bytes echo back; the audit has the flow."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            flow = await connect(session, f"127.0.0.1:{port}")
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
            refused = await connect(session, f"127.0.0.1:{free_port()}")
            assert refused.status.result() == 502
            assert "connection_refused" in refused.headers["proxy-status"]
            denied = await connect(session, "10.88.0.10:80")
            assert denied.status.result() == 403
            assert "destination_ip_prohibited" in denied.headers["proxy-status"]
            bad = await connect(session, "not-an-address")
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
            flow = await connect(session, f"127.0.0.1:{port}")
            assert flow.status.result() == 403
            await session.logout()
        server.close()
    run(main())


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
            r, w = await raw_tls(bench, ["http/1.1"])
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(r.read(), 10) == b""
            # h2 ALPN but garbage instead of the preface.
            r, w = await raw_tls(bench, ["h2"])
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
            flow = await connect(good, f"127.0.0.1:{port}")
            assert flow.status.result() == 200
            good.link.send(flow.stream_id, b"still here")
            good.link.end(flow.stream_id)
            await asyncio.wait_for(flow.ended, 10)
            assert bytes(flow.data) == b"still here"
            await good.logout()
        server.close()
    run(main())




def frames_of(data: bytes) -> list[tuple[int, bytes]]:
    """The (type, payload) of each whole HTTP/2 frame in ``data``."""
    out, at = [], 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at:at + 3], "big")
        out.append((data[at + 3], data[at + 9:at + 9 + length]))
        at += 9 + length
    return out


def test_before_login_a_large_header_block_is_refused_undecoded(tmp_path):
    """Before login a connection may send header blocks of PRE_LOGIN_HEADER_BYTES (advertised
    in its SETTINGS); a larger one ends it with ENHANCE_YOUR_CALM on its size alone -- the block
    is not valid HPACK, so decoding it would have ended it with COMPRESSION_ERROR. Sessions on
    other connections go on."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path) as bench:
            good = await bench.login()
            reader, writer = await raw_tls(bench, ["h2"])
            writer.write(client_start() + frame(0x1, 0x4 | 0x1, 1, b"\xff" * 8000))
            answer = frames_of(await asyncio.wait_for(reader.read(), 10))
            settings = [payload for kind, payload in answer if kind == 0x4 and payload][0]
            advertised = {int.from_bytes(settings[i:i + 2], "big"): int.from_bytes(
                settings[i + 2:i + 6], "big") for i in range(0, len(settings), 6)}
            assert advertised[0x6] == PRE_LOGIN_HEADER_BYTES
            (goaway,) = [payload for kind, payload in answer if kind == 0x7]
            assert int.from_bytes(goaway[4:8], "big") == 0xB        # ENHANCE_YOUR_CALM
            flow = await connect(good, f"127.0.0.1:{port}")
            assert flow.status.result() == 200
            await good.logout()
        server.close()
    run(main())


def test_after_login_large_header_blocks_are_accepted_again(tmp_path):
    """Once a connection logged in, or resumed a session with its token, header blocks up to
    max_header_bytes are accepted: a CONNECT with an 8 000-byte header is answered."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            big = ("x-junk", "a" * 8000)
            for link in (session.link, (await connect_link(bench.address, bench.trust))):
                if link is not session.link:          # a resume: GET config with the token
                    answer = await link.request(session._api("GET", "/api/v1/config"))
                    assert answer.status == 200
                flow = Flow(link)
                flow.stream_id = link.open([*session.connect_headers(f"127.0.0.1:{port}"), big], flow)
                assert await asyncio.wait_for(flow.status, 10) == 200
                link.close()
        server.close()
    run(main())


def test_shutdown_sends_goaway_and_lets_open_flows_finish(tmp_path):
    """On shutdown each connection gets GOAWAY(NO_ERROR) naming the streams it took: the
    client opens no new stream (LinkGoingAway at once), an open flow still carries its bytes
    both ways to its end, and then the connection closes, well before the grace runs out."""
    async def main():
        server, port = await echo_server()
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            flow = await connect(session, f"127.0.0.1:{port}")
            shutting = asyncio.ensure_future(bench.gateway.shut_down(grace=20.0))
            goaway = await asyncio.wait_for(session.link.going_away, 5)
            assert goaway.error_code == 0 and goaway.last_stream_id >= flow.stream_id
            with pytest.raises(LinkGoingAway):
                session.link.open(session.connect_headers(f"127.0.0.1:{port}"), Flow(session.link))
            session.link.send(flow.stream_id, b"after the goaway", end=True)
            assert await asyncio.wait_for(flow.ended, 5)
            assert bytes(flow.data) == b"after the goaway"
            session.link.unregister(flow.stream_id)   # the flow's owner lets go of it
            await asyncio.wait_for(shutting, 5)          # each end may be the one that closes
            await asyncio.wait_for(session.link.closed, 5)
        server.close()
    run(main())
