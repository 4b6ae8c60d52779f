"""The service's reconnect window: a ``connect`` call's ``reconnect_for`` decides how long
the hosted engine tries to get a lost session back (real engine, real gateway on
loopback behind a relay that can drop its connections, fakes for TUN, routes and DNS)."""

from __future__ import annotations

import asyncio

from tests.client.control.rig import Gw, real_service, run
from tests.client.engine_rig import Proxy
from tests.support import PASSWORDS


def _left(notes, state: str) -> bool:
    return any(m == "state" and params["state"] == state for m, params in notes.seen)


def test_reconnect_for_zero_gives_up_at_once_and_restores_the_host(tmp_path):
    """With reconnect_for 0 a dropped connection ends the session at once (failed, host
    restored); with 60 the engine stays in reconnecting and keeps the routes."""

    async def main():
        proxy = Proxy()
        async with Gw(tmp_path) as gw, real_service(tmp_path) as svc:
            host, port = await proxy.start(*gw.url.removeprefix("https://").rsplit(":", 1))
            client, notes = await svc.subscriber()
            url, ca = f"https://{host}:{port}", str(gw.setup.certs.ca_cert)

            await client.connect(url, "alice", PASSWORDS["alice"], ca=ca, reconnect_for=60)
            await notes.wait_for("state", lambda s: s["state"] == "connected")
            notes.seen.clear()
            proxy.target = ("127.0.0.1", 1)   # nothing listens there: every attempt fails
            proxy.drop()
            await notes.wait_for("state", lambda s: s["state"] == "reconnecting")
            await asyncio.sleep(2.0)          # several attempts fail within these 2 s
            assert (await client.status())["state"] == "reconnecting"
            assert not _left(notes, "failed") and svc.routes.state is not None
            await client.disconnect()
            assert svc.routes.state is None

            proxy.target = tuple(gw.url.removeprefix("https://").rsplit(":", 1))
            await client.connect(url, "alice", PASSWORDS["alice"], ca=ca, reconnect_for=0)
            await notes.wait_for("state", lambda s: s["state"] == "connected")
            notes.seen.clear()
            proxy.drop()
            failed = await notes.wait_for("state", lambda s: s["state"] in ("failed", "disconnected"),
                                          timeout=3.0)
            assert failed["state"] == "failed" and not _left(notes, "reconnecting"), notes.states()
            assert svc.routes.state is None and svc.dns.state is None
            await client.close()
        proxy.close()
    run(main())


def test_reconnect_for_out_of_range_is_refused_before_anything_starts(tmp_path):
    """A reconnect_for that is negative, over a day or not a number is refused (-32602)."""
    from client.control.client import ControlError

    async def main():
        async with real_service(tmp_path) as svc:
            client = await svc.client()
            for value in (-1, 86401, "60", True):
                try:
                    await client.connect("https://127.0.0.1:1", "alice", "x", reconnect_for=value)
                except ControlError as exc:
                    assert exc.code == -32602 and "reconnect_for" in str(exc), exc
                else:
                    raise AssertionError(f"reconnect_for {value!r} was accepted")
            assert (await client.status())["state"] == "disconnected"
            await client.close()
    run(main())
