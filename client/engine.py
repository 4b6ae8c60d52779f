"""The engine: one VPN connection from login to a restored host.

Theory of operation: ``Engine.run`` walks the state table -- connecting,
authenticating, configuring, connected, disconnecting -- and reports every
transition. Configuring hands the pushed config to a ``HostSetup``
(``client.host_setup``): the TUN, its addresses and the routes of the pushed
networks minus the excluded ones (journaled before they change anything), the
pushed DNS, the reflection listeners, the in-kernel TCP fast path when it can
(``tcp_fast_path``), and the ``Datapath`` (``client.datapath``) that carries the
packets from then on and counts them (``Engine.stats``; ``Stats`` is importable
from here). While connected, a PING every ``keepalive`` seconds proves the gateway
alive, and so does one at once when the network under the tunnel changes or the
machine wakes (``client.netwatch``); a lost session is resumed on a new TLS
connection while the TUN, routes and DNS stay in place (routes applied again, DNS
and MTU pushed anew applied) -- or, when the gateway no longer knows the session (it
restarted), logged in again with the password given for this connection, kept in
memory only while connected -- and a GOAWAY from the gateway moves the session to a
new connection while the open flows finish on the old one. A disconnect logs the
session out, over a new connection if the link is down, within 2 s. A session that
ends for good, a dead peer, a TUN device that went away or a stop request all lead
through the same teardown, which stops the datapath and undoes every host change.
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
from client.errors import (ClientError, HostSetupError, LoginFailed, SessionExpired, SessionLost,
                           TrustError)
from client.host_setup import HostSetup, gateway_address
from client.nethost import NetworkHost
from client.netwatch import ChangeFeed, NetWatcher
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

#: How long a probe sent because the network changed waits for its answer.
NETWORK_PROBE_TIMEOUT = 3.0


def _lost_for_good(reason: str, cause: ClientError) -> SessionLost:
    """The session cannot be resumed: ``cause`` (the gateway forgot it, changed it, or now
    shows another certificate) names the failure's kind."""
    lost = SessionLost(f"{reason}; could not resume: {cause}")
    lost.kind = cause.kind
    return lost


