"""RouteManager on a real TUN in the lab's client namespace, and MemoryRoutes."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import textwrap
import time

import pytest

from client.routes import HostState, MemoryRoutes
from tests.lab import topology as topo

NEXTHOP_NET = "203.0.113.0/24"
PUSHED_NET = "203.0.113.0/25"
"""Pushed by the gateway; covers REMOTE_GATEWAY, narrower than NEXTHOP_NET."""
REMOTE_GATEWAY = "203.0.113.9"
NEW_ROUTER = "192.0.2.3"
"""Another router on the client's outer link, for when the network changes."""

# Runs in the client namespace: makes a TUN, then obeys one command a line.
DRIVER = textwrap.dedent("""
    import ipaddress, json, logging, pathlib, subprocess, sys
    from client.routes import HostState, RouteManager
    from client.tun import KernelTun
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    spec = json.loads(sys.argv[1])
    tun = KernelTun()
    state = HostState(interface=tun.name, addresses=tuple(spec["addresses"]), routes=tuple(spec["routes"]),
                      gateway=spec["gateway"], preferred_source=spec.get("src"),
                      block_ipv6=spec.get("block_ipv6", False))
    manager = RouteManager(pathlib.Path(spec["journal"]))
    print(tun.name, flush=True)
    for line in sys.stdin:
        command = line.split()
        try:
            if command[0] == "apply":
                if len(command) > 1:  # apply a state with fewer routes
                    state = HostState(interface=tun.name, addresses=state.addresses,
                                      routes=tuple(command[1:]), gateway=state.gateway,
                                      preferred_source=state.preferred_source,
                                      block_ipv6=state.block_ipv6)
                manager.apply(state)
            elif command[0] == "restore":
                manager.restore()
            elif command[0] == "close-tun":
                tun.close()
            elif command[0] == "hold-tun":  # a child keeps the TUN open after we are gone
                holder = subprocess.Popen(["sleep", "600"], pass_fds=[tun.fileno()])
                print(holder.pid, flush=True)
            print("ok", flush=True)
        except Exception as exc:
            print("error", type(exc).__name__, exc, flush=True)
""")


