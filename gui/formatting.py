"""How figures read on screen: byte counts, rates and durations."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; whole bytes below 1 KiB."""
    value = float(count)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(bytes_per_second: float) -> str:
    """A throughput in bytes per second, e.g. ``"2.4 MiB/s"``."""
    return human_bytes(bytes_per_second) + "/s"


def human_duration(seconds: float) -> str:
    """``3725`` -> ``"1:02:05"``; ``"0:00:00"`` for negative input."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
