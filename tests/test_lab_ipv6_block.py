"""Scenario: IPv6 does not leak past a full tunnel, in the namespace lab (root only).

The tunnel carries only IPv4. The lab gets IPv6 for this module: the client and
the gateway namespace share fd00:77::/64 on their outer link, the client has an
IPv6 default route through the gateway namespace, and a server listens there on
fd00:78::1 (off the client's link: "the IPv6 internet"). Before connecting the
client reaches it. While a full tunnel (0.0.0.0/0 pushed) is up, a connection
to it fails at once with "permission denied" (the client answers it with ICMPv6
"administratively prohibited") and nothing reaches the server. After the
disconnect it works again and the client's IPv6 routes are as they were. A
split tunnel leaves IPv6 alone.
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from tests.lab import topology as topo
from tests.lab.tunnel import FULL_TUNNEL, Tunnel, host_snapshot

pytestmark = pytest.mark.lab

CLIENT6, GATEWAY6, SERVER6, PORT = "fd00:77::2", "fd00:77::1", "fd00:78::1", 8080

# Runs in the gateway namespace: one line per accepted connection, then a tiny HTTP answer.
SERVER = textwrap.dedent("""
    import socket, sys
    listener = socket.create_server((sys.argv[1], int(sys.argv[2])), family=socket.AF_INET6)
    with open(sys.argv[3], "a", buffering=1) as log:
        while True:
            conn, peer = listener.accept()
            log.write(peer[0] + "\\n")
            conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 6\\r\\n\\r\\nhello\\n")
            conn.close()
""")

# Runs in the client namespace: connect, print the outcome and the seconds it took.
PROBE = textwrap.dedent("""
    import errno, socket, sys, time
    start = time.monotonic()
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as conn:
            outcome = "ok" if conn.recv(100).endswith(b"hello\\n") else "short"
    except OSError as exc:
        outcome = errno.errorcode.get(exc.errno, "timeout")
    print(outcome, time.monotonic() - start)
""")


@pytest.fixture(scope="module")
def server(lab, tmp_path_factory):
    """IPv6 on the lab's outer link, an IPv6 default route in the client, and the server's
    log of accepted connections."""
    lab.run(lab.client, ["ip", "-6", "addr", "add", f"{CLIENT6}/64", "dev", topo.OUTER_IF, "nodad"])
    lab.run(lab.gateway, ["ip", "-6", "addr", "add", f"{GATEWAY6}/64", "dev", topo.OUTER_IF, "nodad"])
    lab.run(lab.gateway, ["ip", "-6", "addr", "add", f"{SERVER6}/128", "dev", "lo"])
    lab.run(lab.client, ["ip", "-6", "route", "add", "default", "via", GATEWAY6, "dev", topo.OUTER_IF])
    log = tmp_path_factory.mktemp("server6") / "accepted.log"
    log.touch()
    lab.popen_python(lab.gateway, SERVER, SERVER6, str(PORT), str(log))
    deadline = time.monotonic() + 10
    while f"[{SERVER6}]:{PORT}" not in lab.run(lab.gateway, ["ss", "-Hltn"]).stdout.split():
        assert time.monotonic() < deadline, "the IPv6 server did not listen"
        time.sleep(0.05)
    # The link's own fe80:: addresses get their routes once duplicate address detection
    # is done: wait for that, so that route snapshots compare a settled host.
    while lab.run(lab.client, ["ip", "-6", "addr", "show", "tentative"]).stdout.strip():
        assert time.monotonic() < deadline, "the client's IPv6 addresses stayed tentative"
        time.sleep(0.05)
    return log


def _accepted(log) -> int:
    return len(log.read_text().splitlines())


def _probe(lab) -> tuple[str, float]:
    outcome, seconds = lab.run_python(lab.client, PROBE, SERVER6, str(PORT)).stdout.split()
    return outcome, float(seconds)


def _ipv6_routes(lab, table: str) -> str:
    return lab.run(lab.client, ["ip", "-6", "route", "show", "table", table]).stdout


def _route_device(lab, address: str) -> str:
    return json.loads(lab.run(lab.client, ["ip", "-j", "-6", "route", "get", address]).stdout)[0]["dev"]


@pytest.fixture
def tunnel(lab, tmp_path):
    """A gateway, started by the test with its resources, stopped after it."""
    made = Tunnel(lab=lab, workdir=tmp_path)
    yield made
    made.stop_gateway()


def test_a_full_tunnel_blocks_ipv6_at_once_and_gives_it_back_afterwards(lab, server, tunnel):
    """With 0.0.0.0/0 pushed an IPv6 connection fails within a second with EACCES and
    nothing reaches the server; after the disconnect it works again and the client's IPv6
    routes (and IPv4 ones) are exactly as before."""
    tunnel.start_gateway(resources=FULL_TUNNEL)
    assert _probe(lab)[0] == "ok"
    before6, before = _ipv6_routes(lab, "all"), host_snapshot(lab)
    accepted = _accepted(server)
    client = tunnel.connect()
    try:
        assert _route_device(lab, SERVER6) != topo.OUTER_IF
        outcome, seconds = _probe(lab)
        assert (outcome, seconds < 1.0) == ("EACCES", True), seconds
        assert _accepted(server) == accepted
    finally:
        assert client.stop() == 0, client.output()
    assert _ipv6_routes(lab, "all") == before6 and host_snapshot(lab) == before
    assert _probe(lab)[0] == "ok" and _accepted(server) == accepted + 1


def test_a_split_tunnel_leaves_ipv6_alone(lab, server, tunnel):
    """Without 0.0.0.0/0 pushed the client's IPv6 routes do not change and the IPv6 server
    is reached the host's own way while connected."""
    tunnel.start_gateway()
    before6, before_all = _ipv6_routes(lab, "main"), _ipv6_routes(lab, "all")
    accepted = _accepted(server)
    client = tunnel.connect()
    try:
        assert _ipv6_routes(lab, "main") == before6
        assert _probe(lab)[0] == "ok" and _accepted(server) == accepted + 1
        assert f"{CLIENT6}\n" in server.read_text()
    finally:
        assert client.stop() == 0, client.output()
    assert _ipv6_routes(lab, "all") == before_all
