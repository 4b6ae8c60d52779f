"""The tray app's flows end to end: Controller, Tray, dialogs and status window
against a real ControlServer + EngineHost (fake engine) over a Unix socket."""

from __future__ import annotations

import pytest

from client.control.host import EngineHost
from client.control.server import ControlServer
from client.profiles import Profile
from gateway_stub.certs import make_self_signed
from gui.app import feed_status_window
from gui.cert_dialog import CertificateDialog
from gui.controller import Controller
from gui.login_dialog import LoginDialog
from gui.otp_dialog import OtpDialog
from gui.prompts import DialogPrompts
from gui.status_window import StatusWindow
from gui.tray import Tray
from tests.client.control.fakes import FakeEngine
from tests.gui.conftest import TIMEOUT_MS, opener


class Gui:
    """The app's parts wired as gui.app wires them, plus a notification recorder."""

    def __init__(self, qtbot, run, server, profiles, passwords) -> None:
        self.qtbot, self.run = qtbot, run
        self.prompts = DialogPrompts()
        self.controller = Controller(opener(server), profiles, passwords, self.prompts,
                                     retry_interval=0.1, stats_interval=0.05)
        self.tray = Tray(self.controller)
        self.window = StatusWindow()
        qtbot.addWidget(self.window)
        feed_status_window(self.controller, self.window)
        self.notes: list[tuple[str, str, str]] = []
        self.controller.notified.connect(lambda *note: self.notes.append(note))

    def wait(self, predicate, timeout: int = TIMEOUT_MS) -> None:
        self.qtbot.waitUntil(predicate, timeout=timeout)

    def wait_state(self, state: str) -> None:
        self.wait(lambda: self.controller.state == state and self.controller.status.get("state") == state)

    def dialog(self, kind):
        self.wait(lambda: isinstance(self.prompts.current, kind) and self.prompts.current.isVisible())
        return self.prompts.current

    def enabled(self) -> dict[str, bool]:
        return {a.text(): a.isEnabled() for a in self.tray.menu.actions() if not a.isSeparator()}

    def close(self) -> None:
        self.run(self.controller.stop())
        self.tray.hide()


@pytest.fixture
def gui(qtbot, run, service, profiles, passwords):
    """The app's parts, started against the running service."""
    parts = Gui(qtbot, run, service, profiles, passwords)
    assert run(parts.controller.start())
    yield parts
    parts.close()


def test_menu_has_an_entry_per_profile(gui):
    """The menu offers Connect for each profile, Disconnect, Status…, Preferences… and Quit."""
    texts = gui.tray.action_texts()
    assert texts[0] == "Disconnected"
    assert texts[1:] == ["Connect work", "Connect otp", "Connect odd", "Disconnect",
                         "Status…", "Preferences…", "Quit"]
    enabled = gui.enabled()
    assert enabled["Connect work"] and not enabled["Disconnect"]
    assert gui.tray.kind == "disconnected"


def test_login_dialog_connect_and_disconnect(gui, passwords):
    """Without a saved password the login dialog asks; the session comes up, shows, and goes down."""
    gui.tray.connect_actions["work"].trigger()
    login = gui.dialog(LoginDialog)
    assert login.username.text() == "alice"
    gui.qtbot.keyClicks(login.password, "pa55word")
    login.remember.setChecked(True)
    login.ok_button.click()
    gui.wait_state("connected")
    gui.wait(lambda: passwords.get("work", "alice") == "pa55word")   # stored once accepted
    assert gui.tray.kind == "connected"
    assert gui.tray.action_texts()[0] == "Connected to work"
    enabled = gui.enabled()
    assert not enabled["Connect work"] and not enabled["Connect otp"] and enabled["Disconnect"]
    gui.wait(lambda: gui.window.address.text() == "10.200.0.2/24")
    assert gui.window.networks.text() == "10.77.0.0/24"
    assert gui.window.resources.text() == "intranet-web"
    assert gui.window.gateway.text() == "vpn.example.com:8443"
    assert ("Connected", "work: address 10.200.0.2/24", "info") in gui.notes

    gui.tray.disconnect_action.trigger()
    gui.wait_state("disconnected")
    assert gui.tray.kind == "disconnected" and gui.enabled()["Connect work"]
    gui.wait(lambda: gui.window.address.text() == "—")     # the refreshed status clears it
    assert any(note[0] == "Disconnected" for note in gui.notes)


