"""Micro-benchmark of the reflector's hot path (run by hand: python tests/client/bench_reflector.py).

Prints packets/s for forward + return rewriting at several packet sizes.
"""

from __future__ import annotations

import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from client.reflector import Reflector  # noqa: E402
from tests.client.packets import ACK, PSH, SYN, tcp_packet  # noqa: E402

L, N, LP, A, D = "10.77.0.1", "10.77.0.254", 4321, "10.77.0.1", "192.168.5.9"


def run(payload_size: int, count: int) -> float:
    r = Reflector(tun_address=IPv4Address(L), fake_address=IPv4Address(N), listener_port=LP)
    r.from_tun(tcp_packet(src=A, dst=D, sport=40000, dport=80, flags=SYN), 0.0)
    np = r.pop_events()[0].nat_port
    r.accept_flow(np, 0.0)
    forward = tcp_packet(src=A, dst=D, sport=40000, dport=80, flags=PSH | ACK, payload=b"f" * payload_size)
    back = tcp_packet(src=L, dst=N, sport=LP, dport=np, flags=PSH | ACK, payload=b"b" * payload_size)
    from_tun = r.from_tun
    start = time.perf_counter()
    for i in range(count // 2):
        from_tun(forward, 1.0)
        from_tun(back, 1.0)
    elapsed = time.perf_counter() - start
    assert r.stats.dropped_unknown == 0
    return count / elapsed


def main() -> None:
    for label, size, count in (("40 B (header only)", 0, 400_000), ("1.5 KB", 1460, 400_000),
                               ("64 KB", 65_000, 40_000)):
        rate = run(size, count)
        print(f"{label:>20}: {rate:>10,.0f} packets/s  {rate * (size + 40) * 8 / 1e9:6.2f} Gb/s")


if __name__ == "__main__":
    main()
