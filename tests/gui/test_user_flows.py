"""What a user runs into beyond the happy path: a refused password, a second click on
Connect, quitting while connected or while a question is open, a question outliving its
attempt, the service going away, a slow keyring."""

from __future__ import annotations

import threading

import keyring.backend
import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QMessageBox

from client.profiles import Profile
from gui.app import App, parse_args
from gui.cert_dialog import CertificateDialog
from gui.login_dialog import LoginDialog
from tests.client.control.fakes import REFUSED, FakeEngine
from tests.gui.conftest import TIMEOUT_MS
from tests.gui.test_service_flows import Gui


@pytest.fixture
def gui(qtbot, run, service, profiles, passwords):
    """The app's parts, started against the running service, with a "bad" profile (password
    refused) and a "parrot" one (another login failure, in the words of a refused password)."""
    profiles.save(Profile(name="bad", gateway="https://vpn.example.com", username="mallory"))
    profiles.save(Profile(name="parrot", gateway="https://vpn.example.com", username="parrot"))
    parts = Gui(qtbot, run, service, profiles, passwords)
    assert run(parts.controller.start())
    yield parts
    parts.close()


def test_refused_saved_password_is_forgotten_and_asked_again(gui, passwords):
    """A keyring password the gateway refuses (error kind wrong_credentials) is deleted, and the
    login dialog opens again saying why."""
    passwords.set("bad", "mallory", "old password")
    gui.tray.connect_actions["bad"].trigger()
    login = gui.dialog(LoginDialog)
    assert login.error.isVisibleTo(login) and login.error.text() == REFUSED
    assert login.password.text() == ""
    assert passwords.get("bad", "mallory") is None
    assert FakeEngine.instances[-1].password == "old password"
    login.reject()


def test_other_failure_in_the_same_words_does_not_ask_again(gui, passwords):
    """A failure whose kind is not wrong_credentials keeps the saved password and opens no
    login dialog, though its text is that of a refused password."""
    passwords.set("parrot", "parrot", "saved")
    gui.run(gui.controller.connect_profile("parrot"))
    gui.wait_state("failed")
    assert gui.controller.status["error_kind"] == "login_failed"
    assert ("Connection failed", REFUSED, "error") in gui.notes
    gui.qtbot.wait(300)      # a second attempt would have opened its dialog by now
    assert gui.prompts.current is None and gui.controller.is_idle()
    assert passwords.get("parrot", "parrot") == "saved"


def test_remembered_password_is_stored_only_once_accepted(gui, passwords):
    """"Remember password" with a refused password stores nothing; with an accepted one it is stored."""
    gui.tray.connect_actions["bad"].trigger()
    login = gui.dialog(LoginDialog)
    assert not login.error.isVisibleTo(login)
    login.password.setText("typo")
    login.remember.setChecked(True)
    login.ok_button.click()
    gui.wait(lambda: isinstance(gui.prompts.current, LoginDialog) and gui.prompts.current is not login)
    assert passwords.get("bad", "mallory") is None
    gui.prompts.current.reject()
    gui.wait(lambda: gui.enabled()["Connect work"])

    gui.tray.connect_actions["work"].trigger()
    login = gui.dialog(LoginDialog)
    login.password.setText("right")
    login.remember.setChecked(True)
    login.ok_button.click()
    gui.wait_state("connected")
    gui.wait(lambda: passwords.get("work", "alice") == "right")
    # The notification names this attempt's profile, not the failed one before it.
    assert ("Connected", "work: address 10.200.0.2/24", "info") in gui.notes


def test_connect_is_disabled_while_the_login_dialog_asks(gui):
    """While a login dialog is open, Connect entries are disabled and a second request opens no second dialog."""
    gui.tray.connect_actions["work"].trigger()
    login = gui.dialog(LoginDialog)
    assert not gui.enabled()["Connect work"] and not gui.enabled()["Connect otp"]
    assert gui.run(gui.controller.connect_profile("otp")) is False
    assert gui.prompts.current is login
    login.reject()
    gui.wait(lambda: gui.enabled()["Connect work"])
    assert not any(note[0] == "Could not connect" for note in gui.notes)


