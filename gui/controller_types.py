"""The values the controller's parts share with each other and with the widgets.

The engine states in which a connection may start, the levels of the
``notified`` signal, and the record of the attempt this app started. They
have a module of their own (small on purpose) so that ``gui.controller``,
its mixins ``gui.service_link`` and ``gui.connect_flow``, and the tray can
all import them without importing each other.
"""

from __future__ import annotations

import dataclasses

IDLE_STATES = frozenset({"disconnected", "failed"})
"""States in which a new connection may be started."""

INFO, ERROR = "info", "error"


@dataclasses.dataclass
class Attempt:
    """The connection attempt this app started, until it is up or over."""

    profile: str
    """The profile's name."""
    username: str
    """The user name sent."""
    password: str | None = dataclasses.field(default=None, repr=False)
    """The password to store in the keyring once connected (None: do not store)."""
    from_keyring: bool = False
    """Whether the password sent came from the keyring."""
