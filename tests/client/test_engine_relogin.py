"""The engine when the gateway restarts and no longer knows the session: it logs in
again on its own, keeping the TUN, routes and DNS, and tries at once when the network
comes back (real engine, real gateways on loopback behind a relay, fakes for TUN,
routes and DNS)."""

from __future__ import annotations

import asyncio
import re

import pyotp
import pytest

from client.errors import SessionLost
from client.netchange import RouteSnapshot
from client.states import State
from gateway_stub.config import load_config
from gateway_stub.passwords import hash_password
from gateway_stub.server import Gateway
from tests.client.engine_rig import APP, Prompts, Rig, run, until
from tests.client.packets import fields, udp_packet
from tests.support import TOTP_SECRET, UdpEcho

LOGGED_IN_AGAIN = (State.CONNECTED, "reconnected (logged in again)")


async def _restart(rig: Rig, *, drop: bool = True) -> Gateway:
    """Stop the rig's gateway and start a new one, which becomes the rig's, where the relay
    now leads; with ``drop``, the engine's connection drops as when a gateway restarts."""
    rig.gateway.close()
    rig.gateway = Gateway(load_config(rig.setup.config))
    (host, port), *_ = await rig.gateway.start()
    rig.proxy.target = (host, port)
    if drop:
        rig.proxy.drop()
    return rig.gateway


async def _lost_after_restart(rig: Rig, match: str, *, edit=lambda text: text) -> None:
    """Connect, restart the gateway with its config passed through ``edit``, and check that
    the session ends with an error matching ``match`` and the host is restored."""
    await rig.start()
    await rig.connected()
    rig.setup.config.write_text(edit(rig.setup.config.read_text()))
    await _restart(rig)
    try:
        with pytest.raises(SessionLost, match=match):
            await asyncio.wait_for(rig.task, 10)
    finally:
        rig.gateway.close()
        rig.proxy.close()
    assert rig.routes.state is None and rig.dns.state is None


def test_a_restarted_gateway_gets_a_new_login_and_the_tunnel_carries_on(tmp_path):
    """After a restart the gateway has forgotten the token: the engine logs in again with
    the password of this connection, the host is never restored meanwhile (same TUN,
    routes, DNS, and the same pool address), and new flows go through the new session."""
    async def main():
        echo = UdpEcho()
        rig = Rig(tmp_path, proxy=True)
        await rig.start()
        await rig.connected()
        address, routes = rig.routes.state.addresses, rig.routes.state.routes
        await _restart(rig)
        try:
            await until(lambda: LOGGED_IN_AGAIN in rig.states)
            assert rig.routes.restore_count == 0 and rig.dns.state is not None
            assert (rig.routes.state.addresses, rig.routes.state.routes) == (address, routes)
            rig.tun.inject(udp_packet(src=APP, dst="127.0.0.1", sport=5353, dport=echo.port,
                                      payload=b"after the restart"))
            reply = await rig.written(lambda p: p[9] == 17)
            assert reply.endswith(b"after the restart")
            assert fields(reply)["dst"] == APP
        finally:
            await rig.close()
            echo.close()
        assert rig.engine.state is State.DISCONNECTED and rig.routes.state is None
    run(main())


def test_a_network_change_cuts_the_pause_before_the_next_attempt_short(tmp_path):
    """While the gateway is away the attempts are spaced out (30 s here); when the network
    under the tunnel changes (a Wi-Fi came back) the next attempt is made at once."""
    async def main():
        rig = Rig(tmp_path, proxy=True, reconnect_delays=(0.1, 30.0, 30.0))
        await rig.start()
        await rig.connected()
        await until(lambda: rig.network.lookups >= 1 and rig.network.open_monitors == 1)
        rig.gateway.close()
        rig.proxy.drop()
        try:
            await until(lambda: any(s is State.RECONNECTING for s, _ in rig.states))
            await asyncio.sleep(1.0)                  # the first attempt failed: 30 s to wait
            await _restart(rig, drop=False)
            loop = asyncio.get_running_loop()
            started = loop.time()
            rig.network.route = RouteSnapshot(interface="wlan0", index=7, source="192.0.2.9")
            rig.network.announce()
            await until(lambda: LOGGED_IN_AGAIN in rig.states)
            assert loop.time() - started < 5
        finally:
            await rig.close()
    run(main())


def test_logging_in_again_asks_for_a_new_one_time_code(tmp_path):
    """A user with a second factor is asked for a fresh one-time code when the gateway
    restarted (never the old one replayed); a plain resume asks nothing."""
    async def main():
        totp = pyotp.TOTP(TOTP_SECRET)
        prompts = Prompts(codes=[totp.now(), totp.now()])
        rig = Rig(tmp_path, user="carol", prompter=prompts, proxy=True)
        await rig.start()
        await rig.connected()
        await _restart(rig)
        try:
            await until(lambda: LOGGED_IN_AGAIN in rig.states)
            assert prompts.asked_codes == 2
        finally:
            await rig.close()
    run(main())


def test_a_one_time_code_the_user_does_not_give_ends_the_session_and_restores_the_host(tmp_path):
    """When the user cancels the new one-time code prompt, the session ends clearly and
    the host is restored."""
    rig = Rig(tmp_path, user="carol", prompter=Prompts(codes=[pyotp.TOTP(TOTP_SECRET).now()]),
              proxy=True)
    run(_lost_after_restart(rig, "no one-time code given"))


def test_a_password_changed_meanwhile_ends_the_session_as_wrong_credentials(tmp_path):
    """If alice's password changed while the gateway restarted, the new login is refused:
    the session ends, the host is restored, and the failure's kind lets the tray app ask
    for the password again."""
    def new_password(config: str) -> str:
        old = re.search(r'name = "alice"\npassword = "([^"]+)"', config).group(1)
        return config.replace(old, hash_password("a new password"))
    rig = Rig(tmp_path, proxy=True)
    run(_lost_after_restart(rig, "wrong user name or password", edit=new_password))
    assert rig.engine.failure.kind == "wrong_credentials"


def test_a_new_login_given_another_address_ends_the_session(tmp_path):
    """A restarted gateway that gives the new login another pool address: the host is
    routed for the old one, so the session ends and the host is restored."""
    def other_pool(config: str) -> str:
        return config.replace('network = "10.200.0.0/24"', 'network = "10.201.0.0/24"')
    rig = Rig(tmp_path, proxy=True)
    run(_lost_after_restart(rig, "another address", edit=other_pool))
