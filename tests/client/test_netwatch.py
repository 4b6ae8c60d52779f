"""The network-change detector: its sans-IO core (client.netchange) with literal values,
and the asyncio watcher (client.netwatch) over the in-memory host and, unprivileged,
the real rtnetlink."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging

import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from client.netchange import ChangeDetector, Clocks, RouteSnapshot
from client.nethost import LinuxNetwork, MemoryNetwork
from client.netwatch import NetWatcher

GATEWAY = "192.0.2.1"


@contextlib.asynccontextmanager
async def watching(host, **timing):
    """A watcher over ``host`` (fast timings unless given), closed with the host after."""
    watcher = await NetWatcher.open(GATEWAY, host=host, **{**FAST, **timing})
    try:
        yield watcher
    finally:
        watcher.close()
        host.close()

ETH0 = RouteSnapshot(interface="eth0", index=2, next_hop=ipaddress.ip_address("10.0.0.1"),
                     source=ipaddress.ip_address("10.0.0.5"))
WLAN0 = RouteSnapshot(interface="wlan0", index=3, next_hop=ipaddress.ip_address("172.16.0.1"),
                      source=ipaddress.ip_address("172.16.0.9"))


def detector(**kw) -> ChangeDetector:
    return ChangeDetector(GATEWAY, **{"debounce": 0.5, "max_delay": 2.0, "sleep_threshold": 3.0, **kw})


def seen(route: RouteSnapshot | None, then: RouteSnapshot | None) -> str | None:
    d = detector()
    assert d.route_seen(route) is None
    return d.route_seen(then)


# -- the route to the gateway ------------------------------------------------------


def test_the_first_lookup_is_the_baseline_and_the_same_answer_never_fires():
    """A repeated answer (our own TUN routes going in leave the lookup alone) fires nothing."""
    d = detector()
    assert d.route_seen(ETH0) is None
    assert d.route_seen(ETH0) is None
    assert d.route_seen(RouteSnapshot(interface="eth0", index=2, next_hop=ETH0.next_hop,
                                      source=ETH0.source)) is None


def test_a_route_via_another_interface_fires_naming_both():
    """Wi-Fi took over from the cable: the reason names the new route and the old one."""
    assert seen(ETH0, WLAN0) == ("network changed: route to 192.0.2.1 now dev wlan0 via 172.16.0.1 "
                                 "src 172.16.0.9 (was dev eth0 via 10.0.0.1 src 10.0.0.5)")


@pytest.mark.parametrize("field, value, shown", [
    ("next_hop", ipaddress.ip_address("10.0.0.254"), "via 10.0.0.254"),
    ("source", ipaddress.ip_address("10.0.0.77"), "src 10.0.0.77"),   # a DHCP renew with a new address
    ("link_up", False, "(no link)"),                                   # a pulled cable keeps the route
    ("index", 9, "dev eth0"),                                          # the interface was re-created
])
def test_each_field_of_the_route_counts(field, value, shown):
    """A new next hop, source address, lost carrier or interface index each fire."""
    reason = seen(ETH0, dataclasses.replace(ETH0, **{field: value}))
    assert reason is not None and shown in reason.split("(was")[0]


def test_a_route_that_disappears_or_appears_fires():
    """No route any more, and a route again, are both changes."""
    d = detector()
    d.route_seen(ETH0)
    assert d.route_seen(None) == ("network changed: no route to 192.0.2.1 any more "
                                  "(was dev eth0 via 10.0.0.1 src 10.0.0.5)")
    assert d.route_seen(None) is None
    assert d.route_seen(WLAN0) == ("network changed: route to 192.0.2.1 appeared, "
                                   "dev wlan0 via 172.16.0.1 src 172.16.0.9")


def test_a_change_becomes_the_new_baseline():
    """After firing for eth0 -> wlan0, wlan0 again is quiet and eth0 again fires."""
    d = detector()
    d.route_seen(ETH0)
    assert d.route_seen(WLAN0) is not None
    assert d.route_seen(WLAN0) is None
    assert "now dev eth0" in d.route_seen(ETH0)


addresses = st.sampled_from([None, *map(ipaddress.ip_address, ["10.0.0.1", "10.0.0.2", "fd00::1"])])
snapshots = st.one_of(st.none(), st.builds(
    RouteSnapshot, interface=st.sampled_from(["eth0", "wlan0", "enp0s31f6"]),
    index=st.integers(1, 3), next_hop=addresses, source=addresses, link_up=st.booleans()))


@given(snapshots, snapshots)
def test_fires_exactly_when_the_answer_differs_and_names_the_new_route(before, after):
    """Property: a lookup fires iff it differs from the previous one; the reason shows it."""
    reason = seen(before, after)
    assert (reason is not None) == (before != after)
    if reason is not None:
        assert reason.startswith("network changed: ") and GATEWAY in reason
        assert (str(after) if after is not None else "no route") in reason


# -- debouncing netlink bursts --------------------------------------------------------


def test_a_burst_asks_for_one_lookup_after_it_went_quiet():
    """Events at 0, 0.3 and 0.6 s: one lookup, due at 1.1 s and not before."""
    d = detector()
    assert d.lookup_at is None and not d.lookup_due(100.0)
    for t in (10.0, 10.3, 10.6):
        d.netlink_event(t)
    assert d.lookup_at == pytest.approx(11.1)
    assert not d.lookup_due(11.0)
    assert d.lookup_due(11.1)
    assert not d.lookup_due(11.2) and d.lookup_at is None


def test_endless_churn_still_gets_a_lookup_after_max_delay():
    """An event every 0.3 s for ever: a lookup is due 2 s after the first."""
    d = detector()
    due = []
    for step in range(40):
        now = step * 0.3
        d.netlink_event(now)
        if d.lookup_due(now):
            due.append(now)
    assert due[0] == pytest.approx(2.1) and len(due) >= 5


@given(st.lists(st.floats(0, 10), min_size=1, max_size=20), st.floats(0, 2), st.floats(0, 3))
def test_lookup_is_due_at_the_earlier_of_quiet_and_max_delay(times, debounce, extra):
    """Property: due at min(last + debounce, first + max_delay), never earlier, once."""
    times.sort()
    max_delay = debounce + extra
    d = detector(debounce=debounce, max_delay=max_delay)
    for t in times:
        d.netlink_event(t)
    due = min(times[-1] + debounce, times[0] + max_delay)
    assert d.lookup_at == pytest.approx(due)
    assert not d.lookup_due(due - 0.001)
    assert d.lookup_due(due) and not d.lookup_due(due + 100)


# -- sleep -------------------------------------------------------------------------


def test_boottime_running_ahead_of_monotonic_is_sleep():
    """A minute of suspend between two ticks fires once; ordinary ticks never do."""
    d = detector()
    assert d.clocks_read(Clocks(monotonic=100.0, boottime=1100.0)) is None
    assert d.clocks_read(Clocks(monotonic=102.0, boottime=1102.0)) is None
    assert d.clocks_read(Clocks(monotonic=104.0, boottime=1164.0)) == (
        "the machine woke from sleep (suspended for about 60 s)")
    assert d.clocks_read(Clocks(monotonic=106.0, boottime=1166.0)) is None


def test_a_stopped_or_starved_process_is_not_sleep():
    """Both clocks jumping 100 s (SIGSTOP, a blocked loop) is not a suspend."""
    d = detector()
    d.clocks_read(Clocks(monotonic=100.0, boottime=1100.0))
    assert d.clocks_read(Clocks(monotonic=200.0, boottime=1200.5)) is None


@given(st.lists(st.tuples(st.floats(0, 1e4), st.floats(0, 1e5)), min_size=1, max_size=20))
def test_fires_exactly_when_suspended_longer_than_the_threshold(steps):
    """Property: each reading fires iff boottime gained more than 3 s on monotonic."""
    d = detector()
    mono, boot = 50.0, 500.0
    d.clocks_read(Clocks(monotonic=mono, boottime=boot))
    for awake, asleep in steps:
        mono, boot = mono + awake, boot + awake + asleep
        reason = d.clocks_read(Clocks(monotonic=mono, boottime=boot))
        if abs(asleep - 3.0) > 1e-6:         # right at the threshold, rounding decides
            assert (reason is not None) == (asleep > 3.0)


@pytest.mark.parametrize("kw", [{"debounce": -1}, {"debounce": 3, "max_delay": 2},
                                {"sleep_threshold": 0}, {"max_delay": float("inf")}])
def test_bad_timing_is_refused(kw):
    """Nonsense timings are a caller's error."""
    with pytest.raises(ValueError):
        detector(**kw)


