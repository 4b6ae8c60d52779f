"""A logged-in session: resuming it on a new connection."""

from __future__ import annotations

import asyncio


def test_a_resume_cancelled_midway_closes_its_new_connection(tmp_path, monkeypatch):
    """A disconnect that cancels a resume after its TLS connection is up (while the
    config is asked for) closes that connection: nothing is left open per resume."""
    import client.session as session_module
    from tests.client.engine_rig import run
    from tests.gateway_stub.rig import Bench

    async def main():
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            session.link.close("test drops the connection")
            opened, real = [], session_module.connect_link

            async def connected_then_cancelled(*args, **kwargs):
                link = await real(*args, **kwargs)
                opened.append(link)
                asyncio.current_task().cancel()     # lands on the config request
                return link
            monkeypatch.setattr(session_module, "connect_link", connected_then_cancelled)
            task = asyncio.ensure_future(session.resume(bench.trust))
            await asyncio.wait({task})
            assert task.cancelled() and len(opened) == 1 and not opened[0].is_open
    run(main())
