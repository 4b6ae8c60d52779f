"""Asks for a one-time code (TOTP) during login: digits only, 6 to 8 of them."""

from __future__ import annotations

from PySide6.QtCore import QRegularExpression
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QLabel, QLineEdit, QVBoxLayout, QWidget,
)

from gui.fonts import monospace_font
from gui.icons import app_icon

MIN_DIGITS = 6
MAX_DIGITS = 8


class OtpDialog(QDialog):
    """A prompt and one code field; OK only once the code has 6–8 digits."""

    def __init__(self, prompt: str = "One-time code", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Tunnelgate — one-time code")
        self.setWindowIcon(app_icon())
        self.prompt = QLabel(prompt or "One-time code")
        self.code = QLineEdit()
        self.code.setObjectName("code")
        self.code.setMaxLength(MAX_DIGITS)
        self.code.setValidator(QRegularExpressionValidator(
            QRegularExpression(f"[0-9]{{0,{MAX_DIGITS}}}"), self.code))
        self.code.setPlaceholderText("123456")
        font = monospace_font()
        font.setPointSize(font.pointSize() + 4)
        self.code.setFont(font)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.prompt)
        layout.addWidget(self.code)
        layout.addWidget(self.buttons)
        self.code.textChanged.connect(self._validate)
        self._validate()
        self.code.setFocus()

    @property
    def ok_button(self):
        """The OK button (enabled only for a well-formed code)."""
        return self.buttons.button(QDialogButtonBox.StandardButton.Ok)

    def is_valid(self) -> bool:
        """True when the field holds 6 to 8 digits."""
        text = self.code.text()
        return text.isdigit() and text.isascii() and MIN_DIGITS <= len(text) <= MAX_DIGITS

    def value(self) -> str:
        """The entered code."""
        return self.code.text()

    def accept(self) -> None:
        if self.is_valid():
            super().accept()

    def _validate(self) -> None:
        self.ok_button.setEnabled(self.is_valid())
