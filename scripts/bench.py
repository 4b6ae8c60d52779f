#!/usr/bin/env python3
"""Benchmark: the tunnel against the direct routed path, in one run, in the lab.

Builds the namespace lab, measures with real tools over the direct routed
path (client -> gateway namespace forwarding -> intranet), then connects the
real client through the real gateway and measures the same things again:

* TCP throughput, 1 and 4 streams, each way (iperf3; the median of ``--repeat`` runs,
  since one short run through the tunnel can land far from the others);
* connect + request + close latency of short HTTP connections (median, p99);
* short-connection requests per second (wrk with ``Connection: close``
  against nginx; the median of ``--repeat`` runs), with 16 and with 64 connections at once (the direct path
  is saturated by 16 already; the tunnel, whose two ends hand work to each
  other, needs more in flight to keep both busy);
* UDP at a fixed offered rate (iperf3 -u): achieved rate and loss;
* the client's peak RSS, and the CPU time the client and the gateway spend
  per short connection (during the requests-per-second run).

Prints a table of both paths with the ratio tunnel/direct and writes JSON
to bench-results/. Needs root. Traffic stays inside the lab's namespaces.
Usage: sudo python3 scripts/bench.py [--seconds 5] [--mtu 65000] [--compare-mtu 1500]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import statistics
import sys
import tempfile
import textwrap
import time

import psutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab import servers  # noqa: E402
from tests.lab import topology as topo  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402
from tests.lab.tunnel import Tunnel  # noqa: E402

LATENCY_CLIENT = textwrap.dedent("""
    import socket, sys, time, json
    host, n = sys.argv[1], int(sys.argv[2])
    req = b"GET /index.html HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s = socket.create_connection((host, 80), timeout=10)
        s.sendall(req)
        while s.recv(65536):
            pass
        s.close()
        times.append(time.perf_counter() - t)
    print(json.dumps(times))
""")



def run_iperf(lab, argv: list[str], seconds: int) -> dict:
    """iperf3's JSON report. The server runs one test at a time, and through the tunnel
    the close of the last test can reach it a moment after the next test's first
    connection ("the server is busy"): that is tried again, five times at most."""
    for _ in range(5):
        doc = json.loads(lab.run(lab.client, argv, timeout=seconds + 60).stdout)
        if "busy" not in doc.get("error", ""):
            break
        time.sleep(0.5)
    if "error" in doc:
        raise RuntimeError(f"{' '.join(argv[:1] + argv[5:])} failed: {doc['error']}")
    return doc


def iperf(lab, seconds: int, streams: int, reverse: bool) -> float:
    """Gbit/s measured by iperf3 from the client namespace."""
    argv = ["iperf3", "-c", str(topo.INTRANET_HOST), "-p", "5201", "-t", str(seconds), "-J",
            "-P", str(streams)]
    if reverse:
        argv.append("-R")
    return run_iperf(lab, argv, seconds)["end"]["sum_received"]["bits_per_second"] / 1e9


def iperf_udp(lab, seconds: int, rate: str) -> tuple[float, float]:
    """UDP at a fixed offered rate: (achieved Mbit/s at the receiver, loss %)."""
    argv = ["iperf3", "-c", str(topo.INTRANET_HOST), "-p", "5201", "-u", "-b", rate, "-l", "1400",
            "-t", str(seconds), "-J"]
    total = run_iperf(lab, argv, seconds)["end"]["sum"]
    return total["bits_per_second"] / 1e6 * (1 - total["lost_percent"] / 100), total["lost_percent"]


def latency(lab, script: pathlib.Path, n: int) -> tuple[float, float]:
    """Median and p99 of connect+request+close in milliseconds."""
    out = lab.run(lab.client, [sys.executable, str(script), str(topo.INTRANET_HOST), str(n)],
                  timeout=300).stdout
    times = sorted(json.loads(out))
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000


def rps(lab, seconds: int, connections: int) -> float:
    """Requests per second with a new connection per request (wrk)."""
    out = lab.run(lab.client, ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
                               "-H", "Connection: close", f"http://{topo.INTRANET_HOST}/index.html"],
                  timeout=seconds + 60).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        print(f"    wrk: socket errors {errors.group(1)}", file=sys.stderr)
    return float(match.group(1)) if match else 0.0


def measure(lab, args, script: pathlib.Path, pids: dict[str, int] | None = None) -> dict[str, float]:
    """One full set of figures over whatever path the client namespace has now.

    ``pids`` names tunnel processes (client, gateway) whose CPU time per short
    connection is measured during the requests-per-second run."""
    res = {}
    for streams in (1, 4):
        for way, reverse in (("up", False), ("down", True)):
            runs = [iperf(lab, args.seconds, streams, reverse) for _ in range(args.repeat)]
            res[f"tcp_{way}_{streams}"] = statistics.median(runs)
            res[f"tcp_{way}_{streams}_runs"] = runs
    res["udp_mbps"], res["udp_loss_pct"] = iperf_udp(lab, args.seconds, args.udp_rate)
    res["latency_p50_ms"], res["latency_p99_ms"] = latency(lab, script, args.requests)
    before = {name: cpu_seconds(pid) for name, pid in (pids or {}).items()}
    runs = [rps(lab, args.seconds, args.connections) for _ in range(args.repeat)]
    res["rps"] = statistics.median(runs)
    for name, pid in (pids or {}).items():
        requests = sum(runs) * args.seconds
        if requests:
            res[f"cpu_us_{name}"] = (cpu_seconds(pid) - before[name]) / requests * 1e6
    res["rps_many"] = statistics.median(
        [rps(lab, args.seconds, args.many_connections) for _ in range(args.repeat)])
    return res


def tunnel_diagnosis(tunnel: Tunnel, client) -> str:
    """The last words of the gateway, its audit log and the client, for a failed run."""
    def tail(text: str, lines: int = 12) -> str:
        return "\n".join("    " + line for line in text.splitlines()[-lines:])
    return (f"gateway log:\n{tail(tunnel.gateway_log())}\naudit log:\n{tail(tunnel.audit())}\n"
            f"client:\n{tail(client.output())}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (ip netns exec -> python)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        pass
    return total


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a process (the python child of ip netns exec)."""
    for candidate in [pid, *child_pids(pid)]:
        try:
            text = pathlib.Path(f"/proc/{candidate}/status").read_text()
        except OSError:
            continue
        if "python" in pathlib.Path(f"/proc/{candidate}/comm").read_text():
            return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024
    return float("nan")


