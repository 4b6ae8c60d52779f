"""The engine when the gateway goes away and comes back: silent peers, resumes, and
stopping while either is under way (real engine, real gateway on loopback, fakes for
TUN, routes and DNS)."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from client.errors import SessionLost
from client.netchange import RouteSnapshot
from client.states import State
from client.trust import Trust
from client.tun import MemoryTun
from tests.client.engine_rig import Prompts, Rig, run, until


def test_a_silent_gateway_is_found_dead_and_the_session_resumed(tmp_path):
    """When every byte is dropped (cable pulled, no FIN or RST), an unanswered keepalive
    ends the connection and the session is resumed on a new one; the host stays set up."""
    async def main():
        rig = Rig(tmp_path, proxy=True, extra_server="keepalive = 1", dead_peer_timeout=0.5)
        await rig.start()
        await rig.connected()
        first = rig.engine.session.link
        rig.proxy.go_silent()
        await until(lambda: (State.CONNECTED, "reconnected") in rig.states)
        assert rig.engine.session.link is not first and not first.is_open
        assert any(s is State.RECONNECTING and "stopped answering" in d for s, d in rig.states)
        assert rig.routes.restore_count == 0 and rig.dns.state is not None
        await rig.close()
        assert rig.engine.state is State.DISCONNECTED and rig.routes.state is None
    run(main())


async def _connected_and_watching(tmp_path) -> Rig:
    """A connected engine behind a proxy, once its network watcher has taken its baseline
    (route and clocks)."""
    rig = Rig(tmp_path, proxy=True)
    await rig.start()
    await rig.connected()
    await until(lambda: rig.network.lookups >= 1 and rig.network.open_monitors == 1)
    await asyncio.sleep(0.1)
    return rig


def test_a_network_change_finds_a_dead_session_at_once(tmp_path):
    """When the route to the gateway moves (a new Wi-Fi, a new address) and the old
    connection went dead with it, the engine probes at once and resumes within seconds,
    not after the keepalive and the dead-peer timeout (15 + 10 s here)."""
    async def main():
        rig = await _connected_and_watching(tmp_path)
        loop = asyncio.get_running_loop()
        rig.proxy.go_silent()
        started = loop.time()
        rig.network.route = RouteSnapshot(interface="wlan0", index=7, source="192.0.2.9")
        rig.network.announce()
        await until(lambda: (State.CONNECTED, "reconnected") in rig.states)
        assert loop.time() - started < 6
        assert any(s is State.RECONNECTING and "route to 127.0.0.1 now dev wlan0" in d
                   for s, d in rig.states), rig.states
        # the routes went in again before the resume: the old network took the pin with it
        assert len(rig.routes.applied) >= 2 and rig.routes.applied[-1] == rig.routes.applied[0]
        await rig.close()
    run(main())


def test_a_network_change_with_the_session_alive_changes_nothing(tmp_path):
    """A route change under a session that still answers costs one PING: no reconnect."""
    async def main():
        rig = await _connected_and_watching(tmp_path)
        first = rig.engine.session.link
        rig.network.route = RouteSnapshot(interface="eth1", index=3)
        rig.network.announce()
        await asyncio.sleep(1.5)
        assert rig.engine.session.link is first and first.is_open
        assert not any(s is State.RECONNECTING for s, _ in rig.states)
        assert rig.network.lookups >= 2          # the baseline, then the change
        await rig.close()
    run(main())


def test_waking_from_sleep_probes_at_once(tmp_path):
    """After a suspend (boot time ran ahead of monotonic time) a dead connection is found
    within seconds of the wake-up, not a keepalive interval later."""
    async def main():
        rig = await _connected_and_watching(tmp_path)
        loop = asyncio.get_running_loop()
        rig.proxy.go_silent()
        started = loop.time()
        rig.network.sleep(600)
        await until(lambda: (State.CONNECTED, "reconnected") in rig.states)
        assert loop.time() - started < 8          # the next 2 s clock tick, then a 3 s probe
        assert any(s is State.RECONNECTING and "woke from sleep" in d for s, d in rig.states)
        await rig.close()
    run(main())


def test_a_gateway_going_away_moves_the_session_to_a_new_connection_seamlessly(tmp_path):
    """A GOAWAY (NO_ERROR) from the gateway is no lost session: the engine resumes on a
    new connection at once, without passing through reconnecting, and the old connection
    closes once its streams are done."""
    async def main():
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        first = rig.engine.session.link
        rig.gateway.go_away("maintenance")
        await until(lambda: rig.engine.session.link is not first)
        await until(lambda: not first.is_open)
        assert rig.engine.session.link.is_open and rig.engine.state is State.CONNECTED
        assert not any(s is State.RECONNECTING for s, _ in rig.states), rig.states
        await rig.close()
        assert rig.engine.state is State.DISCONNECTED and rig.routes.state is None
        assert rig.gateway.api.sessions() == []        # the logout went over the new connection
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
    answer ends the attempt at once, instead of after its timeouts (5 s); only the
    logout's own bound (2 s) follows."""
    async def main():
        rig, _, squatter = await _reconnecting_to_a_silent_gateway(tmp_path, delays=(0.0,) * 4)
        await asyncio.sleep(0.3)             # a resume attempt is under way
        loop = asyncio.get_running_loop()
        started = loop.time()
        await rig.close()
        squatter.close()
        assert loop.time() - started < 3     # the logout's 2 s bound, not the resume's 5 s
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
        await until(lambda: (State.CONNECTED, "reconnected") in rig.states)
        assert [str(s) for s in rig.dns.state.servers] == ["127.0.0.54"]
        assert rig.dns.state.search == ("new.example",)
        assert [str(s) for s in rig.engine.session.config.dns_servers] == ["127.0.0.54"]
        await rig.close()
        assert rig.dns.state is None
    run(main())


