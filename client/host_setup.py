"""The host as a connection needs it, put in place from the pushed config and undone.

Theory of operation. ``configure(session)`` works out the routes (the pushed
networks minus the excluded ones, refused before anything is touched), creates
the TUN with the pushed MTU, has the ``RouteManager`` put the TUN's addresses
and the routes in place (it journals before it changes anything), applies the
pushed DNS, binds the reflection listeners, puts the in-kernel TCP fast path on
the TUN when it can (one warning line and the pure-Python path when it cannot)
and starts the ``Datapath`` that carries the packets from then on. A full tunnel (an
included network of prefix length 0, excluded networks or not: those are IPv4 and
say nothing of IPv6) blocks IPv6 too, as IPv6 is not tunnelled and would otherwise
leave by the host's own routes: the routes send it into the TUN and the datapath
refuses it there (``block_ipv6``). On a resume,
``refresh_routes`` applies the same host state again (a new network under the
tunnel may have taken the gateway's pinned route) and ``apply_resumed`` puts a
changed DNS or MTU in place. ``stop_datapath`` then ``restore`` undo it all, in
that order, and never raise: every failure is logged and the rest is undone all
the same.
"""

from __future__ import annotations

import ipaddress
import logging
import typing

from client.awaiting import off_loop
from client.client_config import ClientConfig
from client.datapath import Datapath
from client.dns import DnsState, HostDns
from client.errors import ClientError, HostSetupError
from client.routes import HostRoutes, HostState
from client.session import GatewaySession
from client.split_routes import tunnel_routes
from client.tcp_sockets import bind_listeners
from client.tun import TunDevice

__all__ = ["HostSetup", "gateway_address", "is_full_tunnel"]

log = logging.getLogger(__name__)


def gateway_address(session: GatewaySession) -> ipaddress.IPv4Address:
    """The gateway's address as the session's connection reached it (0.0.0.0 if unknown)."""
    peer = session.link.remote_address
    return ipaddress.IPv4Address(peer[0]) if peer else ipaddress.IPv4Address("0.0.0.0")


def is_full_tunnel(include: typing.Iterable[ipaddress.IPv4Network]) -> bool:
    """Whether the pushed networks take everything (one of them is 0.0.0.0/0), whatever
    is excluded from them: then IPv6, which is not tunnelled, is blocked."""
    return any(net.prefixlen == 0 for net in include)


