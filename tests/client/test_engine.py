"""The real engine against the real gateway over loopback, with an in-memory
TUN, routes and DNS: no namespaces needed (the gateway's ICMP test needs root)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pyotp
import pytest

from client.bpf.offload import MemoryOffload
from client.dns import MemoryDns
from client.engine import Engine, EngineOptions
from client.errors import (GatewayProtocolError, HostSetupError, LoginFailed, TrustError,
                           WrongCredentials)
from client.routes import MemoryRoutes
from client.gateway_address import GatewayAddress
from client.states import State
from client.trust import Trust
from client.tun import MemoryTun
from tests.client.engine_rig import APP, REFLECT, RST, SYN, Prompts, Rig, open_and_closed_ports, run
from tests.client.packets import fields, tcp_packet, udp_packet
from tests.support import ALICE_ADDRESS, TOTP_SECRET, UdpEcho


def test_connect_applies_pushed_state_and_disconnect_restores_it(tmp_path):
    """Connected: the lease, the routes and the split DNS are applied; after stop all are restored."""
    async def main():
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        state = rig.routes.state
        assert str(state.addresses[0]) == ALICE_ADDRESS
        assert [str(r) for r in state.routes] == ["127.0.0.0/8"]
        assert [str(s) for s in rig.dns.state.servers] == ["127.0.0.53"]
        await rig.close()
        assert rig.engine.state is State.DISCONNECTED
        assert rig.routes.restore_count >= 1 and rig.dns.restore_count >= 1
        assert [s for s, _ in rig.states] == [State.CONNECTING, State.AUTHENTICATING,
                                              State.CONFIGURING, State.CONNECTED,
                                              State.DISCONNECTING, State.DISCONNECTED]
    run(main())


def test_excluded_networks_are_left_out_of_the_routes(tmp_path, monkeypatch):
    """The TUN's routes are the pushed networks minus the excluded ones (an exclude outside
    them changes nothing); the excluded gateway needs no pinned host route; the connected
    state names the exclusions."""
    async def main():
        rig = Rig(tmp_path)
        rig.push(monkeypatch, exclude=["127.0.0.1/32", "127.128.0.0/9", "192.0.2.0/24"])
        await rig.start()
        await rig.connected()
        routes = rig.routes.state.routes
        assert len(routes) == 23 and sum(r.num_addresses for r in routes) == 2 ** 23 - 1
        assert [str(routes[0]), str(routes[1]), str(routes[-1])] == [
            "127.0.0.0/32", "127.0.0.2/31", "127.64.0.0/10"]
        assert rig.routes.pinned_gateway is None
        assert (State.CONNECTED, f"address {ALICE_ADDRESS} networks 127.0.0.0/8 "
                "except 127.0.0.1/32,127.128.0.0/9,192.0.2.0/24") in rig.states
        await rig.close()
    run(main())


def test_exclusions_making_too_many_routes_fail_before_the_host_is_touched(tmp_path, monkeypatch):
    """1 100 single addresses excluded, every other one, would take thousands of routes:
    the connection fails as a protocol error and no route is applied."""
    async def main():
        rig = Rig(tmp_path)
        rig.push(monkeypatch, exclude=[f"127.0.{k // 128}.{k % 128 * 2}/32" for k in range(1100)])
        await rig.start()
        try:
            with pytest.raises(GatewayProtocolError, match="routes"):
                await asyncio.wait_for(rig.task, 10)
        finally:
            rig.gateway.close()
        assert rig.engine.failure.kind == "protocol_error" and rig.routes.applied == []
    run(main())


def test_syn_is_held_until_the_gateway_confirms_then_released(tmp_path):
    """A SYN to a listening port comes back reflected only after the gateway connected;
    a SYN to a closed port is answered with an RST from the server."""
    async def main():
        listener, open_port, closed_port = open_and_closed_ports()
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        rig.tun.inject(tcp_packet(src=APP, dst="127.0.0.1", sport=40001, dport=open_port,
                                  flags=SYN, seq=1000))
        released = await rig.written(lambda p: p[9] == 6 and fields(p)["flags"] == SYN
                                     and fields(p)["dst"] == str(REFLECT.network_address + 1))
        assert fields(released)["src"] == str(REFLECT.network_address + 2)
        rig.tun.inject(tcp_packet(src=APP, dst="127.0.0.1", sport=40002, dport=closed_port,
                                  flags=SYN, seq=2000))
        rst = await rig.written(lambda p: p[9] == 6 and fields(p)["flags"] & RST)
        f = fields(rst)
        assert (f["src"], f["sport"], f["dport"], f["ack"]) == ("127.0.0.1", closed_port, 40002, 2001)
        await rig.close()
        listener.close()
    run(main())


def test_udp_datagram_goes_out_and_the_reply_comes_back_as_a_packet(tmp_path):
    """A UDP packet from the TUN reaches a loopback echo server via the gateway; the echo is written to the TUN."""
    async def main():
        echo = UdpEcho()
        port = echo.port
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        rig.tun.inject(udp_packet(src=APP, dst="127.0.0.1", sport=5353, dport=port,
                                  payload=b"hello over connect-udp"))
        reply = await rig.written(lambda p: p[9] == 17)
        assert reply.endswith(b"hello over connect-udp")
        f = fields(reply)
        assert (f["src"], f["dst"]) == ("127.0.0.1", APP)
        await rig.close()
        echo.close()
    run(main())


def test_one_time_code_is_asked_once_and_not_again_on_resume(tmp_path):
    """carol's login asks for one code; when the connection drops, the session resumes with its token, no new code."""
    async def main():
        prompts = Prompts(codes=[pyotp.TOTP(TOTP_SECRET).now()])
        rig = Rig(tmp_path, user="carol", prompter=prompts)
        await rig.start()
        await rig.connected()
        assert prompts.asked_codes == 1
        rig.engine.session.link.close("test drops the connection")
        for _ in range(200):
            if (State.CONNECTED, "reconnected") in rig.states:
                break
            await asyncio.sleep(0.02)
        assert (State.CONNECTED, "reconnected") in rig.states
        assert prompts.asked_codes == 1
        await rig.close()
    run(main())


