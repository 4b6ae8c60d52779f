"""Scenario: the network under the tunnel changes while connected (root only).

The client namespace's address changes, as when DHCP hands out a new lease or the
laptop joins another network: the old TLS connection is dead (its address is gone,
nothing answers it, no RST comes). The client must notice through the route to the
gateway (a new source address) and resume within seconds, not after a keepalive
interval and the dead-peer timeout; the tunnel then works again.
"""

from __future__ import annotations

import time

import pytest

from tests.lab import servers
from tests.lab import topology as topo
from tests.lab.tunnel import Tunnel, host_snapshot

pytestmark = pytest.mark.lab

NEW_ADDRESS = "192.0.2.5"
KEEPALIVE, DEAD_PEER = 15.0, 10.0
"""The gateway's keepalive and the client's dead-peer timeout: what a change would cost
without the watcher."""


def _readdress(lab, old: str, new: str) -> None:
    """Give the client's outer link ``new`` instead of ``old`` (a new DHCP lease)."""
    lab.run(lab.client, ["ip", "addr", "add", f"{new}/24", "dev", topo.OUTER_IF])
    lab.run(lab.client, ["ip", "addr", "del", f"{old}/24", "dev", topo.OUTER_IF])


def test_a_new_address_under_the_tunnel_is_noticed_and_the_session_resumed(lab, tmp_path):
    """After the client's address changes, the session resumes within a few seconds (well
    before keepalive + dead-peer timeout) and a page loads through the tunnel again."""
    lab.run(lab.client, ["sysctl", "-qw", f"net.ipv4.conf.{topo.OUTER_IF}.promote_secondaries=1"])
    tunnel = Tunnel(lab=lab, workdir=tmp_path, port=8447)
    tunnel.start_gateway(extra_server=f"keepalive = {KEEPALIVE}")
    web = servers.start_page(lab, topo.INTRANET_HOST, tmp_path / "www", "still here\n")
    before = host_snapshot(lab)
    client = tunnel.connect()
    try:
        _readdress(lab, str(topo.CLIENT_OUTER), NEW_ADDRESS)
        changed = time.monotonic()
        assert client.wait_for("reconnecting", timeout=KEEPALIVE + DEAD_PEER), client.output()
        assert "network changed" in client.lines[-1], client.lines[-1]
        assert client.wait_for("connected: reconnected", timeout=15), client.output()
        assert time.monotonic() - changed < 10, client.output()
        page = lab.run(lab.client, ["curl", "-sS", "--max-time", "10",
                                    f"http://{topo.INTRANET_HOST}/index.html"], check=False)
        assert page.stdout == "still here\n", page.stderr
    finally:
        assert client.stop() == 0, client.output()
        web.stop()
        tunnel.stop_gateway()
        _readdress(lab, NEW_ADDRESS, str(topo.CLIENT_OUTER))
    assert host_snapshot(lab) == before
