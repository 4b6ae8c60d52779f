"""Scenario: the CLI connects through the privileged service with a profile (root only).

The service runs in the client namespace with the real engine; the CLI is a
client of its control API, exactly as a user's terminal would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from client.profiles import Profile, ProfileStore
from tests.lab import servers
from tests.lab import topology as topo
from tests.lab.tunnel import Tunnel, host_snapshot
from tests.support import PASSWORDS

pytestmark = pytest.mark.lab


def test_cli_connects_through_the_service_and_disconnect_restores_the_host(lab, tmp_path):
    """tunnelgate connect PROFILE (password on stdin) via the service, curl works, status says
    connected, tunnelgate disconnect puts the host back."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path / "gw", port=8470)
    tunnel.start_gateway()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello via the service\n")
    servers.start_http(lab, topo.INTRANET_HOST, 80, www)
    sock = tmp_path / "control.sock"
    service = lab.popen(lab.client, [sys.executable, "-m", "client.cli", "service", "--socket",
                                     str(sock), "--state-dir", str(tmp_path / "state")],
                        stdout=open(tmp_path / "service.log", "w"), stderr=subprocess.STDOUT)
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.05)
    profiles = tmp_path / "profiles.toml"
    ProfileStore(profiles).save(Profile(name="lab", gateway=tunnel.url, username="alice",
                                        ca=str(tunnel.setup.certs.ca_cert)))
    env = {**os.environ, "TUNNELGATE_SOCKET": str(sock), "TUNNELGATE_PROFILES": str(profiles)}
    cli = [sys.executable, "-m", "client.cli"]
    before = host_snapshot(lab)
    try:
        connect = lab.run(lab.client, [*cli, "connect", "lab", "--password-stdin"],
                          input=PASSWORDS["alice"] + "\n", env=env, timeout=60)
        assert "connected" in connect.stdout, connect.stdout + connect.stderr
        page = lab.run(lab.client, ["curl", "-sS", "--max-time", "10",
                                    f"http://{topo.INTRANET_HOST}/index.html"])
        assert page.stdout == "hello via the service\n"
        status = lab.run(lab.client, [*cli, "status"], env=env)
        assert "connected" in status.stdout and "10.77.0.0/24" in status.stdout, status.stdout
        assert "tcp path:  in-kernel fast path, 1 flow(s) offloaded" in status.stdout, status.stdout
        lab.run(lab.client, [*cli, "disconnect"], env=env, timeout=60)
        assert host_snapshot(lab) == before
        wrong = lab.run(lab.client, [*cli, "connect", "lab", "--password-stdin"],
                        input="not the password\n", env=env, timeout=60, check=False)
        assert wrong.returncode == 1
        assert "wrong user name or password" in wrong.stdout + wrong.stderr
    finally:
        service.terminate()
        service.wait(20)
        tunnel.stop_gateway()
    assert service.returncode == 0, (tmp_path / "service.log").read_text()
    assert host_snapshot(lab) == before
