"""RouteManager on a real TUN in the lab's client namespace (addresses, IPv4 routes, the
gateway pin, recovery after a crash), and HostState and MemoryRoutes."""

from __future__ import annotations

import ipaddress
import json
import signal
import textwrap

import pytest

from client.routes import HostState, MemoryRoutes
from tests.client.route_lab import NEXTHOP_NET, PUSHED_NET, REMOTE_GATEWAY, Driver, route_to, routes
from tests.lab import topology as topo

NEW_ROUTER = "192.0.2.3"
"""Another router on the client's outer link, for when the network changes."""


def addresses(lab, ifname: str) -> list[str]:
    """The IPv4 addresses on ``ifname`` in the client namespace (none when it is gone)."""
    done = lab.run(lab.client, ["ip", "-j", "addr", "show", "dev", ifname], check=False)
    if done.returncode != 0:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(done.stdout) for a in link["addr_info"]
            if a["family"] == "inet"]


@pytest.mark.lab
def test_apply_installs_everything_and_restore_removes_it(lab, tmp_path, nexthop):
    """apply() adds addresses, routes with src and a gateway pin via the old nexthop; restore() undoes all."""
    before = routes(lab)
    driver = Driver(lab, tmp_path, routes=[str(topo.INTRANET_NET), str(topo.DENIED_NET), PUSHED_NET],
                    gateway=REMOTE_GATEWAY)
    try:
        driver.do("apply")
        assert sorted(addresses(lab, driver.tun)) == ["10.200.0.5/24", "198.18.255.1/30"]
        intranet = route_to(lab, str(topo.INTRANET_NET))
        assert intranet["dev"] == driver.tun and intranet["prefsrc"] == "10.200.0.5"
        assert route_to(lab, PUSHED_NET)["dev"] == driver.tun
        pin = route_to(lab, REMOTE_GATEWAY)
        assert (pin["gateway"], pin["dev"]) == (str(topo.GATEWAY_OUTER), topo.OUTER_IF)
        journal = json.loads(driver.journal.read_text())
        assert journal["owner"]["pid"] == driver.proc.pid and len(journal["items"]) == 6
        driver.do("restore")
        assert routes(lab) == before
        assert addresses(lab, driver.tun) == []
        assert not driver.journal.exists()
    finally:
        driver.stop()


@pytest.mark.lab
def test_apply_twice_changes_nothing_and_a_smaller_state_drops_routes(lab, tmp_path):
    """A second identical apply() is a no-op; applying fewer routes removes the rest."""
    driver = Driver(lab, tmp_path, routes=[str(topo.INTRANET_NET), str(topo.DENIED_NET)],
                    gateway=str(topo.GATEWAY_OUTER))
    try:
        driver.do("apply")
        first, journal = routes(lab), driver.journal.read_text()
        driver.do("apply")
        assert routes(lab) == first and driver.journal.read_text() == journal
        driver.do(f"apply {topo.INTRANET_NET}")
        assert route_to(lab, str(topo.DENIED_NET)) is None
        assert route_to(lab, str(topo.INTRANET_NET))["dev"] == driver.tun
        driver.do("restore")
    finally:
        driver.stop()


@pytest.mark.lab
def test_on_link_gateway_is_pinned_without_a_nexthop(lab, tmp_path):
    """A default route into the TUN pins the on-link gateway as a plain device route."""
    driver = Driver(lab, tmp_path, routes=["0.0.0.0/0"], gateway=str(topo.GATEWAY_OUTER))
    try:
        driver.do("apply")
        pin = route_to(lab, str(topo.GATEWAY_OUTER))
        assert pin["dev"] == topo.OUTER_IF and "gateway" not in pin
        assert route_to(lab, "0.0.0.0/1")["dev"] == route_to(lab, "128.0.0.0/1")["dev"] == driver.tun
        lab.run(lab.client, ["ping", "-c", "1", "-W", "2", str(topo.GATEWAY_OUTER)])
        driver.do("restore")
        assert route_to(lab, str(topo.GATEWAY_OUTER)) is None and route_to(lab, "0.0.0.0/1") is None
    finally:
        driver.stop()


