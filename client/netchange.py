"""Deciding that the network under the tunnel changed: the sans-IO core of the watcher.

Theory of operation. Two questions decide whether the engine should probe the
gateway at once instead of waiting out a keepalive and the dead-peer timeout:

* Does the host still send packets for the gateway's address the same way? The
  adapter (``client.netwatch``) reports every burst of rtnetlink activity with
  `netlink_event(now)`; the detector asks for one route lookup when the burst
  has been quiet for ``debounce`` seconds (or ``max_delay`` after it began, so
  that endless churn cannot starve the lookup) and `route_seen()` compares the
  answer with the last one. Only the answer counts, not the event, so routes
  to other networks -- our own TUN routes among them -- never fire. That holds
  because a pushed network that covers the gateway is pinned with a host route
  via the interface the gateway was reached through before (``client.routes``):
  the lookup answers the same before and after the tunnel is configured. The
  watcher is meant to start after the routes are applied, so that the pin is
  part of the baseline (the kernel might pick another source address for it).
* Did the machine sleep? CLOCK_MONOTONIC stands still during suspend and
  CLOCK_BOOTTIME does not; `clocks_read()` compares how far each advanced since
  the last reading. A stopped or starved process lets both advance alike.

No clock reads, sockets or asyncio here: callers pass ``now`` and readings, and
each method returns the reason text to fire with, or None.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math

__all__ = ["ChangeDetector", "Clocks", "RouteSnapshot"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclasses.dataclass(frozen=True)
class RouteSnapshot:
    """Where the host sends packets for one address: the answer of a route lookup."""

    interface: str
    """Name of the output interface."""
    index: int
    """Its interface index (an interface re-created under the same name is a change)."""
    next_hop: IPAddress | None = None
    """The gateway the packets go through; None when the address is on-link."""
    source: IPAddress | None = None
    """The source address the host picks for them."""
    link_up: bool = True
    """The interface has carrier: a pulled cable or a lost Wi-Fi leaves the route in place."""

    def __str__(self) -> str:
        text = f"dev {self.interface}"
        if self.next_hop is not None:
            text += f" via {self.next_hop}"
        if self.source is not None:
            text += f" src {self.source}"
        return text if self.link_up else text + " (no link)"


@dataclasses.dataclass(frozen=True)
class Clocks:
    """Two clock readings taken together, in seconds."""

    monotonic: float
    """CLOCK_MONOTONIC: stands still while the machine is suspended."""
    boottime: float
    """CLOCK_BOOTTIME: keeps counting while the machine is suspended."""


_UNSEEN = object()


class ChangeDetector:
    """Turns route lookups and clock readings into "probe now" reasons."""

    def __init__(self, target: IPAddress | str, *, debounce: float = 0.5, max_delay: float = 2.0,
                 sleep_threshold: float = 3.0) -> None:
        """``target`` is the gateway's address. A burst of netlink events asks for a lookup
        ``debounce`` s after its last event, at most ``max_delay`` s after its first; a
        suspend of more than ``sleep_threshold`` s counts as sleep. Raises ValueError."""
        self.target = ipaddress.ip_address(target)
        if not (0 <= debounce <= max_delay and math.isfinite(max_delay)):
            raise ValueError(f"need 0 <= debounce <= max_delay, got {debounce} and {max_delay}")
        if not (sleep_threshold > 0 and math.isfinite(sleep_threshold)):
            raise ValueError(f"sleep_threshold must be a positive number, got {sleep_threshold}")
        self._debounce = debounce
        self._max_delay = max_delay
        self._sleep_threshold = sleep_threshold
        self._route: RouteSnapshot | None | object = _UNSEEN
        self._burst_first: float | None = None
        self._burst_last = 0.0
        self._clocks: Clocks | None = None

    # -- the route to the target -------------------------------------------

    def netlink_event(self, now: float) -> None:
        """Routes, addresses or links changed somewhere on the host at ``now``."""
        if self._burst_first is None:
            self._burst_first = self._burst_last = now
        else:
            self._burst_last = max(self._burst_last, now)

    @property
    def lookup_at(self) -> float | None:
        """When the next route lookup is due; None while no event is pending."""
        if self._burst_first is None:
            return None
        return min(self._burst_last + self._debounce, self._burst_first + self._max_delay)

    def lookup_due(self, now: float) -> bool:
        """True (once per burst) when the caller should look the route up now."""
        due = self.lookup_at
        if due is None or now < due:
            return False
        self._burst_first = None
        return True

    def route_seen(self, route: RouteSnapshot | None) -> str | None:
        """Take a lookup's answer (None: no route). The first one is the baseline; after
        that, the reason to fire when it differs from the previous answer, else None."""
        before, self._route = self._route, route
        if before is _UNSEEN or before == route:
            return None
        if route is None:
            return f"network changed: no route to {self.target} any more (was {before})"
        if before is None:
            return f"network changed: route to {self.target} appeared, {route}"
        return f"network changed: route to {self.target} now {route} (was {before})"

    # -- sleep ---------------------------------------------------------------

    def clocks_read(self, clocks: Clocks) -> str | None:
        """Take a periodic clock reading; the reason to fire when the machine slept since
        the previous one, else None (always None for the first)."""
        before, self._clocks = self._clocks, clocks
        if before is None:
            return None
        slept = (clocks.boottime - before.boottime) - (clocks.monotonic - before.monotonic)
        if slept <= self._sleep_threshold:
            return None
        return f"the machine woke from sleep (suspended for about {slept:.0f} s)"
