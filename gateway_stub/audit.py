"""Audit log: one JSON line per tunnel flow or login attempt.

Each record says who (session, user, source address) tried to reach what
(protocol, target), the verdict and why, and for finished flows the bytes moved
and how long it lasted. Lines are JSON with sorted keys, so they are stable to
diff and easy to query (``jq``); ``json`` escapes control characters, so no
field can forge a second line.

Records carry no password, token or one-time code field. ``reason`` is free
text: callers must build it from policy and network outcomes only.
"""

from __future__ import annotations

import asyncio
import functools
import json
import json.encoder
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

VERDICTS = ("allow", "deny", "fail")
_logger = logging.getLogger("gateway_stub.audit")


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One audited event."""

    time: float
    """When it happened, seconds since the Unix epoch."""
    session_id: str
    """Session the event belongs to ("" before a session exists)."""
    user: str
    """User name (as claimed, for failed logins)."""
    source: str
    """Client address, "host:port"."""
    protocol: str
    """tcp, udp, icmp, or login."""
    target: str
    """Destination "host:port" (just "host" for icmp; "" for logins)."""
    verdict: str
    """allow, deny (policy said no) or fail (allowed, but it did not work)."""
    reason: str
    """Why, in words."""
    bytes_up: int = 0
    """Bytes sent from the client towards the target."""
    bytes_down: int = 0
    """Bytes sent from the target back to the client."""
    duration: float = 0.0
    """Seconds the flow lasted."""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")


_quote = json.encoder.encode_basestring_ascii    # the C encoder json.dumps uses for str


@functools.lru_cache(maxsize=4)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _utc(when: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-29T07:02:20.123Z."""
    seconds, micros = divmod(round(when * 1_000_000), 1_000_000)
    return f"{_utc_second(seconds)}.{micros // 1000:03d}Z"


def format_audit(record: AuditRecord) -> str:
    """The record as one line of JSON with sorted keys (no trailing newline).

    ``time`` is written as an RFC 3339 UTC timestamp with milliseconds. Written
    out by hand (one line per flow, thousands per second): the keys are fixed,
    strings go through the same escaping as ``json.dumps``, numbers through
    ``int``/``float`` so nothing else can reach the line.
    """
    r = record
    return (f'{{"bytes_down":{int(r.bytes_down)},"bytes_up":{int(r.bytes_up)},'
            f'"duration":{float(round(r.duration, 3))!r},"protocol":{_quote(r.protocol)},'
            f'"reason":{_quote(r.reason)},"session_id":{_quote(r.session_id)},'
            f'"source":{_quote(r.source)},"target":{_quote(r.target)},'
            f'"time":"{_utc(r.time)}","user":{_quote(r.user)},"verdict":{_quote(r.verdict)}}}')


class AuditLog:
    """Appends audit lines to a file, or to the "gateway_stub.audit" logger.

    The file is opened once in append mode (created 0640). Inside an event loop
    the lines of one loop turn are flushed together at its end (one write for
    many short flows); outside one every line is flushed at once. Either way a
    crash loses at most the lines of the turn it happened in.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._file = None
        self._flush_scheduled = False
        if path is not None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self._file = os.fdopen(fd, "a", buffering=1 << 16, encoding="utf-8")

    def write(self, record: AuditRecord) -> None:
        """Record one event."""
        line = format_audit(record)
        if self._file is None:
            _logger.info("%s", line)
            return
        self._file.write(line + "\n")
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._file.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._file is not None and not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file, if there is one."""
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