@pytest.mark.lab
def test_a_gateway_pin_the_kernel_dropped_is_made_again_along_the_new_way(lab, tmp_path, nexthop):
    """When the network under the tunnel changes, the kernel drops our pin with the old
    address or router; the next apply() pins the gateway along the route it has now, not
    into the TUN that covers it and not along the old way."""
    driver = Driver(lab, tmp_path, routes=[PUSHED_NET], gateway=REMOTE_GATEWAY)
    try:
        driver.do("apply")
        assert route_to(lab, REMOTE_GATEWAY)["gateway"] == str(topo.GATEWAY_OUTER)
        lab.run(lab.client, ["ip", "route", "del", f"{REMOTE_GATEWAY}/32"])        # the old way went,
        lab.run(lab.client, ["ip", "route", "replace", NEXTHOP_NET, "via", NEW_ROUTER])  # a new one came
        driver.do("apply")
        pin = route_to(lab, REMOTE_GATEWAY)
        assert (pin["gateway"], pin["dev"]) == (NEW_ROUTER, topo.OUTER_IF)
        driver.do("restore")
        assert route_to(lab, REMOTE_GATEWAY) is None
    finally:
        driver.stop()


@pytest.mark.lab
def test_a_full_tunnel_wins_over_the_hosts_default_route_and_leaves_it_be(lab, tmp_path):
    """0.0.0.0/0 goes in as its two halves: applied beside the host's own default route (a
    second default would be refused), it takes every address but the pinned gateway's, and
    restore() leaves the host's default route as it was."""
    lab.run(lab.client, ["ip", "route", "add", "default", "via", str(topo.GATEWAY_OUTER)])
    driver = Driver(lab, tmp_path, routes=["0.0.0.0/0"], gateway=str(topo.GATEWAY_OUTER))
    try:
        before = routes(lab)
        driver.do("apply")
        for address in ("1.2.3.4", "200.0.0.1", str(topo.INTRANET_HOST)):
            got = lab.run(lab.client, ["ip", "-j", "route", "get", address]).stdout
            assert json.loads(got)[0]["dev"] == driver.tun, address
        assert route_to(lab, "default")["gateway"] == str(topo.GATEWAY_OUTER)
        driver.do("restore")
        assert routes(lab) == before
    finally:
        driver.stop()
        lab.run(lab.client, ["ip", "route", "del", "default"], check=False)


@pytest.mark.lab
def test_recover_after_a_crash_removes_the_leftover_gateway_route(lab, tmp_path, nexthop):
    """After kill -9 the pin survives on the real interface; recover() in a new process removes it."""
    driver = Driver(lab, tmp_path, routes=[str(topo.INTRANET_NET), PUSHED_NET], gateway=REMOTE_GATEWAY)
    driver.do("apply")
    driver.proc.send_signal(signal.SIGKILL)
    driver.proc.wait(timeout=10)
    assert route_to(lab, REMOTE_GATEWAY) is not None
    assert route_to(lab, str(topo.INTRANET_NET)) is None  # went with the TUN
    source = ("import pathlib, sys\nfrom client.routes import RouteManager\n"
              "print(RouteManager.recover(pathlib.Path(sys.argv[1])), RouteManager.recover(pathlib.Path(sys.argv[1])))")
    assert lab.run_python(lab.client, source, str(driver.journal)).stdout.split() == ["True", "False"]
    assert route_to(lab, REMOTE_GATEWAY) is None
    assert route_to(lab, NEXTHOP_NET)["gateway"] == str(topo.GATEWAY_OUTER)
    assert not driver.journal.exists()


