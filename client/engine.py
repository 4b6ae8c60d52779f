"""The engine: one VPN connection from login to a restored host.

Theory of operation: ``Engine.run`` walks the state table -- connecting,
authenticating, configuring, connected, disconnecting -- and reports every
transition. Configuring creates the TUN, asks the ``RouteManager`` to put the
pushed address in place and to route the pushed networks minus the excluded ones
(``client.split_routes``) into the TUN (it journals before it changes anything),
applies the pushed DNS, binds the reflection listeners, puts the in-kernel TCP
fast path on the TUN when it can (``tcp_fast_path``; one warning line and the
pure-Python path when it cannot) and hands all that to a ``Datapath``
(``client.datapath``), which carries the packets from then on and counts them
(``Engine.stats``; ``Stats`` is importable from here). While connected, a PING
every ``keepalive`` seconds proves the gateway alive; a lost session is resumed
on a new TLS connection while the TUN, routes and DNS stay in place (DNS and MTU
pushed anew are applied). A disconnect logs the session out, over a new connection
if the link is down, within 2 s. A session that ends for good, a dead peer, a TUN
device that went away or a stop request all lead through the same teardown, which
stops the datapath and undoes every host change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
import typing

from client.bpf.offload import offload_enabled
from client.datapath import Datapath, Stats
from client.dns import DnsState, HostDns
from client.awaiting import off_loop, unless_stopped
from client.errors import ClientError, HostSetupError, LoginFailed, SessionLost, TrustError
from client.nethost import NetworkHost
from client.netwatch import NetWatcher
from client.prompter import Prompter
from client.routes import HostRoutes, HostState
from client.session import ClientConfig, GatewayAddress, GatewaySession, open_session
from client.split_routes import describe_networks, tunnel_routes
from client.states import State, check_transition
from client.tcp_path import bind_listeners
from client.trust import Trust
from client.tun import TunDevice

log = logging.getLogger(__name__)

#: Private link network of the TUN used for TCP reflection: the TUN's own
#: address (where the listener is bound) and one unassigned neighbour.
REFLECT_NETWORK = ipaddress.IPv4Network("198.18.255.252/30")


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """How to connect."""

    gateway: GatewayAddress
    """The gateway."""
    trust: Trust
    """How to trust its certificate."""
    username: str
    """Login name."""
    reflect_network: ipaddress.IPv4Network = REFLECT_NETWORK
    """The TUN's reflection link network (a /30 or larger)."""
    dead_peer_timeout: float = 10.0
    """A PING unanswered this long ends the session."""
    reconnect_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    """Pauses before each attempt to resume a lost session (empty: never)."""
    tcp_fast_path: bool = dataclasses.field(default_factory=offload_enabled)
    """Rewrite established TCP flows in the kernel (eBPF on the TUN) instead of in Python.
    Defaults to on unless ``$TUNNELGATE_BPF=0``; falls back to Python where BPF is unavailable."""


