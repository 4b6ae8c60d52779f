"""The tray icon: its look follows the state, its menu offers what can be done.

Menu, top to bottom: a disabled line saying where things stand (or, when the
service is not running, how to start it), "Connect <name>" for each profile
(enabled only when idle, the service is there and no login dialog is
already asking for a connection), "Disconnect" (enabled
while a session is up or being made), "Status…", "Preferences…", "Quit".
The controller's notifications become balloon messages (``showMessage``).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from gui.controller import Controller
from gui.controller_types import ERROR, IDLE_STATES
from gui.icons import icon_kind, state_icon

NOTIFY_MS = 5000


class Tray(QObject):
    """QSystemTrayIcon plus its menu, kept in step with a Controller."""

    statusRequested = Signal()
    """The user chose "Status…" (or clicked the icon)."""
    preferencesRequested = Signal()
    """The user chose "Preferences…"."""
    quitRequested = Signal()
    """The user chose "Quit"."""

    def __init__(self, controller: Controller, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.menu = QMenu()
        self.menu.setObjectName("trayMenu")
        self.icon = QSystemTrayIcon(self)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        self.header = QAction(self)
        self.header.setEnabled(False)
        self.disconnect_action = QAction("Disconnect", self)
        self.disconnect_action.triggered.connect(controller.request_disconnect)
        self.status_action = QAction("Status…", self)
        self.status_action.triggered.connect(self.statusRequested)
        self.preferences_action = QAction("Preferences…", self)
        self.preferences_action.triggered.connect(self.preferencesRequested)
        self.quit_action = QAction("Quit", self)
        self.quit_action.triggered.connect(self.quitRequested)
        self.connect_actions: dict[str, QAction] = {}
        """"Connect <name>" per profile, by profile name."""

        controller.profilesChanged.connect(self.rebuild)
        controller.serviceChanged.connect(lambda *_: self.refresh())
        controller.stateChanged.connect(lambda *_: self.refresh())
        controller.statusChanged.connect(lambda *_: self.refresh())
        controller.flowChanged.connect(lambda *_: self.refresh())
        controller.notified.connect(self.notify)
        self.rebuild()

    @property
    def kind(self) -> str:
        """The look the icon has now: disconnected, connecting, connected or error."""
        return self._kind

    def show(self) -> None:
        """Put the icon in the tray."""
        self.icon.show()

    def hide(self) -> None:
        """Take the icon out of the tray."""
        self.icon.hide()

    def rebuild(self) -> None:
        """Recreate the menu (profiles changed)."""
        self.menu.clear()
        for action in self.connect_actions.values():
            action.deleteLater()
        self.connect_actions = {}
        self.menu.addAction(self.header)
        self.menu.addSeparator()
        names = self.controller.profile_names()
        for name in names:
            action = QAction(f"Connect {name}", self)
            action.triggered.connect(lambda _=False, n=name: self.controller.request_connect(n))
            self.connect_actions[name] = action
            self.menu.addAction(action)
        if not names:
            empty = self.menu.addAction("No profiles yet: add one in Preferences…")
            empty.setEnabled(False)
        self.menu.addAction(self.disconnect_action)
        self.menu.addSeparator()
        self.menu.addAction(self.status_action)
        self.menu.addAction(self.preferences_action)
        self.menu.addSeparator()
        self.menu.addAction(self.quit_action)
        self.refresh()

    def refresh(self) -> None:
        """Bring icon, tooltip, header and enabled states in line with the controller."""
        c = self.controller
        state = c.state if c.available else "disconnected"
        self._kind = icon_kind(state)
        self.icon.setIcon(state_icon(state))
        profile = c.status.get("profile") or ""
        if not c.available:
            self.header.setText(_service_line(c.service_message))
            tip = "Tunnelgate: service not running"
        elif state == "connected":
            self.header.setText(f"Connected to {profile or c.status.get('gateway') or 'VPN'}")
            tip = f"Tunnelgate: connected ({profile})" if profile else "Tunnelgate: connected"
        elif state == "failed":
            reason = c.status.get("error") or c.status.get("detail") or ""
            self.header.setText(f"Failed: {reason}".rstrip(": "))
            tip = f"Tunnelgate: connection failed — {reason}" if reason else "Tunnelgate: connection failed"
        else:
            self.header.setText(state.capitalize() + (f" ({profile})" if profile else ""))
            tip = f"Tunnelgate: {state}"
        self.icon.setToolTip(tip)
        idle = c.is_idle()
        for action in self.connect_actions.values():
            action.setEnabled(idle)
        self.disconnect_action.setEnabled(c.available and state not in IDLE_STATES)

    def notify(self, title: str, message: str, level: str) -> None:
        """Show a desktop notification from the tray icon."""
        icon = (QSystemTrayIcon.MessageIcon.Critical if level == ERROR
                else QSystemTrayIcon.MessageIcon.Information)
        self.icon.showMessage(title, message, icon, NOTIFY_MS)

    def action_texts(self) -> list[str]:
        """The menu's entries as the user reads them (separators left out)."""
        return [a.text() for a in self.menu.actions() if not a.isSeparator()]

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.statusRequested.emit()


def _service_line(message: str) -> str:
    """The header line when the service is away: the start command if we know it."""
    marker = "start it with: "
    if marker in message:
        command = message.split(marker, 1)[1].rstrip(")").strip()
        return f"Service not running — start it with: {command}"
    return message or "Service not running"

