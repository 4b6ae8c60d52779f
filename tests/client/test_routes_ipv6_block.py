"""RouteManager's IPv6 block on a real TUN in the lab's client namespace: all of IPv6
routed into the TUN during a full tunnel, journaled, and taken back."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.client.route_lab import Driver, route_to
from tests.lab import topology as topo

CLIENT6, ROUTER6 = "fd00:77::2/64", "fd00:77::1"
"""The client's IPv6 address on its outer link, and its IPv6 router there."""


def routes6(lab, table: str = "main") -> list[dict]:
    """The client namespace's IPv6 routes in ``table``."""
    return json.loads(lab.run(lab.client, ["ip", "-j", "-6", "route", "show", "table", table]).stdout)


def route6_to(lab, dst: str) -> dict | None:
    """The client namespace's IPv6 route to exactly ``dst``, or None."""
    return next((r for r in routes6(lab) if r["dst"] == dst), None)


def device6(lab, address: str) -> str:
    """The device the client namespace routes IPv6 ``address`` through."""
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