class Driver:
    """A RouteManager with its own TUN in a subprocess in the client namespace."""

    def __init__(self, lab, tmp_path, *, routes, gateway, addresses=("10.200.0.5/24", "198.18.255.1/30"),
                 src="10.200.0.5", block_ipv6=False) -> None:
        self.journal = tmp_path / "routes.journal"
        self.log = tmp_path / "driver.log"
        spec = {"addresses": list(addresses), "routes": list(routes), "gateway": gateway,
                "src": src, "journal": str(self.journal), "block_ipv6": block_ipv6}
        self.proc = lab.popen_python(lab.client, DRIVER, json.dumps(spec), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True)
        self.tun = self.proc.stdout.readline().strip()
        assert self.tun, self.log.read_text()

    def do(self, command: str) -> list[str]:
        """Run one command; returns the lines it printed before its "ok"."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        printed = []
        while (answer := self.proc.stdout.readline().strip()).isdigit():
            printed.append(answer)
        assert answer == "ok", f"{answer}\n{self.log.read_text()}"
        return printed

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


def routes(lab) -> list[dict]:
    return json.loads(lab.run(lab.client, ["ip", "-j", "route", "show"]).stdout)


def route_to(lab, dst: str) -> dict | None:
    return next((r for r in routes(lab) if r["dst"] == dst), None)


def addresses(lab, ifname: str) -> list[str]:
    done = lab.run(lab.client, ["ip", "-j", "addr", "show", "dev", ifname], check=False)
    if done.returncode != 0:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(done.stdout) for a in link["addr_info"]
            if a["family"] == "inet"]


@pytest.fixture
def nexthop(lab):
    """A route in the client namespace that reaches REMOTE_GATEWAY via the lab gateway."""
    lab.run(lab.client, ["ip", "route", "add", NEXTHOP_NET, "via", str(topo.GATEWAY_OUTER)])
    yield
    lab.run(lab.client, ["ip", "route", "del", NEXTHOP_NET], check=False)
    lab.run(lab.client, ["ip", "route", "del", f"{REMOTE_GATEWAY}/32"], check=False)


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
def test_restore_with_items_already_gone_does_not_raise(lab, tmp_path, nexthop):
    """restore() after the TUN and the pin vanished reports them as already gone and succeeds."""
    driver = Driver(lab, tmp_path, routes=[PUSHED_NET], gateway=REMOTE_GATEWAY)
    try:
        driver.do("apply")
        driver.do("close-tun")
        lab.run(lab.client, ["ip", "route", "del", f"{REMOTE_GATEWAY}/32"])
        driver.do("restore")
        assert not driver.journal.exists()
    finally:
        driver.stop()
    log = driver.log.read_text()
    assert "already gone" in log and "WARNING" not in log


@pytest.mark.lab
def test_recover_logs_an_item_it_cannot_undo_and_undoes_the_rest(lab, tmp_path):
    """A journal item that cannot be undone is logged at WARNING; the other items are still undone."""
    lab.run(lab.client, ["ip", "route", "add", "198.51.100.7/32", "dev", topo.OUTER_IF])
    journal = tmp_path / "leftover.journal"
    items = [{"kind": "route", "dst": "198.51.100.7/32", "gateway": None, "interface": topo.OUTER_IF,
              "prefsrc": None},
             {"kind": "route", "dst": "not-a-network", "interface": topo.OUTER_IF}]
    journal.write_text(json.dumps({"version": 1, "owner": {"pid": 999999999, "start": 0}, "items": items}))
    source = ("import logging, pathlib, sys\nfrom client.routes import RouteManager\n"
              "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')\n"
              "print(RouteManager.recover(pathlib.Path(sys.argv[1])))")
    done = lab.run_python(lab.client, source, str(journal))
    assert done.stdout.strip() == "True"
    assert "WARNING could not undo" in done.stderr and "not-a-network" in done.stderr
    assert route_to(lab, "198.51.100.7") is None
    assert not journal.exists()


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


CLIENT6, ROUTER6 = "fd00:77::2/64", "fd00:77::1"
"""The client's IPv6 address on its outer link, and its IPv6 router there."""


def routes6(lab, table: str = "main") -> list[dict]:
    return json.loads(lab.run(lab.client, ["ip", "-j", "-6", "route", "show", "table", table]).stdout)


def route6_to(lab, dst: str) -> dict | None:
    return next((r for r in routes6(lab) if r["dst"] == dst), None)


def device6(lab, address: str) -> str:
    return json.loads(lab.run(lab.client, ["ip", "-j", "-6", "route", "get", address]).stdout)[0]["dev"]


@pytest.fixture
def ipv6_default(lab):
    """An IPv6 address on the client's outer link and an IPv6 default route through it."""
    lab.run(lab.client, ["ip", "-6", "addr", "add", CLIENT6, "dev", topo.OUTER_IF, "nodad"])
    lab.run(lab.client, ["ip", "-6", "route", "add", "default", "via", ROUTER6, "dev", topo.OUTER_IF])
    # The link's fe80:: address gets its route once duplicate address detection is done:
    # wait, so that route snapshots compare a settled host.
    deadline = time.monotonic() + 10
    while lab.run(lab.client, ["ip", "-6", "addr", "show", "tentative"]).stdout.strip():
        assert time.monotonic() < deadline, "the client's IPv6 addresses stayed tentative"
        time.sleep(0.05)
    yield
    lab.run(lab.client, ["ip", "-6", "route", "del", "default"], check=False)
    lab.run(lab.client, ["ip", "-6", "addr", "del", CLIENT6, "dev", topo.OUTER_IF], check=False)