def test_saved_password_skips_login_and_otp_dialog_answers_challenge(gui, passwords):
    """A keyring password is used as is; the one-time code dialog answers the challenge."""
    passwords.set("otp", "carol", "pw")
    gui.tray.connect_actions["otp"].trigger()
    otp = gui.dialog(OtpDialog)
    assert otp.prompt.text() == "One-time code"
    gui.qtbot.keyClicks(otp.code, "123456")
    otp.ok_button.click()
    gui.wait_state("connected")
    assert FakeEngine.instances[-1].password == "pw"


def test_wrong_code_fails_with_an_error_notification(gui, passwords):
    """A wrong one-time code ends in failed, an error notification and the error icon."""
    passwords.set("otp", "carol", "pw")
    gui.run(gui.controller.connect_profile("otp"))
    otp = gui.dialog(OtpDialog)
    gui.qtbot.keyClicks(otp.code, "000000")
    otp.ok_button.click()
    gui.wait_state("failed")
    assert gui.tray.kind == "error"
    assert ("Connection failed", "login failed: wrong one-time code", "error") in gui.notes
    assert gui.window.detail.text() == "login failed: wrong one-time code"
    assert gui.enabled()["Connect otp"]


def test_always_trust_pins_the_fingerprint_in_the_profile(gui, passwords, profiles):
    """Always trust answers the service and saves the server's fingerprint as the profile's pin."""
    passwords.set("odd", "alice", "pw")
    gui.run(gui.controller.connect_profile("odd"))
    cert = gui.dialog(CertificateDialog)
    assert cert.host.text() == "untrusted.example:443"
    with gui.qtbot.waitSignal(gui.controller.profilesChanged, timeout=TIMEOUT_MS):
        cert.always_button.click()
    gui.wait_state("connected")
    assert profiles.get("odd").pin == "sha256:" + "ab" * 32
    assert FakeEngine.instances[-1].trust_decision == "always"


def test_cancelled_certificate_leaves_profile_unpinned(gui, passwords, profiles):
    """Cancel at the certificate question fails the attempt and pins nothing."""
    passwords.set("odd", "alice", "pw")
    gui.run(gui.controller.connect_profile("odd"))
    gui.dialog(CertificateDialog).cancel_button.click()
    gui.wait_state("failed")
    assert profiles.get("odd").pin is None


def test_cancelled_login_does_not_connect(gui):
    """Cancel in the login dialog leaves the engine alone."""
    task = gui.run.start(gui.controller.connect_profile("work"))
    gui.dialog(LoginDialog).reject()
    gui.wait(task.done)
    assert task.result() is False and gui.controller.state == "disconnected"


def test_stats_and_log_reach_the_status_window(gui, passwords):
    """While connected, stats notifications feed the byte labels and chart, log lines the log view."""
    passwords.set("work", "alice", "pw")
    gui.run(gui.controller.connect_profile("work"))
    gui.wait_state("connected")
    gui.wait(lambda: len(gui.window.chart.samples()) >= 3)
    gui.wait(lambda: gui.window.bytes_in.text() != "0 B  (0 B/s)")
    assert "logging in as alice" in gui.window.log.toPlainText()
    assert "pw" not in gui.window.log.toPlainText().split()


def test_second_connect_is_refused_with_a_notification(gui, passwords):
    """Connecting while connected is refused by the service and reported (busy)."""
    passwords.set("work", "alice", "pw")
    gui.run(gui.controller.connect_profile("work"))
    gui.wait_state("connected")
    assert gui.run(gui.controller.connect_profile("work")) is False
    assert gui.notes[-1][0] == "Could not connect" and "disconnect first" in gui.notes[-1][1]


