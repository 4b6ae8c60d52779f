"""The engine's connection states and the one table of allowed transitions."""

from __future__ import annotations

import enum


class State(enum.Enum):
    """Where the engine is in the life of a connection."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    CONFIGURING = "configuring"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTING = "disconnecting"
    FAILED = "failed"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.DISCONNECTED: frozenset({S.CONNECTING}),
    S.CONNECTING: frozenset({S.AUTHENTICATING, S.DISCONNECTING, S.FAILED}),
    S.AUTHENTICATING: frozenset({S.CONFIGURING, S.DISCONNECTING, S.FAILED}),
    S.CONFIGURING: frozenset({S.CONNECTED, S.DISCONNECTING, S.FAILED}),
    S.CONNECTED: frozenset({S.RECONNECTING, S.DISCONNECTING, S.FAILED}),
    S.RECONNECTING: frozenset({S.AUTHENTICATING, S.CONNECTED, S.DISCONNECTING, S.FAILED}),
    S.DISCONNECTING: frozenset({S.DISCONNECTED, S.FAILED}),
    S.FAILED: frozenset({S.CONNECTING, S.DISCONNECTED}),
}


class IllegalTransition(RuntimeError):
    """A transition that is not in the table: a bug, raised loudly."""


def check_transition(current: State, new: State) -> None:
    """Raise IllegalTransition unless ``current -> new`` is in the table."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current.value} -> {new.value} is not an allowed transition")