@pytest.mark.lab
def test_blocking_ipv6_routes_all_of_it_into_the_tun_journaled_and_restore_takes_it_back(
        lab, tmp_path, ipv6_default):
    """With block_ipv6, ::/1 and 8000::/1 go into the TUN (written down in the journal),
    beside the host's own IPv6 default route; every off-link IPv6 address is then routed
    into the TUN, and restore() leaves the IPv6 routes exactly as they were."""
    driver = Driver(lab, tmp_path, routes=["0.0.0.0/0"], gateway=str(topo.GATEWAY_OUTER), block_ipv6=True)
    try:
        before = routes6(lab, "all")
        driver.do("apply")
        driver.do("apply")
        assert route6_to(lab, "::/1")["dev"] == route6_to(lab, "8000::/1")["dev"] == driver.tun
        for address in ("2001:db8::1", "fd00:99::1", "8000::1", "fe00::1"):
            assert device6(lab, address) == driver.tun, address
        assert device6(lab, ROUTER6) == topo.OUTER_IF            # on-link stays on-link
        assert route6_to(lab, "default")["gateway"] == ROUTER6
        journaled = [item.get("dst") for item in json.loads(driver.journal.read_text())["items"]]
        assert journaled[-2:] == ["::/1", "8000::/1"]
        driver.do("restore")
        assert routes6(lab, "all") == before and not driver.journal.exists()
    finally:
        driver.stop()


@pytest.mark.lab
def test_recover_after_a_crash_removes_the_ipv6_routes_of_a_tun_that_outlived_it(lab, tmp_path):
    """After kill -9, with the TUN kept open by a child (so its routes stay), recover() in a
    new process removes the IPv6 routes along with the rest of the journal."""
    driver = Driver(lab, tmp_path, routes=["0.0.0.0/0"], gateway=str(topo.GATEWAY_OUTER), block_ipv6=True)
    driver.do("apply")
    holder = int(driver.do("hold-tun")[0])
    try:
        driver.proc.send_signal(signal.SIGKILL)
        driver.proc.wait(timeout=10)
        assert route6_to(lab, "::/1")["dev"] == route6_to(lab, "8000::/1")["dev"] == driver.tun
        source = ("import pathlib, sys\nfrom client.routes import RouteManager\n"
                  "print(RouteManager.recover(pathlib.Path(sys.argv[1])))")
        assert lab.run_python(lab.client, source, str(driver.journal)).stdout.split() == ["True"]
        assert route6_to(lab, "::/1") is None and route6_to(lab, "8000::/1") is None
        assert route_to(lab, "0.0.0.0/1") is None and not driver.journal.exists()
    finally:
        os.kill(holder, signal.SIGKILL)


@pytest.mark.lab
def test_an_ipv6_half_someone_else_put_into_the_tun_stays_theirs(lab, tmp_path):
    """An IPv6 route already there is found in the IPv6 table: left to its owner, never
    written down, and still there after restore()."""
    driver = Driver(lab, tmp_path, routes=[str(topo.INTRANET_NET)], gateway=str(topo.GATEWAY_OUTER),
                    block_ipv6=True)
    try:
        lab.run(lab.client, ["ip", "-6", "route", "add", "::/1", "dev", driver.tun])
        driver.do("apply")
        journaled = [item.get("dst") for item in json.loads(driver.journal.read_text())["items"]]
        assert "::/1" not in journaled and "8000::/1" in journaled
        driver.do("restore")
        assert route6_to(lab, "::/1")["dev"] == driver.tun and route6_to(lab, "8000::/1") is None
    finally:
        driver.stop()
    assert "IPv6 route ::/1 dev" in driver.log.read_text()


@pytest.mark.lab
def test_a_host_with_ipv6_off_gets_no_ipv6_routes(lab, tmp_path):
    """With IPv6 disabled on the whole host there is nothing to leak: apply() with
    block_ipv6 succeeds, adds and journals no IPv6 route, and says so at INFO."""
    lab.run(lab.client, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
    driver = Driver(lab, tmp_path, routes=["0.0.0.0/0"], gateway=str(topo.GATEWAY_OUTER), block_ipv6=True)
    try:
        driver.do("apply")
        assert route6_to(lab, "::/1") is None
        assert all(":" not in item["dst"] for item in json.loads(driver.journal.read_text())["items"]
                   if item["kind"] == "route")
        driver.do("restore")
    finally:
        driver.stop()
        lab.run(lab.client, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0"])
    assert "INFO IPv6 is off on this host" in driver.log.read_text()


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
