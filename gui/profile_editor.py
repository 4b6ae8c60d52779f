"""Edits one profile: name, gateway URL, user, CA file or pin, connect at start, and how
long to keep trying to get a lost session back.

The fields are checked by building a ``Profile`` (the one place the rules
live); its error is shown under the form and OK stays disabled until the
profile is valid and its name is not taken by another profile.
"""

from __future__ import annotations

import os

from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
    QLabel, QLineEdit, QPushButton, QRadioButton, QSpinBox, QVBoxLayout, QWidget,
)

from client.errors import ClientError
from client.profiles import MAX_RECONNECT_FOR, Profile
from client.resume_pacing import RECONNECT_FOR
from gui.icons import app_icon


class ProfileEditor(QDialog):
    """A form for one profile; ``profile()`` builds it once accepted."""

    def __init__(self, profile: Profile | None = None, taken: set[str] | frozenset = frozenset(),
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.original = profile
        """The profile being edited (None when adding)."""
        self._taken = set(taken) - ({profile.name} if profile else set())
        self.setWindowTitle("Edit profile" if profile else "Add profile")
        self.setWindowIcon(app_icon())
        self.setMinimumWidth(460)

        self.name = QLineEdit(profile.name if profile else "")
        self.gateway = QLineEdit(profile.gateway if profile else "")
        self.gateway.setPlaceholderText("https://vpn.example.com:443")
        self.username = QLineEdit(profile.username if profile else "")
        self.trust_system = QRadioButton("System CA store")
        self.trust_ca = QRadioButton("CA file:")
        self.trust_pin = QRadioButton("Pinned fingerprint:")
        self.trust_group = QButtonGroup(self)
        for button in (self.trust_system, self.trust_ca, self.trust_pin):
            self.trust_group.addButton(button)
        self.ca = QLineEdit(profile.ca or "" if profile else "")
        self.ca_browse = QPushButton("Browse…")
        self.ca_browse.clicked.connect(self._browse)
        self.pin = QLineEdit(profile.pin or "" if profile else "")
        self.pin.setPlaceholderText("sha256:…")
        self.connect_at_start = QCheckBox("Connect when the tray app starts")
        self.connect_at_start.setChecked(bool(profile and profile.connect_at_start))
        self.reconnect_for = QSpinBox()
        self.reconnect_for.setRange(0, MAX_RECONNECT_FOR)
        self.reconnect_for.setSuffix(" s")
        self.reconnect_for.setSpecialValueText("never: give up at once")
        self.reconnect_for.setToolTip("How long to keep trying to get the session back when the "
                                      "connection drops, before giving up and restoring the network")
        self._saved_window = profile.reconnect_for if profile else None
        self.reconnect_for.setValue(int(RECONNECT_FOR if self._saved_window is None else self._saved_window))
        self._shown_window = self.reconnect_for.value()
        (self.trust_pin if profile and profile.pin else
         self.trust_ca if profile and profile.ca else self.trust_system).setChecked(True)

        ca_row = QHBoxLayout()
        ca_row.addWidget(self.ca, 1)
        ca_row.addWidget(self.ca_browse)
        form = QFormLayout()
        form.addRow("Name:", self.name)
        form.addRow("Gateway URL:", self.gateway)
        form.addRow("User name:", self.username)
        form.addRow("Trust:", self.trust_system)
        form.addRow(self.trust_ca, ca_row)
        form.addRow(self.trust_pin, self.pin)
        form.addRow("", self.connect_at_start)
        form.addRow("Reconnect for:", self.reconnect_for)
        self.error = QLabel("")
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b3261e")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

        for field in (self.name, self.gateway, self.username, self.ca, self.pin):
            field.textChanged.connect(self._validate)
        self.trust_group.buttonToggled.connect(self._validate)
        self.connect_at_start.toggled.connect(self._validate)
        self.reconnect_for.valueChanged.connect(self._validate)
        self._validate()

    @property
    def ok_button(self):
        """OK (enabled only for a valid profile)."""
        return self.buttons.button(QDialogButtonBox.StandardButton.Ok)

    def problem(self) -> str | None:
        """Why the form does not make a valid profile, or None."""
        try:
            profile = self._build()
        except ClientError as exc:
            return str(exc)
        if not profile.gateway.startswith("https://") or any(c.isspace() for c in profile.gateway):
            return "the gateway URL reads https://HOST or https://HOST:PORT"
        if profile.name in self._taken:
            return f"a profile named {profile.name!r} already exists"
        if self.trust_ca.isChecked() and not profile.ca:
            return "choose the CA file, or trust the system CA store"
        if profile.ca and not os.path.isfile(profile.ca):   # read as given when connecting
            return f"there is no file {profile.ca}"
        if self.trust_pin.isChecked() and not profile.pin:
            return "enter the fingerprint to pin, or trust the system CA store"
        return None

    def profile(self) -> Profile:
        """The profile the form describes (raises UsageError when invalid)."""
        return self._build()

    def accept(self) -> None:
        if self.problem() is None:
            super().accept()

    def _build(self) -> Profile:
        ca = self.ca.text().strip() if self.trust_ca.isChecked() else ""
        pin = self.pin.text().strip() if self.trust_pin.isChecked() else ""
        return Profile(name=self.name.text().strip(), gateway=self.gateway.text().strip(),
                       username=self.username.text().strip(), ca=ca or None, pin=pin or None,
                       connect_at_start=self.connect_at_start.isChecked(),
                       reconnect_for=self._window())

    def _window(self) -> int | float | None:
        """The reconnect window to save: what the profile had (None: the default, or a
        fraction the spin box cannot show) while the box still shows it, else the box's."""
        value = self.reconnect_for.value()
        return self._saved_window if value == self._shown_window else value

    def _validate(self, *_args) -> None:
        self.ca.setEnabled(self.trust_ca.isChecked())
        self.ca_browse.setEnabled(self.trust_ca.isChecked())
        self.pin.setEnabled(self.trust_pin.isChecked())
        problem = self.problem()
        self.error.setText(problem or "")
        self.ok_button.setEnabled(problem is None)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CA certificate", self.ca.text(),
                                              "Certificates (*.crt *.pem *.cer);;All files (*)")
        if path:
            self.ca.setText(path)
