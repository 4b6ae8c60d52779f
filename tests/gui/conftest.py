"""GUI test fixtures: offscreen Qt, a memory keyring, an asyncio loop on Qt's
(qasync), and a real control service (ControlServer + EngineHost running the
fake engine of the control tests) on a Unix socket."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before anything imports Qt

import asyncio
import pathlib
import shutil
import tempfile

import keyring
import keyring.backend
import keyring.errors
import pytest
import qasync

from client.control.client import ControlClient
from client.control.host import EngineHost
from client.control.server import ControlServer
from client.profiles import PasswordStore, Profile, ProfileStore
from tests.client.control.fakes import FakeEngine


TIMEOUT_MS = 10_000


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that lives in a dict, so tests never touch the user's."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        if self.store.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError(username)


@pytest.fixture(autouse=True)
def memory_keyring():
    """Every GUI test gets an empty in-memory keyring."""
    previous = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(previous)


@pytest.fixture
def aloop(qapp, qtbot):
    """An asyncio loop that runs whenever Qt processes events (qtbot.waitUntil)."""
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    yield loop
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        qtbot.waitUntil(lambda: all(t.done() for t in pending), timeout=TIMEOUT_MS)
    # loop.stop() would call QApplication.exit(), which leaves Qt unable to run
    # the next test's event processing; end the "already running" loop by hand.
    asyncio.events._set_running_loop(None)
    qapp.aboutToQuit.disconnect(loop._after_run_forever)
    loop._QEventLoop__is_running = False
    loop.close()
    asyncio.set_event_loop(None)


class Runner:
    """Runs coroutines on the qasync loop, letting Qt process events meanwhile."""

    def __init__(self, loop, qtbot) -> None:
        self.loop = loop
        self.qtbot = qtbot

    def __call__(self, coro, timeout_ms: int = TIMEOUT_MS):
        task = self.loop.create_task(coro)
        self.qtbot.waitUntil(task.done, timeout=timeout_ms)
        return task.result()

    def start(self, coro):
        """Start a coroutine and return its task without waiting."""
        return self.loop.create_task(coro)


@pytest.fixture
def run(aloop, qtbot):
    """``run(coro)`` runs it to completion; ``run.start(coro)`` only starts it."""
    return Runner(aloop, qtbot)


@pytest.fixture
def socket_dir():
    """A short directory for the control socket (Unix socket paths are limited)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="tg-gui-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def service(run, socket_dir):
    """A real control service with the fake engine; yields the socket path."""
    host = EngineHost(tun_factory=lambda mtu: None, routes_factory=lambda: None,
                      engine_factory=FakeEngine, sample_interval=0.05, prompt_timeout=30)
    server = ControlServer(socket_dir / "control.sock", host)
    run(server.start())
    yield server
    run(server.close())


@pytest.fixture
def profiles(tmp_path):
    """A ProfileStore in tmp_path with "work" (alice), "otp" (carol) and "odd" (untrusted)."""
    store = ProfileStore(tmp_path / "profiles.toml")
    store.save(Profile(name="work", gateway="https://vpn.example.com:8443", username="alice"))
    store.save(Profile(name="otp", gateway="https://vpn.example.com", username="carol"))
    store.save(Profile(name="odd", gateway="https://untrusted.example", username="alice"))
    return store


@pytest.fixture
def passwords():
    """The real PasswordStore (backed by the memory keyring)."""
    return PasswordStore()


def opener(server: ControlServer):
    """The controller's way to open a client to ``server``."""
    return lambda: ControlClient.open(server.socket_path, client="tunnelgate-gui-test")
