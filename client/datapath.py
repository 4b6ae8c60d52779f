"""The data plane of a connected tunnel: TUN packets to the TCP, UDP and ICMP paths.

Theory of operation. Once the host is configured, the engine hands the TUN,
the bound reflection listeners and the in-kernel TCP fast path (or None) to a
``Datapath``, which builds one path per protocol over the gateway session: TCP
through the reflector, UDP through the flow table, ICMP echo. ``start()``
watches the TUN on the event loop. Each time it is readable, up to 512 packets
are read and handed by IP protocol to their path with one ``now`` for the
batch; anything that is not IPv4 is counted and dropped (while a full tunnel
blocks IPv6, an IPv6 packet first gets an ICMPv6 "administratively prohibited"
answer written back: see ``client.ipv6_block``). After the batch the
TCP path opens streams for the SYNs it saw and the UDP path sends what it
gathered. A TUN that can no longer be read (its device was deleted: the
descriptor stays readable and every read fails) is no longer watched, and
``tun_lost`` tells the engine. A ticker lets every path expire idle flows every
five seconds.
``stats()`` is the snapshot for status displays. ``close()`` stops reading and
closes the paths; the TUN and the fast path stay the engine's, which closes
them once the host is restored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
import time
import typing

from client.icmp_echo import IcmpEcho
from client.icmp_path import IcmpPath
from client.ipv6_block import Ipv6Refusal
from client.reflector import Reflector
from client.session import GatewaySession
from client.tcp_path import TcpPath
from client.tun import TunDevice
from client.udp_flows import UdpFlows
from client.udp_path import UdpPath
from client.wire.link import Link

log = logging.getLogger(__name__)

#: Seconds ``reset_connections`` lets the loop run so the resets reach the apps.
RESET_GRACE = 0.05


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
    flows_draining: int = 0
    """TCP flows ended both ways whose last bytes the app has not yet taken."""
    fast_path: bool = False
    """The in-kernel TCP fast path is on."""
    flows_offloaded: int = 0
    """TCP flows handed to the fast path so far."""
    packets_offloaded: int = 0
    """TCP packets the kernel rewrote (fast path)."""
    packets_reflected: int = 0
    """TCP packets rewritten in Python."""
    ipv6_refused: int = 0
    """IPv6 packets answered "administratively prohibited" (a full tunnel blocks IPv6)."""


class Datapath:
    """Moves packets between the TUN and the gateway session while connected."""

    def __init__(self, session: GatewaySession, tun: TunDevice,
                 listeners: typing.Sequence[socket.socket], *,
                 tun_address: ipaddress.IPv4Address, fake_address: ipaddress.IPv4Address,
                 fast_path: typing.Any = None, refuse_ipv6: bool = False) -> None:
        self._tun = tun
        self._fast_path = fast_path
        reflector = Reflector(tun_address=tun_address, fake_address=fake_address,
                              listener_port=[listener.getsockname()[1] for listener in listeners],
                              offload=fast_path)
        self._tcp = TcpPath(session, reflector, listeners, tun.write,
                            fake_address=str(fake_address))
        self._udp = UdpPath(session, UdpFlows(), tun.write)
        self._icmp = IcmpPath(session, IcmpEcho(), tun.write)
        self.dropped_not_ipv4 = 0
        """Packets read from the TUN that were not IPv4 (refused IPv6 ones included)."""
        self.ipv6_refusal = Ipv6Refusal() if refuse_ipv6 else None
        """With ``refuse_ipv6``: answers IPv6 packets (and counts them); None otherwise."""
        self.tun_lost: asyncio.Future[str] | None = None
        """Once started: done, with the error, when the TUN can no longer be read."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task | None = None

    def start(self) -> None:
        """Start reading the TUN and expiring flows, on the running loop."""
        self._loop = asyncio.get_running_loop()
        self.tun_lost = self._loop.create_future()
        self._loop.add_reader(self._tun.fileno(), self._on_tun)
        self._ticker = self._loop.create_task(self._tick())

    def stats(self, link: Link | None) -> Stats:
        """A snapshot of the counters; the byte counts are ``link``'s (zero without one)."""
        tcp = self._tcp.reflector.stats
        kernel_packets = 0
        if self._fast_path is not None:
            try:
                kernel_packets = self._fast_path.counters()[0]
            except OSError:
                pass
        return Stats(bytes_in=link.bytes_in if link else 0, bytes_out=link.bytes_out if link else 0,
                     open_flows=self._tcp.open_flows, flows_refused=self._tcp.flows_refused,
                     flows_draining=self._tcp.draining_flows,
                     fast_path=self._fast_path is not None, flows_offloaded=tcp.flows_offloaded,
                     packets_offloaded=kernel_packets, packets_reflected=tcp.reflected,
                     ipv6_refused=self.ipv6_refusal.answered if self.ipv6_refusal else 0)

    async def reset_connections(self) -> None:
        """Reset the apps' TCP connections while the TUN still carries the resets.

        Our sockets' RSTs leave a loop turn after they are aborted, then go back to
        the apps through the fast path or the TUN reader; once the TUN is gone they
        would be lost, and an app would wait on a dead connection for ever.
        """
        self._tcp.close()
        await asyncio.sleep(RESET_GRACE)

    def close(self) -> None:
        """Stop reading the TUN and close every path; the TUN itself stays open."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._stop_reading()
        stats = self.stats(None)
        log.info("TCP: %d flows offloaded to the kernel, %d packets rewritten there, %d in Python",
                 stats.flows_offloaded, stats.packets_offloaded, stats.packets_reflected)
        for path in (self._tcp, self._udp, self._icmp):
            path.close()

    def _stop_reading(self) -> None:
        if self._loop is not None:
            try:
                self._loop.remove_reader(self._tun.fileno())
            except (ValueError, OSError):
                pass

    def _on_tun(self) -> None:
        tun, tcp, udp, icmp = self._tun, self._tcp, self._udp, self._icmp
        now = time.monotonic()
        for _ in range(512):
            try:
                packet = tun.read()
            except OSError as exc:
                # The device is gone (deleted behind our back): its descriptor stays readable
                # and every read fails, so reading on would spin.
                self._stop_reading()
                if not self.tun_lost.done():
                    self.tun_lost.set_result(str(exc))
                break
            if packet is None:
                break
            if len(packet) < 20 or packet[0] >> 4 != 4:
                self._not_ipv4(packet, now)
                continue
            protocol = packet[9]
            if protocol == 6:
                tcp.on_packet(packet, now)
            elif protocol == 17:
                udp.on_packet(packet, now)
            elif protocol == 1:
                icmp.on_packet(packet, now)
        tcp.after_batch()
        udp.after_batch()

    def _not_ipv4(self, packet: bytes, now: float) -> None:
        """Drop a packet that is not IPv4, answering it first if it is IPv6 being refused."""
        self.dropped_not_ipv4 += 1
        if self.ipv6_refusal is not None:
            reply = self.ipv6_refusal.answer(packet, now)
            if reply is not None:
                self._tun.write(reply)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            now = time.monotonic()
            for path in (self._tcp, self._udp, self._icmp):
                path.expire(now)
