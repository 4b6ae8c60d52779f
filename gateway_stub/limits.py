"""Login throttling: a sliding window of failed attempts per user and per source.

A login is refused before any password work when the user name or the source
address has had too many failures within the window. Only failures count; a
success clears the user's failures but not the source's, so one valid account
cannot be used to reset the counter of an address guessing other accounts.

Memory is bounded twice: each key keeps at most as many timestamps as its limit
(older ones cannot change a decision), and at most ``max_keys`` keys of each
kind are tracked; when full, the key whose last failure is oldest is forgotten.
Keys whose failures have all left the window are dropped as they are met.

Attempts still being checked count too (``begin`` .. ``end``): the password
check is slow and runs off the event loop, so without them a burst of
concurrent guesses would all pass before the first failure is recorded. They
are kept only while in flight, so they need no cap of their own.

``ConnectionCount`` caps the client connections one source holds open at once
(counted from accept to close, an IPv6 source as its /64, like the throttle's
sources), and paces the reports of the connections it refuses.

``PRE_LOGIN_HEADER_BYTES`` bounds the header blocks of a connection until it
has logged in (``header_limit``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict, deque


class _Window:
    """Failure timestamps per key, oldest-updated key first."""

    def __init__(self, limit: int, window: float, max_keys: int) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.entries: OrderedDict[str, deque[float]] = OrderedDict()

    def count(self, key: str, now: float) -> int:
        times = self.entries.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self.entries[key]
            return 0
        return len(times)

    def retry_after(self, key: str, now: float) -> float:
        if self.count(key, now) < self.limit:
            return 0.0
        return self.entries[key][0] + self.window - now

    def add(self, key: str, now: float) -> None:
        self._expire(now)
        times = self.entries.get(key)
        if times is None:
            times = self.entries[key] = deque(maxlen=self.limit)
        times.append(now)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_keys:
            self.entries.popitem(last=False)

    def clear(self, key: str) -> None:
        self.entries.pop(key, None)

    def _expire(self, now: float) -> None:
        # Front keys were updated longest ago; stop at the first one still live.
        while self.entries:
            key, times = next(iter(self.entries.items()))
            if times and times[-1] > now - self.window:
                break
            del self.entries[key]


@functools.lru_cache(maxsize=4096)
def source_key(source: str) -> str:
    """What counts as one source: an IPv4 address, or an IPv6 address's /64 (one host
    usually holds a whole /64, so each of its addresses must not count apart)."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source
    if address.version == 4:
        return source
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class LoginThrottle:
    """Decides whether a login attempt may proceed; all times are passed in."""

    def __init__(
        self,
        attempts_per_user: int,
        attempts_per_source: int,
        window: float,
        *,
        max_keys: int = 10000,
    ) -> None:
        if attempts_per_user < 1 or attempts_per_source < 1:
            raise ValueError("attempt limits must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._users = _Window(attempts_per_user, window, max_keys)
        self._sources = _Window(attempts_per_source, window, max_keys)
        self._busy_users: dict[str, int] = {}      # attempts in flight, per key
        self._busy_sources: dict[str, int] = {}

    def allowed(self, user: str, source: str, now: float) -> bool:
        """True if a login for ``user`` from ``source`` may be tried at ``now``
        (failures in the window plus attempts in flight are under both limits)."""
        source = source_key(source)
        return (self._users.count(user, now) + self._busy_users.get(user, 0) < self._users.limit
                and self._sources.count(source, now) + self._busy_sources.get(source, 0)
                < self._sources.limit)

    def begin(self, user: str, source: str) -> None:
        """An allowed attempt starts; it counts against both limits until ``end``."""
        source = source_key(source)
        self._busy_users[user] = self._busy_users.get(user, 0) + 1
        self._busy_sources[source] = self._busy_sources.get(source, 0) + 1

    def end(self, user: str, source: str) -> None:
        """An attempt from ``begin`` finished (record its outcome as well)."""
        source = source_key(source)
        for busy, key in ((self._busy_users, user), (self._busy_sources, source)):
            left = busy.get(key, 0) - 1
            if left > 0:
                busy[key] = left
            else:
                busy.pop(key, None)

    def retry_after(self, user: str, source: str, now: float) -> float:
        """Seconds until a refused attempt would be allowed (0 if allowed now)."""
        source = source_key(source)
        return max(self._users.retry_after(user, now), self._sources.retry_after(source, now))

    def record_failure(self, user: str, source: str, now: float) -> None:
        """Count a failed login for ``user`` from ``source`` at ``now``."""
        source = source_key(source)
        self._users.add(user, now)
        self._sources.add(source, now)

    def record_success(self, user: str, source: str) -> None:
        """Forget ``user``'s failures (the source's failures stay counted)."""
        del source  # deliberately kept: see the module docstring
        self._users.clear(user)

    @property
    def tracked(self) -> int:
        """Number of user and source keys currently remembered."""
        return len(self._users.entries) + len(self._sources.entries)


#: Largest header list (RFC 7541 size) a connection may send before it has logged in: before
#: a login on it succeeded or a request on it carried a valid session token. A login, a
#: one-time code or a resume needs a few hundred bytes, while decoding costs CPU (HPACK
#: Huffman: about 4 ms for a hostile 16 KiB block) that nobody has proven a right to; a
#: larger block ends the connection with ENHANCE_YOUR_CALM, mostly on its encoded size alone,
#: before any decoding.
PRE_LOGIN_HEADER_BYTES = 4096


def header_limit(max_header_bytes: int, *, logged_in: bool) -> int:
    """The largest header list a connection is allowed: ``max_header_bytes`` once it has
    logged in, never more than ``PRE_LOGIN_HEADER_BYTES`` before."""
    return max_header_bytes if logged_in else min(PRE_LOGIN_HEADER_BYTES, max_header_bytes)


class ConnectionSlot:
    """One admitted connection's place in its source's count."""

    __slots__ = ("_count", "_key")

    def __init__(self, count: "ConnectionCount", key: str) -> None:
        self._count = count
        self._key: str | None = key

    def release(self) -> None:
        """Give the place back; only the first call counts, so every path that
        ends the connection may call it."""
        if self._key is not None:
            self._count._release(self._key)
            self._key = None


class ConnectionCount:
    """Open connections per source, at most ``max_per_source`` each; all times are passed in."""

    def __init__(self, max_per_source: int, *, report_every: float = 10.0) -> None:
        if max_per_source < 1:
            raise ValueError("max_per_source must be at least 1")
        if report_every <= 0:
            raise ValueError("report_every must be positive")
        self.max_per_source = max_per_source
        self.report_every = report_every
        self.refused = 0
        """Connections refused since start."""
        self._open: dict[str, int] = {}     # only sources with connections open
        self._unreported = 0
        self._reported_at = float("-inf")

    def admit(self, source: str) -> ConnectionSlot | None:
        """Count a new connection from ``source``: its slot (release it when the
        connection closes), or None when the source is at its cap."""
        key = source_key(source)
        held = self._open.get(key, 0)
        if held >= self.max_per_source:
            return None
        self._open[key] = held + 1
        return ConnectionSlot(self, key)

    def open_from(self, source: str) -> int:
        """Connections open from ``source`` (its /64 for IPv6)."""
        return self._open.get(source_key(source), 0)

    @property
    def open(self) -> int:
        """Connections open from all sources."""
        return sum(self._open.values())

    def note_refused(self, now: float) -> int:
        """Count a refused connection; returns how many refusals to report now: all
        those not yet reported when ``report_every`` has passed since the last
        report, else 0 (the caller reports the rest later with ``take_unreported``)."""
        self.refused += 1
        self._unreported += 1
        if now - self._reported_at < self.report_every:
            return 0
        return self.take_unreported(now)

    def take_unreported(self, now: float) -> int:
        """Refusals not reported yet; they count as reported at ``now``."""
        count, self._unreported = self._unreported, 0
        if count:
            self._reported_at = now
        return count

    def _release(self, key: str) -> None:
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)
