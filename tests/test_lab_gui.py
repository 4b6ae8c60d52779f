"""Scenario: the tray app, as a non-root user, connects through the privileged
service to the bundled gateway with a password and a one-time code (root only)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pyotp
import pytest

from client.profiles import Profile, ProfileStore
from tests.lab import servers
from tests.lab import topology as topo
from tests.lab.tunnel import ClientProcess, Tunnel, host_snapshot
from tests.support import PASSWORDS, TOTP_SECRET

pytestmark = pytest.mark.lab

NOBODY = 65534     # nobody / nogroup on Debian
DRIVER = pathlib.Path(__file__).parent / "lab" / "gui_driver.py"


@pytest.fixture()
def rundir():
    """A folder the unprivileged app can reach (pytest's tmp_path is root-only)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="tg-gui-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def send(proc: subprocess.Popen, line: str) -> None:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def test_tray_app_connects_as_non_root_with_password_and_one_time_code(lab, tmp_path, rundir):
    """Password and code through the dialogs, curl works, Disconnect restores the host; a replayed
    and a wrong code are each refused with a clear message."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path, port=8460)
    tunnel.start_gateway()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello through the tray app\n")
    servers.start_http(lab, topo.INTRANET_HOST, 80, www)
    sock = rundir / "control.sock"
    service_log = open(tmp_path / "service.log", "w")
    service = lab.popen(lab.client, [sys.executable, "-m", "client.cli", "service", "--socket",
                                     str(sock), "--state-dir", str(rundir / "state"),
                                     "--group", "nogroup"],
                        stdout=service_log, stderr=subprocess.STDOUT)
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.05)
    assert sock.exists(), (tmp_path / "service.log").read_text()
    profiles = rundir / "profiles.toml"
    ca = rundir / "ca.crt"  # the app reads its CA file itself, as nobody; the service never does
    shutil.copyfile(tunnel.setup.certs.ca_cert, ca)
    ca.chmod(0o644)
    ProfileStore(profiles).save(Profile(name="lab", gateway=tunnel.url, username="carol", ca=str(ca)))
    profiles.chmod(0o644)
    before = host_snapshot(lab)

    proc = lab.popen(lab.client, [sys.executable, str(DRIVER), "--socket", str(sock), "--profiles",
                                  str(profiles), "--uid", str(NOBODY), "--gid", str(NOBODY)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True)
    app = ClientProcess(proc)
    try:
        send(proc, PASSWORDS["carol"])
        assert app.wait_for("READY", 30), app.output()
        assert f"uid={NOBODY}" in app.lines[-1]

        send(proc, "connect lab")
        assert app.wait_for("ASK otp", 30), app.output()
        code = pyotp.TOTP(TOTP_SECRET).now()
        send(proc, f"code {code}")
        assert app.wait_for("STATE connected", 30), app.output()
        page = lab.run(lab.client, ["curl", "-sS", "--max-time", "10",
                                    f"http://{topo.INTRANET_HOST}/index.html"])
        assert page.stdout == "hello through the tray app\n"

        send(proc, "disconnect")
        assert app.wait_for("STATE disconnected", 30), app.output()
        assert host_snapshot(lab) == before

        send(proc, "connect lab")                      # the same code again: a replay
        assert app.wait_for("ASK otp", 30), app.output()
        send(proc, f"code {code}")
        assert app.wait_for("STATE failed", 30), app.output()
        assert app.wait_for("NOTIFY error", 30), app.output()
        assert "already used" in app.lines[-1]

        send(proc, "connect lab")                      # a wrong code
        assert app.wait_for("ASK otp", 30), app.output()
        send(proc, "code 000000")
        assert app.wait_for("STATE failed", 30), app.output()
        assert app.wait_for("NOTIFY error", 30), app.output()
        assert "wrong one-time code" in app.lines[-1]
        assert host_snapshot(lab) == before

        send(proc, "quit")
        assert app.wait_for("BYE", 30), app.output()
    finally:
        app.stop()
        service.terminate()
        service.wait(20)
        tunnel.stop_gateway()
    assert service.returncode == 0, (tmp_path / "service.log").read_text()
    assert host_snapshot(lab) == before
