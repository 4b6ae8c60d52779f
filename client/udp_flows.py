"""The client's UDP flow table: app datagrams from the TUN in, server datagrams out.

Theory of operation. Apps send UDP/IPv4 to secured networks and the packets
come out of the TUN. A flow is one (app address and port, destination address
and port); its first datagram yields ``UdpFlowOpened`` (the engine opens one
connect-udp stream for it and sends that payload right behind the request),
later ones yield ``UdpDatagram``. Payloads the gateway returns go through
``to_app``, which builds the IPv4/UDP packet from the destination to the app,
so the app sees the server answering. Errors become the ICMP message the
server would have sent (port unreachable, administratively prohibited),
quoting the IP and UDP header of the flow's last datagram so the kernel can
match it to the app's socket. Flows idle for ``idle_timeout`` are expired by
``expire(now)``; the table is bounded by ``max_flows``. A DNS flow (to port
53) whose queries have all been answered goes after ``answered_timeout``
instead: resolvers send each query from a new port, so such a flow is over,
and keeping it the full idle time would hold a stream (and a place in the
table) per lookup: a browser's lookups would fill both.

UDP checksums of packets read from the TUN are not verified: the local kernel
wrote them, and the gateway sends a fresh datagram anyway. A datagram larger
than the TUN's MTU (the gateway's hint: 65000 by default, as low as 576) comes
as IPv4 fragments, which are reassembled first (``ip_reassembly``); fragments
that cannot be are dropped and counted. Sans-IO: time is always passed in.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from dataclasses import dataclass

from client import packet as pk
from client.ip_reassembly import Reassembler
from client.reflector_types import Endpoint

log = logging.getLogger(__name__)

_IP = struct.Struct("!BxH2xHxB2x4s4s")    # ver/ihl, total length, frag, protocol, src, dst
_UDP = struct.Struct("!HHH")              # sport, dport, length
#: Flows to this port are DNS: over once every query is answered.
DNS_PORT = 53
#: Largest UDP payload an IPv4 packet can carry (65535 - 20 - 8).
MAX_PAYLOAD = 65507
#: ICMP errors quote at most this much, keeping the whole error within 576 bytes (RFC 1812 4.3.2.3).
_MAX_QUOTE = 576 - 20 - 8


@dataclass(frozen=True)
class UdpFlowKey:
    """What names a flow."""

    client: Endpoint    #: the app's end, A:sport
    target: Endpoint    #: the destination, D:dport


@dataclass(frozen=True)
class UdpFlowOpened:
    """The first datagram of a new flow: the engine must open a connect-udp stream."""

    flow_id: int            #: names the flow in the other calls
    key: UdpFlowKey         #: the app and the destination
    first_payload: bytes    #: the datagram's payload, to send right after the request


@dataclass(frozen=True)
class UdpDatagram:
    """A datagram of a flow already open."""

    flow_id: int        #: the flow it belongs to
    payload: bytes      #: the UDP payload


@dataclass(frozen=True)
class UdpStats:
    """Counters of the UDP flow table."""

    flows_active: int       #: flows in the table
    flows_total: int        #: flows ever opened
    dropped_malformed: int  #: packets that are not well-formed UDP/IPv4 (or use port 0)
    dropped_full: int       #: datagrams of new flows dropped because the table was full
    dropped_fragments: int  #: IPv4 fragments of UDP that could not be reassembled
    dropped_oversize: int   #: payloads from the gateway too large for an IPv4 packet
    not_ours: int           #: packets that are not UDP/IPv4 at all
    datagrams_in: int       #: datagrams accepted from apps (first ones included)
    datagrams_out: int      #: packets built for apps by ``to_app``


class _Flow:
    __slots__ = ("flow_id", "key", "client", "target", "client_port", "target_port",
                 "last_header", "last_seen", "unanswered")

    def __init__(self, flow_id: int, key: UdpFlowKey, client: bytes, target: bytes,
                 client_port: int, target_port: int, last_header: bytes, now: float) -> None:
        self.flow_id = flow_id
        self.key = key
        self.client = client
        self.target = target
        self.client_port = client_port
        self.target_port = target_port
        self.last_header = last_header      # IPv4 header (options included) + UDP header
        self.last_seen = now
        # DNS flows only: queries sent minus answers received (at least 0); None otherwise.
        self.unanswered = 1 if target_port == DNS_PORT else None


class UdpFlows:
    """The UDP flow table of one session (IPv4)."""

    def __init__(self, *, max_flows: int = 1024, idle_timeout: float = 60.0,
                 answered_timeout: float = 2.0) -> None:
        if max_flows < 1:
            raise ValueError(f"max_flows {max_flows} must be at least 1")
        if not 0 < answered_timeout <= idle_timeout:
            raise ValueError(f"timeouts must be positive and answered_timeout ({answered_timeout}) "
                             f"at most idle_timeout ({idle_timeout})")
        self._max_flows = max_flows
        self._idle_timeout = idle_timeout
        self._answered_timeout = answered_timeout
        self._by_key: dict[tuple[bytes, bytes, int, int], _Flow] = {}
        self._by_id: dict[int, _Flow] = {}
        self._next_id = 1
        self._fragments = Reassembler()
        self._malformed = 0
        self._full = 0
        self._oversize = 0
        self._not_ours = 0
        self._in = 0
        self._out = 0

    # -- from the apps ----------------------------------------------------------------------
    def from_tun(self, packet, now: float) -> UdpFlowOpened | UdpDatagram | None:
        """A packet read from the TUN. Returns the flow event, or None when the packet is
        dropped (malformed, not UDP, or a new flow with the table full) or is a fragment
        of a datagram not yet complete.
        Never raises on malformed input: such packets are counted."""
        try:
            size = len(packet)
            if size < 20:
                if size and packet[0] >> 4 != 4:
                    self._not_ours += 1
                else:
                    self._malformed += 1
                return None
            ver_ihl, total, frag, proto, src, dst = _IP.unpack_from(packet)
            if ver_ihl >> 4 != 4:
                self._not_ours += 1
                return None
            ihl = (ver_ihl & 0x0F) << 2
            if ihl < 20 or total < ihl or total > size:
                self._malformed += 1
                return None
            if proto != pk.PROTO_UDP:
                self._not_ours += 1
                return None
            if frag & 0x3FFF:
                whole = self._fragments.push(packet, now)
                return None if whole is None else self.from_tun(whole, now)
            if total < ihl + 8:
                self._malformed += 1
                return None
            sport, dport, length = _UDP.unpack_from(packet, ihl)
            if length < 8 or ihl + length > total or sport == 0 or dport == 0:
                self._malformed += 1
                return None
            payload = bytes(packet[ihl + 8:ihl + length])
            header = bytes(packet[:ihl + 8])
        except (IndexError, TypeError, struct.error):    # belt and braces: the checks cover these
            self._malformed += 1
            return None

        flow = self._by_key.get((src, dst, sport, dport))
        if flow is not None:
            flow.last_seen = now
            flow.last_header = header
            if flow.unanswered is not None:
                flow.unanswered += 1
            self._in += 1
            return UdpDatagram(flow_id=flow.flow_id, payload=payload)
        if len(self._by_id) >= self._max_flows:
            self._full += 1
            log.debug("UDP flow table full (%d flows); datagram dropped", self._max_flows)
            return None
        key = UdpFlowKey(client=Endpoint(ipaddress.IPv4Address(src), sport),
                         target=Endpoint(ipaddress.IPv4Address(dst), dport))
        flow = _Flow(self._next_id, key, src, dst, sport, dport, header, now)
        self._next_id += 1
        self._by_key[(src, dst, sport, dport)] = flow
        self._by_id[flow.flow_id] = flow
        self._in += 1
        return UdpFlowOpened(flow_id=flow.flow_id, key=key, first_payload=payload)

    # -- to the apps ------------------------------------------------------------------------
    def to_app(self, flow_id: int, payload, *, now: float | None = None) -> bytes | None:
        """The IPv4/UDP packet carrying ``payload`` from the flow's target to its app, to
        write to the TUN. None if the flow is gone or the payload exceeds 65507 bytes
        (counted). With ``now`` the flow counts as active (replies keep it alive)."""
        flow = self._by_id.get(flow_id)
        if flow is None:
            return None
        if len(payload) > MAX_PAYLOAD:
            self._oversize += 1
            return None
        if now is not None:
            flow.last_seen = now
        if flow.unanswered:
            flow.unanswered -= 1
        self._out += 1
        return pk.build_udp_packet(source=flow.target, destination=flow.client,
                                   source_port=flow.target_port, destination_port=flow.client_port,
                                   payload=payload)

    def port_unreachable(self, flow_id: int, original_payload: bytes | None = None) -> bytes | None:
        """ICMP port unreachable (type 3 code 3) from the target to the app, what the app
        sees when the gateway reports that the target's port is closed. It quotes the
        flow's last datagram header or, given ``original_payload``, a header rebuilt for
        that datagram followed by the start of the payload. None if the flow is gone.
        The flow stays open (the caller closes it if the stream ends)."""
        flow = self._by_id.get(flow_id)
        if flow is None:
            return None
        return self._unreachable(flow, 3, original_payload)

    def prohibited(self, flow_id: int) -> bytes | None:
        """ICMP administratively prohibited (type 3 code 13) from the target to the app, for
        a policy denial; forgets the flow. None if the flow is gone."""
        return self.refused(flow_id, 13)

    def refused(self, flow_id: int, code: int) -> bytes | None:
        """ICMP destination unreachable (type 3, ``code``) from the target to the app, for a
        flow the gateway refused; forgets the flow. None if the flow is gone."""
        flow = self._by_id.get(flow_id)
        if flow is None:
            return None
        self._forget(flow)
        return self._unreachable(flow, code, None)

    # -- the table --------------------------------------------------------------------------
    def lookup(self, flow_id: int) -> UdpFlowKey | None:
        """The app and destination of a flow, or None."""
        flow = self._by_id.get(flow_id)
        return None if flow is None else flow.key

    def close(self, flow_id: int) -> None:
        """Forget a flow (its stream ended). Unknown ids are ignored."""
        flow = self._by_id.get(flow_id)
        if flow is not None:
            self._forget(flow)

    def expire(self, now: float) -> list[int]:
        """Remove flows idle at or past ``idle_timeout`` (answered DNS flows: past
        ``answered_timeout``); return their ids, oldest id first. Fragments of
        datagrams that never completed are dropped too."""
        self._fragments.expire(now)
        expired = [flow.flow_id for flow in self._by_id.values()
                   if now - flow.last_seen >= (self._answered_timeout if flow.unanswered == 0
                                               else self._idle_timeout)]
        for flow_id in expired:
            self._forget(self._by_id[flow_id])
        return expired

    @property
    def stats(self) -> UdpStats:
        """A snapshot of the counters."""
        return UdpStats(flows_active=len(self._by_id), flows_total=self._next_id - 1,
                        dropped_malformed=self._malformed, dropped_full=self._full,
                        dropped_fragments=self._fragments.dropped, dropped_oversize=self._oversize,
                        not_ours=self._not_ours, datagrams_in=self._in, datagrams_out=self._out)

    def _forget(self, flow: _Flow) -> None:
        del self._by_id[flow.flow_id]
        self._by_key.pop((flow.client, flow.target, flow.client_port, flow.target_port), None)

    def _unreachable(self, flow: _Flow, code: int, original_payload: bytes | None) -> bytes:
        if original_payload is None:
            quote = flow.last_header
        else:
            length = 8 + len(original_payload)
            ip = pk.build_ipv4_header(source=flow.client, destination=flow.target,
                                      protocol=pk.PROTO_UDP, payload_length=min(length, 0xFFFF - 20))
            quote = (ip + struct.pack("!HHHH", flow.client_port, flow.target_port, length & 0xFFFF, 0)
                     + bytes(original_payload[:_MAX_QUOTE - 28]))
        return pk.build_icmp(source=flow.target, destination=flow.client,
                             icmp_type=pk.ICMP_DEST_UNREACHABLE, code=code, body=quote[:_MAX_QUOTE])
