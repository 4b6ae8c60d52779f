"""Tray and window icons: one SVG per look, chosen from the engine's state.

The engine has eight states but the tray shows four looks: the transient
states (connecting, authenticating, configuring, reconnecting, disconnecting)
all share the amber "busy" shield. ``icon_kind`` is that mapping, kept free of
Qt so it can be checked on its own; ``state_icon`` loads the matching SVG.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PySide6.QtGui import QIcon

RESOURCES = Path(__file__).resolve().parent.parent / "resources" / "icons"
"""Where the SVG files live (``resources/icons`` of the checkout)."""

KINDS = ("disconnected", "connecting", "connected", "error")
"""The four looks of the tray icon."""

_KIND_OF_STATE = {
    "disconnected": "disconnected",
    "connecting": "connecting",
    "authenticating": "connecting",
    "configuring": "connecting",
    "reconnecting": "connecting",
    "disconnecting": "connecting",
    "connected": "connected",
    "failed": "error",
}


def icon_kind(state: str) -> str:
    """The look for an engine state; unknown states read as disconnected."""
    return _KIND_OF_STATE.get(state, "disconnected")


def icon_path(kind: str) -> Path:
    """The SVG file of one look (or ``app``)."""
    if kind not in KINDS and kind != "app":
        raise ValueError(f"no icon named {kind!r}")
    return RESOURCES / f"{kind}.svg"


@functools.cache
def _load(kind: str) -> QIcon:
    return QIcon(str(icon_path(kind)))


def state_icon(state: str) -> QIcon:
    """The tray icon for an engine state."""
    return _load(icon_kind(state))


def app_icon() -> QIcon:
    """The application's own icon (windows, dialogs, notifications)."""
    return _load("app")
