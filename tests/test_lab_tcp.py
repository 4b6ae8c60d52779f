"""Scenario: TCP through the real tunnel in the namespace lab (root only).

A real gateway process in the gateway namespace, a real ``tunnelgate
connect`` in the client namespace with a real TUN and real routes, and real
servers in the intranet namespace; curl and Python clients act as the apps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.lab import servers
from tests.lab import topology as topo
from tests.lab.tunnel import Tunnel, host_snapshot

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def site(lab, tmp_path_factory):
    """Gateway up, intranet servers up; each test connects its own client."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path_factory.mktemp("tunnel"))
    tunnel.start_gateway(tcp_ports=["80", "81", "9000-9100"])
    root = tmp_path_factory.mktemp("www")
    (root / "index.html").write_text("hello from the intranet\n")
    web = servers.start_http(lab, topo.INTRANET_HOST, 80, root)
    yield tunnel, web
    tunnel.stop_gateway()


@pytest.fixture(params=["bpf", "python"])
def tcp_path(request) -> dict[str, str]:
    """The client's environment for the in-kernel fast path (default) or the forced Python path."""
    return dict(os.environ, TUNNELGATE_BPF="1" if request.param == "bpf" else "0")


CONNECT_PROBE = (
    "import errno, socket, sys, time\n"
    "s = socket.socket(); s.settimeout(10); t = time.monotonic()\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2]))); print('connected', time.monotonic() - t)\n"
    "except OSError as e:\n"
    "    print(errno.errorcode.get(e.errno, str(e)), time.monotonic() - t)\n")


def connect_probe(lab, host, port: int) -> tuple[str, float]:
    """What an app's connect() returns through the tunnel, and how long it took."""
    out = lab.run(lab.client, [sys.executable, "-c", CONNECT_PROBE, str(host), str(port)]).stdout
    what, took = out.split()
    return what, float(took)


def curl(lab, url: str, timeout: float = 10.0):
    start = time.monotonic()
    result = lab.run(lab.client, ["curl", "-sS", "--max-time", str(timeout), url], check=False)
    return result, time.monotonic() - start


def test_curl_reaches_intranet_and_server_sees_gateway(lab, site, tcp_path):
    """curl in the client fetches a page through the tunnel (fast path and Python path);
    the server sees the gateway's address."""
    tunnel, web = site
    before = host_snapshot(lab)
    client = tunnel.connect(env=tcp_path)
    try:
        result, _ = curl(lab, f"http://{topo.INTRANET_HOST}/index.html")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hello from the intranet\n"
        assert str(topo.GATEWAY_INNER) in web.log_text()
        assert str(topo.CLIENT_OUTER) not in web.log_text()
    finally:
        assert client.stop() == 0, client.output()
    assert host_snapshot(lab) == before


def test_refused_denied_and_unreachable_fail_fast(lab, site, tcp_path):
    """Closed port -> refused; denied port -> prohibited, and no attempt reaches the server;
    unroutable -> unreachable; each under a second (fast path and Python path)."""
    tunnel, _ = site
    logger = servers.start_tcp_logger(lab, topo.INTRANET_HOST2, 2222)
    client = tunnel.connect(env=tcp_path)
    try:
        what, took = connect_probe(lab, topo.INTRANET_HOST, 81)
        assert what == "ECONNREFUSED" and took < 1.0
        # Policy allows only some ports: the gateway answers "prohibited", the app
        # gets the ICMP administratively-prohibited error (EHOSTUNREACH on Linux).
        what, took = connect_probe(lab, topo.INTRANET_HOST2, 2222)
        assert what == "EHOSTUNREACH" and took < 1.0
        # A network that is not pushed at all is not even routed into the tunnel.
        assert connect_probe(lab, topo.DENIED_HOST, 80)[0] == "ENETUNREACH"
        what, took = connect_probe(lab, "10.99.0.10", 80)       # the gateway has no route there
        assert what == "ENETUNREACH" and took < 1.0
        # No host answers the gateway's ARP for it: the kernel gives up after about 3 s.
        what, took = connect_probe(lab, "10.77.0.99", 80)
        assert what == "EHOSTUNREACH" and took < 5.0
        result, took = curl(lab, f"http://{topo.INTRANET_HOST}:81/")
        assert result.returncode == 7 and took < 1.0, result.stderr
        result, took = curl(lab, f"http://{topo.INTRANET_HOST2}:2222/")
        assert result.returncode == 7 and took < 1.0, result.stderr
        time.sleep(0.2)
        assert logger.peers() == []
        assert '"target":"10.77.0.11:2222",' in tunnel.audit() and '"verdict":"deny"' in tunnel.audit()
    finally:
        client.stop()
        logger.stop()


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


def test_wrong_password_fails_clearly_and_leaves_nothing(lab, site):
    """A wrong password: exit 1, a clear line, no TUN or route left behind."""
    tunnel, _ = site
    before = host_snapshot(lab)
    client = tunnel.connect(password="wrong", wait=False)
    assert client.wait_exit() == 1
    assert "wrong user name or password" in client.output()
    assert host_snapshot(lab) == before


def test_untrusted_certificate_is_refused_with_fingerprint(lab, site):
    """Without --ca the gateway's private certificate is refused and its fingerprint shown."""
    tunnel, _ = site
    client = tunnel.connect(trust=[], wait=False)
    assert client.wait_exit() == 1
    assert "not trusted" in client.output() and "sha256:" in client.output()


def test_unreachable_gateway_fails_clearly(lab, site):
    """A gateway that is not there: exit 1 with 'cannot reach', nothing left behind."""
    tunnel, _ = site
    before = host_snapshot(lab)
    client = tunnel.connect(url=f"https://{topo.GATEWAY_OUTER}:9", wait=False)
    assert client.wait_exit() == 1
    assert "cannot reach the gateway" in client.output()
    assert host_snapshot(lab) == before


