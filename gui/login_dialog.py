"""Asks for a user name and password before connecting a profile.

OK stays disabled until both fields hold something. "Remember password"
only reports the user's choice: the caller stores the password in the
keyring (PasswordStore) once the gateway has accepted it. ``error`` says why
the dialog asks again (the gateway refused the last password).
"""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout, QWidget,
)

from gui.icons import app_icon


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What the login dialog returns."""

    username: str
    """The user name, stripped of surrounding blanks."""
    password: str = dataclasses.field(repr=False)
    """The password exactly as typed (never logged, never shown)."""
    remember: bool
    """Whether to keep the password in the keyring."""


class LoginDialog(QDialog):
    """User name, password and "Remember password", with OK and Cancel."""

    def __init__(self, profile: str, gateway: str, username: str = "",
                 parent: QWidget | None = None, error: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Tunnelgate — sign in to {profile}")
        self.setWindowIcon(app_icon())
        self.setMinimumWidth(380)

        intro = QLabel(f"Sign in to <b>{_escape(gateway)}</b>")
        self.error = QLabel(error)
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b3261e")
        self.error.setVisible(bool(error))
        self.username = QLineEdit(username)
        self.username.setObjectName("username")
        self.password = QLineEdit()
        self.password.setObjectName("password")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.remember = QCheckBox("Remember password")
        self.remember.setObjectName("remember")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("User name:", self.username)
        form.addRow("Password:", self.password)
        form.addRow("", self.remember)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.error)
        layout.addLayout(form)
        layout.addWidget(self.buttons)

        self.username.textChanged.connect(self._validate)
        self.password.textChanged.connect(self._validate)
        self._validate()
        (self.password if username else self.username).setFocus()

    @property
    def ok_button(self):
        """The OK button (enabled only when the form is complete)."""
        return self.buttons.button(QDialogButtonBox.StandardButton.Ok)

    def is_complete(self) -> bool:
        """True when a user name and a password were entered."""
        return bool(self.username.text().strip()) and bool(self.password.text())

    def credentials(self) -> Credentials:
        """The entered values (meaningful once the dialog was accepted)."""
        return Credentials(self.username.text().strip(), self.password.text(),
                           self.remember.isChecked())

    def accept(self) -> None:
        if self.is_complete():
            super().accept()

    def _validate(self) -> None:
        self.ok_button.setEnabled(self.is_complete())


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