class Engine:
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

    async def _stay_connected(self, stop: asyncio.Event) -> None:
        link = self.session.link
        keepalive = self.session.config.keepalive
        stopper = asyncio.ensure_future(stop.wait())
        tun_lost = self._host.datapath.tun_lost
        changes = ChangeFeed(await self._watch_network())
        try:
            while True:
                waits = {stopper, link.closed, tun_lost, changes.next}
                if not link.going_away.done():
                    waits.add(link.going_away)
                done, _ = await asyncio.wait(waits, timeout=keepalive,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    return
                if tun_lost in done:
                    raise HostSetupError(f"the TUN device {self._host.tun.name} went away "
                                         f"({tun_lost.result()})")
                why, wait = "a keepalive", self.options.dead_peer_timeout
                if changes.next in done:   # probe at once, and briefly: an old path answers nothing
                    why, wait = f"a probe after {changes.take()}", min(wait, NETWORK_PROBE_TIMEOUT)
                if link.going_away in done and link.going_away.result().error_code == 0:
                    moved = await self._resume_beside(link, stop)
                    if stop.is_set():
                        return
                    if moved:
                        link, keepalive = self.session.link, self.session.config.keepalive
                        continue
                    if not link.closed.done():
                        continue     # it drains; its close is then a lost connection
                reason = None
                if link.closed.done():
                    reason = f"lost the session with the gateway: {link.closed.result()}"
                else:
                    ping = await unless_stopped(link.ping(wait), stop)
                    if ping is None:
                        return
                    try:
                        ping.result()
                    except asyncio.TimeoutError:
                        reason = f"the gateway stopped answering (no reply to {why} within {wait:g} s)"
                        link.close("dead peer")
                    except ConnectionError:
                        continue
                if reason is not None:
                    await self._reconnect(reason, stop, changes)
                    if stop.is_set():
                        return
                    link, keepalive = self.session.link, self.session.config.keepalive
        finally:
            stopper.cancel()
            changes.close()

    async def _resume_beside(self, old: typing.Any, stop: asyncio.Event) -> bool:
        """The gateway sent GOAWAY: resume on a new connection for the flows to come while
        the open ones finish on ``old``. False when that fails for now (``old`` then drains,
        and its close is handled like any lost connection); SessionLost when the gateway
        no longer knows the session."""
        log.info("the gateway is going away (%s); resuming on a new connection while the "
                 "open flows finish", old.going_away.result().reason or "no reason given")
        before = self.session.config
        self._host.refresh_routes()
        attempt = await unless_stopped(self._resume_or_log_in(self._trust()), stop)
        if attempt is None:
            return False
        try:
            attempt.result()
        except (LoginFailed, SessionLost, TrustError) as exc:
            raise _lost_for_good("the gateway went away", exc) from None
        except ClientError as exc:
            log.info("could not resume beside the connection going away: %s", exc)
            return False
        self._draining.add(old)
        old.closed.add_done_callback(lambda _: self._draining.discard(old))
        self._host.apply_resumed(before, self.session.config)
        return True

    async def _watch_network(self) -> NetWatcher | None:
        """The watcher of the route to the gateway and of sleep (started once the routes are
        in place, so the gateway's pinned route is part of what it starts from); None when
        the gateway's address is unknown."""
        gateway = gateway_address(self.session)
        if gateway.is_unspecified:
            return None
        return await NetWatcher.open(gateway, host=self._network)

    async def _reconnect(self, reason: str, stop: asyncio.Event, changes: ChangeFeed) -> None:
        """Get the session back on a new TLS connection with the same token.

        The TUN, routes and DNS stay in place meanwhile; TCP connections that
        were open are reset (their streams died with the old connection). A change
        of the network (one that came back) cuts the pause before the next attempt.
        Raises SessionLost when the gateway stays away, or forgot the session and
        refuses to log the user in again, and at once (without entering
        ``reconnecting``) when the reconnect window is 0.
        """
        delays = self._pacing.lost(time.monotonic())
        if not delays:
            raise SessionLost(f"{reason} (reconnecting is off)")
        self._set(State.RECONNECTING, reason)
        trust = self._trust()
        last = reason
        before = self.session.config
        for delay in delays:
            if await changes.pause(delay, stop):
                log.info("%s: trying to resume at once", changes.take())
            if stop.is_set():
                return
            self._host.refresh_routes()
            attempt = await unless_stopped(self._resume_or_log_in(trust), stop)
            if attempt is None:
                return
            try:
                how = attempt.result()
            except (LoginFailed, SessionLost, TrustError) as exc:
                raise _lost_for_good(reason, exc) from None
            except ClientError as exc:
                last = str(exc)
                continue
            self._host.apply_resumed(before, self.session.config)
            self._pacing.established(time.monotonic())
            self._set(State.CONNECTED, how)
            return
        raise SessionLost(f"{reason}; could not reconnect ({last})")

    async def _resume_or_log_in(self, trust: Trust) -> str:
        """Resume the session on a new connection, or log in again when the gateway no
        longer knows it (it restarted, or the session expired there) -- with the password
        given for this connection, and a new one-time code if one is needed. What was
        done, for the state's detail; raises what failed."""
        try:
            await self.session.resume(trust)
            return "reconnected"
        except SessionExpired as exc:
            log.info("%s; logging in again", exc)
        await self.session.log_in_again(trust, self.options.username, self._password,
                                        prompter=self._prompter)
        return "reconnected (logged in again)"

    def _teardown(self) -> None:
        """Undo everything; never raises (failures are logged)."""
        self._password = ""   # kept only while connected, for logging in again
        self._host.stop_datapath()
        if self.session is not None and self.session.link.is_open:
            self.session.link.close("disconnecting")
        for link in list(self._draining):
            link.close("disconnecting")
        self._host.restore()
