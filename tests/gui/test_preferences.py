"""Preferences: the profile list model, the profile editor and add/edit/remove."""

from __future__ import annotations

import threading

from PySide6.QtCore import Qt, QTimer

from client.profiles import Profile
from gui.preferences import PreferencesDialog
from gui.profile_editor import ProfileEditor
from gui.profile_model import ProfileListModel, ProfileRole

PIN = "sha256:" + "ab" * 32


def test_model_lists_stored_profiles(profiles, qtmodeltester):
    """One row per stored profile, with its Profile under ProfileRole; the model is well-formed."""
    model = ProfileListModel(profiles)
    qtmodeltester.check(model)
    assert model.rowCount() == 3
    first = model.index(0)
    assert model.data(first, ProfileRole).name == "work"
    assert model.data(first) == "work — alice @ https://vpn.example.com:8443"
    assert "system CA store" in model.data(first, Qt.ItemDataRole.ToolTipRole)


def test_editor_validates_through_profile_rules(qtbot):
    """OK is enabled only for a valid, unused name and a well-formed gateway URL and pin."""
    editor = ProfileEditor(taken={"work"})
    qtbot.addWidget(editor)
    assert not editor.ok_button.isEnabled()
    editor.name.setText("work")
    editor.gateway.setText("https://vpn.example.net")
    editor.username.setText("bob")
    assert not editor.ok_button.isEnabled() and "already exists" in editor.error.text()
    editor.name.setText("home")
    assert editor.ok_button.isEnabled() and editor.error.text() == ""
    for bad in ("not a url at all", "http://vpn.example.net", "https://"):
        editor.gateway.setText(bad)
        assert not editor.ok_button.isEnabled() and editor.error.text(), bad
    editor.gateway.setText("https://vpn.example.net:8443")
    editor.trust_pin.setChecked(True)
    assert not editor.ok_button.isEnabled()
    editor.pin.setText("sha256:nothex")
    assert not editor.ok_button.isEnabled()
    editor.pin.setText(PIN)
    assert editor.ok_button.isEnabled()
    profile = editor.profile()
    assert (profile.name, profile.pin, profile.ca) == ("home", PIN, None)


def _filled_editor(qtbot) -> ProfileEditor:
    """A new-profile editor with name, gateway and user filled in."""
    editor = ProfileEditor()
    qtbot.addWidget(editor)
    editor.name.setText("lab")
    editor.gateway.setText("https://10.0.0.1")
    editor.username.setText("root")
    return editor


def test_editor_ca_file_and_pin_are_exclusive(qtbot):
    """Choosing the CA file disables the pin field and the profile carries only the CA."""
    editor = _filled_editor(qtbot)
    editor.pin.setText(PIN)
    editor.trust_ca.setChecked(True)
    assert not editor.pin.isEnabled() and editor.ca.isEnabled()
    assert not editor.ok_button.isEnabled()
    editor.ca.setText("/etc/tunnelgate/ca.crt")
    editor.connect_at_start.setChecked(True)
    profile = editor.profile()
    assert (profile.ca, profile.pin, profile.connect_at_start) == ("/etc/tunnelgate/ca.crt", None, True)


def test_add_profile_saves_it(qtbot, profiles, passwords):
    """Add… opens an editor whose accepted profile lands in the store and the list."""
    dialog = PreferencesDialog(profiles, passwords)
    qtbot.addWidget(dialog)
    dialog.add_button.click()
    editor = dialog.editor
    editor.name.setText("home")
    editor.gateway.setText("https://home.example.org")
    editor.username.setText("dave")
    with qtbot.waitSignal(dialog.profilesChanged, timeout=2000):
        editor.ok_button.click()
    assert profiles.get("home").username == "dave"
    assert dialog.model.rowCount() == 4 and dialog.selected_name() == "home"


