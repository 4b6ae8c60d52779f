"""Asks whether to trust a gateway whose certificate could not be verified.

Shows host, subject, issuer and SHA-256 fingerprint (monospace, selectable so
the user can compare it with what the administrator sent) and returns one of
the control API's decisions: ``once``, ``always`` or ``cancel``. Pinning the
fingerprint in the profile on ``always`` is the caller's job.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget,
)

from gui.fonts import monospace_font
from gui.icons import app_icon

ONCE, ALWAYS, CANCEL = "once", "always", "cancel"


def format_fingerprint(fingerprint: str) -> str:
    """``sha256:abcd…`` -> ``AB:CD:…`` in two lines, as people compare them."""
    hexpart = fingerprint.split(":", 1)[1] if fingerprint.lower().startswith("sha256:") else fingerprint
    hexpart = hexpart.replace(":", "").upper()
    pairs = [hexpart[i:i + 2] for i in range(0, len(hexpart), 2)]
    half = (len(pairs) + 1) // 2
    return ":".join(pairs[:half]) + ("\n" + ":".join(pairs[half:]) if pairs[half:] else "")


class CertificateDialog(QDialog):
    """Trust once / Always trust / Cancel for an unknown server certificate."""

    def __init__(self, info: dict, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Tunnelgate — unknown server")
        self.setWindowIcon(app_icon())
        self._decision = CANCEL
        mono = monospace_font()

        heading = QLabel(
            "<b>The server's certificate is not trusted.</b><br>"
            "Check the fingerprint with your administrator before trusting it.")
        heading.setWordWrap(True)
        self.reason = QLabel(info.get("reason", ""))
        self.reason.setTextFormat(Qt.TextFormat.PlainText)   # from the server: never markup
        self.reason.setWordWrap(True)
        self.host = self._value(info.get("host", ""))
        self.subject = self._value(info.get("subject", ""))
        self.issuer = self._value(info.get("issuer", ""))
        self.fingerprint = self._value(format_fingerprint(info.get("fingerprint", "")))
        self.fingerprint.setFont(mono)
        self.fingerprint.setObjectName("fingerprint")

        form = QFormLayout()
        form.addRow("Host:", self.host)
        form.addRow("Subject:", self.subject)
        form.addRow("Issuer:", self.issuer)
        form.addRow("SHA-256:", self.fingerprint)

        self.buttons = QDialogButtonBox()
        self.once_button = QPushButton("Trust once")
        self.always_button = QPushButton("Always trust")
        self.cancel_button = QPushButton("Cancel")
        self.buttons.addButton(self.always_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.addButton(self.once_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.RejectRole)
        self.once_button.clicked.connect(lambda: self._decide(ONCE))
        self.always_button.clicked.connect(lambda: self._decide(ALWAYS))
        self.cancel_button.clicked.connect(lambda: self._decide(CANCEL))
        # The safe choice is the default: Enter must never trust a server.
        for button in (self.once_button, self.always_button):
            button.setAutoDefault(False)
        self.cancel_button.setDefault(True)
        self.cancel_button.setFocus()

        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        if self.reason.text():
            layout.addWidget(self.reason)
        layout.addLayout(form)
        layout.addWidget(self.buttons)

    def decision(self) -> str:
        """``once``, ``always`` or ``cancel`` (also after Escape or closing)."""
        return self._decision

    def _decide(self, decision: str) -> None:
        self._decision = decision
        if decision == CANCEL:
            self.reject()
        else:
            self.accept()

    def reject(self) -> None:
        self._decision = CANCEL   # Escape and the close button mean "cancel" too
        super().reject()

    @staticmethod
    def _value(text: str) -> QLabel:
        label = QLabel(text)
        label.setTextFormat(Qt.TextFormat.PlainText)   # from the certificate: never markup
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                      | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        label.setWordWrap(True)
        return label