class HostSetup:
    """The TUN, its addresses and routes, the DNS, the listeners, the fast path and the
    datapath of one connection."""

    def __init__(self, *, tun_factory: typing.Callable[[int], TunDevice], routes: HostRoutes,
                 dns: HostDns | None, reflect_network: ipaddress.IPv4Network,
                 tcp_fast_path: bool) -> None:
        self._tun_factory = tun_factory
        self._routes = routes
        self._dns = dns
        self._reflect_network = reflect_network
        self._tcp_fast_path = tcp_fast_path
        self._state: HostState | None = None
        self._fast_path: typing.Any = None
        self.tun: TunDevice | None = None
        """The TUN device while configured."""
        self.datapath: Datapath | None = None
        """The packet paths while configured."""

    def configure(self, session: GatewaySession) -> None:
        """Put everything in place for ``session``'s config; raises HostSetupError (or
        GatewayProtocolError for networks that make too many routes). What was done before
        a failure is undone by ``stop_datapath`` and ``restore``."""
        cfg = session.config
        routes = tunnel_routes(cfg.include, cfg.exclude)   # refused before the host is touched
        net = self._reflect_network
        listen_addr, fake_addr = net.network_address + 1, net.network_address + 2
        try:
            self.tun = self._tun_factory(cfg.mtu)
        except OSError as exc:
            raise HostSetupError(f"cannot create the TUN device: {exc}") from None
        addresses = [ipaddress.IPv4Interface(f"{listen_addr}/{net.prefixlen}")]
        if cfg.address is not None:
            addresses.insert(0, cfg.address)
        state = HostState(interface=self.tun.name, addresses=tuple(addresses), routes=routes,
                          gateway=gateway_address(session),
                          preferred_source=cfg.address.ip if cfg.address else None,
                          block_ipv6=is_full_tunnel(cfg.include))
        try:
            off_loop(self._routes.apply, state)
        except OSError as exc:
            raise HostSetupError(f"cannot configure addresses and routes: {exc}") from None
        self._state = state
        if self._dns is not None and (cfg.dns_servers or cfg.dns_search):
            try:
                off_loop(self._dns.apply, DnsState(interface=self.tun.name,
                                                   servers=cfg.dns_servers, search=cfg.dns_search))
            except (OSError, ValueError) as exc:
                raise HostSetupError(f"cannot configure DNS: {exc}") from None
        try:
            listeners = bind_listeners(str(listen_addr))
        except OSError as exc:
            raise HostSetupError(f"cannot bind the reflection listeners on {listen_addr}: {exc}") from None
        self._fast_path = self._start_fast_path() if self._tcp_fast_path else None
        self.datapath = Datapath(session, self.tun, listeners, tun_address=listen_addr,
                                 fake_address=fake_addr, fast_path=self._fast_path,
                                 refuse_ipv6=state.block_ipv6)
        self.datapath.start()

    def _start_fast_path(self) -> typing.Any:
        """The TUN's in-kernel TCP fast path, or None (logged once) when it is unavailable."""
        try:
            fast_path = off_loop(self.tun.tcp_fast_path)
        except OSError as exc:
            log.warning("in-kernel TCP fast path unavailable (%s); TCP is reflected in Python", exc)
            return None
        log.info("in-kernel TCP fast path on %s", self.tun.name)
        return fast_path

    def refresh_routes(self) -> None:
        """Apply the host state again before a resume: a change of network under the
        tunnel takes the gateway's pinned route with the old address or router, and the
        resume would then go into the TUN. Idempotent; a failure is only a warning."""
        if self._state is None:
            return
        try:
            off_loop(self._routes.apply, self._state)
        except (OSError, ClientError) as exc:
            log.warning("cannot refresh the routes before resuming: %s", exc)

    def apply_resumed(self, before: ClientConfig, now: ClientConfig) -> None:
        """Put in place what the gateway pushed differently on resume: DNS (raises
        HostSetupError if it cannot) and the MTU (a warning if the TUN refuses it). The
        address and networks cannot change: ``resume`` refuses that."""
        self._apply_changed_dns(before, now)
        self._apply_changed_mtu(now)

    def _apply_changed_dns(self, before: ClientConfig, now: ClientConfig) -> None:
        if self._dns is None or (now.dns_servers, now.dns_search) == (before.dns_servers,
                                                                      before.dns_search):
            return
        log.info("the gateway changed the pushed DNS on resume; applying it")
        try:  # idempotent; an empty state puts the host's own DNS back
            off_loop(self._dns.apply, DnsState(interface=self.tun.name, servers=now.dns_servers,
                                               search=now.dns_search))
        except (OSError, ValueError) as exc:
            raise HostSetupError(f"cannot configure the DNS pushed on resume: {exc}") from None

    def _apply_changed_mtu(self, now: ClientConfig) -> None:
        """The TUN keeps its MTU when it refuses the new one; the next resume tries again."""
        if now.mtu == self.tun.mtu:
            return
        log.info("the gateway changed the MTU on resume; setting %s from %d to %d",
                 self.tun.name, self.tun.mtu, now.mtu)
        try:
            self.tun.set_mtu(now.mtu)
        except (OSError, ValueError) as exc:
            log.warning("cannot set the MTU of %s to %d, it stays %d: %s",
                        self.tun.name, now.mtu, self.tun.mtu, exc)

    async def reset_connections(self) -> None:
        """Tell the apps their connections are over, while the TUN still carries that."""
        if self.datapath is not None:
            try:
                await self.datapath.reset_connections()
            except Exception as exc:  # the teardown that follows must happen all the same
                log.warning("resetting the open connections failed: %s", exc)

    def stop_datapath(self) -> None:
        """Stop the packet paths; never raises."""
        if self.datapath is not None:
            try:
                self.datapath.close()
            except Exception as exc:  # the host changes must be undone all the same
                log.warning("closing the packet paths failed: %s", exc)
            self.datapath = None

    def restore(self) -> None:
        """Undo DNS, routes and addresses, close the TUN and the fast path; never raises."""
        if self._dns is not None:
            try:
                off_loop(self._dns.restore)
            except Exception as exc:  # restore() logs each item itself; this is a last resort
                log.warning("restoring DNS failed: %s", exc)
        try:
            off_loop(self._routes.restore)
        except Exception as exc:  # restore() logs each item itself; this is a last resort
            log.warning("restoring routes failed: %s", exc)
        self._state = None
        if self.tun is not None:
            try:
                self.tun.close()       # takes the qdisc and the BPF filter with it
            except OSError as exc:
                log.warning("closing the TUN device failed: %s", exc)
            self.tun = None
        if self._fast_path is not None:
            try:
                self._fast_path.close()
            except OSError as exc:
                log.warning("closing the in-kernel fast path failed: %s", exc)
            self._fast_path = None
