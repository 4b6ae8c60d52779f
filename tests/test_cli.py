"""The tunnelgate command line against a real service on a temporary socket."""

from __future__ import annotations

import asyncio
import io
import os
import pathlib
import subprocess
import sys
import threading
import time

import keyring
import pytest

from client import cli
from client.control.host import EngineHost
from client.control.server import ControlServer
from client.dns import MemoryDns
from client.profiles import PasswordStore, ProfileStore
from client.routes import MemoryRoutes
from client.tun import MemoryTun
from tests.client.control.fakes import FakeEngine
from tests.client.test_profiles import MemoryKeyring

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def real_service(tmp_path, monkeypatch):
    """``python -m client.cli service`` on a socket in tmp_path (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("the service needs root")
    sock = tmp_path / "control.sock"
    proc = subprocess.Popen([sys.executable, "-m", "client.cli", "service", "--socket", str(sock),
                             "--state-dir", str(tmp_path / "state")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 15
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"service did not start: {proc.communicate()[0]}")
        time.sleep(0.05)
    monkeypatch.setenv("TUNNELGATE_SOCKET", str(sock))
    yield sock
    proc.terminate()
    assert proc.wait(10) == 0, proc.communicate()[0]
    assert not sock.exists()


class ThreadService:
    """A ControlServer with the fake engine, on its own loop in a thread."""

    def __init__(self, path: pathlib.Path) -> None:
        self.host = EngineHost(tun_factory=lambda mtu: MemoryTun(mtu=mtu), routes_factory=MemoryRoutes,
                               dns_factory=MemoryDns, engine_factory=FakeEngine)
        self.server = ControlServer(path, self.host)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "ThreadService":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def fake_service(tmp_path, monkeypatch):
    sock = tmp_path / "fake.sock"
    monkeypatch.setenv("TUNNELGATE_SOCKET", str(sock))
    with ThreadService(sock) as service:
        yield service


@pytest.fixture
def profiles(tmp_path, monkeypatch):
    path = tmp_path / "profiles.toml"
    monkeypatch.setenv("TUNNELGATE_PROFILES", str(path))
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    yield ProfileStore(path)
    keyring.set_keyring(previous)


def test_status_and_disconnect_with_real_service(real_service, capsys):
    """status prints the service's state and disconnect succeeds, both exit 0."""
    assert cli.main(["status"]) == 0
    assert "state:     disconnected" in capsys.readouterr().out
    assert cli.main(["status", "--json"]) == 0
    assert '"state": "disconnected"' in capsys.readouterr().out
    assert cli.main(["disconnect"]) == 0
    assert capsys.readouterr().out.strip() == "disconnected"


