"""The tray app's logic, between the control API and the widgets.

Theory of operation. The Controller is one QObject, with the signals the
widgets connect to, made of two mixins and this module. ``gui.service_link``
opens the ControlClient, watches it and tries again while the service is
away (``serviceChanged``); ``gui.connect_flow`` runs the connect flow (the
keyring or the login dialog, then ``client.connect``) and answers the
service's questions of the attempt. Here are the commands, and the ``state``
notifications: each leads to a fresh Status (``statusChanged``) and, for
connected / disconnected / failed, a desktop notification (``notified``).
A password to remember is stored once the session is up; one the gateway
refuses (error kind ``wrong_credentials``, never judged by the text) is
forgotten and asked for again. Questions on screen close when their attempt
ends, and are answered "cancel" when the app stops.
"""

from __future__ import annotations

import asyncio
import typing

from PySide6.QtCore import QObject, QTimer, Signal

from client.errors import ClientError, WrongCredentials
from gui.bridge import ServiceBridge
from gui.connect_flow import ConnectFlow
from gui.controller_types import ERROR, IDLE_STATES, INFO, Attempt
from gui.service_link import ServiceLink


class Controller(ServiceLink, ConnectFlow, QObject):
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
    flowChanged = Signal(bool)
    """A connect flow (login dialog up to the service's answer) started (True) or ended."""

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
        self._attempt: Attempt | None = None
        self._flow: asyncio.Task | None = None
        self._prompting: set[asyncio.Task] = set()
        self._open_questions: dict[str, str] = {}
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

    # -- commands ----------------------------------------------------------

    def profile_names(self) -> list[str]:
        """The names of the stored profiles, in store order."""
        return [p.name for p in self._load_profiles()]

    def is_idle(self) -> bool:
        """True when a connection may be started (not while a connect flow asks the user)."""
        return self.available and self.state in IDLE_STATES and self._flow is None

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

    def _on_state(self, state: str, detail: str, error_kind: str = "") -> None:
        previous, self.state = self.state, state
        self.status = {**self.status, "state": state, "detail": detail, "error_kind": error_kind or None}
        if self._connecting_profile and not self.status.get("profile"):  # until the Status comes
            self.status["profile"] = self._connecting_profile
        self.stateChanged.emit(state, detail)
        # Ours first: the Status may still be the previous attempt's.
        profile = self._connecting_profile or self.status.get("profile") or "VPN"
        attempt = self._attempt
        if state == "connected" and previous != "connected":
            self._was_connected = True
            self.notified.emit("Connected", f"{profile}: {detail}" if detail else profile, INFO)
            if attempt is not None and attempt.password is not None:
                self.spawn(self._remember(attempt.profile, attempt.username, attempt.password))
                attempt.password = None
        elif state == "failed":
            self._was_connected = False
            self.notified.emit("Connection failed", detail or f"{profile}: failed", ERROR)
        elif state == "disconnected" and self._was_connected:
            self._was_connected = False
            self.notified.emit("Disconnected", f"{profile} is disconnected", INFO)
        if state in IDLE_STATES:
            self._connecting_profile = self._attempt = None
            for task in list(self._prompting):   # the attempt is over: close its questions
                task.cancel()
            self._open_questions.clear()
            if state == "failed" and attempt is not None and error_kind == WrongCredentials.kind:
                self.spawn(self._ask_again(attempt, detail))
        self.spawn(self._refresh_status())

    # -- helpers -----------------------------------------------------------

    def _load_profiles(self) -> list:
        try:
            return list(self.profiles.load())
        except (OSError, ValueError, ClientError) as exc:
            self.notified.emit("Profiles could not be read", str(exc), ERROR)
            return []
