"""The engine: one VPN connection from login to a restored host.

Theory of operation: ``Engine.run`` walks the state table -- connecting,
authenticating, configuring, connected, disconnecting -- and reports every
transition. Configuring hands the pushed config to a ``HostSetup``
(``client.host_setup``): the TUN, its addresses and the routes of the pushed
networks minus the excluded ones (journaled before they change anything), the
pushed DNS, the reflection listeners, the in-kernel TCP fast path when it can
(``tcp_fast_path``), and the ``Datapath`` (``client.datapath``) that carries the
packets from then on and counts them (``Engine.stats``; ``Stats`` is importable
from here). While connected, the ``EngineResume`` part (``client.engine_resume``)
proves the gateway alive with a PING every ``keepalive`` seconds, and at once when
the network under the tunnel changes or the machine wakes; a lost session is
resumed on a new TLS connection while the TUN, routes and DNS stay in place -- or,
when the gateway no longer knows the session (it restarted), logged in again with
the password given for this connection, kept in memory only while connected -- and
a GOAWAY from the gateway moves the session to a new connection while the open
flows finish on the old one. A disconnect logs the session out, over a new
connection if the link is down, within 2 s. A session that ends for good, a dead
peer, a TUN device that went away or a stop request all lead through the same
teardown, which stops the datapath and undoes every host change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import typing

from client.awaiting import unless_stopped
from client.datapath import Stats
from client.dns import HostDns
from client.engine_options import EngineOptions
from client.engine_resume import EngineResume
from client.errors import ClientError, TrustError
from client.host_setup import HostSetup
from client.nethost import NetworkHost
from client.prompter import Prompter
from client.resume_pacing import ResumePacing
from client.routes import HostRoutes
from client.session import GatewaySession, open_session
from client.split_routes import describe_networks
from client.states import State, check_transition
from client.trust import Trust
from client.tun import TunDevice

__all__ = ["Engine", "EngineOptions", "Stats"]

log = logging.getLogger(__name__)


class Engine(EngineResume):
    """Runs one connection; host changes are always undone."""

    def __init__(self, options: EngineOptions, password: str, *,
                 tun_factory: typing.Callable[[int], TunDevice], routes: HostRoutes,
                 dns: HostDns | None = None,
                 on_state: typing.Callable[[State, str], None] = lambda s, d: None,
                 prompter: Prompter | None = None, network: NetworkHost | None = None) -> None:
        """``network`` is what the network watcher reads (None: this host's netlink and clocks)."""
        self.options = options
        self._network = network
        self._password = password
        self._host = HostSetup(tun_factory=tun_factory, routes=routes, dns=dns,
                               reflect_network=options.reflect_network,
                               tcp_fast_path=options.tcp_fast_path)
        self._on_state = on_state
        self._prompter = prompter
        #: The fingerprint the user chose to trust during this connection, if any.
        self.trusted_pin: str | None = None
        #: The error that ended the run, set before the failed state is announced
        #: (None while it has not failed, or when it was interrupted).
        self.failure: ClientError | None = None
        self._pacing = ResumePacing(options.reconnect_delays)
        self.state = State.DISCONNECTED
        self.session: GatewaySession | None = None
        self._draining: set[typing.Any] = set()    # links the gateway sent GOAWAY on, finishing

    def _set(self, state: State, detail: str = "") -> None:
        check_transition(self.state, state)
        self.state = state
        log.info("state %s %s", state.value, detail)
        self._on_state(state, detail)

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        link = self.session.link if self.session else None
        if self._host.datapath is not None:
            return self._host.datapath.stats(link)
        return Stats(bytes_in=link.bytes_in if link else 0, bytes_out=link.bytes_out if link else 0,
                     open_flows=0, flows_refused=0)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stay connected until ``stop`` is set, then restore the host.

        Raises ClientError (after restoring the host) when the connection
        cannot be made or is lost.
        """
        opts = self.options
        self._set(State.CONNECTING, str(opts.gateway))
        try:
            self.session = await self._log_in(stop)
            if self.session is not None:  # None: stopped while logging in
                self._set(State.CONFIGURING)
                self._host.configure(self.session)
                cfg = self.session.config
                self._set(State.CONNECTED, "address {} networks {}".format(
                    cfg.address or self._tun_address(), describe_networks(cfg.include, cfg.exclude)))
                self._pacing.established(time.monotonic())
                await self._stay_connected(stop)
        except ClientError as exc:
            await self._host.reset_connections()
            self._teardown()
            self.failure = exc
            self._set(State.FAILED, str(exc))
            raise
        except BaseException:
            self._teardown()
            self._set(State.FAILED, "interrupted")
            raise
        self._set(State.DISCONNECTING)
        try:
            await self._host.reset_connections()
            if self.session is not None:   # over a new connection if the link is down
                await self.session.logout(self._trust())
        except BaseException:
            # Cancelled (a second stop, the service shutting down) or failed while
            # logging out: the host must still be put back.
            self._teardown()
            self._set(State.FAILED, "interrupted while disconnecting")
            raise
        self._teardown()
        self._set(State.DISCONNECTED)

    async def _log_in(self, stop: asyncio.Event) -> GatewaySession | None:
        """The logged-in session, or None when ``stop`` is set first: Ctrl-C or SIGTERM
        while connecting ends the attempt at once instead of after the login timeouts."""
        login = await unless_stopped(self._open_session(), stop)
        return None if login is None else login.result()

    def _authenticating(self) -> None:
        if self.state is State.CONNECTING:
            self._set(State.AUTHENTICATING, self.options.username)

    async def _open_session(self) -> GatewaySession:
        """Log in; an untrusted certificate is put to the user when someone can answer."""
        opts = self.options
        try:
            return await open_session(opts.gateway, opts.trust, opts.username, self._password,
                                      prompter=self._prompter, on_secure=self._authenticating)
        except TrustError as exc:
            info = exc.certificate
            if self._prompter is None or info is None:
                raise
            decision = await self._prompter.trust_certificate(info)
            if decision not in ("once", "always"):
                raise
        # The pin makes sure the server is still the one the user looked at.
        self.trusted_pin = info.fingerprint
        return await open_session(opts.gateway, Trust(pin=info.fingerprint), opts.username,
                                  self._password, prompter=self._prompter,
                                  on_secure=self._authenticating)

    def _trust(self) -> Trust:
        """How to trust the gateway on a new connection: pinned to the certificate the
        user accepted during this connection, if any."""
        return Trust(pin=self.trusted_pin) if self.trusted_pin else self.options.trust

    def _tun_address(self) -> ipaddress.IPv4Address:
        return self.options.reflect_network.network_address + 1

    def _teardown(self) -> None:
        """Undo everything; never raises (failures are logged)."""
        self._password = ""   # kept only while connected, for logging in again
        self._host.stop_datapath()
        if self.session is not None and self.session.link.is_open:
            self.session.link.close("disconnecting")
        for link in list(self._draining):
            link.close("disconnecting")
        self._host.restore()
