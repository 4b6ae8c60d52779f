"""Scenario: the network watcher in the lab's client namespace, on real rtnetlink (root only).

The watcher runs as the engine would run it (uvloop, the real `LinuxNetwork`) in a
subprocess that prints one line per change; the tests change routes, addresses and
carrier with `ip` and time the lines.
"""

from __future__ import annotations

import subprocess
import textwrap
import time

import pytest

from tests.lab import topology as topo
from tests.lab.tunnel import ClientProcess

pytestmark = pytest.mark.lab

TARGET = "198.51.100.7"
"""A gateway address reached through the default route."""
ALT_IF, ALT_PEER = "alt", "altpeer"
ALT_ADDRESS, ALT_NEXTHOP = "203.0.113.2/24", "203.0.113.1"
REMOTE_NET, REMOTE_GATEWAY = "198.18.64.0/24", "198.18.64.9"
"""A gateway behind a next hop, and a pushed network covering it (so it gets pinned)."""
PUSHED_NET = "198.18.64.0/25"
FIRES_WITHIN = 2.0
QUIET_FOR = 1.5

WATCHER = textwrap.dedent("""
    import logging, sys
    from client.netwatch import NetWatcher
    from client.wire.runloop import run_loop
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    async def main():
        watcher = await NetWatcher.open(sys.argv[1])
        print("READY" if watcher.watching_routes else "DEGRADED", flush=True)
        while True:
            print("CHANGED", await watcher.changed(), flush=True)

    run_loop(main())
""")

# The client's own routes, as the engine puts them in place: a TUN, the pushed networks
# and the pin of the gateway; restored when a line arrives on stdin.
TUNNEL_ROUTES = textwrap.dedent("""
    import pathlib, sys
    from client.routes import HostState, RouteManager
    from client.tun import KernelTun
    tun = KernelTun()
    manager = RouteManager(pathlib.Path(sys.argv[1]))
    manager.apply(HostState(interface=tun.name, addresses=("10.200.0.5/24",), routes=tuple(sys.argv[3:]),
                            gateway=sys.argv[2], preferred_source="10.200.0.5"))
    print("APPLIED", tun.name, flush=True)
    sys.stdin.readline()
    manager.restore()
    tun.close()
    print("RESTORED", flush=True)
""")


def start_watcher(lab, target: str, tmp_path) -> ClientProcess:
    proc = lab.popen_python(lab.client, WATCHER, target, stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "watcher.log", "w"), text=True)
    watcher = ClientProcess(proc)
    assert watcher.wait_for("READY", 10), (watcher.output(), (tmp_path / "watcher.log").read_text())
    return watcher


def fired_after(watcher: ClientProcess, lab, argv: list[str], ns: str | None = None) -> tuple[str, float]:
    """Run `ip ...` and return the watcher's next line and how long it took (seconds)."""
    start = time.monotonic()
    lab.run(ns or lab.client, argv)
    assert watcher.wait_for("CHANGED", FIRES_WITHIN), f"no change seen after {argv}: {watcher.output()}"
    return watcher.lines[-1], time.monotonic() - start


def stays_quiet(watcher: ClientProcess) -> bool:
    return not watcher.wait_for("CHANGED", QUIET_FOR)


@pytest.fixture
def alt_link(lab):
    """A second uplink, `alt` (a veth with its peer up), and the default route via `outer`."""
    c = lab.client
    lab.run(c, ["ip", "link", "add", ALT_IF, "type", "veth", "peer", "name", ALT_PEER])
    lab.run(c, ["ip", "addr", "add", ALT_ADDRESS, "dev", ALT_IF])
    for ifname in (ALT_PEER, ALT_IF):
        lab.run(c, ["ip", "link", "set", ifname, "up"])
    lab.run(c, ["ip", "route", "add", "default", "via", str(topo.GATEWAY_OUTER), "dev", topo.OUTER_IF])
    yield
    lab.run(c, ["ip", "link", "del", ALT_IF], check=False)
    lab.run(c, ["ip", "route", "del", "default"], check=False)