def test_a_gateway_busy_on_resume_is_tried_again(tmp_path, monkeypatch):
    """A 503 to the resumed config request (a gateway or the HTTPS front of one still
    starting) is not taken for an expired session: the next attempt resumes."""
    from gateway_stub.api_types import ApiResponse

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
        await until(lambda: (State.CONNECTED, "reconnected") in rig.states or rig.task.done())
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
            await until(lambda: rig.states.count((State.CONNECTED, "reconnected")) == resumed)
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


def test_networks_excluded_differently_on_resume_end_the_session(tmp_path, monkeypatch):
    """A gateway that excludes other networks when the session resumes has changed what the
    host routes: the session ends as lost and the host is restored."""
    async def main():
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        rig.push(monkeypatch, exclude=["127.1.0.0/16"])
        rig.engine.session.link.close("test drops the connection")
        try:
            with pytest.raises(SessionLost, match="address or networks"):
                await asyncio.wait_for(rig.task, 10)
        finally:
            rig.gateway.close()
        assert rig.routes.state is None and rig.dns.state is None
    run(main())


def test_an_mtu_pushed_differently_on_resume_is_set_on_the_tun(tmp_path, monkeypatch, caplog):
    """A gateway that pushes another MTU when the session resumes gets it set on the TUN,
    logged at info level."""
    async def main():
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        assert rig.tun.mtu == 65000
        rig.push(monkeypatch, mtu=1400)
        with caplog.at_level(logging.INFO, logger="client.host_setup"):
            rig.engine.session.link.close("test drops the connection")
            await until(lambda: (State.CONNECTED, "reconnected") in rig.states)
        assert rig.tun.mtu == 1400 and rig.engine.session.config.mtu == 1400
        assert any(r.levelno == logging.INFO and "MTU" in r.getMessage() for r in caplog.records)
        await rig.close()
    run(main())


