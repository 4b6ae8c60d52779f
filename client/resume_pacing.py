"""How long to wait before each attempt to resume a lost session (sans-IO).

By default the attempts cover ``RECONNECT_FOR`` seconds (``reconnect_delays``).
A gateway that accepts each resume and drops the session again at once would be
hammered every first pause, for ever. So a session lost again within
``STABLE_AFTER`` seconds of being (re)established counts as a quick loss, and after
quick losses in a row the first pause doubles each time, up to ``MAX_FLAP_PAUSE``; a
session that lasts resets the count. Callers pass ``now`` (a monotonic clock).
"""

from __future__ import annotations

#: How long a lost session is tried again, by default: long enough for a Wi-Fi to
#: reconnect, a laptop to wake, or a gateway to restart.
RECONNECT_FOR = 120.0
#: The longest pause between two attempts to resume.
MAX_RECONNECT_PAUSE = 30.0


def reconnect_delays(window: float) -> tuple[float, ...]:
    """Pauses before the attempts to resume a lost session: 0.5 s, doubling up to
    MAX_RECONNECT_PAUSE, until they cover ``window`` seconds (0: no attempt)."""
    delays: list[float] = []
    pause = 0.5
    while sum(delays) < window:
        delays.append(pause)
        pause = min(pause * 2, MAX_RECONNECT_PAUSE)
    return tuple(delays)


#: A session lost again sooner than this after it was (re)established counts as a quick loss.
STABLE_AFTER = 30.0
#: The longest extra pause before resuming after quick losses in a row.
MAX_FLAP_PAUSE = 30.0


class ResumePacing:
    """The pauses before resume attempts, stretched after quick losses in a row."""

    def __init__(self, delays: tuple[float, ...]) -> None:
        """``delays``: the pauses before each attempt (empty: never resume)."""
        self._delays = delays
        self._up_since: float | None = None    # when the session was last (re)established
        self._quick_losses = 0                  # sessions in a row lost within STABLE_AFTER

    def established(self, now: float) -> None:
        """The session is up (first connected, or resumed) at ``now``."""
        self._up_since = now

    def lost(self, now: float) -> tuple[float, ...]:
        """The session was lost at ``now``: the pauses before each attempt to resume it."""
        quick = self._up_since is not None and now - self._up_since < STABLE_AFTER
        self._quick_losses = self._quick_losses + 1 if quick else 0
        if not self._delays or not self._quick_losses:
            return self._delays
        first = min(self._delays[0] * 2 ** self._quick_losses, MAX_FLAP_PAUSE)
        return (first, *self._delays[1:])
