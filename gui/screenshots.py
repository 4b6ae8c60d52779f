"""Takes the README's screenshots: tray menu, login dialog, status window.

Needs an X server with a system tray and ImageMagick's ``import``:

    Xvfb :99 -screen 0 1280x800x24 &
    DISPLAY=:99 trayer --edge top --align right --widthtype request --height 28 &
    DISPLAY=:99 python -m gui.screenshots docs/screenshots

It runs a real control service in-process (ControlServer + EngineHost) on a
temporary socket, with a demo engine that logs in, reports a realistic
session and moves a varying amount of data, and drives the real app (App,
Tray, dialogs) against it. Nothing touches the network or the host.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import math
import pathlib
import sys
import tempfile

import qasync
from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QApplication

from client.control.host import EngineHost
from client.control.server import ControlServer
from client.engine import Stats
from client.profiles import Profile, ProfileStore
from client.session import ClientConfig
from client.states import State
from gui.app import App, parse_args
from gui.icons import app_icon
from gui.login_dialog import LoginDialog

log = logging.getLogger("client.demo")

CONFIG = ClientConfig(
    address=ipaddress.IPv4Interface("10.200.0.7/24"),
    include=(ipaddress.IPv4Network("10.77.0.0/24"), ipaddress.IPv4Network("10.78.0.0/16")),
    exclude=(), dns_servers=(ipaddress.IPv4Address("10.77.0.53"),), dns_search=("corp.example",),
    mtu=65000, keepalive=15.0, resources=("intranet-web", "wiki", "git"), session="d3m0")


class _Session:
    config = CONFIG


class DemoEngine:
    """Walks through a login and then moves a wave of traffic (for pictures only)."""

    def __init__(self, options, password, *, tun_factory, routes, dns=None,
                 on_state=lambda s, d: None, prompter=None) -> None:
        self.options = options
        self._on_state = on_state
        self.failure = None
        self.state = State.DISCONNECTED
        self.session = None
        self._in = self._out = 0
        self._flows = 0

    @property
    def stats(self) -> Stats:
        return Stats(bytes_in=self._in, bytes_out=self._out, open_flows=self._flows, flows_refused=0)

    def _set(self, state: State, detail: str = "") -> None:
        self.state = state
        self._on_state(state, detail)

    async def run(self, stop: asyncio.Event) -> None:
        gw = self.options.gateway
        self._set(State.CONNECTING, str(gw))
        log.info("connecting to %s", gw)
        await asyncio.sleep(0.3)
        log.info("TLS 1.3 with %s, ALPN h2, certificate verified", gw)
        self._set(State.AUTHENTICATING, self.options.username)
        log.info("logged in as %s", self.options.username)
        self.session = _Session()
        self._set(State.CONFIGURING)
        log.info("address 10.200.0.7/24; securing 10.77.0.0/24, 10.78.0.0/16")
        log.info("split DNS: corp.example via 10.77.0.53")
        self._set(State.CONNECTED, "address 10.200.0.7/24")
        tick = 0
        while not stop.is_set():
            await asyncio.sleep(0.1)
            tick += 1
            wave = 0.45 + 0.45 * math.sin(tick / 35.0) + 0.15 * math.sin(tick / 7.0)
            self._in += int(180_000 * wave + 40_000 * (tick % 7 == 0))
            self._out += int(30_000 * (1 - wave) + 8_000)
            self._flows = 3 + tick // 40 % 4
            if tick % 25 == 0:
                log.info("tcp flow to 10.77.0.%d:443 opened (intranet-web)", 10 + tick // 25 % 5)
        self._set(State.DISCONNECTING)
        self._set(State.DISCONNECTED)


async def _capture(path: pathlib.Path, widget=None, margin: int = 0, rect=None) -> None:
    """Grab the screen (or a widget's frame) with ImageMagick's import."""
    await asyncio.sleep(0.6)
    if rect is None and widget is not None:
        g = widget.frameGeometry()
        rect = (g.x() - margin, g.y() - margin, g.width() + 2 * margin, g.height() + 2 * margin)
    args = ["import", "-window", "root"]
    if rect is not None:
        x, y, w, h = rect
        x, y = max(0, x), max(0, y)
        args += ["-crop", f"{w}x{h}+{x}+{y}", "+repage"]
    proc = await asyncio.create_subprocess_exec(*args, str(path))
    if await proc.wait() != 0:
        raise RuntimeError(f"import failed for {path}")
    print(f"wrote {path}")


async def shoot(out: pathlib.Path, real: argparse.Namespace | None = None) -> None:
    """Start the service (or use a real one), then the app; pose each scene and capture it."""
    out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="tg-shots-"))
    store = ProfileStore(work / "profiles.toml")
    server = None
    if real is None:
        host = EngineHost(tun_factory=lambda mtu: None, routes_factory=lambda: None,
                          engine_factory=DemoEngine, sample_interval=1.0)
        socket_path = work / "control.sock"
        server = ControlServer(socket_path, host)
        await server.start()
        store.save(Profile(name="work", gateway="https://vpn.example.com", username="alice"))
        store.save(Profile(name="lab", gateway="https://192.0.2.1:8443", username="alice",
                           pin="sha256:" + "3f" * 32))
        password = "correct horse"
    else:
        socket_path = pathlib.Path(real.socket)
        store.save(Profile(name="work", gateway=real.gateway, username=real.user, ca=real.ca))
        password = sys.stdin.readline().rstrip("\n")
    app = App(QApplication.instance(), parse_args(
        ["--socket", str(socket_path), "--profiles", str(work / "profiles.toml")]))
    runner = asyncio.ensure_future(app.run())
    try:
        while not app.controller.available:
            await asyncio.sleep(0.1)
        # 1. The login dialog, filled in (the password shows as dots).
        connecting = asyncio.ensure_future(app.controller.connect_profile("work"))
        while not isinstance(app.prompts.current, LoginDialog):
            await asyncio.sleep(0.05)
        dialog = app.prompts.current
        dialog.move(420, 260)
        dialog.password.setText(password)
        dialog.remember.setChecked(True)
        await _capture(out / "login-dialog.png", dialog, margin=2)
        dialog.remember.setChecked(real is None)   # no keyring for the real run
        dialog.ok_button.click()
        await connecting
        while app.controller.state != "connected":
            await asyncio.sleep(0.1)
        # 2. The status window after half a minute of traffic.
        app.show_status()
        app.status_window.move(330, 60)
        app.status_window.resize(640, 700)
        await asyncio.sleep(30)
        await _capture(out / "status-window.png", app.status_window, margin=2)
        app.status_window.hide()
        # 3. The tray menu, opened under the tray icon.
        geometry = app.tray.icon.geometry() if app.tray else None
        anchor = (QPoint(geometry.x(), geometry.bottom() + 4) if geometry and geometry.width()
                  else QPoint(1000, 30))
        menu = app.tray.menu
        menu.popup(QPoint(anchor.x() - 200, anchor.y()))
        await asyncio.sleep(0.5)
        mg = menu.frameGeometry()
        left = min(mg.x(), anchor.x()) - 20
        right = max(mg.right(), (geometry.right() if geometry else mg.right())) + 20
        await _capture(out / "tray-menu.png", rect=(left, 0, right - left, mg.bottom() + 20))
        menu.hide()
    finally:
        await app.controller.disconnect()
        app.quit()
        await runner
        if server is not None:
            await server.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m gui.screenshots [OUTDIR] [--socket S --gateway URL --user U --ca FILE]``.

    With ``--socket`` the app talks to a real running service and connects to a
    real gateway (the password is read from stdin); otherwise a demo engine
    stands in for it.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="docs/screenshots")
    parser.add_argument("--socket")
    parser.add_argument("--gateway")
    parser.add_argument("--user")
    parser.add_argument("--ca")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    logging.basicConfig(level=logging.WARNING)
    qapp = QApplication(sys.argv[:1])
    qapp.setApplicationName("Tunnelgate")
    qapp.setWindowIcon(app_icon())
    qapp.setQuitOnLastWindowClosed(False)
    qasync.run(shoot(out, args if args.socket else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
