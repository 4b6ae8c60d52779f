"""Scenario: TCP through the real tunnel in the namespace lab (root only).

A real gateway process in the gateway namespace, a real ``tunnelgate
connect`` in the client namespace with a real TUN and real routes, and real
servers in the intranet namespace; curl and Python clients act as the apps.
Here: a page reaches the app and the server sees the gateway, failures reach
the app fast and as the right error, and the app's connections end with the
tunnel. Large transfers and many connections are in ``test_lab_tcp_load``,
logins and the ends of a session in ``test_lab_tcp_sessions``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.lab import servers
from tests.lab import tcp_site
from tests.lab import topology as topo
from tests.lab.tcp_site import curl
from tests.lab.tunnel import host_snapshot

pytestmark = pytest.mark.lab

#: The shared fixtures, made this module's own: pytest looks fixtures up in the module.
site, tcp_path = tcp_site.site, tcp_site.tcp_path


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
