"""Errors of the gateway.

``GatewayError`` is the root of everything the gateway raises on purpose.
``ConfigError`` means the operator's configuration file is wrong; its message
names the file, the key path inside it (``resource[2].ports[1]``, indexes
counted from 0) and what is wrong, so it can be printed as it is.
``PoolExhausted`` means the address pool has no free address left.

Misuse of an API by the calling code raises the ordinary ``ValueError`` or
``TypeError`` instead, so that it is never mistaken for an operator's error.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of the gateway's errors."""


class ConfigError(GatewayError):
    """The gateway's configuration file is missing, unreadable or invalid."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.key = key
        self.line = line
        parts = []
        if file is not None:
            parts.append(file)
        if line is not None:
            parts.append(f"line {line}")
        if key:
            parts.append(key)
        parts.append(problem)
        super().__init__(": ".join(parts))


class PoolExhausted(GatewayError):
    """Every address of the pool is leased."""
