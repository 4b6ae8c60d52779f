"""The controller's questions to the user, answered with dialogs.

Each method opens its dialog window-modally with ``open()`` (never a nested
``exec()``, which would re-enter the asyncio loop that qasync runs on Qt's)
and awaits the dialog's ``finished`` signal through a future. The dialog on
screen is ``current`` and is also announced by ``dialogShown``, so tests and
the screenshot script can fill it in like a user would.
"""

from __future__ import annotations

import asyncio

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QDialog, QMessageBox, QWidget

from gui.cert_dialog import CANCEL, CertificateDialog
from gui.icons import app_icon
from gui.login_dialog import Credentials, LoginDialog
from gui.otp_dialog import OtpDialog


class DialogPrompts(QObject):
    """Asks with LoginDialog, OtpDialog and CertificateDialog."""

    dialogShown = Signal(QDialog)
    """A question's dialog was just opened."""

    def __init__(self, parent_widget: QWidget | None = None) -> None:
        super().__init__()
        self._parent_widget = parent_widget
        self.current: QDialog | None = None
        """The dialog waiting for the user, if any."""

    async def login(self, profile: str, gateway: str, username: str,
                    error: str = "") -> Credentials | None:
        """User name and password for a profile; None when cancelled. ``error``: why asked again."""
        dialog = LoginDialog(profile, gateway, username, self._parent_widget, error=error)
        if await self._ask(dialog):
            return dialog.credentials()
        return None

    async def one_time_code(self, prompt: str) -> str | None:
        """A one-time code; None when cancelled."""
        dialog = OtpDialog(prompt, self._parent_widget)
        if await self._ask(dialog):
            return dialog.value()
        return None

    async def certificate(self, info: dict) -> str:
        """``once``, ``always`` or ``cancel`` for an untrusted server."""
        dialog = CertificateDialog(info, self._parent_widget)
        accepted = await self._ask(dialog)
        return dialog.decision() if accepted else CANCEL

    async def quit_while_connected(self, what: str) -> str:
        """``disconnect``, ``stay`` (quit, the session stays up) or ``cancel`` (do not quit).

        ``what`` is where things stand, e.g. "Tunnelgate is connected to work."
        """
        box = QMessageBox(QMessageBox.Icon.Question, "Tunnelgate — quit",
                          f"{what}\n\nDisconnect before quitting? If you stay connected, the "
                          "connection keeps running without the tray icon; disconnect later "
                          "with: tunnelgate disconnect", parent=self._parent_widget)
        box.setWindowIcon(app_icon())
        disconnect = box.addButton("Disconnect and quit", QMessageBox.ButtonRole.AcceptRole)
        stay = box.addButton("Quit, stay connected", QMessageBox.ButtonRole.DestructiveRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(disconnect)
        box.setEscapeButton(cancel)
        await self._ask(box)
        clicked = box.clickedButton()
        return "disconnect" if clicked is disconnect else "stay" if clicked is stay else CANCEL

    def raise_current(self) -> None:
        """Bring the dialog waiting for the user to the front (asked again)."""
        if self.current is not None:
            self.current.raise_()
            self.current.activateWindow()

    def cancel(self) -> None:
        """Close the dialog on screen as if the user pressed Cancel."""
        if self.current is not None:
            self.current.reject()

    async def _ask(self, dialog: QDialog) -> bool:
        future = asyncio.get_running_loop().create_future()

        def finished(result: int) -> None:
            if not future.done():
                future.set_result(result == QDialog.DialogCode.Accepted)

        dialog.finished.connect(finished)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.current = dialog
        dialog.open()
        dialog.raise_()
        dialog.activateWindow()
        self.dialogShown.emit(dialog)
        try:
            return await future
        finally:
            if not future.done():  # the waiting task was cancelled
                dialog.reject()
            self.current = None
            dialog.hide()
            dialog.deleteLater()
