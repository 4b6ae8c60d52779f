"""Address pool: one tunnel address per session, from a configured IPv4 network.

The first usable host address is the gateway's own; leases come from the rest.
A session leased for an owner (its user) first gets that owner's own address, one
derived from the owner's name alone, when it is free: a user keeps their address
from one session to the next, also across a restart of the gateway (which keeps
no state), so that a client logging in again after a restart finds its tunnel as
it was. Otherwise fresh addresses are handed out first, in order; released
addresses are reused only after that, oldest release first, so that an address
is not given to a new session while packets for its previous holder may still be
in flight.
"""

from __future__ import annotations

import hashlib
from collections import deque
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from gateway_stub.errors import PoolExhausted


class AddressPool:
    """Leases addresses of ``network`` to sessions, by session id."""

    def __init__(self, network: IPv4Network) -> None:
        if network.prefixlen > 30:
            raise ValueError(f"pool {network} is too small (use /30 or larger)")
        self._network = network
        first = int(network.network_address) + 1
        self._gateway = IPv4Interface(f"{IPv4Address(first)}/{network.prefixlen}")
        self._next = first + 1  # next never-leased address, as an int
        self._last = int(network.broadcast_address) - 1
        self._released: deque[int] = deque()
        self._leases: dict[str, int] = {}
        self._held: set[int] = set()   # the addresses in _leases

    @property
    def network(self) -> IPv4Network:
        """The pool's network."""
        return self._network

    @property
    def gateway(self) -> IPv4Interface:
        """The gateway's own address on the pool network."""
        return self._gateway

    @property
    def capacity(self) -> int:
        """How many addresses can be leased at once."""
        return self._last - int(self._gateway.ip)

    @property
    def in_use(self) -> int:
        """How many addresses are leased now."""
        return len(self._leases)

    def lease(self, session_id: str, owner: str | None = None) -> IPv4Interface:
        """The address of ``session_id``, leasing one if it has none: ``owner``'s own
        address when it is given and free, else the next free one.

        Raises ``PoolExhausted`` when no address is free.
        """
        address = self._leases.get(session_id)
        if address is None:
            address = self._owned(owner)
            if address is None:
                address = self._next_free()
            self._leases[session_id] = address
            self._held.add(address)
        return IPv4Interface(f"{IPv4Address(address)}/{self._network.prefixlen}")

    def _owned(self, owner: str | None) -> int | None:
        """``owner``'s own address if it is free (not leased now), else None."""
        if owner is None:
            return None
        digest = hashlib.sha256(owner.encode()).digest()
        address = int(self._gateway.ip) + 1 + int.from_bytes(digest[:8], "big") % self.capacity
        return None if address in self._held else address

    def _next_free(self) -> int:
        """A fresh address, or the one released longest ago; skips those an owner took."""
        while self._next <= self._last:
            address, self._next = self._next, self._next + 1
            if address not in self._held:
                return address
        while self._released:
            address = self._released.popleft()
            if address not in self._held:
                return address
        raise PoolExhausted(f"address pool {self._network} is exhausted "
                            f"({self.capacity} addresses leased)")

    def address_of(self, session_id: str) -> IPv4Interface | None:
        """The address leased to ``session_id``, or None."""
        address = self._leases.get(session_id)
        if address is None:
            return None
        return IPv4Interface(f"{IPv4Address(address)}/{self._network.prefixlen}")

    def release(self, session_id: str) -> None:
        """Give back the address of ``session_id``; a no-op if it has none."""
        address = self._leases.pop(session_id, None)
        if address is not None:
            self._held.discard(address)
            self._released.append(address)
