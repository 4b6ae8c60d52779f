"""The engine while connected: keepalives, probes, GOAWAY, and resuming a lost session.

Theory of operation. ``_stay_connected`` waits for the first of: the stop request,
the link closing, the TUN going away, a change of the network under the tunnel or
a wake from sleep (``client.netwatch``), a GOAWAY from the gateway, or ``keepalive``
seconds without any of these, which send a PING that must be answered within the
dead-peer timeout; a network change sends one at once that waits at most
``NETWORK_PROBE_TIMEOUT`` (an old path answers nothing). A GOAWAY resumes the
session on a new connection beside the old one, which drains its open flows
(``_resume_beside``). A closed link or an unanswered PING is a lost session:
``_reconnect`` enters ``reconnecting`` and tries to resume it on a new TLS
connection, paced by ``client.resume_pacing``, while the TUN, routes and DNS stay
in place (routes applied again, DNS and MTU pushed anew applied). When the gateway
no longer knows the session (it restarted), ``_resume_or_log_in`` logs in again
with the password given for this connection. A gateway that refuses, forgot the
session for good or shows another certificate ends it (``SessionLost``), and the
engine's run tears down as for any failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing

from client.awaiting import unless_stopped
from client.errors import (ClientError, HostSetupError, LoginFailed, SessionExpired, SessionLost,
                           TrustError)
from client.host_setup import gateway_address
from client.netwatch import ChangeFeed, NetWatcher
from client.states import State
from client.trust import Trust

log = logging.getLogger(__name__)

#: How long a probe sent because the network changed waits for its answer.
NETWORK_PROBE_TIMEOUT = 3.0


def _lost_for_good(reason: str, cause: ClientError) -> SessionLost:
    """The session cannot be resumed: ``cause`` (the gateway forgot it, changed it, or now
    shows another certificate) names the failure's kind."""
    lost = SessionLost(f"{reason}; could not resume: {cause}")
    lost.kind = cause.kind
    return lost


class EngineResume:
    """Mixin of ``client.engine.Engine``: staying connected and resuming a lost session.

    Uses the Engine's ``_set`` and ``_trust`` and the attributes its ``__init__`` sets
    (``options``, ``session``, ``_host``, ``_network``, ``_pacing``, ``_password``,
    ``_prompter``, ``_draining``).
    """

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
