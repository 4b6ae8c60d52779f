"""The tray app's logic, between the control API and the widgets.

Theory of operation. ``start`` opens a ControlClient (through ``opener``),
subscribes the ServiceBridge and reads the Status; when the service is not
there it says so (``serviceChanged(False, message)``, the message holds the
command that starts it) and tries again every ``retry_interval`` seconds.
The connect flow is: the profile from the ProfileStore, the password from
the keyring or else the login dialog, then ``client.connect``; from there
the service drives the attempt with notifications: a ``challenge`` asks for
a one-time code, a ``certificate`` asks whether to trust the server (and on
"always" the fingerprint is pinned in the profile), and each ``state`` leads
to a fresh Status (``statusChanged``) and, for connected / disconnected /
failed, a desktop notification (``notified``). Questions go through a
``prompts`` object (DialogPrompts in the app), so tests can drive the same
flow with the real dialogs or with canned answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import typing

from PySide6.QtCore import QObject, QTimer, Signal

from client.control.errors import ControlError, ServiceUnavailable
from client.errors import ClientError, UsageError
from gui.bridge import ServiceBridge

log = logging.getLogger(__name__)

IDLE_STATES = frozenset({"disconnected", "failed"})
"""States in which a new connection may be started."""

INFO, ERROR = "info", "error"


class Controller(QObject):
    """Owns the client connection and runs the connect / disconnect flows."""

    serviceChanged = Signal(bool, str)
    """Service reachable or not, and a message for the user when not."""
    stateChanged = Signal(str, str)
    """The engine's state and detail."""
    statusChanged = Signal(dict)
    """A fresh Status object."""
    profilesChanged = Signal()
    """Profiles were added, edited or removed (including a new pin)."""
    notified = Signal(str, str, str)
    """A desktop notification: title, message, level (``info`` or ``error``)."""

    def __init__(self, opener: typing.Callable[[], typing.Awaitable[typing.Any]], profiles,
                 passwords, prompts, *, retry_interval: float = 5.0,
                 stats_interval: float = 1.0) -> None:
        super().__init__()
        self._opener = opener
        self.profiles = profiles
        """The ProfileStore."""
        self.passwords = passwords
        """The PasswordStore (keyring)."""
        self.prompts = prompts
        """Asks the user: login, one_time_code, certificate."""
        self.bridge = ServiceBridge(self)
        self.stats_interval = stats_interval
        self.client = None
        self.available = False
        self.service_message = "connecting to the Tunnelgate service…"
        self.state = "disconnected"
        self.status: dict = {"state": "disconnected"}
        self._connecting_profile: str | None = None
        self._was_connected = False
        self._auto_connect_done = False
        self._tasks: set[asyncio.Task] = set()
        self._watch: asyncio.Task | None = None
        self._stopped = False
        self._retry = QTimer(self)
        self._retry.setSingleShot(True)
        self._retry.setInterval(int(retry_interval * 1000))
        self._retry.timeout.connect(lambda: self.spawn(self.start()))
        self.bridge.stateChanged.connect(self._on_state)
        self.bridge.challengeAsked.connect(lambda params: self.spawn(self._answer_challenge(params)))
        self.bridge.certificateAsked.connect(lambda params: self.spawn(self._answer_certificate(params)))
        self.bridge.serviceLost.connect(self._on_service_lost)

    # -- life cycle --------------------------------------------------------

    async def start(self) -> bool:
        """Connect to the service; True when it answered. Retries later when not."""
        if self.client is not None or self._stopped:
            return self.client is not None
        try:
            client = await self._opener()
            await client.subscribe(self.bridge.deliver, stats_interval=self.stats_interval)
            status = await client.status()
        except ClientError as exc:
            self._set_available(False, str(exc))
            self._retry.start()
            return False
        self.client = client
        self._watch = asyncio.ensure_future(self.bridge.watch(client))
        self._set_available(True, "")
        self._take_status(status)
        self.stateChanged.emit(self.state, status.get("detail") or "")
        if not self._auto_connect_done:
            self._auto_connect_done = True
            auto = [p for p in self._load_profiles() if p.connect_at_start]
            if auto and self.state in IDLE_STATES:
                await self.connect_profile(auto[0].name)
        return True

    async def stop(self) -> None:
        """Close the client connection (the VPN itself stays as it is)."""
        self._stopped = True
        self._retry.stop()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        if self._watch is not None:
            self._watch.cancel()
        if self.client is not None:
            client, self.client = self.client, None
            await client.close()

    def spawn(self, coro: typing.Coroutine) -> asyncio.Task:
        """Run a coroutine for a Qt slot; its errors become notifications."""
        task = asyncio.ensure_future(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- commands ----------------------------------------------------------

    def profile_names(self) -> list[str]:
        """The names of the stored profiles, in store order."""
        return [p.name for p in self._load_profiles()]

    def is_idle(self) -> bool:
        """True when a connection may be started."""
        return self.available and self.state in IDLE_STATES

    async def connect_profile(self, name: str) -> bool:
        """Run the connect flow for a profile; False when the user cancelled or it was refused."""
        if self.client is None:
            self.notified.emit("Tunnelgate", self.service_message, ERROR)
            return False
        profile = self.profiles.get(name)
        if profile is None:
            self.notified.emit("Tunnelgate", f"no profile named {name!r}", ERROR)
            return False
        username = profile.username or ""
        password = self._stored_password(name, username) if username else None
        if password is None:
            creds = await self.prompts.login(name, profile.gateway, username)
            if creds is None:
                return False
            username, password = creds.username, creds.password
            if creds.remember:
                self._remember(name, username, password)
        self._connecting_profile = name
        try:
            await self.client.connect(profile.gateway, username, password, ca=profile.ca or None,
                                      pin=profile.pin or None, profile=name)
        except ControlError as exc:
            self._connecting_profile = None
            self.notified.emit("Could not connect", exc.message, ERROR)
            return False
        except UsageError as exc:      # e.g. the profile's CA file cannot be read
            self._connecting_profile = None
            self.notified.emit("Could not connect", str(exc), ERROR)
            return False
        return True

    async def disconnect(self) -> None:
        """Disconnect the session (returns once the service restored the host)."""
        if self.client is not None:
            await self.client.disconnect()

    def request_connect(self, name: str) -> None:
        """Slot: start the connect flow for a profile."""
        self.spawn(self.connect_profile(name))

    def request_disconnect(self) -> None:
        """Slot: disconnect."""
        self.spawn(self.disconnect())

    def profiles_edited(self) -> None:
        """Slot: the preferences changed the profiles."""
        self.profilesChanged.emit()

    # -- notifications -----------------------------------------------------

    def _on_state(self, state: str, detail: str) -> None:
        previous, self.state = self.state, state
        self.status = {**self.status, "state": state, "detail": detail}
        self.stateChanged.emit(state, detail)
        profile = self.status.get("profile") or self._connecting_profile or "VPN"
        if state == "connected" and previous != "connected":
            self._was_connected = True
            self.notified.emit("Connected", f"{profile}: {detail}" if detail else profile, INFO)
        elif state == "failed":
            self._was_connected = False
            self.notified.emit("Connection failed", detail or f"{profile}: failed", ERROR)
        elif state == "disconnected" and self._was_connected:
            self._was_connected = False
            self.notified.emit("Disconnected", f"{profile} is disconnected", INFO)
        if state in IDLE_STATES:
            self._connecting_profile = None
        self.spawn(self._refresh_status())

    async def _refresh_status(self) -> None:
        if self.client is not None:
            self._take_status(await self.client.status())

    async def _answer_challenge(self, params: dict) -> None:
        code = await self.prompts.one_time_code(params.get("prompt") or "One-time code")
        await self._answer(self.client.answer_challenge, params.get("id", ""), code or "")

    async def _answer_certificate(self, params: dict) -> None:
        decision = await self.prompts.certificate(params)
        if decision == "always":
            self._pin(self._connecting_profile, params.get("fingerprint", ""))
        await self._answer(self.client.answer_certificate, params.get("id", ""), decision)

    async def _answer(self, method, id: str, value: str) -> None:
        try:
            await method(id, value)
        except ControlError as exc:  # expired or answered elsewhere (another client)
            log.info("answer not taken: %s", exc.message)

    def _on_service_lost(self, reason: str) -> None:
        self.client = None
        if self._stopped:
            return
        self._set_available(False, f"lost the connection to the Tunnelgate service ({reason}); "
                                   "start it with: sudo systemctl start tunnelgate")
        self._on_state("disconnected", "")
        self._retry.start()

    # -- helpers -----------------------------------------------------------

    def _set_available(self, available: bool, message: str) -> None:
        changed = (available, message) != (self.available, self.service_message)
        self.available, self.service_message = available, message
        if changed:
            self.serviceChanged.emit(available, message)

    def _take_status(self, status: dict) -> None:
        self.status = dict(status)
        self.state = status.get("state", self.state)
        self.statusChanged.emit(self.status)

    def _load_profiles(self) -> list:
        try:
            return list(self.profiles.load())
        except (OSError, ValueError, ClientError) as exc:
            self.notified.emit("Profiles could not be read", str(exc), ERROR)
            return []

    def _stored_password(self, name: str, username: str) -> str | None:
        try:
            return self.passwords.get(name, username)
        except Exception as exc:  # keyring backends raise their own types
            log.warning("keyring not usable, asking for the password: %s", type(exc).__name__)
            return None

    def _remember(self, name: str, username: str, password: str) -> None:
        try:
            self.passwords.set(name, username, password)
        except Exception as exc:
            self.notified.emit("Password not saved", f"the keyring refused it ({type(exc).__name__})",
                               ERROR)

    def _pin(self, name: str | None, fingerprint: str) -> None:
        profile = self.profiles.get(name) if name else None
        if profile is None or not fingerprint:
            return
        # A pin and a CA file are exclusive in a profile: the pin is what the user chose now.
        self.profiles.save(dataclasses.replace(profile, pin=fingerprint, ca=None))
        self.profilesChanged.emit()

    async def _guard(self, coro: typing.Coroutine) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except ServiceUnavailable as exc:
            self.notified.emit("Tunnelgate service", str(exc), ERROR)
        except ClientError as exc:
            self.notified.emit("Tunnelgate", str(exc), ERROR)
        except Exception:
            log.exception("unexpected error in the tray app")
            self.notified.emit("Tunnelgate", "unexpected error (see the log)", ERROR)
