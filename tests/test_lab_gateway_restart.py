"""Scenario: the gateway restarts while a client is connected (root only).

A restarted gateway keeps no sessions: the client's token means nothing to it any
more. The client must not give up or tear the host down: it logs in again with the
password of this connection, gets the same pool address (a user's own address
depends on the name alone), and the tunnel works again with the same TUN, address
and routes.
"""

from __future__ import annotations

import pytest

from tests.lab import servers
from tests.lab import topology as topo
from tests.lab.tunnel import Tunnel, host_snapshot

pytestmark = pytest.mark.lab


def test_a_restarted_gateway_gets_a_new_login_and_the_tunnel_works_again(lab, tmp_path):
    """SIGTERM the gateway and start it again: the client prints that it logged in again
    within its reconnect window, the host was left as it was, and a page loads."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path, port=8448)
    tunnel.start_gateway()
    web = servers.start_page(lab, topo.INTRANET_HOST, tmp_path / "www", "after the restart\n")
    before = host_snapshot(lab)
    client = tunnel.connect()
    try:
        connected = host_snapshot(lab)
        tunnel.stop_gateway()
        tunnel.launch()
        assert client.wait_for("connected: reconnected (logged in again)", timeout=20), \
            client.output()
        assert host_snapshot(lab) == connected
        page = lab.run(lab.client, ["curl", "-sS", "--max-time", "10",
                                    f"http://{topo.INTRANET_HOST}/index.html"], check=False)
        assert page.stdout == "after the restart\n", page.stderr
        assert "alice logged in from" in tunnel.gateway_log(), tunnel.gateway_log()   # anew
    finally:
        assert client.stop() == 0, client.output()
        web.stop()
        tunnel.stop_gateway()
    assert host_snapshot(lab) == before
