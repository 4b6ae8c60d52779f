"""``tunnelgate-tray``: the tray app (or, with ``--no-tray``, just the status window).

Runs Qt and asyncio on one thread with qasync. The app lives until "Quit"
(or, without a tray, until the status window closes); then it closes its
connection to the service and exits with status 0. The VPN session itself
belongs to the service: "Quit" while a session is up or being made asks
whether to disconnect first (a signal, SIGTERM at logout, does not ask and
leaves the session as it is).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import qasync
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication, QSystemTrayIcon

from client.control.client import ControlClient
from client.profiles import PasswordStore, ProfileStore
from gui.controller import Controller
from gui.controller_types import IDLE_STATES
from gui.icons import app_icon
from gui.preferences import PreferencesDialog
from gui.prompts import DialogPrompts
from gui.status_window import StatusWindow
from gui.tray import Tray

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="tunnelgate-tray", description="Tunnelgate tray app")
    parser.add_argument("--no-tray", action="store_true",
                        help="no tray icon: open the status window, quit when it closes")
    parser.add_argument("--socket", help="control socket (default $TUNNELGATE_SOCKET or "
                                         "/run/tunnelgate/control.sock)")
    parser.add_argument("--profiles", help="profiles file (default $TUNNELGATE_PROFILES or "
                                           "profiles.toml in the user's config folder)")
    return parser.parse_args(argv)


def feed_status_window(controller: Controller, window: StatusWindow) -> None:
    """Show in ``window`` what ``controller`` learns from the service."""
    controller.statusChanged.connect(window.set_status)
    controller.stateChanged.connect(window.set_state)
    controller.bridge.statsUpdated.connect(window.set_stats)
    controller.bridge.logLine.connect(window.append_log)
    controller.serviceChanged.connect(
        lambda ok, message: None if ok else window.set_state("disconnected", message))


class App:
    """The windows, the tray and the controller of one run."""

    def __init__(self, qapp, args: argparse.Namespace) -> None:
        self.qapp = qapp
        self.args = args
        self.done = asyncio.get_running_loop().create_future()
        self.prompts = DialogPrompts()
        self.controller = Controller(
            lambda: ControlClient.open(args.socket, client="tunnelgate-gui 0.1"),
            ProfileStore(args.profiles), PasswordStore(), self.prompts)
        self.status_window = StatusWindow()
        c, w = self.controller, self.status_window
        feed_status_window(c, w)
        self.preferences = None
        self._quit_question: asyncio.Task | None = None
        self.tray = None
        if not args.no_tray and QSystemTrayIcon.isSystemTrayAvailable():
            self.tray = Tray(c)
            self.tray.statusRequested.connect(self.show_status)
            self.tray.preferencesRequested.connect(self.show_preferences)
            self.tray.quitRequested.connect(self.request_quit)
            self.tray.show()
        else:
            if not args.no_tray:
                log.warning("no system tray available: showing the status window instead")
            w.installEventFilter(CloseWatcher(w, self.quit))
            self.show_status()

    def show_status(self) -> None:
        """Show and raise the status window."""
        self.status_window.show()
        self.status_window.raise_()
        self.status_window.activateWindow()

    def show_preferences(self) -> None:
        """Show the preferences window (one at a time)."""
        if self.preferences is None:
            self.preferences = PreferencesDialog(self.controller.profiles,
                                                 self.controller.passwords)
            self.preferences.profilesChanged.connect(self.controller.profiles_edited)
            self.preferences.finished.connect(self._preferences_closed)
        self.preferences.show()
        self.preferences.raise_()
        self.preferences.activateWindow()

    def _preferences_closed(self, _result: int) -> None:
        self.preferences.deleteLater()
        self.preferences = None

    def request_quit(self) -> None:
        """The user chose Quit: ask first when a session is up or being made."""
        if self._quit_question is not None and not self._quit_question.done():
            self.prompts.raise_current()
            return
        self._quit_question = self.controller.spawn(self._confirm_quit())

    async def _confirm_quit(self) -> None:
        c = self.controller
        if c.client is not None and c.state not in IDLE_STATES:
            profile = c.status.get("profile") or c.status.get("gateway") or "the VPN"
            what = (f"Tunnelgate is connected to {profile}." if c.state == "connected"
                    else f"Tunnelgate is {c.state} ({profile}).")
            answer = await self.prompts.quit_while_connected(what)
            if answer == "cancel":
                return
            if answer == "disconnect":
                await c.disconnect()
        self.quit()

    def quit(self) -> None:
        """End the run now (the VPN session, owned by the service, stays as it is)."""
        if not self.done.done():
            self.done.set_result(None)

    async def run(self) -> None:
        """Start talking to the service and wait for the end of the run."""
        await self.controller.start()
        await self.done
        self.prompts.cancel()
        await self.controller.stop()
        if self.tray is not None:
            self.tray.hide()
        self.status_window.close()


class CloseWatcher(QObject):
    """Calls ``on_close`` when the watched window is closed."""

    def __init__(self, parent: QObject, on_close) -> None:
        super().__init__(parent)
        self._on_close = on_close

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Close:
            self._on_close()
        return False


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tunnelgate-tray``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    qapp = QApplication.instance() or QApplication(sys.argv[:1])
    qapp.setApplicationName("Tunnelgate")
    qapp.setDesktopFileName("tunnelgate")
    qapp.setWindowIcon(app_icon())
    qapp.setQuitOnLastWindowClosed(False)  # dialogs closing must not end a tray app

    async def run() -> None:
        app = App(qapp, args)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, app.quit)
            except (NotImplementedError, RuntimeError):
                signal.signal(signum, lambda *_: app.quit())
        await app.run()

    try:
        qasync.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
