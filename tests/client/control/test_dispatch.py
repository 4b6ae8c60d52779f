"""Requests of control peers, through a real ControlServer: the hello gate, how
parameters and failures become error codes, framing of what a peer sends, and
the stats a subscriber gets."""

from __future__ import annotations

import asyncio

import pytest

from client.control import protocol as p
from client.control.errors import ControlError
from tests.client.control.fakes import FakeEngine
from tests.client.control.rig import PASSWORD, Service, raw_call, run


def test_hello_and_status(tmp_path):
    """hello answers with the API and service version; status starts disconnected."""
    async def main():
        async with Service(tmp_path) as svc:
            client = await svc.client()
            assert client.service_version == "0.1.0"
            status = await client.status()
            assert status["state"] == "disconnected" and status["error"] is None
            assert status["stats"] == {"bytes_in": 0, "bytes_out": 0, "rate_in": 0.0, "rate_out": 0.0,
                                       "flows": 0, "fast_path": False, "flows_offloaded": 0,
                                       "ipv6_refused": 0}
            await client.close()
    run(main())


def test_version_mismatch_and_calls_before_hello(tmp_path):
    """Another major API version gets -32002 naming the supported one; calls before hello are refused."""
    async def main():
        async with Service(tmp_path) as svc:
            wrong, = await raw_call(svc.path, p.Request(1, "hello", {"api": 2}))
            assert isinstance(wrong, p.ErrorResponse) and wrong.code == p.UNSUPPORTED_VERSION
            assert "supports: 1" in wrong.message
            early, = await raw_call(svc.path, p.Request(1, "status", {}))
            assert isinstance(early, p.ErrorResponse) and early.code == p.INVALID_REQUEST
            _, unknown, bad = await raw_call(svc.path, p.Request(1, "hello", {"api": 1}),
                                             p.Request(2, "reboot", {}),
                                             p.Request(3, "connect", {"gateway": 5}))
            assert (unknown.code, bad.code) == (p.METHOD_NOT_FOUND, p.INVALID_PARAMS)
    run(main())


def test_connect_refuses_a_ca_path(tmp_path):
    """connect with a CA file path (ca) gets -32602 asking for ca_pem, and no engine is started."""
    async def main():
        async with Service(tmp_path) as svc:
            engines = len(FakeEngine.instances)
            _, answer = await raw_call(svc.path, p.Request(1, "hello", {"api": 1}), p.Request(
                2, "connect", {"gateway": "https://gw.example", "username": "alice",
                               "password": PASSWORD, "ca": "/etc/shadow"}))
            assert isinstance(answer, p.ErrorResponse) and answer.code == p.INVALID_PARAMS
            assert "ca_pem" in answer.message and "/etc/shadow" not in answer.message
            assert len(FakeEngine.instances) == engines
            assert svc.host.status()["state"] == "disconnected"
    run(main())


def test_connect_refuses_unreadable_ca_text_without_quoting_it(tmp_path):
    """ca_pem that holds no certificate gets -32602 saying so, and the answer does not echo it."""
    garbage = "-----BEGIN CERTIFICATE-----\nnot-base64-secret-words\n-----END CERTIFICATE-----\n"

    async def main():
        async with Service(tmp_path) as svc:
            client = await svc.client()
            for text in (garbage, "just some words", ""):
                with pytest.raises(ControlError) as info:
                    await client.call("connect", {"gateway": "https://gw.example", "username": "alice",
                                                  "password": PASSWORD, "ca_pem": text})
                assert info.value.code == p.INVALID_PARAMS
                assert "CA certificate" in info.value.message
                assert "secret-words" not in info.value.message and "some words" not in info.value.message
            assert (await client.status())["state"] == "disconnected"
            await client.close()
    run(main())


def test_over_long_line_closes_with_parse_error(tmp_path):
    """A line over 1 MiB gets -32700 and the connection is closed."""
    async def main():
        async with Service(tmp_path) as svc:
            reader, writer = await asyncio.open_unix_connection(str(svc.path))
            writer.write(b"x" * (p.MAX_LINE + 10))
            answer = p.parse((await reader.readline()).rstrip(b"\n"))
            assert isinstance(answer, p.ErrorResponse) and answer.code == p.PARSE_ERROR
            assert await reader.read() == b""
            writer.close()
    run(main())


def test_second_connect_is_busy(tmp_path):
    """A connect while connected or connecting gets -32010."""
    async def main():
        async with Service(tmp_path) as svc:
            client = await svc.client()
            await client.connect("https://gw.example", "slow", PASSWORD)
            with pytest.raises(ControlError) as info:
                await client.connect("https://gw.example", "alice", PASSWORD)
            assert info.value.code == p.BUSY
            await client.disconnect()  # cancels the attempt that is still logging in
            assert (await client.status())["state"] == "disconnected"
            await client.close()
    run(main())


def test_stats_notifications_while_connected(tmp_path):
    """Subscribers get stats every interval while connected, with rates from the counters."""
    async def main():
        async with Service(tmp_path) as svc:
            client, notes = await svc.subscriber(stats_interval=0.05)
            await asyncio.sleep(0.2)
            assert not [m for m, _ in notes.seen if m == "stats"]  # nothing while disconnected
            await client.connect("https://gw.example", "alice", PASSWORD)
            stats = await notes.wait_for("stats", lambda s: s["rate_in"] > 0)
            assert stats["bytes_in"] > 0 and stats["rate_out"] > 0 and stats["flows"] == 1
            assert stats["fast_path"] is True and stats["flows_offloaded"] == 4
            await client.disconnect()
            await client.close()
    run(main())