def test_attempt_end_closes_its_question(gui, passwords):
    """Disconnecting while the certificate question is open closes that dialog."""
    passwords.set("odd", "alice", "pw")
    gui.run(gui.controller.connect_profile("odd"))
    gui.dialog(CertificateDialog)
    gui.tray.disconnect_action.trigger()
    gui.wait_state("disconnected")
    gui.wait(lambda: gui.prompts.current is None)


def test_service_lost_blanks_the_session_and_says_why(qtbot, run, service, profiles, passwords):
    """When the service goes away while connected, the status window drops the old session and says why."""
    parts = Gui(qtbot, run, service, profiles, passwords)
    try:
        passwords.set("work", "alice", "pw")
        assert run(parts.controller.start())
        run(parts.controller.connect_profile("work"))
        parts.wait(lambda: parts.window.address.text() == "10.200.0.2/24")
        run(service.close())
        parts.wait(lambda: not parts.controller.available)
        assert parts.window.state.text() == "disconnected"
        assert parts.window.address.text() == "—" and parts.window.networks.text() == "—"
        assert "lost the connection to the Tunnelgate service" in parts.window.detail.text()
    finally:
        parts.close()


def test_failed_tooltip_says_why(gui):
    """After a failed attempt the tray tooltip carries the reason, not only "failed"."""
    gui.run.start(gui.controller.connect_profile("odd"))    # no password stored: the dialog asks
    login = gui.dialog(LoginDialog)
    login.password.setText("pw")
    login.ok_button.click()
    gui.dialog(CertificateDialog).cancel_button.click()
    gui.wait_state("failed")
    assert gui.tray.icon.toolTip() == "Tunnelgate: connection failed — certificate not trusted"