def test_wrong_one_time_code_fails_with_its_reason(tmp_path):
    """A wrong code ends the attempt with the gateway's reason and restores nothing, since nothing was applied."""
    async def main():
        rig = Rig(tmp_path, user="carol", prompter=Prompts(codes=["000000"]))
        await rig.start()
        with pytest.raises(LoginFailed, match="wrong one-time code"):
            await asyncio.wait_for(rig.task, 10)
        assert rig.engine.state is State.FAILED and rig.routes.state is None
        assert rig.engine.failure.kind == "login_failed"    # the password was right
        rig.gateway.close()
    run(main())


def test_wrong_password_fails_as_wrong_credentials(tmp_path):
    """A refused password ends the run with WrongCredentials, kept as the engine's failure."""
    async def main():
        rig = Rig(tmp_path, password="not the password")
        await rig.start()
        with pytest.raises(WrongCredentials, match="wrong user name or password") as info:
            await asyncio.wait_for(rig.task, 10)
        assert rig.engine.state is State.FAILED and rig.engine.failure is info.value
        assert rig.engine.failure.kind == "wrong_credentials" and rig.routes.state is None
        rig.gateway.close()
    run(main())


def test_untrusted_certificate_is_put_to_the_user(tmp_path):
    """Without the CA the user is shown subject and fingerprint; 'once' connects pinned, 'cancel' fails."""
    async def main():
        prompts = Prompts(decision="once")
        rig = Rig(tmp_path / "a", prompter=prompts, trust=Trust())
        await rig.start()
        await rig.connected()
        info = prompts.asked_certs[0]
        assert info.fingerprint.startswith("sha256:") and "Tunnelgate" in info.issuer + info.subject
        assert rig.engine.trusted_pin == info.fingerprint
        await rig.close()
        rig = Rig(tmp_path / "b", prompter=Prompts(decision="cancel"), trust=Trust())
        await rig.start()
        with pytest.raises(TrustError, match="not trusted"):
            await asyncio.wait_for(rig.task, 10)
        rig.gateway.close()
    run(main())


