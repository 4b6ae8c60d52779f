"""The params of control calls, checked before they reach the EngineHost.

Each reader takes the request's ``params`` object and returns typed values,
or raises ``ProtocolError(INVALID_PARAMS)`` with a message that names the
param and says what it must be.
"""

from __future__ import annotations

import dataclasses

from client.control import protocol as p
from client.control.questions import DECISIONS
from client.profiles import MAX_RECONNECT_FOR


@dataclasses.dataclass(frozen=True)
class ConnectParams:
    """The params of ``connect``."""

    gateway: str
    """``https://host:port`` of the gateway."""
    username: str
    """Who logs in."""
    password: str = dataclasses.field(repr=False)
    """Their password (never shown in a repr)."""
    ca_pem: str | None
    """PEM text of the CA certificate(s) to verify the gateway with; None for the system store."""
    pin: str | None
    """``sha256:<hex>`` of the gateway's certificate."""
    profile: str | None
    """The caller's profile name, shown in status."""
    reconnect_for: float | None = None
    """Seconds to keep trying to get a lost session back (0: never); None: the default."""

    @classmethod
    def read(cls, params: dict) -> "ConnectParams":
        """Check ``params``; a CA given as a path (``ca``) is refused: the service opens no user paths."""
        if params.get("ca") is not None:
            raise p.ProtocolError(p.INVALID_PARAMS, "ca (a CA file path) is not accepted: the service "
                                  "does not open files named by its users; read the file and send "
                                  "the certificate text as ca_pem")
        return cls(gateway=string(params, "gateway"), username=string(params, "username"),
                   password=string(params, "password"), ca_pem=string(params, "ca_pem", optional=True),
                   pin=string(params, "pin", optional=True),
                   profile=string(params, "profile", optional=True),
                   reconnect_for=seconds(params, "reconnect_for", MAX_RECONNECT_FOR))


def stats_interval(params: dict) -> float:
    """``stats_interval`` of ``subscribe``: seconds, 1.0 unless given."""
    interval = params.get("stats_interval", 1.0)
    if not p.is_finite_number(interval) or not 0.05 <= interval <= 3600:
        raise p.ProtocolError(p.INVALID_PARAMS, "stats_interval must be a number of "
                              "seconds between 0.05 and 3600")
    return float(interval)


def seconds(params: dict, name: str, most: float) -> float | None:
    """The optional param ``name``: a number of seconds from 0 to ``most``, or None when absent or null."""
    value = params.get(name)
    if value is None:
        return None
    if not p.is_finite_number(value) or not 0 <= value <= most:
        raise p.ProtocolError(p.INVALID_PARAMS, f"{name} must be a number of seconds from 0 to {most:g}")
    return float(value)


def decision(params: dict) -> str:
    """``decision`` of ``answer_certificate``: one of DECISIONS."""
    value = string(params, "decision")
    if value not in DECISIONS:
        raise p.ProtocolError(p.INVALID_PARAMS, f"decision must be one of {', '.join(DECISIONS)}")
    return value


def string(params: dict, name: str, *, optional: bool = False) -> str | None:
    """The string param ``name``; None when ``optional`` and absent or null."""
    value = params.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise p.ProtocolError(p.INVALID_PARAMS, f"{name} must be a string")
    return value