@pytest.fixture
def remote_gateway(lab):
    """A route to REMOTE_NET via the lab gateway, as to a VPN gateway on the Internet."""
    lab.run(lab.client, ["ip", "route", "add", REMOTE_NET, "via", str(topo.GATEWAY_OUTER)])
    yield
    lab.run(lab.client, ["ip", "route", "del", REMOTE_NET], check=False)


def test_a_new_default_route_or_a_lost_address_fires_at_once_an_unrelated_route_does_not(
        lab, tmp_path, alt_link):
    """An unrelated route is quiet; the default route moving to `alt`, then `alt` losing its
    address, each fire within two seconds with a reason naming the change."""
    watcher = start_watcher(lab, TARGET, tmp_path)
    try:
        lab.run(lab.client, ["ip", "route", "add", "10.55.0.0/16", "via", ALT_NEXTHOP, "dev", ALT_IF])
        assert stays_quiet(watcher), watcher.output()

        line, took = fired_after(watcher, lab, ["ip", "route", "replace", "default", "via", ALT_NEXTHOP,
                                                "dev", ALT_IF])
        assert f"route to {TARGET} now dev {ALT_IF} via {ALT_NEXTHOP} src 203.0.113.2" in line, line
        assert f"was dev {topo.OUTER_IF} via {topo.GATEWAY_OUTER}" in line and took < FIRES_WITHIN

        line, took = fired_after(watcher, lab, ["ip", "addr", "del", ALT_ADDRESS, "dev", ALT_IF])
        assert f"no route to {TARGET} any more" in line, line
        assert stays_quiet(watcher), watcher.output()
    finally:
        watcher.stop()


def test_our_own_tunnel_routes_are_quiet_and_a_pulled_cable_fires(lab, tmp_path, remote_gateway):
    """With the watcher on a gateway that a pushed network covers, the TUN, its routes and the
    pin going in and out are quiet; the uplink losing carrier, and getting it back, fire."""
    watcher = start_watcher(lab, REMOTE_GATEWAY, tmp_path)
    routes = lab.popen_python(lab.client, TUNNEL_ROUTES, str(tmp_path / "routes.journal"), REMOTE_GATEWAY,
                              PUSHED_NET, str(topo.INTRANET_NET), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=open(tmp_path / "routes.log", "w"), text=True)
    try:
        applied = routes.stdout.readline()
        assert applied.startswith("APPLIED"), (tmp_path / "routes.log").read_text()
        tun = applied.split()[1]
        lookup = lab.run(lab.client, ["ip", "route", "get", "198.18.64.1"]).stdout
        assert f"dev {tun}" in lookup        # the pushed network is really routed into the TUN
        assert stays_quiet(watcher), watcher.output()

        line, took = fired_after(watcher, lab, ["ip", "link", "set", topo.OUTER_IF, "down"], lab.gateway)
        assert f"now dev {topo.OUTER_IF} via {topo.GATEWAY_OUTER} src {topo.CLIENT_OUTER} (no link)" in line
        line, _ = fired_after(watcher, lab, ["ip", "link", "set", topo.OUTER_IF, "up"], lab.gateway)
        assert line.endswith(f"src {topo.CLIENT_OUTER} (was dev {topo.OUTER_IF} via {topo.GATEWAY_OUTER} "
                             f"src {topo.CLIENT_OUTER} (no link))"), line

        routes.stdin.write("restore\n")
        routes.stdin.flush()
        assert routes.stdout.readline().startswith("RESTORED"), (tmp_path / "routes.log").read_text()
        assert stays_quiet(watcher), watcher.output()
    finally:
        if routes.poll() is None:
            routes.stdin.close()
            routes.wait(10)
        watcher.stop()
        lab.run(lab.gateway, ["ip", "link", "set", topo.OUTER_IF, "up"], check=False)
