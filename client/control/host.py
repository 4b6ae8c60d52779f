"""EngineHost: the service's one engine at a time, and the attempt's lifecycle.

Theory of operation. ``connect`` checks that nothing is running, builds an
``Engine`` (through ``engine_factory``, so tests can use a fake) with fresh
TUN/routes/DNS managers from the factories, and runs it in a task; every
state change goes to the notifier as a ``state`` notification (a failed
one names its ``error_kind``, taken from the engine's ``failure``). While the
engine runs, a sampler turns the byte counters into rates; the Status and
stats documents are built by ``HostStatus`` (``status``). The host is also
the engine's ``Prompter``: its questions, and their answers through
``answer``, are ``HostQuestions`` (``questions``). ``disconnect`` asks a
connected engine to stop (it logs out and restores the host) and cancels one
that is still logging in. Secrets given for the attempt (password, one-time
codes) are listed in ``secrets`` so the log forwarder can blank them out
should one ever appear.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import pathlib
import time
import typing

from client.control.errors import Busy
from client.control.questions import HostQuestions, HostPrompter, Question
from client.control.status import ACTIVE, HostStatus
from client.engine import Engine, EngineOptions
from client.errors import ClientError, UsageError, failure_kind
from client.resume_pacing import RECONNECT_FOR, reconnect_delays
from client.session import GatewayAddress
from client.states import State
from client.trust import Trust

log = logging.getLogger(__name__)

SERVICE_VERSION = "0.1.0"

Notifier = typing.Callable[[str, dict], int]
"""Sends a notification to the subscribers; returns how many there were."""


@dataclasses.dataclass
class _Attempt:
    """What the current (or last) connection attempt is about."""

    gateway: GatewayAddress
    username: str
    profile: str | None
    engine: typing.Any
    owner: int | None = None
    task: asyncio.Task | None = None
    connected_since: float | None = None
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class EngineHost(HostQuestions, HostStatus):
    """Owns at most one engine; implements the engine's Prompter for the service."""

    def __init__(self, *, tun_factory: typing.Callable[[int], typing.Any],
                 routes_factory: typing.Callable[[], typing.Any],
                 dns_factory: typing.Callable[[], typing.Any] | None = None,
                 engine_factory: typing.Callable[..., typing.Any] = Engine,
                 state_dir: pathlib.Path | None = None, prompt_timeout: float = 120.0,
                 sample_interval: float = 1.0,
                 reflect_network: ipaddress.IPv4Network | None = None) -> None:
        self._tun_factory = tun_factory
        self._routes_factory = routes_factory
        self._dns_factory = dns_factory
        self._engine_factory = engine_factory
        self.state_dir = state_dir
        """Where the journals of host changes live (None: no recovery)."""
        self.prompt_timeout = prompt_timeout
        self.sample_interval = sample_interval
        self._reflect_network = reflect_network
        self._notify: Notifier = lambda method, params: 0
        self.state = State.DISCONNECTED
        self.detail = ""
        self.error: str | None = None
        self.error_kind: str | None = None
        """The machine-readable kind of ``error`` (client.errors.ClientError.kind)."""
        self._attempt: _Attempt | None = None
        self._questions: dict[str, Question] = {}
        self._rates = (0.0, 0.0)
        self._sampler: asyncio.Task | None = None
        self.secrets: set[str] = set()
        """Strings that must never leave the service (this attempt's password, codes)."""

    def set_notifier(self, notify: Notifier) -> None:
        """Where notifications go (the server's broadcast)."""
        self._notify = notify

    # -- recovery ----------------------------------------------------------

    def recover(self) -> bool:
        """Undo host changes a crashed earlier run left (journals in state_dir); True if any."""
        if self.state_dir is None:
            return False
        from client.dns import DnsManager
        from client.routes import RouteManager
        done = RouteManager.recover(self.state_dir / "host-changes.json")
        done = DnsManager.recover(self.state_dir / "dns-changes.json") or done
        if done:
            log.warning("restored host changes left by an earlier run that did not finish")
        return done

    # -- commands ----------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether an engine is running (or connecting)."""
        task = self._attempt.task if self._attempt else None
        return (task is not None and not task.done()) or self.state in ACTIVE

    async def connect(self, gateway: str, username: str, password: str, *, ca_pem: str | None = None,
                      pin: str | None = None, profile: str | None = None, owner: int | None = None,
                      reconnect_for: float | None = None) -> None:
        """Start a connection attempt; returns at once. Raises Busy or UsageError.

        ``ca_pem`` is the PEM text of the CA certificate(s): the service never
        opens a path given by a user. ``owner`` is the uid that asked: only it
        (or root) may answer the attempt's questions. ``reconnect_for``: seconds to keep
        trying to get a lost session back (0: never; None: ``RECONNECT_FOR``).
        """
        if self.busy:
            raise Busy(f"already {self.state.value} to {self._attempt.gateway}; disconnect first")
        if not isinstance(username, str) or not username:
            raise UsageError("username must be a non-empty string")
        if not isinstance(password, str):
            raise UsageError("password must be a string")
        address = GatewayAddress.parse(gateway)
        trust = Trust(ca_pem=ca_pem, pin=pin or None)
        window = RECONNECT_FOR if reconnect_for is None else reconnect_for
        options = EngineOptions(gateway=address, trust=trust, username=username,
                                reconnect_delays=reconnect_delays(window))
        if self._reflect_network is not None:
            options = dataclasses.replace(options, reflect_network=self._reflect_network)
        self.secrets = {password} if password else set()
        engine = self._engine_factory(
            options, password, tun_factory=self._tun_factory, routes=self._routes_factory(),
            dns=self._dns_factory() if self._dns_factory else None,
            on_state=self._on_state, prompter=HostPrompter(self))
        self.error = self.error_kind = None
        self._rates = (0.0, 0.0)
        self._attempt = _Attempt(gateway=address, username=username, profile=profile, engine=engine,
                                 owner=owner)
        self._attempt.task = asyncio.get_running_loop().create_task(self._run(self._attempt))

    async def disconnect(self) -> None:
        """Stop the engine (if any) and wait until the host is restored."""
        attempt = self._attempt
        if attempt is not None and attempt.task is not None and not attempt.task.done():
            self._cancel_questions()
            if attempt.engine.state in (State.CONNECTED, State.RECONNECTING):
                attempt.stop.set()
            else:
                attempt.task.cancel()  # still logging in: nothing to log out of
            await asyncio.wait({attempt.task})
        if self.state is not State.DISCONNECTED:
            self.error = self.error_kind = None
            self._set(State.DISCONNECTED, "")
        self.secrets = set()

    def privy(self, uid: int | None) -> bool:
        """Whether ``uid`` may act on, or see secrets of, the current attempt: root, the
        user who started it (None: unchecked), or anyone when there is no owner."""
        owner = self._attempt.owner if self._attempt else None
        return uid in (None, 0) or owner is None or uid == owner

    async def shutdown(self) -> None:
        """Disconnect for good (the service is stopping)."""
        await self.disconnect()

    # -- internals ---------------------------------------------------------

    def _set(self, state: State, detail: str) -> None:
        self.state, self.detail = state, detail
        kind = self.error_kind if state is State.FAILED else None
        self._notify("state", {"state": state.value, "detail": detail, "error_kind": kind})

    def _on_state(self, state: State, detail: str) -> None:
        if state is State.FAILED:
            # The engine calling back is the current attempt's (one at a time).
            self.error, self.error_kind = detail, failure_kind(self._attempt.engine.failure)
        if state is State.CONNECTED and self._attempt and self._attempt.connected_since is None:
            self._attempt.connected_since = time.time()
        self._set(state, detail)

    async def _run(self, attempt: _Attempt) -> None:
        sampler = asyncio.get_running_loop().create_task(self._sample(attempt))
        try:
            await attempt.engine.run(attempt.stop)
        except ClientError as exc:
            log.info("connection attempt failed: %s", exc)
        except asyncio.CancelledError:
            log.info("connection attempt cancelled")
        except Exception:
            log.exception("the engine failed unexpectedly")
            if self.state is not State.FAILED:
                self.error = "internal error in the engine (see the service log)"
                self.error_kind = failure_kind(None)
                self._set(State.FAILED, self.error)
        finally:
            sampler.cancel()
            self._cancel_questions()
            self.secrets = set()
            self._rates = (0.0, 0.0)
