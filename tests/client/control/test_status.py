"""The EngineHost's Status and stats documents (client.control.status), without a
socket: what each shows when disconnected, connected and failed, and the rates."""

from __future__ import annotations

import asyncio

from tests.client.control.fakes import REFUSED
from tests.client.control.rig import PASSWORD, Notes, bare_host, run

ZERO_STATS = {"bytes_in": 0, "bytes_out": 0, "rate_in": 0.0, "rate_out": 0.0, "flows": 0,
              "fast_path": False, "flows_offloaded": 0, "ipv6_refused": 0}


def test_disconnected_status_shows_nothing_of_an_attempt():
    """Before any attempt the Status is disconnected, with no gateway, config or error, and zero stats."""
    host = bare_host(Notes())
    status = host.status()
    assert status["state"] == "disconnected" and status["detail"] == ""
    assert [status[k] for k in ("profile", "gateway", "username", "address", "connected_since",
                                "error", "error_kind")] == [None] * 7
    assert status["networks"] == status["excluded"] == status["resources"] == []
    assert status["dns"] == {"servers": [], "search": []} and status["ipv6_blocked"] is False
    assert status["stats"] == ZERO_STATS == host.stats()


def test_connected_rates_follow_the_counters_and_reset_on_disconnect():
    """While connected the sampler turns growing counters into positive rates; after
    disconnect the stats are zero again and the attempt is no longer shown."""
    async def main():
        notes = Notes()
        host = bare_host(notes)
        await host.connect("https://gw.example:8443", "alice", PASSWORD, profile="work")
        await notes.wait_for("state", lambda s: s["state"] == "connected")
        while host.stats()["rate_in"] == 0:
            await asyncio.sleep(0.02)
        stats = host.stats()
        assert stats["bytes_in"] > 0 and stats["rate_out"] > 0 and stats["flows"] == 1
        status = host.status()
        assert status["gateway"] == "gw.example:8443" and status["profile"] == "work"
        assert status["address"] == "10.200.0.2/24" and status["connected_since"] > 0
        await host.disconnect()
        assert host.stats() == ZERO_STATS and host.status()["gateway"] is None
    run(main())


def test_failed_status_keeps_the_attempt_and_names_the_error():
    """A failed attempt still shows its gateway and user, with the error and its kind, but no config."""
    async def main():
        notes = Notes()
        host = bare_host(notes)
        await host.connect("https://gw.example", "mallory", PASSWORD)
        await notes.wait_for("state", lambda s: s["state"] == "failed")
        status = host.status()
        assert status["error"] == REFUSED and status["error_kind"] == "wrong_credentials"
        assert status["username"] == "mallory" and status["gateway"] == "gw.example:443"
        assert status["address"] is None and status["stats"] == ZERO_STATS
    run(main())

