"""The reflector's NAT table: its flows, their NAT slots, and their life cycle.

Each flow is one app connection A:sport -> D:dport, keyed by that four-tuple
and by its NAT slot (see ``client.reflector`` for what the slots are). A flow
is pending (its SYN held) -> established -> released (the local socket closed;
the mapping stays ``settle`` seconds for the final FIN/ACKs) -> gone (its slot
held until ``linger`` after the release). A flow of a reused four-tuple is
*orphaned*: its key and fast-path entries go at once, its slot stays taken
until its local socket has been released and has lingered.

``NatTable`` holds the flows and the answers about them (``lookup``,
``release``, ``expire``); ``Reflector`` subclasses it with the packet path.
Sans-IO: time is always passed in.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
import logging
import struct

from client import packet as pk
from client.nat_slots import NatSlots
from client.reflector_types import Endpoint, FlowInfo, FlowOffload, FlowRequested

log = logging.getLogger(__name__)

_SEQ = struct.Struct("!I")


class FlowState(enum.Enum):
    """Where a flow is in its life (a forgotten flow is in no state: it is not in the table)."""

    PENDING = 1
    ESTABLISHED = 2
    RELEASED = 3


class Flow:
    """One flow of the table: its keys, its two rewrites, its state and its times."""

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
        self.state = FlowState.PENDING
        self.syn: bytes | None = syn
        self.created = now
        self.last_seen = now
        self.released_at = now


def _endpoint(address: int, port: int) -> Endpoint:
    return Endpoint(ipaddress.IPv4Address(address), port)


class NatTable:
    """The flows of the reflector, by four-tuple and by NAT slot, and their expiry."""

    def __init__(self, *, tun_address: ipaddress.IPv4Address, fake_address: ipaddress.IPv4Address,
                 listeners: tuple[int, ...], first_port: int, last_port: int, idle_timeout: float,
                 linger: float, settle: float, pending_timeout: float,
                 offload: FlowOffload | None) -> None:
        """Arguments as for ``Reflector``; ``listeners`` are its listener ports, in order.
        Raises ValueError when they do not make a table."""
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
        self._slots = NatSlots(len(listeners), first_port, last_port)
        self._idle_timeout = idle_timeout
        self._linger = linger
        self._settle = settle
        self._pending_timeout = pending_timeout
        self._by_key: dict[tuple[int, int, int, int], Flow] = {}
        self._by_port: dict[int, Flow] = {}                  # every flow, by NAT slot
        self._live: dict[int, Flow] = {}                     # the pending and established ones
        self._settling: collections.deque[Flow] = collections.deque()   # released, oldest first
        self._events: list[FlowRequested] = []
        self._flows_total = 0
        self._exhausted = 0
        self._offload = offload
        self._offloaded_total = 0
        self._offloaded_active = 0

    def pop_events(self) -> list[FlowRequested]:
        """The events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

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
        if flow is None or flow.state is FlowState.RELEASED:
            return
        flow.state = FlowState.RELEASED
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
            if flow.state is FlowState.ESTABLISHED:
                gone = not flow.offloaded and now - flow.last_seen >= self._idle_timeout
            else:
                gone = now - flow.created >= self._pending_timeout
            if gone:
                self._forget(flow)
                expired.append(flow.slot)
        return expired

    # -- the flows ---------------------------------------------------------------------------
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
        """A pending flow for the bare SYN ``packet`` (held), and its FlowRequested; when no
        NAT slot is free, nothing (the SYN is dropped and counted)."""
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
        flow = Flow(nat_port, key, pk.Rewrite.between(app_side, kernel_in),
                    pk.Rewrite.between(kernel_out, app_in), bytes(packet), now)
        self._by_key[key] = flow
        self._by_port[nat_port] = flow
        self._live[nat_port] = flow
        self._flows_total += 1
        self._events.append(FlowRequested(nat_port=nat_port, client=_endpoint(src, sport),
                                          target=_endpoint(dst, dport)))

    def _offload_flow(self, flow: Flow) -> None:
        """Hand both legs of ``flow`` to the FlowOffload (neither, if it refuses one)."""
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

    def _forget(self, flow: Flow) -> None:
        """Drop a flow; its slot is held until ``linger`` after its release (our local socket
        may be in TIME_WAIT on it), or freed now if it was never released."""
        self._orphan(flow)
        slot = flow.slot
        if self._by_port.get(slot) is flow:
            del self._by_port[slot]
            if flow.state is FlowState.RELEASED:
                self._slots.hold(slot, flow.released_at + self._linger)
            else:
                self._slots.free(slot)
        if self._live.get(slot) is flow:
            del self._live[slot]

    def _orphan(self, flow: Flow) -> None:
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

    def _legs(self, flow: Flow) -> tuple[bytes, bytes]:
        """The four-tuples of a flow's forward leg (as the app sends) and return leg (as
        the listener sends): its keys in the kernel's flow map. Derived, not stored."""
        src, dst, sport, dport = flow.key
        index, port = divmod(flow.slot, 65536)
        return (pk.four_tuple(src.to_bytes(4, "big"), dst.to_bytes(4, "big"), sport, dport),
                pk.four_tuple(self._local_bytes, self._fake_bytes, self._listeners[index], port))