@pytest.mark.skipif(os.geteuid() != 0, reason="the gateway's raw ICMP socket needs root")
def test_echo_request_gets_an_echo_reply(tmp_path):
    """An ICMP echo request read from the TUN is answered by the real target (loopback) via the gateway."""
    from client.icmp_echo import IcmpEcho
    from client.packet import build_icmp

    async def main():
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        rig.tun.inject(build_icmp(source=socket.inet_aton(APP), destination=socket.inet_aton("127.0.0.1"),
                                  icmp_type=8, code=0, rest=bytes([0x12, 0x34, 0, 1]),
                                  body=b"ping through the tunnel"))
        reply = await rig.written(lambda p: p[9] == 1 and p[20] == 0)
        assert reply.endswith(b"ping through the tunnel") and reply[24:28] == bytes([0x12, 0x34, 0, 1])
        assert IcmpEcho  # the module under test on the client side
        await rig.close()
    run(main())


def test_accepted_flow_is_offloaded_to_the_tun_fast_path(tmp_path):
    """With a TUN that offers a fast path, an accepted flow's legs are in it by the time the
    SYN is released, and the stats count the offloaded flow."""
    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        rig = Rig(tmp_path)
        offload = MemoryOffload()
        rig.tun.fast_path = offload
        engine = await rig.start()
        await rig.connected()
        assert engine.stats.fast_path
        rig.tun.inject(tcp_packet(src=APP, dst="127.0.0.1", sport=40003, dport=port, flags=SYN))
        await rig.written(lambda p: p[9] == 6 and fields(p)["flags"] == SYN)
        assert len(offload.entries) == 2 and engine.stats.flows_offloaded == 1
        await rig.close()
        listener.close()
    run(main())


def _armed(name: str) -> int:
    """Timers of the running (asyncio) loop that are armed and call ``name``."""
    loop = asyncio.get_running_loop()
    return sum(1 for h in loop._scheduled  # noqa: SLF001 - the only view of pending timers
               if not h.cancelled() and getattr(h._callback, "__name__", "") == name)  # noqa: SLF001


def test_answered_flows_keep_no_timer_armed(tmp_path):
    """Each flow has one timer at a time: refused flows leave none, an accepted one only its
    wait for the listener (thousands of flows a second must not pile up timers)."""
    async def main():
        listener, port, closed_port = open_and_closed_ports()
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        for sport in range(41000, 41020):
            rig.tun.inject(tcp_packet(src=APP, dst="127.0.0.1", sport=sport, dport=closed_port,
                                      flags=SYN, seq=1000))
        for _ in range(250):
            if sum(1 for p in rig.tun.written if p[9] == 6 and fields(p)["flags"] & RST) == 20:
                break
            await asyncio.sleep(0.02)
        assert _armed("_answer_timeout") == 0 and _armed("_attach_timeout") == 0
        rig.tun.inject(tcp_packet(src=APP, dst="127.0.0.1", sport=41100, dport=port, flags=SYN))
        await rig.written(lambda p: p[9] == 6 and fields(p)["flags"] == SYN)
        assert _armed("_answer_timeout") == 0 and _armed("_attach_timeout") == 1
        await rig.close()
        listener.close()
    run(main())