def test_connect_through_real_service_reports_failure(real_service, capsys, monkeypatch):
    """A connect the service cannot make prints the states and exits 1."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    assert cli.main(["connect", "https://127.0.0.1:1", "--user", "alice", "--password-stdin"]) == 1
    out = capsys.readouterr().out
    assert "connecting: 127.0.0.1:1" in out and "failed: cannot reach the gateway" in out
    assert "pw" not in out.replace("https", "")


def test_service_not_running(tmp_path, monkeypatch, capsys):
    """Without a service, status and disconnect exit 1 and say how to start it."""
    monkeypatch.setenv("TUNNELGATE_SOCKET", str(tmp_path / "nothing.sock"))
    for command in (["status"], ["disconnect"]):
        assert cli.main(command) == 1
        err = capsys.readouterr().err
        assert "the Tunnelgate service is not running" in err and "sudo systemctl start tunnelgate" in err


def test_connect_through_service_answers_challenge_from_stdin(fake_service, capsys, monkeypatch):
    """connect URL sends the request to the service, answers the one-time code from stdin's next line."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n123456\n"))
    assert cli.main(["connect", "https://gw.example", "--user", "carol", "--password-stdin"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "connected: address 10.200.0.2/24"
    assert FakeEngine.instances[-1].password == "pw"
    assert cli.main(["disconnect"]) == 0


def test_connect_profile_uses_keyring_password(fake_service, profiles, capsys):
    """connect PROFILE takes the gateway and user from the profile and the password from the keyring."""
    assert cli.main(["profiles", "add", "work", "--gateway", "https://gw.example:8443",
                     "--user", "alice"]) == 0
    PasswordStore().set("work", "alice", "from-keyring")
    assert cli.main(["connect", "work"]) == 0
    engine = FakeEngine.instances[-1]
    assert engine.password == "from-keyring" and str(engine.options.gateway) == "gw.example:8443"
    status = fake_service.host.status()
    assert status["profile"] == "work" and status["username"] == "alice"
    assert cli.main(["connect", "work"]) == 1  # busy
    assert "already connected" in capsys.readouterr().err
    assert cli.main(["disconnect"]) == 0


def test_reconnect_window_from_the_profile_or_the_command_line_reaches_the_service(
        fake_service, profiles, capsys):
    """A profile's reconnect_for (profiles add --reconnect-for) is listed and used by the
    service's engine; --reconnect-for on connect overrides it and no longer needs --foreground."""
    from client.resume_pacing import reconnect_delays
    assert cli.main(["profiles", "add", "work", "--gateway", "https://gw.example:8443",
                     "--user", "alice", "--reconnect-for", "300"]) == 0
    assert cli.main(["profiles", "list"]) == 0
    assert "reconnect for 300 s" in capsys.readouterr().out
    PasswordStore().set("work", "alice", "from-keyring")
    for argv, window in ((["connect", "work"], 300), (["connect", "work", "--reconnect-for", "0"], 0)):
        assert cli.main(argv) == 0
        assert FakeEngine.instances[-1].options.reconnect_delays == reconnect_delays(window)
        assert fake_service.host.status()["profile"] == "work"
        assert cli.main(["disconnect"]) == 0
    assert cli.main(["profiles", "add", "x", "--gateway", "https://gw", "--user", "a",
                     "--reconnect-for", "90000"]) == 2
    assert "reconnect_for" in capsys.readouterr().err


def test_profiles_commands(profiles, capsys, monkeypatch):
    """profiles add, list, set-password and remove work on the user's file and keyring."""
    assert cli.main(["profiles", "list"]) == 0
    assert "no profiles" in capsys.readouterr().out
    pin = "sha256:" + "ab" * 32
    assert cli.main(["profiles", "add", "lab", "--gateway", "https://10.0.0.1:8443", "--user", "bob",
                     "--pin", pin, "--connect-at-start"]) == 0
    assert cli.main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    assert "lab\tbob@https://10.0.0.1:8443\tpin " + pin + "\tconnect at start" in out
    monkeypatch.setattr(sys, "stdin", io.StringIO("hunter2\n"))
    assert cli.main(["profiles", "set-password", "lab", "--password-stdin"]) == 0
    assert PasswordStore().get("lab", "bob") == "hunter2"
    assert cli.main(["profiles", "remove", "lab"]) == 0
    assert profiles.load() == [] and PasswordStore().get("lab", "bob") is None
    assert cli.main(["profiles", "remove", "lab"]) == 1
    assert cli.main(["profiles", "add", "x", "--gateway", "ftp://gw", "--user", "a"]) == 2


def test_usage_errors_exit_2(capsys):
    """Bad arguments exit 2."""
    with pytest.raises(SystemExit) as info:
        cli.main(["connect"])
    assert info.value.code == 2
    assert cli.main(["connect", "https://gw.example", "--foreground", "--password-stdin"]) == 2


def test_recover_undoes_dns_changes_left_by_a_killed_client(tmp_path, capsys):
    """`tunnelgate recover` puts back the resolver file a killed client rewrote, not only its routes."""
    import json
    resolver = tmp_path / "resolv.conf"
    resolver.write_text("nameserver 10.77.0.53\nnameserver 192.0.2.1\n")
    item = {"kind": "file", "path": str(resolver), "original": "nameserver 192.0.2.1\n",
            "written": "nameserver 10.77.0.53\nnameserver 192.0.2.1\n"}
    journal = tmp_path / "state" / "dns-changes.json"
    journal.parent.mkdir()
    journal.write_text(json.dumps({"version": 1, "owner": {"pid": 999999999, "start": 0},
                                   "items": [item]}))
    assert cli.main(["recover", "--state-dir", str(tmp_path / "state")]) == 0
    assert capsys.readouterr().out.strip() == "restored host changes"
    assert resolver.read_text() == "nameserver 192.0.2.1\n" and not journal.exists()


def test_ctrl_d_at_the_one_time_code_prompt_cancels_cleanly(monkeypatch):
    """End of input at the terminal's one-time-code prompt means "no code" (a clear login
    failure), not an EOFError traceback."""
    class TerminalAtEof(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stdin", TerminalAtEof(""))
    assert asyncio.run(cli.TerminalPrompter().one_time_code("One-time code")) is None


def test_profile_remove_says_when_the_keyring_keeps_the_password(profiles, capsys):
    """Removing a profile when the keyring cannot be reached warns that the password stays there."""
    from tests.client.test_profiles import NoKeyring
    assert cli.main(["profiles", "add", "lab", "--gateway", "https://10.0.0.1", "--user", "bob"]) == 0
    keyring.set_keyring(NoKeyring())
    assert cli.main(["profiles", "remove", "lab"]) == 0
    captured = capsys.readouterr()
    assert "removed profile lab" in captured.out
    assert "could not be removed from the keyring" in captured.err and profiles.load() == []


def test_recover_without_root_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys):
    """`tunnelgate recover` as a normal user says it needs root (exit 2) instead of failing
    on the root-only state folder with a traceback or claiming there was nothing to restore."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["recover", "--state-dir", str(tmp_path)]) == 2
    assert "recover needs root" in capsys.readouterr().err


PROMPT_THEN_STOP = """
import asyncio
from client import cli

async def main():
    prompt = asyncio.ensure_future(cli.TerminalPrompter().one_time_code("One-time code"))
    await asyncio.sleep(0.3)
    prompt.cancel()            # what Ctrl-C or SIGTERM does to the login meanwhile
    print("stopped", flush=True)

asyncio.run(main())
"""


def test_stopping_while_the_one_time_code_prompt_waits_does_not_wait_for_a_line():
    """Stopped while it waits for the one-time code, the client exits at once: the read of
    the terminal does not hold the process until the user presses Enter."""
    child = subprocess.Popen([sys.executable, "-c", PROMPT_THEN_STOP], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=pathlib.Path(__file__).resolve().parent.parent)
    try:
        code = child.wait(timeout=10)     # its stdin stays open: no line ever comes
    finally:
        if child.poll() is None:
            child.kill()
        out, err = child.communicate()
    assert code == 0 and out.strip() == "stopped", err
