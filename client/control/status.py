"""HostStatus: the EngineHost's Status and stats documents, and the rate sampler.

Theory of operation. ``status`` and ``stats`` are built on demand from the
current attempt, its engine's session config and byte counters, and the
host's state; fields that do not apply in that state are None or empty. While
an engine runs, ``_sample`` (started by the host for each attempt) reads the
byte counters every ``sample_interval`` seconds and keeps the latest rates in
``_rates``.
"""

from __future__ import annotations

import asyncio
import time
import typing

from client.host_setup import is_full_tunnel
from client.states import State

if typing.TYPE_CHECKING:
    from client.control.host import _Attempt

ACTIVE = frozenset({State.CONNECTING, State.AUTHENTICATING, State.CONFIGURING, State.CONNECTED,
                     State.RECONNECTING, State.DISCONNECTING})
"""States in which an engine is (or may still be) running."""


class HostStatus:
    """The status-reporting half of EngineHost (a mixin).

    Uses the host's ``_attempt``, ``state``, ``detail``, ``error``,
    ``error_kind``, ``_rates`` and ``sample_interval``, all set up by EngineHost.
    """

    def stats(self) -> dict:
        """The ``stats`` object of Status."""
        engine = self._attempt.engine if self._attempt else None
        raw = engine.stats if engine is not None and self.state in ACTIVE else None
        return {"bytes_in": raw.bytes_in if raw else 0, "bytes_out": raw.bytes_out if raw else 0,
                "rate_in": self._rates[0], "rate_out": self._rates[1],
                "flows": raw.open_flows if raw else 0,
                "fast_path": raw.fast_path if raw else False,
                "flows_offloaded": raw.flows_offloaded if raw else 0,
                "ipv6_refused": raw.ipv6_refused if raw else 0}

    def status(self) -> dict:
        """The Status object of the control API."""
        attempt = self._attempt
        shown = attempt is not None and self.state is not State.DISCONNECTED
        session = getattr(attempt.engine, "session", None) if shown else None
        cfg = getattr(session, "config", None) if self.state in (State.CONNECTED, State.RECONNECTING) else None
        return {
            "state": self.state.value, "detail": self.detail,
            "profile": attempt.profile if shown else None,
            "gateway": str(attempt.gateway) if shown else None,
            "username": attempt.username if shown else None,
            "address": str(cfg.address) if cfg and cfg.address else None,
            "networks": [str(n) for n in cfg.include] if cfg else [],
            "excluded": [str(n) for n in cfg.exclude] if cfg else [],
            "ipv6_blocked": bool(cfg) and is_full_tunnel(cfg.include),
            "resources": list(cfg.resources) if cfg else [],
            "dns": {"servers": [str(s) for s in cfg.dns_servers] if cfg else [],
                    "search": list(cfg.dns_search) if cfg else []},
            "connected_since": attempt.connected_since if shown else None,
            "error": self.error if self.state is State.FAILED else None,
            "error_kind": self.error_kind if self.state is State.FAILED else None,
            "stats": self.stats(),
        }

    async def _sample(self, attempt: _Attempt) -> None:
        last, last_at = None, time.monotonic()
        while True:
            await asyncio.sleep(self.sample_interval)
            stats, now = attempt.engine.stats, time.monotonic()
            if last is not None and now > last_at:
                dt = now - last_at
                self._rates = (max(0, stats.bytes_in - last.bytes_in) / dt,
                               max(0, stats.bytes_out - last.bytes_out) / dt)
            last, last_at = stats, now
