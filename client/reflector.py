"""The TCP reflector: the NAT table that hands app connections to the kernel's own TCP stack.

Theory of operation. Apps send TCP to secured destinations and the packets come
out of the TUN. ``L`` is the TUN's own address, where a local kernel listener
is bound on port ``lp``; ``N`` is an unassigned address in the TUN's prefix
used as a fake source (the kernel routes packets for ``N`` back out of the TUN).

* Forward leg: a segment A:sport -> D:dport (anything not from the listener) is
  rewritten to N:np -> L:lp, where ``np`` is the NAT port of the flow
  (A:sport, D:dport), and written back to the TUN. The kernel sees a client
  N:np talking to its listener and runs the whole TCP machinery itself.
* Return leg: a segment from L:lp (the listener answering) to N:np is rewritten
  to D:dport -> A:sport, so the app sees the server answering.
* The listener's ``accept()`` yields peer N:np; ``lookup(np)`` gives A:sport and D:dport.
* Several listeners (lp0, lp1, ...) multiply the four-tuples N:np -> L:lp. Our
  socket closes first (it stands in for the server), so each connection leaves
  its four-tuple in TIME_WAIT, and its NAT slot is held, for 60 s: one listener
  caps sustained new connections near 900/s. The *slot* ``np + 65536 * i`` (for
  listener ``lpi``) is the API's ``nat_port``, = np with a single listener
  (``NatSlots``).

A flow starts only with a bare SYN. That SYN is *held* and a ``FlowRequested``
event asks the engine to open a stream to D:dport through the gateway: on
success ``accept_flow`` releases the SYN into the forward leg, so the app's
connect() completes only when the real server accepted; on failure
``refuse_flow`` forgets the flow and returns the RST or ICMP error that D would
have sent. Flow states: pending (SYN held) -> established -> released (the
local socket closed; the mapping stays ``settle`` seconds for the final FIN/ACKs)
-> gone (its slot held until ``linger`` after the release).
Addresses and ports change, so checksums are patched with per-flow precomputed
RFC 1624 deltas (``packet.Rewrite``). Sans-IO: time is always passed in.

Fast path. Given a ``FlowOffload`` (the kernel's flow map, ``client.bpf``),
``accept_flow`` hands both legs of the flow to it before returning the SYN,
and forgetting the flow (expiry, refusal, four-tuple reuse) takes them back
first, so a key is never in the map for two flows. The kernel then rewrites
every further segment itself -- except bare SYNs, which always come here --
and this table no longer sees the flow's traffic: an offloaded flow is
therefore never idle-expired; its lifetime follows the local socket
(``release`` then ``settle``). Whatever the kernel passes up (a packet it
cannot handle) is still rewritten here as without the fast path, until the
flow is released: then it keeps only its keys, and such a packet is dropped.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
import logging
import struct
import typing

from client import packet as pk
from client.nat_slots import NatSlots
from client.reflector_types import (  # noqa: F401 - the reflector's public types live there
    Endpoint,
    FlowInfo,
    FlowOffload,
    FlowRequested,
    ReflectorStats,
    Refusal,
)

log = logging.getLogger(__name__)

_IP = struct.Struct("!BxH2xHxB2xII")      # ver/ihl, total length, frag, protocol, src, dst
_TCP = struct.Struct("!HH8xBB")          # sport, dport, data offset, flags
_SEQ = struct.Struct("!I")
_SYN_MASK = pk.SYN | pk.ACK | pk.RST
_SYN = pk.SYN
_TCP_PROTO = pk.PROTO_TCP
_apply = pk.apply_rewrite
_ICMP_CODES = {Refusal.HOST_UNREACHABLE: 1, Refusal.NET_UNREACHABLE: 0, Refusal.PROHIBITED: 13}


class _State(enum.Enum):
    PENDING = 1
    ESTABLISHED = 2
    RELEASED = 3


class _Flow:
    __slots__ = ("slot", "key", "forward", "back", "state", "syn", "created", "last_seen", "released_at",
                 "offloaded", "isn", "orphaned")

    def __init__(self, slot: int, key: tuple, forward: pk.Rewrite, back: pk.Rewrite,
                 syn: bytes, now: float) -> None:
        self.slot = slot            # the NAT slot; key is (A, D, sport, dport) as ints
        self.key = key
        self.forward: pk.Rewrite | None = forward   # None once released with the fast path
        self.back: pk.Rewrite | None = back
        self.offloaded = False
        self.isn = _SEQ.unpack_from(syn, ((syn[0] & 0x0F) << 2) + 4)[0]   # the SYN's sequence number
        self.orphaned = False       # the app reused the four-tuple: return-leg packets are dropped
        self.state = _State.PENDING
        self.syn: bytes | None = syn
        self.created = now
        self.last_seen = now
        self.released_at = now


def _endpoint(address: int, port: int) -> Endpoint:
    return Endpoint(ipaddress.IPv4Address(address), port)


class Reflector:
    """The NAT table and reflection state machine for TCP over IPv4."""

    def __init__(self, *, tun_address: ipaddress.IPv4Address, fake_address: ipaddress.IPv4Address,
                 listener_port: int | typing.Sequence[int], first_port: int = 10000,
                 last_port: int = 65535, idle_timeout: float = 7440.0, linger: float = 60.0,
                 settle: float = 5.0, pending_timeout: float = 30.0,
                 offload: FlowOffload | None = None) -> None:
        listeners = (listener_port,) if isinstance(listener_port, int) else tuple(listener_port)
        if tun_address == fake_address:
            raise ValueError("the fake source address must differ from the TUN's address")
        if not listeners or len(set(listeners)) != len(listeners) \
                or not all(0 < port <= 0xFFFF for port in listeners):
            raise ValueError(f"listener ports {listeners} must be one or more distinct ports")
        if not 0 < first_port <= last_port <= 0xFFFF:
            raise ValueError(f"NAT port range {first_port}..{last_port} is invalid")
        self._local = int(tun_address)
        self._fake = int(fake_address)
        self._local_bytes = tun_address.packed
        self._fake_bytes = fake_address.packed
        self._listeners = listeners
        self._listener_index = {port: i for i, port in enumerate(listeners)}
        self._slots = NatSlots(len(listeners), first_port, last_port)
        self._idle_timeout = idle_timeout
        self._linger = linger
        self._settle = settle
        self._pending_timeout = pending_timeout
        self._by_key: dict[tuple[int, int, int, int], _Flow] = {}
        self._by_port: dict[int, _Flow] = {}                 # every flow, by NAT slot
        self._live: dict[int, _Flow] = {}                    # the pending and established ones
        self._settling: collections.deque[_Flow] = collections.deque()   # released, oldest first
        self._events: list[FlowRequested] = []
        self._flows_total = 0
        self._malformed = 0
        self._unknown = 0
        self._fragments = 0
        self._exhausted = 0
        self._not_ours = 0
        self._reflected = 0
        self._offload = offload
        self._offloaded_total = 0
        self._offloaded_active = 0

    # -- packets ------------------------------------------------------------------------
    def from_tun(self, packet, now: float) -> bytearray | None:
        """A packet read from the TUN. Returns the rewritten packet (a new ``bytearray``) to
        write back to the TUN, or None when the packet is held (first SYN of a new flow),
        dropped, or not ours. Never raises on malformed input: such packets are counted."""
        try:
            size = len(packet)
            if size == 0 or packet[0] >> 4 != 4:
                if size:
                    self._not_ours += 1
                else:
                    self._malformed += 1
                return None
            if size < 20:
                self._malformed += 1
                return None
            ver_ihl, total, frag, proto, src, dst = _IP.unpack_from(packet)
            ihl = (ver_ihl & 0x0F) << 2
            if ihl < 20 or total < ihl or total > size:
                self._malformed += 1
                return None
            if proto != _TCP_PROTO:
                self._not_ours += 1
                return None
            if frag & 0x3FFF:
                self._fragments += 1
                return None
            if total < ihl + 20:
                self._malformed += 1
                return None
            sport, dport, offset, flags = _TCP.unpack_from(packet, ihl)
            thl = (offset >> 4) << 2
            if thl < 20 or ihl + thl > total:
                self._malformed += 1
                return None
        except (IndexError, struct.error):       # belt and braces: the checks above cover these
            self._malformed += 1
            return None

        index = self._listener_index.get(sport) if src == self._local else None
        if index is not None:                                        # return leg
            flow = self._by_port.get(dport + (index << 16))
            if flow is None or dst != self._fake or flow.state is _State.PENDING or flow.orphaned \
                    or flow.back is None:
                self._unknown += 1
                return None
            flow.last_seen = now
            self._reflected += 1
            return _apply(packet, ihl, flow.back)

        flow = self._by_key.get((src, dst, sport, dport))            # forward leg
        bare_syn = flags & _SYN_MASK == _SYN
        if flow is None:
            if bare_syn and dst != self._fake:
                self._new_flow(packet, src, dst, sport, dport, now)
            else:
                self._unknown += 1
            return None
        state = flow.state
        if state is _State.PENDING:
            if not bare_syn:
                self._unknown += 1
            return None                          # a retransmitted SYN is swallowed
        if bare_syn and (state is _State.RELEASED
                         or _SEQ.unpack_from(packet, ihl + 4)[0] != flow.isn):
            # Four-tuple reuse: the app started a new connection, so the old one is over
            # at its end (even if our local socket has not noticed yet).
            if state is _State.RELEASED:
                self._forget(flow)
            else:
                self._orphan(flow)
            self._new_flow(packet, src, dst, sport, dport, now)
            return None
        if flow.forward is None:
            self._unknown += 1
            return None
        flow.last_seen = now
        self._reflected += 1
        return _apply(packet, ihl, flow.forward)

    def pop_events(self) -> list[FlowRequested]:
        """The events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # -- the engine's answers ---------------------------------------------------------------
    def accept_flow(self, nat_port: int, now: float) -> bytearray | None:
        """Gateway confirmed: returns the held SYN rewritten for the forward leg
        (None if the flow is gone or not pending). With a FlowOffload, both legs are
        offloaded before this returns, so the kernel's answer to the SYN already takes
        the fast path."""
        flow = self._by_port.get(nat_port)
        if flow is None or flow.state is not _State.PENDING or flow.syn is None:
            return None
        syn, flow.syn = flow.syn, None
        flow.state = _State.ESTABLISHED
        flow.last_seen = now
        if self._offload is not None:
            self._offload_flow(flow)
        return pk.apply_rewrite(syn, (syn[0] & 0x0F) << 2, flow.forward)

    def refuse_flow(self, nat_port: int, refusal: Refusal) -> bytes | None:
        """Gateway refused: forget the flow and return the RST / ICMP packet to write to
        the TUN, appearing from D (None if the flow is gone or its SYN was released)."""
        flow = self._by_port.get(nat_port)
        if flow is None:
            return None
        self._forget(flow)
        if flow.syn is None:
            return None
        if refusal is Refusal.REFUSED:
            return pk.build_tcp_rst(flow.syn)
        return pk.build_icmp_unreachable(flow.syn, _ICMP_CODES[refusal])

    def lookup(self, nat_port: int) -> FlowInfo | None:
        """The flow behind a NAT port (the accepted socket's peer port), or None."""
        flow = self._by_port.get(nat_port)
        if flow is None:
            return None
        src, dst, sport, dport = flow.key
        return FlowInfo(nat_port=nat_port, client=_endpoint(src, sport), target=_endpoint(dst, dport))

    def release(self, nat_port: int, now: float) -> None:
        """The local socket for this flow closed; keep the mapping ``linger`` seconds for the
        final FIN/ACKs. A held SYN is discarded. Unknown ports are ignored."""
        flow = self._by_port.get(nat_port)
        if flow is None or flow.state is _State.RELEASED:
            return
        flow.state = _State.RELEASED
        flow.syn = None
        flow.released_at = now
        if flow.offloaded:      # the kernel carries its last segments: keep only what finds it
            flow.forward = flow.back = None
        if self._live.pop(nat_port, None) is flow:
            self._settling.append(flow)
        self._forget_settled(now)       # here too, not only each tick: under load they are many

    def expire(self, now: float) -> list[int]:
        """Drop pending flows at or past ``pending_timeout`` since their SYN, released flows
        at or past ``settle`` since release (their slots stay held until ``linger``), and
        established flows idle at or past ``idle_timeout`` (never offloaded ones: their
        traffic is not seen here, and they end through ``release``); return their NAT ports.

        Released flows are not scanned: they wait in release order (``now`` never goes
        backwards) and only the due ones are looked at.
        """
        expired = self._forget_settled(now)
        self._slots.expire(now)
        for flow in list(self._live.values()):
            if flow.state is _State.ESTABLISHED:
                gone = not flow.offloaded and now - flow.last_seen >= self._idle_timeout
            else:
                gone = now - flow.created >= self._pending_timeout
            if gone:
                self._forget(flow)
                expired.append(flow.slot)
        return expired

    @property
    def stats(self) -> ReflectorStats:
        """A snapshot of the counters."""
        return ReflectorStats(flows_active=len(self._by_port), flows_total=self._flows_total,
                              dropped_malformed=self._malformed, dropped_unknown=self._unknown,
                              dropped_fragments=self._fragments, ports_exhausted=self._exhausted,
                              not_ours=self._not_ours, reflected=self._reflected,
                              flows_offloaded=self._offloaded_total,
                              offloaded_active=self._offloaded_active, slots_held=self._slots.held)

    # -- the table --------------------------------------------------------------------------
    def _forget_settled(self, now: float) -> list[int]:
        """Forget the released flows at or past ``settle``; their slots."""
        gone = []
        settling, by_port = self._settling, self._by_port
        while settling and now - settling[0].released_at >= self._settle:
            flow = settling.popleft()
            if by_port.get(flow.slot) is flow:
                self._forget(flow)
                gone.append(flow.slot)
        return gone

    def _new_flow(self, packet, src: int, dst: int, sport: int, dport: int, now: float) -> None:
        nat_port = self._slots.take()
        if nat_port is None:
            self._exhausted += 1
            log.debug("NAT port space exhausted; SYN dropped")
            return
        index, port = divmod(nat_port, 65536)
        listener = self._listeners[index]
        src_b, dst_b = src.to_bytes(4, "big"), dst.to_bytes(4, "big")
        app_side = pk.four_tuple(src_b, dst_b, sport, dport)
        kernel_in = pk.four_tuple(self._fake_bytes, self._local_bytes, port, listener)
        kernel_out = pk.four_tuple(self._local_bytes, self._fake_bytes, listener, port)
        app_in = pk.four_tuple(dst_b, src_b, dport, sport)
        key = (src, dst, sport, dport)
        flow = _Flow(nat_port, key, pk.Rewrite.between(app_side, kernel_in),
                     pk.Rewrite.between(kernel_out, app_in), bytes(packet), now)
        self._by_key[key] = flow
        self._by_port[nat_port] = flow
        self._live[nat_port] = flow
        self._flows_total += 1
        self._events.append(FlowRequested(nat_port=nat_port, client=_endpoint(src, sport),
                                          target=_endpoint(dst, dport)))

    def _offload_flow(self, flow: _Flow) -> None:
        offload = self._offload
        forward_key, back_key = self._legs(flow)
        if not offload.add(forward_key, flow.forward):
            return
        if not offload.add(back_key, flow.back):
            offload.remove(forward_key)
            return
        flow.offloaded = True
        self._offloaded_total += 1
        self._offloaded_active += 1

    def _forget(self, flow: _Flow) -> None:
        """Drop a flow; its slot is held until ``linger`` after its release (our local socket
        may be in TIME_WAIT on it), or freed now if it was never released."""
        self._orphan(flow)
        slot = flow.slot
        if self._by_port.get(slot) is flow:
            del self._by_port[slot]
            if flow.state is _State.RELEASED:
                self._slots.hold(slot, flow.released_at + self._linger)
            else:
                self._slots.free(slot)
        if self._live.get(slot) is flow:
            del self._live[slot]

    def _orphan(self, flow: _Flow) -> None:
        """Give up the flow's four-tuple: fast-path entries and the key go (before they can
        be reused); the NAT port stays taken until the local socket is released and has
        lingered. Return-leg packets of the old connection are dropped from now on."""
        flow.orphaned = True
        if flow.offloaded:
            flow.offloaded = False
            self._offloaded_active -= 1
            for key in self._legs(flow):
                self._offload.remove(key)
        if self._by_key.get(flow.key) is flow:
            del self._by_key[flow.key]

    def _legs(self, flow: _Flow) -> tuple[bytes, bytes]:
        """The four-tuples of a flow's forward leg (as the app sends) and return leg (as
        the listener sends): its keys in the kernel's flow map. Derived, not stored."""
        src, dst, sport, dport = flow.key
        index, port = divmod(flow.slot, 65536)
        return (pk.four_tuple(src.to_bytes(4, "big"), dst.to_bytes(4, "big"), sport, dport),
                pk.four_tuple(self._local_bytes, self._fake_bytes, self._listeners[index], port))
