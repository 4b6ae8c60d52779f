"""The connect flow: the password, ``client.connect``, and the questions of the attempt.

Theory of operation. The connect flow is: the profile from the ProfileStore,
the password from the keyring (in a worker thread: an unlock prompt must not
freeze the tray) or else the login dialog, then ``client.connect``; while it
runs no second one starts (``is_idle``, ``flowChanged``). Then the service
drives the attempt with notifications: a ``challenge`` asks for a one-time
code, a ``certificate`` whether to trust the server (on "always" the
fingerprint is pinned in the profile). A password the gateway refuses is
forgotten and asked for again (``_ask_again``, called by the controller on
``wrong_credentials``). Questions go through a ``prompts`` object
(DialogPrompts in the app), so tests can drive the same flow with the real
dialogs or with canned answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import typing

from client.control.errors import ControlError
from client.errors import UsageError
from gui.controller_types import ERROR, Attempt

log = logging.getLogger(__name__)


class ConnectFlow:
    """Mixin of ``gui.controller.Controller``: connecting a profile and answering the service.

    Uses the Controller's signals and the attributes its ``__init__`` sets
    (``client``, ``profiles``, ``passwords``, ``prompts``, ``_flow``,
    ``_attempt``, ``_open_questions`` …).
    """

    # -- connecting --------------------------------------------------------

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
        attempt = Attempt(profile=name, username=username, from_keyring=password is not None)
        if password is None:
            creds = await self.prompts.login(name, profile.gateway, username, error=error)
            if creds is None:
                return False
            username, password = creds.username, creds.password
            attempt = Attempt(profile=name, username=username,
                              password=password if creds.remember else None)
        if self.client is None:        # the service went away while the dialog was open
            self.notified.emit("Tunnelgate", self.service_message, ERROR)
            return False
        # Set before the call: the first state notifications can arrive before its answer.
        self._connecting_profile, self._attempt = name, attempt
        try:
            await self.client.connect(profile.gateway, username, password, ca=profile.ca or None,
                                      pin=profile.pin or None, profile=name,
                                      reconnect_for=profile.reconnect_for)
        except (ControlError, UsageError) as exc:   # UsageError: e.g. the CA file cannot be read
            self._connecting_profile = self._attempt = None
            self.notified.emit("Could not connect",
                               exc.message if isinstance(exc, ControlError) else str(exc), ERROR)
            return False
        return True

    async def _ask_again(self, attempt: Attempt, detail: str) -> None:
        """The gateway refused the password: forget a stored one and ask for it again."""
        if attempt.from_keyring:
            await self._forget(attempt.profile, attempt.username)
        if self._flow is not None:     # the flow that sent it may not have returned yet
            await asyncio.wait({self._flow})
        await self.connect_profile(attempt.profile, error=detail)

    def _set_flow(self, task: asyncio.Task | None) -> None:
        self._flow = task
        self.flowChanged.emit(task is not None)

    # -- the service's questions -------------------------------------------

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

    def _pin(self, name: str | None, fingerprint: str) -> None:
        profile = self.profiles.get(name) if name else None
        if profile is None or not fingerprint:
            return
        # A pin and a CA file are exclusive in a profile: the pin is what the user chose now.
        self.profiles.save(dataclasses.replace(profile, pin=fingerprint, ca=None))
        self.profilesChanged.emit()

    # -- the keyring -------------------------------------------------------

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
