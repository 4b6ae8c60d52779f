"""The controller's link to the Tunnelgate service: open it, watch it, try again.

Theory of operation. ``start`` opens a ControlClient (through ``opener``),
subscribes the ServiceBridge and reads the Status; when the service is not
there it says so (``serviceChanged(False, message)``, the message holds the
command that starts it) and tries again every ``retry_interval`` seconds.
Once it answers, a profile marked connect-at-start is connected. When the
bridge reports the service lost, the session shown is blanked, the message
says how to start the service, and the retry timer runs again. ``stop``
answers the questions still open "cancel" and closes the client. Coroutines
run for Qt slots go through ``spawn``, which turns their errors into
notifications and lets ``stop`` cancel them.
"""

from __future__ import annotations

import asyncio
import logging
import typing

from client.control.errors import ServiceUnavailable
from client.errors import ClientError
from gui.controller_types import ERROR, IDLE_STATES

log = logging.getLogger(__name__)


class ServiceLink:
    """Mixin of ``gui.controller.Controller``: the service connection's life cycle.

    Uses the Controller's signals and the attributes its ``__init__`` sets
    (``client``, ``bridge``, ``_retry``, ``_tasks``, ``_open_questions`` …).
    """

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

    # -- the service's side ------------------------------------------------

    async def _refresh_status(self) -> None:
        if self.client is not None:
            self._take_status(await self.client.status())

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

    def _set_available(self, available: bool, message: str) -> None:
        changed = (available, message) != (self.available, self.service_message)
        self.available, self.service_message = available, message
        if changed:
            self.serviceChanged.emit(available, message)

    def _take_status(self, status: dict) -> None:
        self.status = dict(status)
        self.state = status.get("state", self.state)
        self.statusChanged.emit(self.status)

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