class StubbornTun(MemoryTun):
    """A TUN whose device refuses any new MTU."""

    def set_mtu(self, mtu: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")


def test_an_mtu_the_tun_refuses_on_resume_is_a_warning_not_a_lost_session(tmp_path, monkeypatch,
                                                                           caplog):
    """When the TUN refuses the MTU pushed on resume, the session goes on with the old one
    and the refusal is logged at warning level."""
    async def main():
        rig = Rig(tmp_path)
        rig.tun = StubbornTun()
        await rig.start()
        await rig.connected()
        rig.push(monkeypatch, mtu=1400)
        with caplog.at_level(logging.WARNING, logger="client.host_setup"):
            rig.engine.session.link.close("test drops the connection")
            await until(lambda: (State.CONNECTED, "reconnected") in rig.states or rig.task.done())
            await asyncio.sleep(0.2)
        assert rig.engine.state is State.CONNECTED and rig.tun.mtu == 65000
        assert any(r.levelno == logging.WARNING and "MTU" in r.getMessage()
                   and "Invalid argument" in r.getMessage() for r in caplog.records)
        await rig.close()
        assert rig.engine.state is State.DISCONNECTED
    run(main())


def test_stop_while_reconnecting_ends_the_session_on_the_gateway(tmp_path):
    """A disconnect while the link is dead and the engine waits to resume still ends the
    session on the gateway: the logout goes over a new TLS connection."""
    async def main():
        rig = Rig(tmp_path, reconnect_delays=(30.0,))
        await rig.start()
        await rig.connected()
        assert len(rig.gateway.api.sessions()) == 1
        rig.engine.session.link.close("test drops the connection")
        await until(lambda: rig.engine.state is State.RECONNECTING)
        await rig.close()
        assert rig.engine.state is State.DISCONNECTED and rig.routes.state is None
        assert rig.gateway.api.sessions() == []
    run(main())


def test_stop_while_reconnecting_logs_out_pinned_to_the_certificate_the_user_trusted(tmp_path):
    """The logout's new connection trusts what the session was made with: the certificate
    the user accepted at login, which the system's CAs alone do not trust."""
    async def main():
        rig = Rig(tmp_path, prompter=Prompts(decision="once"), trust=Trust(),
                  reconnect_delays=(30.0,))
        await rig.start()
        await rig.connected()
        rig.engine.session.link.close("test drops the connection")
        await until(lambda: rig.engine.state is State.RECONNECTING)
        await rig.close()
        assert rig.engine.state is State.DISCONNECTED and rig.gateway.api.sessions() == []
    run(main())


async def _reconnecting_to_a_silent_gateway(tmp_path, delays=(30.0,)
                                            ) -> tuple[Rig, list, asyncio.AbstractServer]:
    """A rig whose engine resumes (after ``delays``) while, in the gateway's place,
    something accepts TCP and never answers TLS; with the list of connections it accepted."""
    rig = Rig(tmp_path, proxy=True, reconnect_delays=delays)
    await rig.start()
    await rig.connected()
    rig.gateway.close()
    accepted = []

    async def silent(reader, writer):
        accepted.append(writer)
        await reader.read()
    port = rig.engine.options.gateway.port
    rig.proxy.close()
    squatter = await asyncio.start_server(silent, "127.0.0.1", port)
    rig.engine.session.link.close("test drops the connection")
    await until(lambda: rig.engine.state is State.RECONNECTING)
    return rig, accepted, squatter


def test_stop_while_reconnecting_to_a_silent_gateway_ends_within_the_logout_bound(tmp_path):
    """When the logout's new connection is never answered, the disconnect tries it, gives
    up after its 2 s bound and restores the host."""
    async def main():
        rig, accepted, squatter = await _reconnecting_to_a_silent_gateway(tmp_path)
        loop = asyncio.get_running_loop()
        started = loop.time()
        rig.stop.set()
        await asyncio.wait_for(rig.task, 10)
        elapsed = loop.time() - started
        squatter.close()
        assert len(accepted) == 1 and 1.9 <= elapsed < 2.5, (accepted, elapsed)
        assert rig.engine.state is State.DISCONNECTED and rig.routes.state is None
    run(main())


def test_a_second_stop_during_the_logout_on_a_new_connection_restores_the_host_at_once(tmp_path):
    """Cancelling the engine (a second disconnect, the service stopping) while its logout
    waits for a new connection does not wait out the logout's bound: the host goes back."""
    async def main():
        rig, accepted, squatter = await _reconnecting_to_a_silent_gateway(tmp_path)
        rig.stop.set()
        await until(lambda: accepted)      # the logout waits for the TLS handshake
        loop = asyncio.get_running_loop()
        started = loop.time()
        rig.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await rig.task
        squatter.close()
        assert loop.time() - started < 0.5
        assert rig.engine.state is State.FAILED and rig.routes.state is None
        assert rig.dns.state is None and rig.tun.closed
    run(main())
