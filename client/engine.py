"""The engine: one VPN connection from login to a restored host.

Theory of operation: ``Engine.run`` walks the state table -- connecting,
authenticating, configuring, connected, disconnecting -- and reports every
transition. Configuring creates the TUN, asks the ``RouteManager`` to put the
pushed address and routes in place (it journals before it changes anything),
binds the reflection listener and starts reading the TUN. While connected,
a PING every ``keepalive`` seconds proves the gateway alive; a session that
ends, a dead peer or a stop request all lead through the same ``finally``
that undoes every host change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
import threading
import time
import typing

from client.errors import ClientError, HostSetupError, SessionLost
from client.reflector import Reflector
from client.routes import HostState, RouteManager
from client.session import GatewayAddress, GatewaySession, open_session
from client.states import State, check_transition
from client.tcp_path import TcpPath
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


@dataclasses.dataclass(frozen=True)
class Stats:
    """Counters for status displays."""

    bytes_in: int
    """Bytes received from the gateway (TLS payload)."""
    bytes_out: int
    """Bytes sent to the gateway."""
    open_flows: int
    """TCP flows with a stream."""
    flows_refused: int
    """TCP flows the gateway refused."""


def off_loop(fn: typing.Callable, *args: object) -> object:
    """Run a short blocking call in a thread of its own and wait for it.

    pyroute2 drives an event loop of its own inside its synchronous API, which
    cannot run inside ours; a plain thread has no running loop.
    """
    result: list[object] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="host-changes")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0] if result else None


class Engine:
    """Runs one connection; host changes are always undone."""

    def __init__(self, options: EngineOptions, password: str, *,
                 tun_factory: typing.Callable[[int], TunDevice], routes: RouteManager,
                 on_state: typing.Callable[[State, str], None] = lambda s, d: None) -> None:
        self.options = options
        self._password = password
        self._tun_factory = tun_factory
        self._routes = routes
        self._on_state = on_state
        self.state = State.DISCONNECTED
        self.session: GatewaySession | None = None
        self._tun: TunDevice | None = None
        self._tcp: TcpPath | None = None
        self._ticker: asyncio.Task | None = None

    def _set(self, state: State, detail: str = "") -> None:
        check_transition(self.state, state)
        self.state = state
        log.info("state %s %s", state.value, detail)
        self._on_state(state, detail)

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        link = self.session.link if self.session else None
        return Stats(bytes_in=link.bytes_in if link else 0, bytes_out=link.bytes_out if link else 0,
                     open_flows=self._tcp.open_flows if self._tcp else 0,
                     flows_refused=self._tcp.flows_refused if self._tcp else 0)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stay connected until ``stop`` is set, then restore the host.

        Raises ClientError (after restoring the host) when the connection
        cannot be made or is lost.
        """
        opts = self.options
        self._set(State.CONNECTING, str(opts.gateway))
        try:
            self._set(State.AUTHENTICATING, opts.username)
            self.session = await open_session(opts.gateway, opts.trust, opts.username,
                                              self._password)
            self._password = ""
            self._set(State.CONFIGURING)
            self._configure(self.session)
            cfg = self.session.config
            self._set(State.CONNECTED, "address {} networks {}".format(
                cfg.address or self._tun_address(), ",".join(map(str, cfg.include)) or "none"))
            await self._stay_connected(stop)
        except ClientError as exc:
            self._teardown()
            self._set(State.FAILED, str(exc))
            raise
        except BaseException:
            self._teardown()
            self._set(State.FAILED, "interrupted")
            raise
        self._set(State.DISCONNECTING)
        if self.session is not None:
            await self.session.logout()
        self._teardown()
        self._set(State.DISCONNECTED)

    def _tun_address(self) -> ipaddress.IPv4Address:
        return self.options.reflect_network.network_address + 1

    def _configure(self, session: GatewaySession) -> None:
        cfg = session.config
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
                          routes=cfg.include, gateway=gateway_ip,
                          preferred_source=cfg.address.ip if cfg.address else None)
        try:
            off_loop(self._routes.apply, state)
        except OSError as exc:
            raise HostSetupError(f"cannot configure addresses and routes: {exc}") from None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((str(listen_addr), 0))
            listener.listen(4096)
        except OSError as exc:
            listener.close()
            raise HostSetupError(f"cannot bind the reflection listener on {listen_addr}: {exc}") from None
        reflector = Reflector(tun_address=listen_addr, fake_address=fake_addr,
                              listener_port=listener.getsockname()[1])
        self._tcp = TcpPath(session, reflector, listener, self._tun.write)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._tun.fileno(), self._on_tun)
        self._ticker = loop.create_task(self._tick())

    @staticmethod
    def _gateway_ip(session: GatewaySession) -> ipaddress.IPv4Address:
        transport = session.link._transport  # noqa: SLF001 - the peer address of our own link
        peer = transport.get_extra_info("peername") if transport else None
        return ipaddress.IPv4Address(peer[0]) if peer else ipaddress.IPv4Address("0.0.0.0")

    def _on_tun(self) -> None:
        tun, tcp = self._tun, self._tcp
        now = time.monotonic()
        for _ in range(512):
            packet = tun.read()
            if packet is None:
                break
            if len(packet) > 20 and packet[0] >> 4 == 4 and packet[9] == 6:
                tcp.on_packet(packet, now)
        tcp.after_batch()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            if self._tcp is not None:
                self._tcp.expire(time.monotonic())

    async def _stay_connected(self, stop: asyncio.Event) -> None:
        link = self.session.link
        keepalive = self.session.config.keepalive
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait({stopper, link.closed}, timeout=keepalive,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    return
                if link.closed.done():
                    raise SessionLost(f"lost the session with the gateway: {link.closed.result()}")
                try:
                    await link.ping(self.options.dead_peer_timeout)
                except asyncio.TimeoutError:
                    raise SessionLost(f"the gateway stopped answering (no reply to a keepalive "
                                      f"within {self.options.dead_peer_timeout:g} s)") from None
                except ConnectionError:
                    continue
        finally:
            stopper.cancel()

    def _teardown(self) -> None:
        """Undo everything; never raises (failures are logged)."""
        loop = asyncio.get_event_loop()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._tun is not None:
            try:
                loop.remove_reader(self._tun.fileno())
            except (ValueError, OSError):
                pass
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        if self.session is not None and self.session.link.is_open:
            self.session.link.close("disconnecting")
        try:
            off_loop(self._routes.restore)
        except Exception as exc:  # restore() logs each item itself; this is a last resort
            log.warning("restoring routes failed: %s", exc)
        if self._tun is not None:
            self._tun.close()
            self._tun = None
