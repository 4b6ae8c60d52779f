"""The engine when the gateway goes away and comes back: silent peers, resumes, and
stopping while either is under way (real engine, real gateway on loopback, fakes for
TUN, routes and DNS)."""

from __future__ import annotations

import asyncio

import pytest

from client.errors import SessionLost
from client.states import State
from tests.client.engine_rig import Rig, run


async def _until(predicate, timeout=10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_a_silent_gateway_is_found_dead_and_the_session_resumed(tmp_path):
    """When every byte is dropped (cable pulled, no FIN or RST), an unanswered keepalive
    ends the connection and the session is resumed on a new one; the host stays set up."""
    async def main():
        rig = Rig(tmp_path, proxy=True, extra_server="keepalive = 1", dead_peer_timeout=0.5)
        await rig.start()
        await rig.connected()
        first = rig.engine.session.link
        rig.proxy.go_silent()
        await _until(lambda: (State.CONNECTED, "reconnected") in rig.states)
        assert rig.engine.session.link is not first and not first.is_open
        assert any(s is State.RECONNECTING and "stopped answering" in d for s, d in rig.states)
        assert rig.routes.restore_count == 0 and rig.dns.state is not None
        await rig.close()
        assert rig.engine.state is State.DISCONNECTED and rig.routes.state is None
    run(main())


def test_stop_while_a_keepalive_waits_for_its_answer_ends_at_once(tmp_path):
    """Ctrl-C or a disconnect while a keepalive PING waits for a silent gateway does not
    wait out the dead-peer timeout: the host is restored at once."""
    async def main():
        rig = Rig(tmp_path, proxy=True, extra_server="keepalive = 1", dead_peer_timeout=30)
        await rig.start()
        await rig.connected()
        rig.proxy.go_silent()
        await asyncio.sleep(1.5)             # the PING is out and unanswered
        loop = asyncio.get_running_loop()
        started = loop.time()
        await rig.close()
        assert loop.time() - started < 5     # the logout's own 2 s bound, not the 30 s
        assert rig.engine.state is State.DISCONNECTED and rig.routes.state is None
    run(main())


def test_stop_while_resuming_from_a_silent_gateway_ends_at_once(tmp_path):
    """Ctrl-C or a disconnect while a resume attempt waits for a gateway that does not
    answer ends the attempt at once, instead of after its timeouts."""
    async def main():
        rig = Rig(tmp_path, proxy=True, reconnect_delays=(0.0,) * 4)
        await rig.start()
        await rig.connected()
        rig.gateway.close()                  # no new connections reach the gateway...

        async def silent(reader, writer):   # ...but something accepts and never answers
            await reader.read()
        port = rig.engine.options.gateway.port
        rig.proxy.close()
        squatter = await asyncio.start_server(silent, "127.0.0.1", port)
        rig.engine.session.link.close("test drops the connection")
        await _until(lambda: rig.engine.state is State.RECONNECTING)
        await asyncio.sleep(0.3)             # a resume attempt is under way
        loop = asyncio.get_running_loop()
        started = loop.time()
        await rig.close()
        squatter.close()
        assert loop.time() - started < 2
        assert rig.engine.state is State.DISCONNECTED and rig.routes.state is None
    run(main())


def test_dns_pushed_differently_on_resume_is_applied(tmp_path, monkeypatch):
    """A gateway that pushes other DNS servers or domains when the session resumes gets
    them applied (and shown in the session's config), not silently ignored."""
    async def main():
        rig = Rig(tmp_path)
        api = rig.gateway.api
        pushed = api.client_config

        def other_dns(session):
            response = pushed(session)
            response.body["dns"] = {"servers": ["127.0.0.54"], "search": ["new.example"]}
            return response
        await rig.start()
        await rig.connected()
        monkeypatch.setattr(api, "client_config", other_dns)
        rig.engine.session.link.close("test drops the connection")
        await _until(lambda: (State.CONNECTED, "reconnected") in rig.states)
        assert [str(s) for s in rig.dns.state.servers] == ["127.0.0.54"]
        assert rig.dns.state.search == ("new.example",)
        assert [str(s) for s in rig.engine.session.config.dns_servers] == ["127.0.0.54"]
        await rig.close()
        assert rig.dns.state is None
    run(main())


def test_a_gateway_busy_on_resume_is_tried_again(tmp_path, monkeypatch):
    """A 503 to the resumed config request (a gateway or the HTTPS front of one still
    starting) is not taken for an expired session: the next attempt resumes."""
    from gateway_stub.api import ApiResponse

    async def main():
        rig = Rig(tmp_path)
        api = rig.gateway.api
        pushed, answers = api.client_config, []

        def busy_once(session):
            answers.append(503 if not answers else 200)
            return ApiResponse(503, {"error": "busy"}) if answers[-1] == 503 else pushed(session)
        await rig.start()
        await rig.connected()
        monkeypatch.setattr(api, "client_config", busy_once)
        rig.engine.session.link.close("test drops the connection")
        await _until(lambda: (State.CONNECTED, "reconnected") in rig.states or rig.task.done())
        assert answers == [503, 200] and rig.engine.state is State.CONNECTED
        await rig.close()
    run(main())


def test_a_gateway_that_keeps_dropping_resumed_sessions_is_not_hammered(tmp_path):
    """Each resume succeeds and the session is dropped again at once: the pause before the
    next resume doubles each time (it stays the first delay while sessions last)."""
    async def main():
        rig = Rig(tmp_path, proxy=True, reconnect_delays=(0.05, 0.1))
        await rig.start()
        await rig.connected()
        gaps = []
        for resumed in range(1, 5):
            dropped = asyncio.get_running_loop().time()
            rig.proxy.drop()
            await _until(lambda: rig.states.count((State.CONNECTED, "reconnected")) == resumed)
            gaps.append(asyncio.get_running_loop().time() - dropped)
        # Pauses of 0.1, 0.2, 0.4 and 0.8 s (the first delay doubled per quick loss); without
        # the doubling each gap is the 0.05 s delay plus the resume itself.
        assert all(gap >= 0.1 * 2 ** i for i, gap in enumerate(gaps)), gaps
        await rig.close()
    run(main())


def test_a_different_certificate_on_resume_fails_as_an_untrusted_certificate(tmp_path):
    """The session is resumed only with the gateway the user trusted: another certificate
    ends it, restores the host, and the failure's kind says why (not just "session lost")."""
    async def main():
        rig, impostor = Rig(tmp_path / "real", proxy=True), Rig(tmp_path / "impostor")
        await rig.start()
        await rig.connected()
        (host, port), *_ = await impostor.gateway.start()
        try:
            rig.proxy.target = (host, port)
            rig.proxy.drop()
            with pytest.raises(SessionLost, match="could not resume"):
                await asyncio.wait_for(rig.task, 10)
        finally:
            impostor.gateway.close()
            rig.gateway.close()
            rig.proxy.close()
        assert rig.engine.failure.kind == "untrusted_certificate"
        assert rig.routes.state is None and rig.dns.state is None
    run(main())
