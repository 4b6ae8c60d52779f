"""gateway_stub.udp_relay through the real server."""

from __future__ import annotations

import asyncio

from tests.gateway_stub.rig import Bench, Flow, free_port, run, udp_headers


def test_a_datagram_the_target_refused_is_not_counted_as_sent(tmp_path):
    """When a UDP target answers with port unreachable, the datagram behind it is not sent
    (the socket reports the error instead): the client hears UNREACHABLE and the audit
    counts only what was sent in bytes_up."""
    from client.wire.capsule import CapsuleParser, UNREACHABLE, encode_datagram

    async def main():
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            flow = Flow(session.link)
            flow.stream_id = session.link.open(udp_headers(session, free_port()), flow)
            assert await asyncio.wait_for(flow.status, 10) == 200
            # One frame: on loopback the first one's ICMP error is back before the second send.
            session.link.send(flow.stream_id, encode_datagram(b"x" * 10) + encode_datagram(b"y" * 20))
            parser, unreachable = CapsuleParser(), False
            for _ in range(100):
                unreachable = unreachable or any(c.type == UNREACHABLE for c in parser.feed(bytes(flow.data)))
                flow.data.clear()
                if unreachable:
                    break
                await asyncio.sleep(0.02)
            assert unreachable
            session.link.reset(flow.stream_id)
            await asyncio.sleep(0.2)
            records = [r for r in bench.audit() if r["protocol"] == "udp"]
            assert [r["bytes_up"] for r in records] == [10]
            await session.logout()
    run(main())
