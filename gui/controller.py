"""The tray app's logic, between the control API and the widgets.

Theory of operation. ``start`` opens a ControlClient (through ``opener``),
subscribes the ServiceBridge and reads the Status; when the service is not
there it says so (``serviceChanged(False, message)``, the message holds the
command that starts it) and tries again every ``retry_interval`` seconds.
The connect flow is: the profile from the ProfileStore, the password from
the keyring (in a worker thread: an unlock prompt must not freeze the tray)
or else the login dialog, then ``client.connect``; while it runs no second
one starts (``is_idle``, ``flowChanged``). Then the service drives the
attempt with notifications: a ``challenge`` asks for a one-time code, a
``certificate`` whether to trust the server (on "always" the fingerprint
is pinned in the profile), and each ``state`` leads to a fresh Status
(``statusChanged``) and, for connected / disconnected / failed, a desktop
notification (``notified``). A password to remember is stored once the
session is up; one the gateway refuses (error kind ``wrong_credentials``,
never judged by the text) is forgotten and asked for again.
Questions on screen close when their attempt ends, and are answered
"cancel" when the app stops. Questions go through a ``prompts`` object
(DialogPrompts in the app), so tests can drive the same flow with the real
dialogs or with canned answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import typing

from PySide6.QtCore import QObject, QTimer, Signal

from client.control.errors import ControlError, ServiceUnavailable
from client.errors import ClientError, UsageError, WrongCredentials
from gui.bridge import ServiceBridge

log = logging.getLogger(__name__)

IDLE_STATES = frozenset({"disconnected", "failed"})
"""States in which a new connection may be started."""

INFO, ERROR = "info", "error"


@dataclasses.dataclass
class _Attempt:
    """The connection attempt this app started, until it is up or over."""

    profile: str
    """The profile's name."""
    username: str
    """The user name sent."""
    password: str | None = dataclasses.field(default=None, repr=False)
    """The password to store in the keyring once connected (None: do not store)."""
    from_keyring: bool = False
    """Whether the password sent came from the keyring."""


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
        self._attempt: _Attempt | None = None
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
                # Not awaited: its login dialog must not hold up the app's run (nor Quit).
                self.spawn(self.connect_profile(auto[0].name))
        return True

    async def stop(self) -> None:
        """Close the client connection (the VPN itself stays as it is).

        Questions of the service still open are answered "cancel" first, so an
        attempt waiting for this app fails at once instead of after a timeout.
        """
        self._stopped = True
        self._retry.stop()
        for id, kind in list(self._open_questions.items()):
            del self._open_questions[id]
            if self.client is not None:
                method = (self.client.answer_challenge if kind == "challenge"
                          else self.client.answer_certificate)
                await self._answer(method, id, "" if kind == "challenge" else "cancel")
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
        """True when a connection may be started (not while a connect flow asks the user)."""
        return self.available and self.state in IDLE_STATES and self._flow is None

    async def connect_profile(self, name: str, error: str = "") -> bool:
        """Run the connect flow for a profile; False when the user cancelled or it was refused.

        ``error`` is shown in the login dialog (why the password is asked again).
        """
        if self.client is None:
            self.notified.emit("Tunnelgate", self.service_message, ERROR)
            return False
        if self._flow is not None:     # already asking: show that dialog again instead
            raise_current = getattr(self.prompts, "raise_current", None)
            if raise_current is not None:
                raise_current()
            return False
        self._set_flow(asyncio.current_task())
        try:
            return await self._connect_flow(name, error)
        finally:
            self._set_flow(None)

    async def _connect_flow(self, name: str, error: str) -> bool:
        profile = self.profiles.get(name)
        if profile is None:
            self.notified.emit("Tunnelgate", f"no profile named {name!r}", ERROR)
            return False
        username = profile.username or ""
        password = None if error or not username else await self._stored_password(name, username)
        attempt = _Attempt(profile=name, username=username, from_keyring=password is not None)
        if password is None:
            creds = await self.prompts.login(name, profile.gateway, username, error=error)
            if creds is None:
                return False
            username, password = creds.username, creds.password
            attempt = _Attempt(profile=name, username=username,
                               password=password if creds.remember else None)
        if self.client is None:        # the service went away while the dialog was open
            self.notified.emit("Tunnelgate", self.service_message, ERROR)
            return False
        # Set before the call: the first state notifications can arrive before its answer.
        self._connecting_profile, self._attempt = name, attempt
        try:
            await self.client.connect(profile.gateway, username, password, ca=profile.ca or None,
                                      pin=profile.pin or None, profile=name)
        except (ControlError, UsageError) as exc:   # UsageError: e.g. the CA file cannot be read
            self._connecting_profile = self._attempt = None
            self.notified.emit("Could not connect",
                               exc.message if isinstance(exc, ControlError) else str(exc), ERROR)
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

    async def _ask_again(self, attempt: _Attempt, detail: str) -> None:
        """The gateway refused the password: forget a stored one and ask for it again."""
        if attempt.from_keyring:
            await self._forget(attempt.profile, attempt.username)
        if self._flow is not None:     # the flow that sent it may not have returned yet
            await asyncio.wait({self._flow})
        await self.connect_profile(attempt.profile, error=detail)

    async def _refresh_status(self) -> None:
        if self.client is not None:
            self._take_status(await self.client.status())

    async def _answer_challenge(self, params: dict) -> None:
        id = str(params.get("id", ""))
        code = await self._ask(id, "challenge", self.prompts.one_time_code(
            params.get("prompt") or "One-time code"))
        if self.client is not None and self._open_questions.pop(id, None):
            await self._answer(self.client.answer_challenge, id, code or "")

    async def _answer_certificate(self, params: dict) -> None:
        id = str(params.get("id", ""))
        decision = await self._ask(id, "certificate", self.prompts.certificate(params))
        if self.client is None or not self._open_questions.pop(id, None):
            return
        if decision == "always":
            self._pin(self._connecting_profile or self.status.get("profile"),
                      params.get("fingerprint", ""))
        await self._answer(self.client.answer_certificate, id, decision)

    async def _ask(self, id: str, kind: str, question: typing.Awaitable):
        """Await the user's answer; the task is cancelled (dialog closed) if the attempt ends."""
        task = asyncio.current_task()
        self._open_questions[id] = kind
        self._prompting.add(task)
        try:
            return await question
        finally:
            self._prompting.discard(task)

    async def _answer(self, method, id: str, value: str) -> None:
        try:
            await method(id, value)
        except ControlError as exc:  # expired or answered elsewhere (another client)
            log.info("answer not taken: %s", exc.message)

    def _on_service_lost(self, reason: str) -> None:
        self.client = None
        if self._stopped:
            return
        self._on_state("disconnected", "")
        self._take_status({"state": "disconnected"})   # nothing of the old session stays shown
        # Last, so that what says why (status window, tray) is the final word.
        self._set_available(False, f"lost the connection to the Tunnelgate service ({reason}); "
                                   "start it with: sudo systemctl start tunnelgate")
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

    def _set_flow(self, task: asyncio.Task | None) -> None:
        self._flow = task
        self.flowChanged.emit(task is not None)

    # The keyring is used from a worker thread: a backend may block for long
    # (D-Bus, a prompt to unlock the keyring) and the tray must keep working.

    async def _stored_password(self, name: str, username: str) -> str | None:
        try:
            return await asyncio.to_thread(self.passwords.get, name, username)
        except Exception as exc:  # keyring backends raise their own types
            log.warning("keyring not usable, asking for the password: %s", type(exc).__name__)
            return None

    async def _remember(self, name: str, username: str, password: str) -> None:
        try:
            await asyncio.to_thread(self.passwords.set, name, username, password)
        except Exception as exc:
            self.notified.emit("Password not saved", f"the keyring refused it ({type(exc).__name__})",
                               ERROR)

    async def _forget(self, name: str, username: str) -> None:
        try:
            await asyncio.to_thread(self.passwords.delete, name, username)
        except Exception as exc:
            log.warning("could not forget the refused password of %s: %s", name, type(exc).__name__)

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