#: How long a probe sent because the network changed waits for its answer.
NETWORK_PROBE_TIMEOUT = 3.0
#: A session lost again sooner than this after it was (re)established counts as a quick loss.
STABLE_AFTER = 30.0
#: The longest extra pause before resuming after quick losses in a row.
MAX_FLAP_PAUSE = 30.0


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
        self._tun_factory = tun_factory
        self._routes = routes
        self._dns = dns
        self._on_state = on_state
        self._prompter = prompter
        #: The fingerprint the user chose to trust during this connection, if any.
        self.trusted_pin: str | None = None
        #: The error that ended the run, set before the failed state is announced
        #: (None while it has not failed, or when it was interrupted).
        self.failure: ClientError | None = None
        self._up_since: float | None = None     # when the session was last (re)established
        self._quick_losses = 0                   # sessions in a row lost within STABLE_AFTER
        self.state = State.DISCONNECTED
        self.session: GatewaySession | None = None
        self._tun: TunDevice | None = None
        self._fast_path: typing.Any = None
        self._datapath: Datapath | None = None
        self._host_state: HostState | None = None
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
        if self._datapath is not None:
            return self._datapath.stats(link)
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
            try:
                self.session = await self._log_in(stop)
            finally:
                self._password = ""  # not needed any more, whatever happened
            if self.session is not None:  # None: stopped while logging in
                self._set(State.CONFIGURING)
                self._configure(self.session)
                cfg = self.session.config
                self._set(State.CONNECTED, "address {} networks {}".format(
                    cfg.address or self._tun_address(), describe_networks(cfg.include, cfg.exclude)))
                self._up_since = time.monotonic()
                await self._stay_connected(stop)
        except ClientError as exc:
            await self._reset_connections()
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
            await self._reset_connections()
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

    def _configure(self, session: GatewaySession) -> None:
        cfg = session.config
        routes = tunnel_routes(cfg.include, cfg.exclude)   # refused before the host is touched
        net = self.options.reflect_network
        listen_addr = net.network_address + 1
        fake_addr = net.network_address + 2
        try:
            self._tun = self._tun_factory(cfg.mtu)
        except OSError as exc:
            raise HostSetupError(f"cannot create the TUN device: {exc}") from None
        addresses = [ipaddress.IPv4Interface(f"{listen_addr}/{net.prefixlen}")]
        if cfg.address is not None:
            addresses.insert(0, cfg.address)
        gateway_ip = self._gateway_ip(session)
        state = HostState(interface=self._tun.name, addresses=tuple(addresses),
                          routes=routes, gateway=gateway_ip,
                          preferred_source=cfg.address.ip if cfg.address else None)
        try:
            off_loop(self._routes.apply, state)
        except OSError as exc:
            raise HostSetupError(f"cannot configure addresses and routes: {exc}") from None
        self._host_state = state
        if self._dns is not None and (cfg.dns_servers or cfg.dns_search):
            try:
                off_loop(self._dns.apply, DnsState(interface=self._tun.name,
                                                   servers=cfg.dns_servers, search=cfg.dns_search))
            except (OSError, ValueError) as exc:
                raise HostSetupError(f"cannot configure DNS: {exc}") from None
        try:
            listeners = bind_listeners(str(listen_addr))
        except OSError as exc:
            raise HostSetupError(f"cannot bind the reflection listeners on {listen_addr}: {exc}") from None
        self._fast_path = self._start_fast_path() if self.options.tcp_fast_path else None
        self._datapath = Datapath(session, self._tun, listeners, tun_address=listen_addr,
                                  fake_address=fake_addr, fast_path=self._fast_path)
        self._datapath.start()

    def _start_fast_path(self) -> typing.Any:
        """The TUN's in-kernel TCP fast path, or None (logged once) when it is unavailable."""
        try:
            fast_path = off_loop(self._tun.tcp_fast_path)
        except OSError as exc:
            log.warning("in-kernel TCP fast path unavailable (%s); TCP is reflected in Python", exc)
            return None
        log.info("in-kernel TCP fast path on %s", self._tun.name)
        return fast_path

    @staticmethod
    def _gateway_ip(session: GatewaySession) -> ipaddress.IPv4Address:
        peer = session.link.remote_address
        return ipaddress.IPv4Address(peer[0]) if peer else ipaddress.IPv4Address("0.0.0.0")

    async def _stay_connected(self, stop: asyncio.Event) -> None:
        link = self.session.link
        keepalive = self.session.config.keepalive
        stopper = asyncio.ensure_future(stop.wait())
        tun_lost = self._datapath.tun_lost
        watcher = await self._watch_network()
        change = asyncio.ensure_future(watcher.changed()) if watcher else asyncio.Future()
        try:
            while True:
                waits = {stopper, link.closed, tun_lost, change}
                if not link.going_away.done():
                    waits.add(link.going_away)
                done, _ = await asyncio.wait(waits, timeout=keepalive,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    return
                if tun_lost in done:
                    raise HostSetupError(f"the TUN device {self._tun.name} went away "
                                         f"({tun_lost.result()})")
                why, wait = "a keepalive", self.options.dead_peer_timeout
                if change in done:   # probe at once, and briefly: an old path answers nothing
                    why, wait = f"a probe after {change.result()}", min(wait, NETWORK_PROBE_TIMEOUT)
                    change = asyncio.ensure_future(watcher.changed())
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
                    await self._reconnect(reason, stop)
                    if stop.is_set():
                        return
                    link, keepalive = self.session.link, self.session.config.keepalive
        finally:
            stopper.cancel()
            change.cancel()
            if watcher is not None:
                watcher.close()

    async def _resume_beside(self, old: typing.Any, stop: asyncio.Event) -> bool:
        """The gateway sent GOAWAY: resume on a new connection for the flows to come while
        the open ones finish on ``old``. False when that fails for now (``old`` then drains,
        and its close is handled like any lost connection); SessionLost when the gateway
        no longer knows the session."""
        log.info("the gateway is going away (%s); resuming on a new connection while the "
                 "open flows finish", old.going_away.result().reason or "no reason given")
        before = self.session.config
        self._refresh_routes()
        attempt = await unless_stopped(self.session.resume(self._trust()), stop)
        if attempt is None:
            return False
        try:
            attempt.result()
        except (LoginFailed, SessionLost, TrustError) as exc:
            lost = SessionLost(f"the gateway went away; could not resume: {exc}")
            lost.kind = exc.kind
            raise lost from None
        except ClientError as exc:
            log.info("could not resume beside the connection going away: %s", exc)
            return False
        self._draining.add(old)
        old.closed.add_done_callback(lambda _: self._draining.discard(old))
        self._apply_changed_dns(before, self.session.config)
        self._apply_changed_mtu(self.session.config)
        return True

    async def _watch_network(self) -> NetWatcher | None:
        """The watcher of the route to the gateway and of sleep (started once the routes are
        in place, so the gateway's pinned route is part of what it starts from); None when
        the gateway's address is unknown."""
        gateway = self._gateway_ip(self.session)
        if gateway.is_unspecified:
            return None
        return await NetWatcher.open(gateway, host=self._network)

    async def _reconnect(self, reason: str, stop: asyncio.Event) -> None:
        """Get the session back on a new TLS connection with the same token.

        The TUN, routes and DNS stay in place meanwhile; TCP connections that
        were open are reset (their streams died with the old connection).
        Raises SessionLost when the gateway stays away or forgot the session.
        """
        self._set(State.RECONNECTING, reason)
        trust = self._trust()
        last = reason
        before = self.session.config
        for delay in self._resume_delays():
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return
            except asyncio.TimeoutError:
                pass
            self._refresh_routes()
            attempt = await unless_stopped(self.session.resume(trust), stop)
            if attempt is None:
                return
            try:
                attempt.result()
            except (LoginFailed, SessionLost, TrustError) as exc:
                lost = SessionLost(f"{reason}; could not resume: {exc}")
                lost.kind = exc.kind      # the cause names the failure: an untrusted certificate…
                raise lost from None
            except ClientError as exc:
                last = str(exc)
                continue
            self._apply_changed_dns(before, self.session.config)
            self._apply_changed_mtu(self.session.config)
            self._up_since = time.monotonic()
            self._set(State.CONNECTED, "reconnected")
            return
        raise SessionLost(f"{reason}; could not reconnect ({last})")

    def _refresh_routes(self) -> None:
        """Apply the host state again before a resume: a change of network under the
        tunnel takes the gateway's pinned route with the old address or router, and the
        resume would then go into the TUN. Idempotent; a failure is only a warning."""
        try:
            off_loop(self._routes.apply, self._host_state)
        except (OSError, ClientError) as exc:
            log.warning("cannot refresh the routes before resuming: %s", exc)

    def _resume_delays(self) -> tuple[float, ...]:
        """The pauses before each resume attempt. A gateway that accepts each resume and
        drops the session again at once would otherwise be hammered every first delay, for
        ever: after quick losses in a row the first pause doubles, up to MAX_FLAP_PAUSE."""
        delays = self.options.reconnect_delays
        quick = self._up_since is not None and time.monotonic() - self._up_since < STABLE_AFTER
        self._quick_losses = self._quick_losses + 1 if quick else 0
        if not delays or not self._quick_losses:
            return delays
        return (min(delays[0] * 2 ** self._quick_losses, MAX_FLAP_PAUSE), *delays[1:])

    def _apply_changed_dns(self, before: ClientConfig, now: ClientConfig) -> None:
        """Put the DNS the gateway pushed on resume in place, if it differs (the address
        and networks cannot change: ``resume`` refuses that)."""
        if self._dns is None or (now.dns_servers, now.dns_search) == (before.dns_servers,
                                                                      before.dns_search):
            return
        log.info("the gateway changed the pushed DNS on resume; applying it")
        try:  # idempotent; an empty state puts the host's own DNS back
            off_loop(self._dns.apply, DnsState(interface=self._tun.name, servers=now.dns_servers,
                                               search=now.dns_search))
        except (OSError, ValueError) as exc:
            raise HostSetupError(f"cannot configure the DNS pushed on resume: {exc}") from None

    def _apply_changed_mtu(self, now: ClientConfig) -> None:
        """Give the TUN the MTU the gateway pushed on resume, if it differs. A failure is
        a warning, not a lost session: the TUN keeps its MTU (tried again at the next resume)."""
        if now.mtu == self._tun.mtu:
            return
        log.info("the gateway changed the MTU on resume; setting %s from %d to %d",
                 self._tun.name, self._tun.mtu, now.mtu)
        try:
            self._tun.set_mtu(now.mtu)
        except (OSError, ValueError) as exc:
            log.warning("cannot set the MTU of %s to %d, it stays %d: %s",
                        self._tun.name, now.mtu, self._tun.mtu, exc)

    async def _reset_connections(self) -> None:
        """Tell the apps their connections are over, while the TUN still carries that."""
        if self._datapath is not None:
            try:
                await self._datapath.reset_connections()
            except Exception as exc:  # the teardown that follows must happen all the same
                log.warning("resetting the open connections failed: %s", exc)

    def _teardown(self) -> None:
        """Undo everything; never raises (failures are logged)."""
        if self._datapath is not None:
            try:
                self._datapath.close()
            except Exception as exc:  # the host changes below must be undone all the same
                log.warning("closing the packet paths failed: %s", exc)
            self._datapath = None
        if self.session is not None and self.session.link.is_open:
            self.session.link.close("disconnecting")
        for link in list(self._draining):
            link.close("disconnecting")
        if self._dns is not None:
            try:
                off_loop(self._dns.restore)
            except Exception as exc:  # restore() logs each item itself; this is a last resort
                log.warning("restoring DNS failed: %s", exc)
        try:
            off_loop(self._routes.restore)
        except Exception as exc:  # restore() logs each item itself; this is a last resort
            log.warning("restoring routes failed: %s", exc)
        if self._tun is not None:
            try:
                self._tun.close()       # takes the qdisc and the BPF filter with it
            except OSError as exc:
                log.warning("closing the TUN device failed: %s", exc)
            self._tun = None
        if self._fast_path is not None:
            try:
                self._fast_path.close()
            except OSError as exc:
                log.warning("closing the in-kernel fast path failed: %s", exc)
            self._fast_path = None
