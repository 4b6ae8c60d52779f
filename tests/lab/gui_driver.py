"""Runs the real tray app (``gui.app.App``) as a non-root user and lets a test
drive it like a person would, over stdin/stdout.

Started as root only to load Python, Qt and the app's modules (the
interpreter may live where other users cannot read); it then drops to the
given uid/gid before it talks to the service, so the service sees an
ordinary user on its control socket.

Protocol, one line each:
    test -> driver   first line: the password for the login dialog (never argv)
    driver -> test   STATE <state> <detail> | NOTIFY <level> <title>: <message>
                     ASK otp | READY | BYE
    test -> driver   connect <profile> | code <digits> | disconnect | quit
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import pkgutil
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import keyring  # noqa: E402
import qasync  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import gui.app  # noqa: E402,F401 - loaded before dropping privileges
from gui.app import App, parse_args  # noqa: E402
from gui.login_dialog import LoginDialog  # noqa: E402
from gui.otp_dialog import OtpDialog  # noqa: E402


def say(line: str) -> None:
    print(line, flush=True)


def preload() -> None:
    """Import every module of the app and the client now: after the drop, the
    interpreter's own folder may no longer be readable."""
    import client
    import gui
    for package in (gui, client):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
    import cryptography.x509  # noqa: F401 - loaded lazily by the session code
    import encodings.idna  # noqa: F401 - used by socket name handling


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    os.environ["HOME"] = "/nonexistent"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--profiles", required=True)
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    args = parser.parse_args()
    password = sys.stdin.readline().rstrip("\n")
    preload()
    keyring.get_keyring()                       # resolve the backend while modules can load
    qapp = QApplication(["tunnelgate-tray"])    # loads the platform plugin
    qapp.setQuitOnLastWindowClosed(False)
    drop_privileges(args.uid, args.gid)

    async def run() -> None:
        app = App(qapp, parse_args(["--no-tray", "--socket", args.socket,
                                    "--profiles", args.profiles]))
        controller = app.controller
        waiting_otp: list[OtpDialog] = []
        controller.stateChanged.connect(lambda s, d: say(f"STATE {s} {d}"))
        controller.notified.connect(lambda t, m, level: say(f"NOTIFY {level} {t}: {m}"))

        def on_dialog(dialog) -> None:
            if isinstance(dialog, LoginDialog):
                dialog.password.setText(password)
                dialog.remember.setChecked(False)
                dialog.accept()
            elif isinstance(dialog, OtpDialog):
                waiting_otp.append(dialog)
                say("ASK otp")

        app.prompts.dialogShown.connect(on_dialog)
        loop = asyncio.get_running_loop()

        def on_line() -> None:
            line = sys.stdin.readline()
            if not line:
                loop.remove_reader(sys.stdin.fileno())
                app.quit()
                return
            command, _, arg = line.strip().partition(" ")
            if command == "connect":
                controller.request_connect(arg)
            elif command == "code" and waiting_otp:
                dialog = waiting_otp.pop()
                dialog.code.setText(arg)
                dialog.accept()
            elif command == "disconnect":
                controller.request_disconnect()
            elif command == "quit":
                app.quit()

        loop.add_reader(sys.stdin.fileno(), on_line)
        started = asyncio.ensure_future(app.run())
        while controller.client is None and not started.done():
            await asyncio.sleep(0.05)
        say(f"READY uid={os.getuid()}")
        await started
        say("BYE")

    qasync.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
