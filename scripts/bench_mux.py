#!/usr/bin/env python3
"""Micro-benchmark: CPU per tunnel stream life, our ``Mux`` against ``h2``.

One stream life is what a short TCP connection through the tunnel costs the
HTTP/2 layer on both ends together: the client's CONNECT HEADERS, the
gateway's 200, one DATA each way with END_STREAM, and crediting the payload
back. Both ends run in this process, joined in memory; the ``h2`` side does
the same with two ``h2.connection.H2Connection`` objects (the library the
tunnel used before; it is in the ``test`` extra). Prints microseconds per
stream life, best of several rounds. No network, no root.
Usage: python3 scripts/bench_mux.py [--lives 20000] [--payload 512]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from client.wire import mux as m  # noqa: E402

HEADERS = [(":method", "CONNECT"), (":authority", "10.77.0.10:80"),
           ("authorization", "Bearer 0123456789abcdef0123456789abcdef")]


def ours(lives: int, payload: bytes) -> float:
    """Seconds for ``lives`` stream lives through two ``Mux`` objects."""
    client, gateway = m.Mux(client_side=True), m.Mux(client_side=False)
    client.receive(gateway.data_to_send())
    gateway.receive(client.data_to_send())
    client.receive(gateway.data_to_send())
    start = time.perf_counter()
    for _ in range(lives):
        sid = client.request(HEADERS)
        gateway.receive(client.data_to_send())
        gateway.respond(sid, 200)
        client.receive(gateway.data_to_send())
        client.send(sid, payload)
        client.end(sid)
        for ev in gateway.receive(client.data_to_send()):
            if type(ev) is m.DataReceived:
                gateway.consumed(sid, ev.flow_length)
        gateway.send(sid, payload)
        gateway.end(sid)
        for ev in client.receive(gateway.data_to_send()):
            if type(ev) is m.DataReceived:
                client.consumed(sid, ev.flow_length)
        gateway.receive(client.data_to_send())
    elapsed = time.perf_counter() - start
    assert client.open_streams == gateway.open_streams == 0
    return elapsed


def with_h2(lives: int, payload: bytes) -> float:
    """Seconds for ``lives`` stream lives through two ``h2`` connections."""
    import h2.config
    import h2.connection
    import h2.events

    def conn(client_side: bool) -> h2.connection.H2Connection:
        config = h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8",
                                           validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        c = h2.connection.H2Connection(config=config)
        c.initiate_connection()
        return c

    client, gateway = conn(True), conn(False)
    gateway.receive_data(client.data_to_send())
    client.receive_data(gateway.data_to_send())
    gateway.receive_data(client.data_to_send())
    start = time.perf_counter()
    for _ in range(lives):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, HEADERS)
        gateway.receive_data(client.data_to_send())
        gateway.send_headers(sid, [(":status", "200")])
        client.receive_data(gateway.data_to_send())
        client.send_data(sid, payload, end_stream=True)
        for ev in gateway.receive_data(client.data_to_send()):
            if isinstance(ev, h2.events.DataReceived):
                gateway.acknowledge_received_data(ev.flow_controlled_length, sid)
        gateway.send_data(sid, payload, end_stream=True)
        for ev in client.receive_data(gateway.data_to_send()):
            if isinstance(ev, h2.events.DataReceived):
                client.acknowledge_received_data(ev.flow_controlled_length, sid)
        gateway.receive_data(client.data_to_send())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lives", type=int, default=20000)
    parser.add_argument("--payload", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    payload = b"x" * args.payload
    best = {}
    for name, run in (("ours", ours), ("h2", with_h2)):
        best[name] = min(run(args.lives, payload) for _ in range(args.rounds)) / args.lives * 1e6
        print(f"{name:5} {best[name]:8.1f} µs per stream life (both ends)")
    print(f"gain  {best['h2'] / best['ours']:8.1f}x")


if __name__ == "__main__":
    main()
