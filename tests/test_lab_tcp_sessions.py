"""Scenario: how a tunnel session starts, fails and ends, in the namespace lab (root only).

Logins that fail (wrong password, untrusted certificate, no gateway) fail
clearly and leave the host as it was; a one-time code is read after the
password. A gateway that is killed or shuts down, and a client killed with
kill -9, leave the host restored (at once, or at the client's next start).
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time

import pytest

from tests.lab import tcp_site
from tests.lab import topology as topo
from tests.lab.tcp_site import curl
from tests.lab.tunnel import Tunnel, host_snapshot

pytestmark = pytest.mark.lab

#: The shared fixtures, made this module's own: pytest looks fixtures up in the module.
site = tcp_site.site


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
    """kill -9 of the gateway: once its reconnect window is over (3 s here, 2 min by
    default), the client says the session was lost, exits 1 and restores the host."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path, port=8444)
    tunnel.start_gateway(extra_server="keepalive = 1.0")
    before = host_snapshot(lab)
    client = tunnel.connect(reconnect_for=3)
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
    byte; the client then finds the gateway gone (for its reconnect window, 3 s here),
    says so, and restores the host."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path, port=8446)
    tunnel.start_gateway()
    server = lab.popen_python(lab.intranet, TRICKLE_SERVER, str(topo.INTRANET_HOST), "9050",
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "listening"
    before = host_snapshot(lab)
    client = tunnel.connect(reconnect_for=3)
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
