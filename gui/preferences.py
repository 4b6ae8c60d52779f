"""The preferences window: list, add, edit and remove connection profiles.

Add and Edit open a ProfileEditor (with ``open()``, so the asyncio loop keeps
running); removing a profile also forgets its password in the keyring.
``confirm`` decides whether a removal goes ahead (a question box by default).
"""

from __future__ import annotations

import logging
import threading
import typing

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QHBoxLayout, QListView, QMessageBox, QPushButton, QVBoxLayout,
    QWidget,
)

from client.errors import ClientError
from gui.icons import app_icon
from gui.profile_editor import ProfileEditor
from gui.profile_model import ProfileListModel

log = logging.getLogger(__name__)


class PreferencesDialog(QDialog):
    """Profiles, with Add / Edit / Remove."""

    profilesChanged = Signal()
    """A profile was added, edited or removed."""
    editorShown = Signal(QDialog)
    """A ProfileEditor was opened."""

    def __init__(self, store, passwords, parent: QWidget | None = None,
                 confirm: typing.Callable[[str], bool] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Tunnelgate — preferences")
        self.setWindowIcon(app_icon())
        self.resize(560, 320)
        self.passwords = passwords
        self._confirm = confirm or self._ask_remove
        self.model = ProfileListModel(store, self)
        self.view = QListView()
        self.view.setModel(self.model)
        self.view.doubleClicked.connect(lambda _index: self.edit_selected())
        self.editor: ProfileEditor | None = None
        """The editor on screen, if any."""

        self.add_button = QPushButton("Add…")
        self.edit_button = QPushButton("Edit…")
        self.remove_button = QPushButton("Remove")
        self.add_button.clicked.connect(self.add)
        self.edit_button.clicked.connect(self.edit_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        buttons = QVBoxLayout()
        for button in (self.add_button, self.edit_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.view, 1)
        row.addLayout(buttons)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(close)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self._enable())
        self.model.modelReset.connect(self._enable)
        self._enable()

    def select(self, name: str) -> None:
        """Select the profile called ``name``."""
        row = self.model.row_of(name)
        if row >= 0:
            self.view.setCurrentIndex(self.model.index(row))

    def selected_name(self) -> str | None:
        """The selected profile's name, or None."""
        index = self.view.currentIndex()
        return self.model.profile(index.row()).name if index.isValid() else None

    def add(self) -> None:
        """Open an empty editor; a valid profile is saved on OK."""
        self._open_editor(None)

    def edit_selected(self) -> None:
        """Open the editor on the selected profile."""
        index = self.view.currentIndex()
        if index.isValid():
            self._open_editor(self.model.profile(index.row()))

    def remove_selected(self) -> None:
        """Remove the selected profile (and its saved password) after confirming."""
        index = self.view.currentIndex()
        if not index.isValid():
            return
        profile = self.model.profile(index.row())
        if not self._confirm(profile.name):
            return
        self.model.remove(profile.name)
        self._keyring(lambda: self.passwords.delete(profile.name, profile.username),
                      f"forget the password of {profile.name}")
        self.profilesChanged.emit()

    def _open_editor(self, profile) -> None:
        taken = {self.model.profile(r).name for r in range(self.model.rowCount())}
        editor = ProfileEditor(profile, taken, self)
        editor.accepted.connect(lambda: self._save(editor))
        editor.finished.connect(lambda _r: self._editor_closed(editor))
        self.editor = editor
        editor.open()
        self.editorShown.emit(editor)

    def _save(self, editor: ProfileEditor) -> None:
        profile = editor.profile()
        old = editor.original
        self.model.save(profile, replacing=old.name if old else None)
        if old is not None and (old.name, old.username) != (profile.name, profile.username):
            self._move_password(old, profile)
        self.select(profile.name)
        self.profilesChanged.emit()

    def _move_password(self, old, new) -> None:
        def move() -> None:
            password = self.passwords.get(old.name, old.username)
            if password is not None:
                self.passwords.set(new.name, new.username, password)
            self.passwords.delete(old.name, old.username)
        self._keyring(move, f"move the saved password of {old.name}")

    def _keyring(self, work: typing.Callable[[], None], what: str) -> None:
        """Keyring work in a worker thread: an unlock prompt must not freeze the app.
        A failure is logged, as there is nobody left to tell."""
        def run() -> None:
            try:
                work()
            except ClientError as exc:
                log.warning("could not %s: %s", what, exc)
        threading.Thread(target=run, name="keyring", daemon=True).start()

    def _editor_closed(self, editor: ProfileEditor) -> None:
        if self.editor is editor:
            self.editor = None
        editor.deleteLater()

    def _enable(self) -> None:
        has = self.view.currentIndex().isValid()
        self.edit_button.setEnabled(has)
        self.remove_button.setEnabled(has)

    def _ask_remove(self, name: str) -> bool:
        answer = QMessageBox.question(self, "Remove profile",
                                      f"Remove the profile {name!r} and its saved password?")
        return answer == QMessageBox.StandardButton.Yes
