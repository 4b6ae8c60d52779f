"""Tests of client.route_items, against a real kernel in the lab's client namespace: items already
gone are no failure, and an item that cannot be undone is logged while the rest are."""

from __future__ import annotations

import json

import pytest

from tests.client.route_lab import PUSHED_NET, REMOTE_GATEWAY, Driver, route_to
from tests.lab import topology as topo


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
