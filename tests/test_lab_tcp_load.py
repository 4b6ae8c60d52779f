"""Scenario: TCP under load through the real tunnel (root only).

Large transfers each way arrive intact, on the in-kernel fast path and on the
Python path, and the fast path really carries them; hundreds of connections
at once, and connections opened back to back as fast as an app can, all
complete.
"""

from __future__ import annotations

import re
import sys
import textwrap

import pytest

from tests.lab import servers
from tests.lab import tcp_site
from tests.lab import topology as topo

pytestmark = pytest.mark.lab

#: The shared fixtures, made this module's own: pytest looks fixtures up in the module.
site, tcp_path = tcp_site.site, tcp_site.tcp_path


BULK_CLIENT = textwrap.dedent("""
    import hashlib, socket, struct, sys
    size = int(sys.argv[3])
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=120)
    s.sendall(struct.pack("!Q", size))
    h = hashlib.sha256()
    chunk = bytes(range(256)) * 1024
    sent = 0
    while sent < size:
        piece = chunk[: min(len(chunk), size - sent)]
        s.sendall(piece); h.update(piece); sent += len(piece)
    print(h.hexdigest())
    f = s.makefile("rb")
    print(f.readline().decode().strip())         # server's hash of what it received
    got = hashlib.sha256(); n = 0
    while n < size:
        data = f.read(min(1 << 20, size - n))
        if not data: break
        got.update(data); n += len(data)
    print(got.hexdigest()); print(n)
    print(f.readline().decode().strip())         # server's hash of what it sent
""")


def test_200_megabytes_each_way_arrive_intact(lab, site, tmp_path, tcp_path):
    """200 MB up and 200 MB down through one connection (fast path and Python path);
    SHA-256 equal at both ends."""
    tunnel, _ = site
    sink = servers.start_tcp_sink(lab, topo.INTRANET_HOST, 9000)
    script = tmp_path / "bulk.py"
    script.write_text(BULK_CLIENT)
    size = 200 * 1024 * 1024
    client = tunnel.connect(env=tcp_path)
    try:
        result = lab.run(lab.client, [sys.executable, str(script), str(topo.INTRANET_HOST), "9000",
                                      str(size)], timeout=240)
        sent_hash, server_got, down_hash, down_len, server_sent = result.stdout.split()
        assert sent_hash == server_got
        assert int(down_len) == size
        assert down_hash == server_sent
    finally:
        client.stop()
        sink.stop()


TCP_SUMMARY = re.compile(r"TCP: (\d+) flows offloaded to the kernel, (\d+) packets rewritten there, "
                         r"(\d+) in Python")


def test_fast_path_carries_the_bulk_of_a_transfer(lab, site, tmp_path, tcp_path):
    """With the fast path, a 50 MB transfer each way is rewritten in the kernel and Python sees
    (almost) none of its packets; forced to Python, every packet goes through Python."""
    tunnel, _ = site
    sink = servers.start_tcp_sink(lab, topo.INTRANET_HOST, 9001)
    script = tmp_path / "bulk.py"
    script.write_text(BULK_CLIENT)
    size = 50 * 1024 * 1024
    client = tunnel.connect(env=tcp_path, verbose=True)
    try:
        result = lab.run(lab.client, [sys.executable, str(script), str(topo.INTRANET_HOST), "9001",
                                      str(size)], timeout=120)
        sent_hash, server_got, down_hash, down_len, server_sent = result.stdout.split()
        assert sent_hash == server_got and down_hash == server_sent and int(down_len) == size
    finally:
        assert client.stop() == 0, client.output()
        sink.stop()
    (summary,) = TCP_SUMMARY.findall(client.output())
    offloaded, in_kernel, in_python = map(int, summary)
    if tcp_path["TUNNELGATE_BPF"] == "1":
        assert "in-kernel TCP fast path on" in client.output()
        assert offloaded == 1 and in_kernel > 1000 and in_python <= 10, summary
    else:
        assert "fast path" not in client.output().replace("TCP: 0 flows", "")
        assert offloaded == 0 and in_kernel == 0 and in_python > 1000, summary


CONCURRENT_CLIENT = textwrap.dedent("""
    import asyncio, sys
    async def one(i):
        r, w = await asyncio.open_connection(sys.argv[1], 80)
        w.write(b"GET /index.html HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        data = await r.read()
        w.close()
        return b"hello from the intranet" in data
    async def main():
        results = await asyncio.gather(*(one(i) for i in range(int(sys.argv[2]))),
                                       return_exceptions=True)
        print(sum(1 for r in results if r is True))
        for r in results:
            if r is not True:
                print(repr(r)); break
    asyncio.run(main())
""")


def test_300_concurrent_connections_all_complete(lab, site, tmp_path):
    """300 connections opened at once all get their page."""
    tunnel, _ = site
    script = tmp_path / "many.py"
    script.write_text(CONCURRENT_CLIENT)
    client = tunnel.connect()
    try:
        result = lab.run(lab.client, [sys.executable, str(script), str(topo.INTRANET_HOST), "300"],
                         timeout=120)
        assert result.stdout.split("\n")[0] == "300", result.stdout
    finally:
        client.stop()


def test_back_to_back_short_connections_are_never_reset(lab, site, tmp_path):
    """wrk opens a new connection per request, as fast as it can: an app may reuse its
    source port the moment its end is closed, before our end noticed; no request may
    fail for it. And the server's FIN comes with its answer, so wrk is not left holding
    a TIME_WAIT per connection."""
    tunnel, _ = site
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("hello from nginx\n")
    nginx = servers.start_nginx(lab, topo.INTRANET_HOST, 81, root)
    client = tunnel.connect()
    try:
        out = lab.run(lab.client, ["wrk", "-t", "1", "-c", "16", "-d", "4s", "-H", "Connection: close",
                                   f"http://{topo.INTRANET_HOST}:81/index.html"], timeout=60).stdout
        app_time_wait = lab.run(lab.client, ["ss", "-Htan", "state", "time-wait", "dst",
                                             f"{topo.INTRANET_HOST}:81"]).stdout.count("\n")
    finally:
        client.stop()
        nginx.stop()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    assert requests > 500 and "Socket errors" not in out and "Non-2xx" not in out, out
    # nginx closes right after its answer: the FIN reaches wrk with the data, so wrk
    # closes second and keeps no TIME_WAIT, as on the direct path (the local socket that
    # stands in for nginx keeps it instead).
    assert app_time_wait < requests // 10, (app_time_wait, requests)