class GatedKeyring(keyring.backend.KeyringBackend):
    """A keyring whose reads wait until the Qt thread opens the gate (as an unlock prompt would)."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.timed_out = False

    def get_password(self, service, username):
        self.timed_out = not self.gate.wait(3.0)
        return "pw"

    def set_password(self, service, username, password):
        pass

    def delete_password(self, service, username):
        pass


def test_a_slow_keyring_does_not_freeze_the_app(gui, memory_keyring):
    """Reading the keyring happens off the Qt thread: Qt timers still run while it waits."""
    ring = GatedKeyring()
    keyring.set_keyring(ring)
    try:
        QTimer.singleShot(100, ring.gate.set)
        assert gui.run(gui.controller.connect_profile("work")) is True
        assert not ring.timed_out
        gui.wait_state("connected")
    finally:
        keyring.set_keyring(memory_keyring)


# -- quitting --------------------------------------------------------------------


@pytest.fixture
def app(qtbot, run, service, profiles, passwords):
    """The whole app (no tray in offscreen Qt) running against the service, "work" connected."""
    passwords.set("work", "alice", "pw")
    args = parse_args(["--no-tray", "--socket", str(service.socket_path),
                       "--profiles", str(profiles.path)])
    the_app = run(_make_app(args))
    task = run.start(the_app.run())
    qtbot.waitUntil(lambda: the_app.controller.available, timeout=TIMEOUT_MS)
    the_app.task = task
    yield the_app
    the_app.quit()
    qtbot.waitUntil(task.done, timeout=TIMEOUT_MS)


async def _make_app(args):
    from PySide6.QtWidgets import QApplication
    return App(QApplication.instance(), args)


def _connect_work(app, qtbot, run):
    run(app.controller.connect_profile("work"))
    qtbot.waitUntil(lambda: app.controller.state == "connected", timeout=TIMEOUT_MS)


def _quit_box(app, qtbot) -> QMessageBox:
    app.request_quit()
    qtbot.waitUntil(lambda: isinstance(app.prompts.current, QMessageBox), timeout=TIMEOUT_MS)
    box = app.prompts.current
    assert "connected to work" in box.text()
    return box


def _click(box: QMessageBox, text: str) -> None:
    (button,) = [b for b in box.buttons() if b.text().replace("&", "") == text]
    button.click()


def test_quit_while_connected_can_disconnect_first(app, qtbot, run, service):
    """Quit while connected asks; "Disconnect and quit" ends the session, then the app."""
    _connect_work(app, qtbot, run)
    _click(_quit_box(app, qtbot), "Disconnect and quit")
    qtbot.waitUntil(app.task.done, timeout=TIMEOUT_MS)
    assert service.host.state.value == "disconnected"


def test_quit_while_connected_can_stay_connected_or_cancel(app, qtbot, run, service):
    """Cancel keeps the app running; "Quit, stay connected" ends the app and leaves the session up."""
    _connect_work(app, qtbot, run)
    _click(_quit_box(app, qtbot), "Cancel")
    qtbot.wait(200)
    assert not app.task.done()
    _click(_quit_box(app, qtbot), "Quit, stay connected")
    qtbot.waitUntil(app.task.done, timeout=TIMEOUT_MS)
    assert service.host.state.value == "connected"
    run(service.host.disconnect())


def test_quit_when_disconnected_does_not_ask(app, qtbot):
    """With no session, Quit ends the app at once."""
    app.request_quit()
    qtbot.waitUntil(app.task.done, timeout=TIMEOUT_MS)


def test_quitting_during_a_question_answers_cancel(app, qtbot, run, passwords):
    """Quitting while the certificate question is open tells the service at once (not after its timeout)."""
    passwords.set("odd", "alice", "pw")
    run(app.controller.connect_profile("odd"))
    qtbot.waitUntil(lambda: isinstance(app.prompts.current, CertificateDialog), timeout=TIMEOUT_MS)
    engine = FakeEngine.instances[-1]
    app.quit()
    qtbot.waitUntil(app.task.done, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: engine.trust_decision == "cancel", timeout=3000)   # prompt_timeout is 30 s


def test_quit_works_while_the_connect_at_start_login_dialog_is_open(qtbot, run, service, profiles):
    """The login dialog of a connect-at-start profile does not keep Quit (or SIGTERM) from ending the app."""
    profiles.save(Profile(name="work", gateway="https://vpn.example.com:8443", username="alice",
                          connect_at_start=True))
    args = parse_args(["--no-tray", "--socket", str(service.socket_path),
                       "--profiles", str(profiles.path)])
    the_app = run(_make_app(args))
    task = run.start(the_app.run())
    qtbot.waitUntil(lambda: isinstance(the_app.prompts.current, LoginDialog), timeout=TIMEOUT_MS)
    the_app.quit()
    qtbot.waitUntil(task.done, timeout=TIMEOUT_MS)
    assert the_app.prompts.current is None and service.host.state.value == "disconnected"


def test_a_profiles_reconnect_window_reaches_the_service(gui, profiles, passwords):
    """Connecting a profile with reconnect_for 0 gives the service's engine no resume attempts;
    one without it gets the default window."""
    from client.resume_pacing import RECONNECT_FOR, reconnect_delays
    profiles.save(Profile(name="brief", gateway="https://vpn.example.com", username="alice",
                          reconnect_for=0))
    for name, window in (("brief", 0), ("work", RECONNECT_FOR)):
        passwords.set(name, "alice", "saved")
        assert gui.run(gui.controller.connect_profile(name))
        gui.wait_state("connected")
        assert FakeEngine.instances[-1].options.reconnect_delays == reconnect_delays(window)
        gui.run(gui.controller.disconnect())
        gui.wait_state("disconnected")
