"""Peers of the control service: who may use it (peer credentials, and the rules
between the members of its group: only the user who started an attempt, or root,
may answer its questions or read its secrets), and that a peer which does not
read its messages is dropped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import shutil
import socket
import tempfile

import pytest

from client.control import protocol as p
from client.control.client import ControlClient
from client.control.errors import ControlError
from tests.client.control.fakes import FakeEngine
from tests.client.control.rig import PASSWORD, Service, as_nobody, run


@contextlib.asynccontextmanager
async def member_service(folder: pathlib.Path):
    """A running service whose group nobody (gid 65534) is a member of, on a socket
    anyone may reach (the peer-credential check decides)."""
    svc = Service(folder)
    svc.server.group = "nogroup"
    async with svc:
        os.chmod(svc.path, 0o666)
        yield svc


def test_root_is_allowed(tmp_path):
    """Root passes the peer-credential check (this test runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    async def main():
        async with Service(tmp_path) as svc:
            client = await svc.client()
            assert (await client.status())["state"] == "disconnected"
            assert os.stat(svc.path).st_mode & 0o777 == 0o660
            await client.close()
    run(main())


@pytest.fixture
def nobody_folder():
    """A folder that nobody (uid 65534) can enter, for a service socket; root only."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    folder = pathlib.Path(tempfile.mkdtemp(prefix="tg-control-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_non_member_is_refused_by_peer_credentials(nobody_folder):
    """A user outside the group (nobody) gets -32001 "not allowed" from the credential check."""
    async def main():
        async with Service(nobody_folder) as svc:
            os.chmod(svc.path, 0o666)  # let nobody reach the credential check itself
            loop = asyncio.get_running_loop()
            got = await loop.run_in_executor(None, as_nobody, svc.path)
            assert got.startswith(f"not-allowed {p.NOT_ALLOWED} not allowed: user nobody is not in "
                                  "group tunnelgate"), got
            os.chmod(svc.path, 0o660)  # the normal mode: the file system refuses first
            got = await loop.run_in_executor(None, as_nobody, svc.path)
            assert got.startswith(f"not-allowed {p.NOT_ALLOWED} not allowed"), got
            assert "usermod -aG tunnelgate" in got
    run(main())


def test_only_the_user_who_connected_may_trust_the_certificate(nobody_folder):
    """Another member of the service group cannot answer the certificate question of
    someone else's attempt (and so cannot make it trust a server); the owner still can."""
    async def main():
        async with member_service(nobody_folder) as svc:
            client, notes = await svc.subscriber()
            await client.connect("https://untrusted.example", "alice", PASSWORD)
            question = await notes.wait_for("certificate")
            loop = asyncio.get_running_loop()
            async def answer(nobody: ControlClient) -> str:
                try:
                    await nobody.answer_certificate(question["id"], "always")
                except ControlError as exc:
                    return f"refused {exc.code}"
                return "accepted"
            got = await loop.run_in_executor(None, as_nobody, svc.path, answer)
            assert got == f"refused {p.NO_SUCH_QUESTION}", got
            assert FakeEngine.instances[-1].trust_decision is None
            await client.answer_certificate(question["id"], "cancel")
            await notes.wait_for("state", lambda s: s["state"] == "failed")
            assert FakeEngine.instances[-1].trust_decision == "cancel"
            await client.close()
    run(main())


def test_a_log_line_that_held_a_secret_reaches_only_its_owner(nobody_folder):
    """A log line in which the password was starred out goes to the user who connected
    (and root) only: the stars' place would tell another group member the password."""
    async def main():
        async with member_service(nobody_folder) as svc:
            client, notes = await svc.subscriber()
            await client.connect("https://vpn.example", "alice", PASSWORD)

            async def listen(nobody: ControlClient) -> str:
                lines: list[str] = []
                markers = asyncio.Event()
                def on_note(method, params):
                    if method == "log":
                        lines.append(params["message"])
                        if sum("marker" in line for line in lines) >= 2:
                            markers.set()
                await nobody.subscribe(on_note)
                await asyncio.wait_for(markers.wait(), 20)
                return "\n".join(lines)
            loop = asyncio.get_running_loop()
            heard = loop.run_in_executor(None, as_nobody, svc.path, listen)
            log = logging.getLogger("client.test")
            while not heard.done():
                log.warning("login failed: the secret is %s", PASSWORD)
                log.warning("marker")
                await asyncio.sleep(0.05)
            lines = (await heard).splitlines()
            assert sum(line == "marker" for line in lines) >= 2, lines
            assert not [line for line in lines if "secret" in line or PASSWORD in line], lines
            await notes.wait_for("log", lambda n: n["message"] == "login failed: the secret is ***")
            await client.close()
    run(main())


def test_slow_subscriber_is_dropped(tmp_path):
    """A subscriber that never reads is disconnected instead of buffered without bound."""
    async def main():
        async with Service(tmp_path) as svc:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(str(svc.path))
            sock.sendall(p.encode(p.Request(1, "hello", {"api": 1})) +
                         p.encode(p.Request(2, "subscribe", {"stats_interval": 0.05})))
            await asyncio.sleep(0.2)
            for i in range(20000):  # log lines the peer never reads
                svc.server.broadcast("log", {"time": 0.0, "level": "INFO", "message": "x" * 200})
                if i % 500 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0.2)
            other = await svc.client()  # the service itself is fine
            assert (await other.status())["state"] == "disconnected"
            sock.setblocking(False)
            received = b""
            while True:
                try:
                    chunk = sock.recv(1 << 20)
                except BlockingIOError:
                    raise AssertionError("slow subscriber still connected") from None
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += chunk
            assert len(received) < 20000 * 200
            sock.close()
            await other.close()
    run(main())