def child_pids(pid: int) -> list[int]:
    try:
        text = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


ROWS = [
    ("tcp_up_1", "TCP 1 stream up (Gbit/s)", True),
    ("tcp_down_1", "TCP 1 stream down (Gbit/s)", True),
    ("tcp_up_4", "TCP 4 streams up (Gbit/s)", True),
    ("tcp_down_4", "TCP 4 streams down (Gbit/s)", True),
    ("udp_mbps", "UDP received at fixed rate (Mbit/s)", True),
    ("udp_loss_pct", "UDP loss (%)", False),
    ("latency_p50_ms", "connect+request p50 (ms)", False),
    ("latency_p99_ms", "connect+request p99 (ms)", False),
    ("rps", "short conns, {c} at once (req/s)", True),
    ("rps_many", "short conns, {many} at once (req/s)", True),
    ("cpu_us_client", "client CPU per short conn (us)", False),
    ("cpu_us_gateway", "gateway CPU per short conn (us)", False),
]


def report(direct: dict, tunnels: dict[int, dict], rss: dict[int, float], args) -> str:
    names = list(tunnels)
    head = f"{'metric':32} {'direct':>10}" + "".join(
        f" {'tunnel mtu ' + str(m):>16} {'ratio':>7}" for m in names)
    lines = [head, "-" * len(head)]
    for key, label, _ in ROWS:
        label = label.format(c=args.connections, many=args.many_connections)
        base = direct.get(key)
        line = f"{label:32} " + (f"{base:10.2f}" if base is not None else f"{'-':>10}")
        for m in names:
            value = tunnels[m].get(key)
            if value is None:
                line += f" {'-':>16} {'-':>7}"
            else:
                ratio = f"{value / base:7.1%}" if base else f"{'-':>7}"
                line += f" {value:16.2f} {ratio}"
        lines.append(line)
    lines.append(f"{'client peak RSS (MiB)':32} {'':10}" + "".join(
        f" {rss[m]:16.1f} {'':7}" for m in names))
    for way in ("up", "down"):
        runs = " | ".join(f"{name} " + " ".join(f"{v:.2f}" for v in figures.get(f"tcp_{way}_1_runs", []))
                          for name, figures in [("direct", direct)] +
                          [(f"mtu {m}", tunnels[m]) for m in names])
        lines.append(f"TCP 1 stream {way}, each run (Gbit/s): {runs}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="duration of each throughput run")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests for latency")
    parser.add_argument("--connections", type=int, default=16,
                        help="wrk connections for short connections/s (and CPU per connection)")
    parser.add_argument("--many-connections", type=int, default=64,
                        help="wrk connections for a second short connections/s run")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per throughput and short-connection figure; the median is "
                             "reported (single runs move by 20 %% or more on a shared machine)")
    parser.add_argument("--udp-rate", default="300M", help="offered UDP rate for iperf3 -u -b")
    parser.add_argument("--mtu", type=int, default=65000, help="TUN MTU pushed by the gateway")
    parser.add_argument("--compare-mtu", type=int, action="append", default=[],
                        help="also measure the tunnel with this MTU (repeatable)")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="tg-bench-"))
    script = work / "latency.py"
    script.write_text(LATENCY_CLIENT)
    with Lab() as lab:
        (work / "www").mkdir()
        (work / "www" / "index.html").write_text("hello from the intranet\n" * 20)
        servers.start_nginx(lab, topo.INTRANET_HOST, 80, work / "www")
        servers.start_iperf3(lab, topo.INTRANET_HOST, 5201)
        time.sleep(0.5)
        print("measuring the direct routed path ...", file=sys.stderr)
        lab.direct_path(True)
        direct = measure(lab, args, script)
        lab.direct_path(False)
        tunnels, rss = {}, {}
        for port, mtu in enumerate([args.mtu, *args.compare_mtu], start=8443):
            print(f"measuring the tunnel, TUN MTU {mtu} ...", file=sys.stderr)
            tunnel = Tunnel(lab=lab, workdir=work / f"mtu{mtu}", port=port)
            tunnel.start_gateway(extra_server=f"mtu = {mtu}")
            client = tunnel.connect()
            try:
                tunnels[mtu] = measure(lab, args, script, {"client": client.proc.pid,
                                                           "gateway": tunnel.gateway_proc.pid})
            except (RuntimeError, KeyError, ValueError):
                print(tunnel_diagnosis(tunnel, client), file=sys.stderr)
                raise
            rss[mtu] = peak_rss_mib(client.proc.pid)
            client.stop()
            tunnel.stop_gateway()
    table = report(direct, tunnels, rss, args)
    print(table)
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"bench-{stamp}.json").write_text(json.dumps(
        {"direct": direct, "tunnel": tunnels, "client_peak_rss_mib": rss,
         "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
