"""HostSetup on its own: what it does before, without and after a configuration (the
configured paths are exercised through the engine tests in test_engine*.py)."""

from __future__ import annotations

import asyncio
import ipaddress

from client.dns import MemoryDns
from client.host_setup import HostSetup
from client.routes import MemoryRoutes
from client.tun import MemoryTun


def _setup() -> tuple[HostSetup, MemoryRoutes, MemoryDns]:
    routes, dns = MemoryRoutes(), MemoryDns()
    return HostSetup(tun_factory=lambda mtu: MemoryTun(), routes=routes, dns=dns,
                     reflect_network=ipaddress.IPv4Network("127.77.0.0/30"),
                     tcp_fast_path=False), routes, dns


def test_an_unconfigured_setup_touches_nothing_but_still_restores():
    """Before configure(): refreshing applies no routes, resetting and stopping do nothing,
    and restore() still asks routes and DNS to put back whatever a journal may hold."""
    host, routes, dns = _setup()
    host.refresh_routes()
    asyncio.run(host.reset_connections())
    host.stop_datapath()
    host.restore()
    assert routes.applied == [] and routes.restore_count == 1 and dns.restore_count == 1
    assert host.tun is None and host.datapath is None


def test_restore_goes_on_when_routes_fail_to_restore(caplog):
    """A failing route restore is a warning; the DNS is put back all the same."""
    host, routes, dns = _setup()

    def broken():
        raise OSError("netlink went away")
    routes.restore = broken
    host.restore()
    assert dns.restore_count == 1
    assert any("restoring routes failed: netlink went away" in r.getMessage() for r in caplog.records)