def test_edit_profile_renames_and_moves_password(qtbot, profiles, passwords):
    """Editing a profile's name replaces it in the store and moves its saved password."""
    passwords.set("work", "alice", "pw")
    order = [p.name for p in profiles.load()]
    dialog = PreferencesDialog(profiles, passwords)
    qtbot.addWidget(dialog)
    dialog.select("work")
    dialog.edit_button.click()
    assert dialog.editor.name.text() == "work"
    dialog.editor.name.setText("office")
    with qtbot.waitSignal(dialog.profilesChanged, timeout=2000):
        dialog.editor.ok_button.click()
    assert profiles.get("work") is None and profiles.get("office").gateway == "https://vpn.example.com:8443"
    assert [p.name for p in profiles.load()] == ["office" if n == "work" else n for n in order]  # kept its place
    qtbot.waitUntil(lambda: passwords.get("work", "alice") is None, timeout=2000)   # a worker moves it
    assert passwords.get("office", "alice") == "pw"


def test_remove_profile_forgets_password_after_confirming(qtbot, profiles, passwords):
    """Remove asks first; a yes removes the profile and its keyring entry, a no keeps both."""
    passwords.set("otp", "carol", "pw")
    answers = [False, True]
    dialog = PreferencesDialog(profiles, passwords, confirm=lambda name: answers.pop(0))
    qtbot.addWidget(dialog)
    assert not dialog.remove_button.isEnabled()
    dialog.select("otp")
    dialog.remove_button.click()
    assert profiles.get("otp") is not None
    with qtbot.waitSignal(dialog.profilesChanged, timeout=2000):
        dialog.remove_button.click()
    assert profiles.get("otp") is None and dialog.model.rowCount() == 2
    qtbot.waitUntil(lambda: passwords.get("otp", "carol") is None, timeout=2000)   # a worker forgets it


class GatedPasswords:
    """A password store whose deletes wait until the Qt thread opens the gate (as a keyring
    unlock prompt would): on the Qt thread itself they would wait in vain."""

    def __init__(self, inner) -> None:
        self.inner, self.gate, self.timed_out = inner, threading.Event(), None

    def get(self, name, username):
        return self.inner.get(name, username)

    def set(self, name, username, password):
        self.inner.set(name, username, password)

    def delete(self, name, username):
        self.timed_out = not self.gate.wait(3.0)
        self.inner.delete(name, username)


def test_removing_a_profile_does_not_wait_for_the_keyring(qtbot, profiles, passwords):
    """The keyring is asked off the Qt thread: the dialog stays live while it waits."""
    passwords.set("otp", "carol", "pw")
    gated = GatedPasswords(passwords)
    dialog = PreferencesDialog(profiles, gated, confirm=lambda name: True)
    qtbot.addWidget(dialog)
    dialog.select("otp")
    QTimer.singleShot(100, gated.gate.set)
    dialog.remove_button.click()
    qtbot.waitUntil(lambda: gated.timed_out is not None, timeout=5000)
    assert gated.timed_out is False and passwords.get("otp", "carol") is None


def test_editor_refuses_a_ca_file_that_is_not_there(qtbot, tmp_path):
    """A CA file path that names no file keeps OK disabled and says so; an existing file is fine."""
    editor = _filled_editor(qtbot)
    editor.trust_ca.setChecked(True)
    editor.ca.setText(str(tmp_path / "missing.pem"))
    assert not editor.ok_button.isEnabled()
    assert editor.error.text() == f"there is no file {tmp_path / 'missing.pem'}"
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    editor.ca.setText(str(tmp_path / "ca.pem"))
    assert editor.ok_button.isEnabled() and editor.error.text() == ""


def test_editor_reconnect_window_shows_the_default_and_saves_only_a_change(qtbot):
    """A new profile shows the 120 s default and saves no reconnect_for; a value typed in is
    saved, 0 reads as "never"; an edited profile keeps a window the box cannot show
    (a fraction) while the box is left alone."""
    editor = _filled_editor(qtbot)
    assert editor.reconnect_for.value() == 120 and editor.profile().reconnect_for is None
    editor.reconnect_for.setValue(600)
    assert editor.profile().reconnect_for == 600
    editor.reconnect_for.setValue(0)
    assert editor.reconnect_for.text().startswith("never") and editor.profile().reconnect_for == 0
    assert editor.ok_button.isEnabled()
    kept = ProfileEditor(Profile(name="lab", gateway="https://10.0.0.1", username="root",
                                 reconnect_for=2.5))
    qtbot.addWidget(kept)
    assert kept.reconnect_for.value() == 2 and kept.profile().reconnect_for == 2.5
    kept.reconnect_for.setValue(30)
    assert kept.profile().reconnect_for == 30
