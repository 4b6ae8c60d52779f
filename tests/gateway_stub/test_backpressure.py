"""A client that stops reading is held back: gateway_stub.backpressure, through the real server."""

from __future__ import annotations

import asyncio

from tests.gateway_stub.rig import Bench, raw_tls, run


def test_a_client_that_does_not_read_cannot_grow_the_gateways_buffers(tmp_path):
    """A client that floods PINGs and never reads their answers is stopped being read
    (its sends stall) instead of having the answers queue up in the gateway's memory."""
    from client.wire import frames

    async def main():
        async with Bench(tmp_path) as bench:
            reader, writer = await raw_tls(bench, ["h2"])
            writer.transport.set_write_buffer_limits(high=1 << 20)
            writer.write(frames.PREFACE + frames.settings({}))
            chunk = frames.ping(b"12345678") * (1 << 16)      # 1.1 MB of PINGs
            sent, limit = 0, 48 * len(chunk)     # about 18 MB get through before the stall
            while sent < limit:
                writer.write(chunk)
                try:
                    await asyncio.wait_for(writer.drain(), 3)
                except asyncio.TimeoutError:
                    break
                sent += len(chunk)
            assert sent < limit, "the gateway kept reading a client that does not read"
            writer.transport.abort()
            session = await bench.login()        # the gateway itself is fine
            await session.logout()
    run(main())


def test_a_client_that_opens_huge_windows_and_does_not_read_slows_the_target_down(tmp_path):
    """Even with flow-control windows opened wide, a client that stops reading makes the
    gateway stop reading the target: the target's writes stall, nothing piles up between."""
    from client.wire import frames
    from client.wire import mux as m

    async def main():
        written, stalled = 0, asyncio.Event()

        async def firehose(reader, writer):
            nonlocal written
            block = bytes(1 << 20)
            while written < 256 * len(block):
                writer.write(block)
                try:
                    await asyncio.wait_for(writer.drain(), 3)
                except asyncio.TimeoutError:
                    break
                written += len(block)
            stalled.set()
            writer.transport.abort()

        server = await asyncio.start_server(firehose, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            reader, writer = await raw_tls(bench, ["h2"])
            mux = m.Mux(client_side=True)
            sid = mux.request(session.connect_headers(f"127.0.0.1:{port}"))
            writer.write(mux.data_to_send() + frames.settings({frames.INITIAL_WINDOW_SIZE: frames.MAX_WINDOW})
                         + frames.window_update(0, frames.MAX_WINDOW - m.CONNECTION_WINDOW))
            status = None
            while status is None:
                data = await asyncio.wait_for(reader.read(65536), 10)
                assert data, "the gateway closed the connection"
                for ev in mux.receive(data):
                    if isinstance(ev, m.ResponseReceived) and ev.stream_id == sid:
                        status = ev.status
                writer.write(mux.data_to_send())
            assert status == 200
            await asyncio.wait_for(stalled.wait(), 60)      # and now never read again
            assert written < 128 * (1 << 20), f"the gateway took {written} bytes for a client that does not read"
            writer.transport.abort()
            await session.logout()
        server.close()
    run(main())