def test_a_bad_address_is_refused():
    """The target must be an IP address."""
    with pytest.raises(ValueError):
        ChangeDetector("gateway.example")


# -- the asyncio watcher over the in-memory host ------------------------------------------

FAST = {"tick": 0.05, "debounce": 0.02, "max_delay": 0.1, "sleep_threshold": 3.0}


async def fires(watcher: NetWatcher, within: float = 2.0) -> str:
    return await asyncio.wait_for(watcher.changed(), within)


async def quiet(watcher: NetWatcher, for_: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(watcher.changed(), for_)
    except asyncio.TimeoutError:
        return True
    return False


def test_watcher_fires_when_the_route_changes_and_not_for_unrelated_events():
    """An event that leaves the route alone is quiet; a new route fires within the debounce."""
    async def main():
        host = MemoryNetwork(route=ETH0)
        async with watching(host) as watcher:
            assert watcher.watching_routes
            host.announce()
            assert await quiet(watcher)
            host.route = WLAN0
            host.announce()
            assert "now dev wlan0" in await fires(watcher)
            assert await quiet(watcher)
    asyncio.run(main())


def test_watcher_debounces_a_burst_into_one_lookup():
    """Ten events 10 ms apart make one lookup after the burst, not ten."""
    async def main():
        host = MemoryNetwork(route=ETH0)
        async with watching(host, debounce=0.3, max_delay=2):
            assert host.lookups == 1            # the baseline
            for _ in range(10):
                host.announce()
                await asyncio.sleep(0.01)
            assert host.lookups == 1
            await asyncio.sleep(0.6)
            assert host.lookups == 2
    asyncio.run(main())


def test_watcher_fires_when_the_machine_slept():
    """CLOCK_BOOTTIME jumping a minute ahead fires at the next tick."""
    async def main():
        host = MemoryNetwork(route=ETH0)
        async with watching(host) as watcher:
            host.sleep(60)
            assert await fires(watcher) == "the machine woke from sleep (suspended for about 60 s)"
    asyncio.run(main())


def test_reasons_that_pile_up_are_handed_out_together():
    """Two changes before anyone asks come back as one reason text, then it is quiet."""
    async def main():
        host = MemoryNetwork(route=ETH0)
        async with watching(host) as watcher:
            host.route = WLAN0
            host.announce()
            await asyncio.sleep(0.3)
            host.sleep(60)
            await asyncio.sleep(0.3)
            reason = await fires(watcher)
            assert "now dev wlan0" in reason and "; the machine woke from sleep" in reason
            assert await quiet(watcher)
    asyncio.run(main())


def _the_one_warning(caplog, main) -> str:
    """Run ``main()``; the watcher must have logged exactly one warning, returned."""
    with caplog.at_level(logging.WARNING, logger="client.netwatch"):
        asyncio.run(main())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    return warnings[0].getMessage()


def test_no_netlink_means_one_warning_and_sleep_is_still_noticed(caplog):
    """A monitor that cannot be opened: open() succeeds, one warning, sleep still fires."""
    async def main():
        host = MemoryNetwork(route=ETH0)
        host.monitor_failure = PermissionError(1, "Operation not permitted")
        async with watching(host) as watcher:
            assert not watcher.watching_routes and host.lookups == 0
            host.sleep(10)
            assert "woke from sleep" in await fires(watcher)
    assert "Operation not permitted" in _the_one_warning(caplog, main)


def test_a_failing_lookup_degrades_to_the_sleep_check_with_one_warning(caplog):
    """A lookup that fails later: one warning, the socket is released, sleep still fires."""
    async def main():
        host = MemoryNetwork(route=ETH0)
        async with watching(host) as watcher:
            host.lookup_failure = OSError(105, "No buffer space available")
            host.announce()
            await asyncio.sleep(0.3)
            assert not watcher.watching_routes and host.open_monitors == 0
            host.route = WLAN0
            host.announce()
            host.sleep(10)
            assert "woke from sleep" in await fires(watcher)
    assert "cannot look up the route to 192.0.2.1" in _the_one_warning(caplog, main)


def test_close_releases_the_socket_and_a_waiter_is_left_waiting():
    """close() closes the monitor (twice is fine); changed() neither fires nor raises after it."""
    async def main():
        host = MemoryNetwork(route=ETH0)
        watcher = await NetWatcher.open(GATEWAY, host=host, **FAST)
        waiter = asyncio.ensure_future(watcher.changed())
        assert host.open_monitors == 1
        watcher.close()
        watcher.close()
        assert host.open_monitors == 0 and not watcher.watching_routes
        host.sleep(60)
        await asyncio.sleep(0.2)
        assert not waiter.done()
        waiter.cancel()
        host.close()
    asyncio.run(main())


def test_open_cancelled_during_the_first_lookup_releases_the_socket():
    """A stop while open() waits for the baseline lookup leaves no socket behind."""
    async def main():
        host = MemoryNetwork(route=ETH0)
        opening = asyncio.ensure_future(NetWatcher.open(GATEWAY, host=host, **FAST))
        await asyncio.sleep(0)       # open() is now waiting for the lookup's thread
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        assert host.open_monitors == 0
        host.close()
    asyncio.run(main())


# -- the real rtnetlink, unprivileged -------------------------------------------------------


@pytest.mark.parametrize("runner", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_linux_network_watches_on_both_event_loops(runner):
    """On the engine's loop (uvloop) as on asyncio's: the netlink monitor opens, the route
    to 127.0.0.1 is found on lo, and close() releases the socket."""
    assert LinuxNetwork().lookup_route(ipaddress.ip_address("127.0.0.1")).interface == "lo"

    async def main():
        watcher = await NetWatcher.open("127.0.0.1")
        assert watcher.watching_routes
        assert await quiet(watcher, 0.1)
        watcher.close()
        assert not watcher.watching_routes
    runner(main())