def test_gateway_killed_mid_session_ends_client_cleanly(lab, tmp_path):
    """kill -9 of the gateway: the client says the session was lost, exits 1 and restores the host."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path, port=8444)
    tunnel.start_gateway(extra_server="keepalive = 1.0")
    before = host_snapshot(lab)
    client = tunnel.connect()
    tunnel.stop_gateway(signal.SIGKILL)
    assert client.wait_exit() == 1, client.output()
    assert "session" in client.output() or "gateway" in client.output()
    assert host_snapshot(lab) == before


TRICKLE_SERVER = textwrap.dedent("""
    import socket, sys, time
    srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("listening", flush=True)
    conn, _ = srv.accept()
    for _ in range(25):                        # 25 x 64 KiB over 2.5 s
        conn.sendall(bytes(65536))
        time.sleep(0.1)
    conn.close()
""")

COUNTING_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
    total = 0
    while chunk := s.recv(65536):
        total += len(chunk)
    print(total, flush=True)
""")


def test_a_gateway_shutting_down_lets_a_download_under_way_finish(lab, tmp_path):
    """SIGTERM to the gateway in the middle of a download: it sends GOAWAY and lets the
    open stream finish (within its 5 s grace) before it exits, so the app gets every
    byte; the client then finds the gateway gone, says so, and restores the host."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path, port=8446)
    tunnel.start_gateway()
    server = lab.popen_python(lab.intranet, TRICKLE_SERVER, str(topo.INTRANET_HOST), "9050",
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "listening"
    before = host_snapshot(lab)
    client = tunnel.connect()
    try:
        download = lab.popen_python(lab.client, COUNTING_CLIENT, str(topo.INTRANET_HOST), "9050",
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        assert download.poll() is None                 # still under way
        tunnel.stop_gateway()                          # SIGTERM; waits for the gateway to exit
        out, err = download.communicate(timeout=20)
        assert (download.returncode, out.strip()) == (0, str(25 * 65536)), err
        assert client.wait_exit() == 1, client.output()
        assert "gateway" in client.output()
    finally:
        client.stop()
        server.kill()
    assert host_snapshot(lab) == before


def test_kill_9_of_client_is_undone_at_next_start(lab, tmp_path):
    """A route covering the gateway forces a pinned host route; after kill -9 the next start removes it."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path, port=8445)
    tunnel.start_gateway()
    # Alice's networks include one that covers the gateway's own address.
    text = tunnel.setup.config.read_text().replace('networks = ["10.77.0.0/24"',
                                                   'networks = ["192.0.0.0/16", "10.77.0.0/24"')
    tunnel.setup.config.write_text(text)
    tunnel.stop_gateway()
    tunnel.launch()
    before = host_snapshot(lab)
    client = tunnel.connect()
    routes = lab.run(lab.client, ["ip", "route", "show"]).stdout
    assert f"{topo.GATEWAY_OUTER} via" in routes or f"{topo.GATEWAY_OUTER} dev" in routes, routes
    client.stop(signal.SIGKILL)
    assert host_snapshot(lab) != before          # the pinned host route survived the crash
    again = tunnel.connect()
    assert any("restored host changes" in line for line in again.lines), again.output()
    assert again.stop() == 0
    assert host_snapshot(lab) == before
    tunnel.stop_gateway()


def test_works_with_strict_reverse_path_filtering(lab, site):
    """With rp_filter=1 (strict) in the client, reflected packets still pass: curl works."""
    tunnel, _ = site
    for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
        lab.run(lab.client, ["sysctl", "-qw", f"{key}=1"])
    client = tunnel.connect()
    try:
        result, _ = curl(lab, f"http://{topo.INTRANET_HOST}/index.html")
        assert result.returncode == 0 and result.stdout == "hello from the intranet\n", result.stderr
    finally:
        client.stop()
        for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
            lab.run(lab.client, ["sysctl", "-qw", f"{key}=0"])


def test_foreground_client_reads_the_one_time_code_after_the_password(lab, site):
    """carol needs a TOTP code: with --password-stdin the next line is the code; a wrong one fails clearly."""
    import pyotp
    from tests.support import TOTP_SECRET
    tunnel, _ = site
    before = host_snapshot(lab)
    client = tunnel.connect(user="carol", wait=False, more_input=["000000"])
    assert client.wait_exit() == 1
    assert "wrong one-time code" in client.output()
    client = tunnel.connect(user="carol", more_input=[pyotp.TOTP(TOTP_SECRET).now()])
    try:
        result, _ = curl(lab, f"http://{topo.INTRANET_HOST}/index.html")
        assert result.returncode == 0, result.stderr
    finally:
        assert client.stop() == 0, client.output()
    assert host_snapshot(lab) == before


IDLE_APP = textwrap.dedent("""
    import errno, socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    print("connected", flush=True)
    sys.stdin.readline()                # the tunnel goes down meanwhile
    s.settimeout(5)
    try:
        print("read", s.recv(100))
    except OSError as exc:
        print(errno.errorcode.get(exc.errno, str(exc)))
""")


def test_a_disconnect_resets_the_apps_open_connections(lab, site, tcp_path):
    """An app with an idle connection open learns at once that it is gone when the user
    disconnects (an RST), on either path: it must not wait for ever on a dead connection."""
    tunnel, _ = site
    client = tunnel.connect(env=tcp_path)
    app = lab.popen_python(lab.client, IDLE_APP, str(topo.INTRANET_HOST), "80",
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline().strip() == "connected"
    finally:
        client.stop()
    app.stdin.write("\n")
    app.stdin.flush()
    assert app.stdout.readline().strip() == "ECONNRESET"
    app.wait(10)