@pytest.mark.lab
def test_a_pushed_route_clashing_with_an_existing_one_fails_clearly(lab, tmp_path, nexthop):
    """Pushing exactly a network the host already routes elsewhere raises HostSetupError; restore cleans up."""
    driver = Driver(lab, tmp_path, routes=[str(topo.INTRANET_NET), NEXTHOP_NET], gateway=str(topo.GATEWAY_OUTER))
    try:
        with pytest.raises(AssertionError, match=f"HostSetupError cannot add route {NEXTHOP_NET}.*File exists"):
            driver.do("apply")
        driver.do("restore")
        assert route_to(lab, str(topo.INTRANET_NET)) is None
        assert route_to(lab, NEXTHOP_NET)["gateway"] == str(topo.GATEWAY_OUTER)
        assert not driver.journal.exists()
    finally:
        driver.stop()


def test_memory_routes_records_applied_state_and_restore():
    """MemoryRoutes keeps the applied state, knows when the gateway would be pinned, and forgets on restore."""
    fake = MemoryRoutes()
    state = HostState(interface="memtun0", addresses=(ipaddress.IPv4Interface("10.200.0.5/24"),),
                      routes=(ipaddress.IPv4Network("0.0.0.0/0"),), gateway=ipaddress.IPv4Address("192.0.2.1"))
    fake.apply(state)
    assert fake.state == state and fake.pinned_gateway == ipaddress.IPv4Address("192.0.2.1")
    fake.restore()
    assert fake.state is None and fake.restore_count == 1 and fake.applied == [state]


def test_host_state_blocks_no_ipv6_unless_asked():
    """block_ipv6 is off by default, so a state built without it changes nothing of IPv6."""
    state = HostState(interface="memtun0", addresses=(), routes=(),
                      gateway=ipaddress.IPv4Address("192.0.2.1"))
    assert state.block_ipv6 is False


def test_host_state_rejects_a_bad_interface_name():
    """HostState validates its input instead of failing later in netlink."""
    with pytest.raises(ValueError):
        HostState(interface="x" * 16, addresses=(), routes=(), gateway=ipaddress.IPv4Address("192.0.2.1"))


# Runs in the client namespace: apply a state, dying (as kill -9 would) just
# before the gateway pin would be added; prints the journal's items first.
DIE_BEFORE_PIN = textwrap.dedent("""
    import json, os, pathlib, sys
    import client.routes as routes
    from client.tun import KernelTun
    journal = pathlib.Path(sys.argv[1])
    real_add = routes.add
    def add(ipr, item):
        if item.get("role") == "gateway":
            print(json.dumps(json.loads(journal.read_text())["items"]), flush=True)
            os._exit(9)
        real_add(ipr, item)
    routes.add = add
    tun = KernelTun()
    state = routes.HostState(interface=tun.name, addresses=("198.18.255.1/30",), routes=(sys.argv[2],),
                             gateway=sys.argv[3])
    routes.RouteManager(journal).apply(state)
    print("[]", flush=True)
""")


@pytest.mark.lab
def test_a_gateway_pin_someone_else_made_is_never_written_down(lab, tmp_path, nexthop):
    """A host route to the gateway that is already there stays its owner's, even across a crash mid-apply."""
    lab.run(lab.client, ["ip", "route", "add", f"{REMOTE_GATEWAY}/32", "via", str(topo.GATEWAY_OUTER)])
    journal = tmp_path / "routes.journal"
    done = lab.run_python(lab.client, DIE_BEFORE_PIN, str(journal), PUSHED_NET, REMOTE_GATEWAY, check=False)
    assert all(item.get("role") != "gateway" for item in json.loads(done.stdout.splitlines()[-1]))
    source = ("import pathlib, sys\nfrom client.routes import RouteManager\n"
              "RouteManager.recover(pathlib.Path(sys.argv[1]))")
    lab.run_python(lab.client, source, str(journal))
    assert route_to(lab, REMOTE_GATEWAY)["gateway"] == str(topo.GATEWAY_OUTER)
    assert not journal.exists()