def test_cancelled_while_logging_out_still_restores_the_host(tmp_path):
    """If the engine is cancelled during its logout (a second disconnect, the service
    stopping), the routes, DNS and TUN are still put back."""
    async def main():
        rig = Rig(tmp_path)

        class CancelWhenDisconnecting(list):
            def append(self, item):
                super().append(item)
                if item[0] is State.DISCONNECTING:
                    rig.task.cancel()   # lands on the logout's await
        rig.states = CancelWhenDisconnecting()
        await rig.start()
        await rig.connected()
        rig.stop.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(rig.task, 10)
        rig.gateway.close()
        assert rig.routes.state is None and rig.routes.restore_count == 1
        assert rig.dns.state is None and rig.dns.restore_count == 1
        assert rig.tun.closed
    run(main())


def test_a_failing_packet_path_close_does_not_skip_the_host_restore(tmp_path, monkeypatch, caplog):
    """If closing the datapath raises during teardown, DNS, routes and the TUN are still undone
    and the failure is logged at WARNING."""
    from client.datapath import Datapath

    def broken_close(self):
        raise RuntimeError("boom in close")
    monkeypatch.setattr(Datapath, "close", broken_close)

    async def main():
        rig = Rig(tmp_path)
        await rig.start()
        await rig.connected()
        with caplog.at_level(logging.WARNING, logger="client.host_setup"):
            await rig.close()
        assert rig.engine.state is State.DISCONNECTED
        assert rig.routes.state is None and rig.routes.restore_count == 1
        assert rig.dns.state is None and rig.dns.restore_count == 1 and rig.tun.closed
        assert any(r.levelno == logging.WARNING and "boom in close" in r.getMessage() for r in caplog.records)
    run(main())


def test_stop_while_connecting_ends_the_attempt_at_once(tmp_path):
    """Ctrl-C / SIGTERM (stop) while the gateway has not answered the TLS handshake ends the
    attempt promptly as disconnected, without waiting out the 10 s timeout or touching the host."""
    async def main():
        async def silent(reader, writer):
            await reader.read()   # accept TCP, never answer TLS
            writer.close()
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        routes, dns, states = MemoryRoutes(), MemoryDns(), []
        engine = Engine(EngineOptions(gateway=GatewayAddress("127.0.0.1", port), trust=Trust(),
                                      username="alice", reflect_network=REFLECT),
                        "pw", tun_factory=lambda mtu: MemoryTun(), routes=routes, dns=dns,
                        on_state=lambda s, d: states.append(s))
        stop = asyncio.Event()
        task = asyncio.ensure_future(engine.run(stop))
        await asyncio.sleep(0.3)
        assert engine.state is State.CONNECTING
        stop.set()
        await asyncio.wait_for(task, 3)
        server.close()
        assert states == [State.CONNECTING, State.DISCONNECTING, State.DISCONNECTED]
        assert routes.applied == [] and dns.applied == []
    run(main())


class VanishingTun(MemoryTun):
    """A TUN whose device can be deleted behind the engine's back: then, like the kernel's,
    it stays readable and every read fails."""

    def __init__(self) -> None:
        super().__init__()
        self.gone = False
        self.reads = 0

    def read(self):
        self.reads += 1
        if self.gone:
            raise OSError(77, "File descriptor in bad state")   # EBADFD
        return super().read()


def test_a_tun_device_that_goes_away_ends_the_connection_instead_of_spinning(tmp_path):
    """When the TUN device disappears (an administrator deletes it), the engine does not
    spin on its ever-readable, ever-failing descriptor: it reads it once more, then fails
    the connection as a host problem and puts the host back."""
    async def main():
        rig = Rig(tmp_path)
        rig.tun = VanishingTun()
        await rig.start()
        await rig.connected()
        rig.tun.gone = True
        rig.tun.inject(udp_packet(src=APP, dst="127.0.0.1", sport=5000, dport=5001))
        await asyncio.sleep(0.3)
        assert rig.tun.reads < 10
        with pytest.raises(HostSetupError, match="TUN"):
            await asyncio.wait_for(rig.task, 5)
        assert rig.engine.state is State.FAILED
        assert rig.routes.state is None and rig.dns.state is None and rig.tun.closed
        rig.gateway.close()
    run(main())
