"""Scenario: a full tunnel with a split-exclude, in the namespace lab (root only).

The client namespace gets a default route through the gateway namespace, which
routes (a home network's router, in effect). The gateway pushes 0.0.0.0/0 (one
resource covering everything) and excludes one intranet host. Traffic to the
other hosts must go through the tunnel (their server sees the gateway's inner
address, the audit log has the flow); traffic to the excluded host must take
the host's own default route (its server sees the client's outer address, the
audit log has nothing); and after the disconnect the host's own default route
is still there, untouched.
"""

from __future__ import annotations

import pytest

from tests.lab import servers
from tests.lab import topology as topo
from tests.lab.tunnel import FULL_TUNNEL, Tunnel, host_snapshot

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def site(lab, tmp_path_factory):
    """A routing gateway namespace, the client's default route through it, two web servers."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path_factory.mktemp("tunnel"))
    tunnel.start_gateway(resources=FULL_TUNNEL,
                         extra=f'\n[routing]\nexclude = ["{topo.INTRANET_HOST2}/32"]\n')
    topo.set_forwarding(lab, True)
    lab.run(lab.client, ["ip", "route", "add", "default", "via", str(topo.GATEWAY_OUTER)])
    root = tmp_path_factory.mktemp("www")
    (root / "index.html").write_text("hello\n")
    tunneled = servers.start_http(lab, topo.INTRANET_HOST, 80, root)
    excluded = servers.start_http(lab, topo.INTRANET_HOST2, 80, root)
    yield tunnel, tunneled, excluded
    tunnel.stop_gateway()
    lab.run(lab.client, ["ip", "route", "del", "default"], check=False)
    topo.set_forwarding(lab, False)


def _route_device(lab, address) -> str:
    words = lab.run(lab.client, ["ip", "-4", "route", "get", str(address)]).stdout.split()
    return words[words.index("dev") + 1]


def _curl(lab, address) -> None:
    result = lab.run(lab.client, ["curl", "-sS", "--max-time", "10", f"http://{address}/index.html"],
                     check=False)
    assert (result.returncode, result.stdout) == (0, "hello\n"), result.stderr


def test_full_tunnel_keeps_the_excluded_host_on_the_hosts_own_route(lab, site):
    """With 0.0.0.0/0 pushed and one host excluded, the other hosts go through the tunnel, the
    excluded one goes the host's own way, and the host's default route survives the disconnect."""
    tunnel, tunneled, excluded = site
    before = host_snapshot(lab)
    client = tunnel.connect()
    try:
        tun = _route_device(lab, topo.INTRANET_HOST)
        assert tun != topo.OUTER_IF
        assert _route_device(lab, topo.INTRANET_HOST2) == topo.OUTER_IF
        assert _route_device(lab, topo.GATEWAY_OUTER) == topo.OUTER_IF   # the session itself
        _curl(lab, topo.INTRANET_HOST)
        _curl(lab, topo.INTRANET_HOST2)
        assert str(topo.GATEWAY_INNER) in tunneled.log_text()
        assert str(topo.CLIENT_OUTER) not in tunneled.log_text()
        assert str(topo.CLIENT_OUTER) in excluded.log_text()
        assert str(topo.GATEWAY_INNER) not in excluded.log_text()
        assert f"{topo.INTRANET_HOST}:80" in tunnel.audit()
        assert str(topo.INTRANET_HOST2) not in tunnel.audit()
        assert "except" in client.output()      # the connected line names what is left out
    finally:
        assert client.stop() == 0, client.output()
    assert host_snapshot(lab) == before