def test_profile_ca_file_is_read_by_the_app(gui, passwords, profiles, tmp_path):
    """The app reads the profile's CA file itself; the service's engine gets its text."""
    ca = make_self_signed(tmp_path / "gw", ["vpn.example.com"]).ca_cert
    profiles.save(Profile(name="work", gateway="https://vpn.example.com:8443", username="alice",
                          ca=str(ca)))
    passwords.set("work", "alice", "pw")
    gui.run(gui.controller.connect_profile("work"))
    gui.wait_state("connected")
    assert FakeEngine.instances[-1].options.trust.ca_pem == ca.read_text()


def test_missing_profile_ca_file_is_reported(gui, passwords, profiles, tmp_path):
    """A profile whose CA file is gone gets an error notification naming it; no attempt starts."""
    gone = tmp_path / "gone.pem"
    profiles.save(Profile(name="work", gateway="https://vpn.example.com:8443", username="alice",
                          ca=str(gone)))
    passwords.set("work", "alice", "pw")
    engines = len(FakeEngine.instances)
    gui.tray.connect_actions["work"].trigger()
    gui.wait(lambda: any(str(gone) in note[1] and note[2] == "error" for note in gui.notes))
    assert len(FakeEngine.instances) == engines and gui.controller.state == "disconnected"


def test_service_down_then_up(qtbot, run, socket_dir, profiles, passwords):
    """Without a service the menu says how to start it and Connect is disabled; once it runs, Connect is enabled."""
    host = EngineHost(tun_factory=lambda mtu: None, routes_factory=lambda: None,
                      engine_factory=FakeEngine)
    server = ControlServer(socket_dir / "control.sock", host)
    parts = Gui(qtbot, run, server, profiles, passwords)
    try:
        assert run(parts.controller.start()) is False
        header = parts.tray.action_texts()[0]
        assert header == "Service not running — start it with: sudo systemctl start tunnelgate"
        assert not any(parts.enabled()[f"Connect {n}"] for n in ("work", "otp", "odd"))
        assert not parts.enabled()["Disconnect"]
        run(server.start())
        parts.wait(lambda: parts.controller.available)
        assert parts.enabled()["Connect work"]
        assert parts.tray.action_texts()[0] == "Disconnected"
    finally:
        parts.close()
        run(server.close())


def test_service_lost_is_reported(qtbot, run, service, profiles, passwords):
    """When the service goes away the tray says so and disables Connect."""
    parts = Gui(qtbot, run, service, profiles, passwords)
    try:
        assert run(parts.controller.start())
        with qtbot.waitSignal(parts.controller.serviceChanged, timeout=TIMEOUT_MS) as lost:
            run(service.close())
        assert lost.args[0] is False and "systemctl start tunnelgate" in lost.args[1]
        assert not parts.enabled()["Connect work"]
        assert parts.tray.action_texts()[0].startswith("Service not running")
    finally:
        parts.close()


def test_connect_at_start(qtbot, run, service, profiles, passwords):
    """A profile marked connect-at-start is connected when the controller starts."""
    profiles.save(Profile(name="work", gateway="https://vpn.example.com:8443", username="alice",
                          connect_at_start=True))
    passwords.set("work", "alice", "pw")
    parts = Gui(qtbot, run, service, profiles, passwords)
    try:
        assert run(parts.controller.start())
        parts.wait_state("connected")
        # The status is refreshed from the service just after the state change.
        qtbot.waitUntil(lambda: parts.controller.status.get("profile") == "work", timeout=5000)
    finally:
        parts.close()


def test_unreadable_ca_file_of_a_profile_is_a_notification_not_a_crash(gui, passwords, profiles, tmp_path):
    """The tray app reads the profile's CA file itself; a missing one is a 'Could not connect'
    notice naming the file, and nothing reaches the service."""
    missing = tmp_path / "gone.pem"
    profiles.save(Profile(name="work", gateway="https://vpn.example.com:8443", username="alice",
                          ca=str(missing)))
    passwords.set("work", "alice", "pw")
    instances = len(FakeEngine.instances)
    assert gui.run(gui.controller.connect_profile("work")) is False
    (note,) = [n for n in gui.notes if n[0] == "Could not connect"]
    assert str(missing) in note[1] and note[2] == "error"
    assert len(FakeEngine.instances) == instances
    assert gui.enabled()["Connect work"]
