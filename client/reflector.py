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
-> gone (its slot held until ``linger`` after the release); ``NatTable``
(``client.nat_table``) keeps the flows, and ``Reflector`` adds the packets.
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

import ipaddress
import struct
import typing

from client import packet as pk
from client.nat_table import FlowState, NatTable
from client.reflector_types import (  # noqa: F401 - the reflector's public types live there
    Endpoint,
    FlowInfo,
    FlowOffload,
    FlowRequested,
    ReflectorStats,
    Refusal,
)

_IP = struct.Struct("!BxH2xHxB2xII")      # ver/ihl, total length, frag, protocol, src, dst
_TCP = struct.Struct("!HH8xBB")          # sport, dport, data offset, flags
_SEQ = struct.Struct("!I")
_SYN_MASK = pk.SYN | pk.ACK | pk.RST
_SYN = pk.SYN
_TCP_PROTO = pk.PROTO_TCP
_apply = pk.apply_rewrite
_ICMP_CODES = {Refusal.HOST_UNREACHABLE: 1, Refusal.NET_UNREACHABLE: 0, Refusal.PROHIBITED: 13}


# It extends the table rather than holding one: the per-packet path then reaches the
# table's dicts as its own attributes, with no extra lookup.
class Reflector(NatTable):
    """The NAT table and reflection state machine for TCP over IPv4."""

    def __init__(self, *, tun_address: ipaddress.IPv4Address, fake_address: ipaddress.IPv4Address,
                 listener_port: int | typing.Sequence[int], first_port: int = 10000,
                 last_port: int = 65535, idle_timeout: float = 7440.0, linger: float = 60.0,
                 settle: float = 5.0, pending_timeout: float = 30.0,
                 offload: FlowOffload | None = None) -> None:
        listeners = (listener_port,) if isinstance(listener_port, int) else tuple(listener_port)
        super().__init__(tun_address=tun_address, fake_address=fake_address, listeners=listeners,
                         first_port=first_port, last_port=last_port, idle_timeout=idle_timeout,
                         linger=linger, settle=settle, pending_timeout=pending_timeout,
                         offload=offload)
        self._listener_index = {port: i for i, port in enumerate(listeners)}
        self._malformed = 0
        self._unknown = 0
        self._fragments = 0
        self._not_ours = 0
        self._reflected = 0

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
            if flow is None or dst != self._fake or flow.state is FlowState.PENDING or flow.orphaned \
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
        if state is FlowState.PENDING:
            if not bare_syn:
                self._unknown += 1
            return None                          # a retransmitted SYN is swallowed
        if bare_syn and (state is FlowState.RELEASED
                         or _SEQ.unpack_from(packet, ihl + 4)[0] != flow.isn):
            # Four-tuple reuse: the app started a new connection, so the old one is over
            # at its end (even if our local socket has not noticed yet).
            if state is FlowState.RELEASED:
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

    # -- the engine's answers ---------------------------------------------------------------
    def accept_flow(self, nat_port: int, now: float) -> bytearray | None:
        """Gateway confirmed: returns the held SYN rewritten for the forward leg
        (None if the flow is gone or not pending). With a FlowOffload, both legs are
        offloaded before this returns, so the kernel's answer to the SYN already takes
        the fast path."""
        flow = self._by_port.get(nat_port)
        if flow is None or flow.state is not FlowState.PENDING or flow.syn is None:
            return None
        syn, flow.syn = flow.syn, None
        flow.state = FlowState.ESTABLISHED
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

    @property
    def stats(self) -> ReflectorStats:
        """A snapshot of the counters."""
        return ReflectorStats(flows_active=len(self._by_port), flows_total=self._flows_total,
                              dropped_malformed=self._malformed, dropped_unknown=self._unknown,
                              dropped_fragments=self._fragments, ports_exhausted=self._exhausted,
                              not_ours=self._not_ours, reflected=self._reflected,
                              flows_offloaded=self._offloaded_total,
                              offloaded_active=self._offloaded_active, slots_held=self._slots.held)
