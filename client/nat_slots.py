"""The TCP reflector's NAT slots: which local four-tuples are free.

A slot is ``np + 65536 * i``: NAT port ``np`` on listener ``i``, that is the
local four-tuple N:np -> L:lp_i of a reflected connection. A flow takes a
slot. When the flow is forgotten its slot is freed at once, unless our local
socket may still be in TIME_WAIT on that four-tuple (it closed first, as the
server it stands in for usually does): then the slot is *held* for the rest
of that minute, since a new connection on it would meet the old socket.

Under load most slots are held, so a held slot costs almost nothing: a byte in
a table of every slot, and four bytes in a batch of the slots that come free in
the same second. Sans-IO: time is always passed in.
"""

from __future__ import annotations

import array
import collections
import math


class NatSlots:
    """Taken, held and free slots of ``listeners`` listeners, ports ``first``..``last``."""

    def __init__(self, listeners: int, first: int, last: int) -> None:
        if listeners < 1 or not 0 < first <= last <= 0xFFFF:
            raise ValueError(f"no NAT slots in {listeners} listeners, ports {first}..{last}")
        self._listeners, self._first, self._last = listeners, first, last
        self.capacity = listeners * (last - first + 1)
        self._used = bytearray(listeners << 16)      # 1: taken by a flow, or held
        self._count = 0
        self._next = first
        self._held: collections.deque[tuple[int, array.array]] = collections.deque()
        self.held = 0
        """Slots held (no flow, waiting for their four-tuple's TIME_WAIT to end)."""

    def __len__(self) -> int:
        """Slots not free (taken or held)."""
        return self._count

    def take(self) -> int | None:
        """The next free slot, round-robin over every port of every listener; None if
        there is none."""
        if self._count >= self.capacity:
            return None
        slot, used = self._next, self._used
        while used[slot]:
            slot = self._after(slot)
        used[slot] = 1
        self._count += 1
        self._next = self._after(slot)
        return slot

    def free(self, slot: int) -> None:
        """Give a slot back now."""
        if self._used[slot]:
            self._used[slot] = 0
            self._count -= 1

    def hold(self, slot: int, until: float) -> None:
        """Keep a taken slot from reuse until ``until`` (rounded up to the second), though no
        flow has it any more. ``until`` should not go backwards from call to call: a slot held
        behind a later one is freed with it."""
        second = math.ceil(until)
        held = self._held
        if held and held[-1][0] == second:
            held[-1][1].append(slot)
        else:
            held.append((second, array.array("I", (slot,))))
        self.held += 1

    def expire(self, now: float) -> None:
        """Free the held slots that are due."""
        held = self._held
        while held and held[0][0] <= now:
            _, slots = held.popleft()
            self.held -= len(slots)
            for slot in slots:
                self.free(slot)

    def _after(self, slot: int) -> int:
        index, port = divmod(slot, 65536)
        if port < self._last:
            return slot + 1
        return ((index + 1) % self._listeners) * 65536 + self._first
