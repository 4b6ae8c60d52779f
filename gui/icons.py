"""Tray and window icons: one SVG per look, chosen from the engine's state.

The engine has eight states but the tray shows four looks: the transient
states (connecting, authenticating, configuring, reconnecting, disconnecting)
all share the amber "busy" shield. ``icon_kind`` is that mapping, kept free of
Qt so it can be checked on its own; ``state_icon`` loads the matching SVG.
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

from PySide6.QtGui import QIcon

CHECKOUT = Path(__file__).resolve().parent.parent / "resources" / "icons"
"""Where the SVG files live in a checkout (``resources/icons``)."""


def _installed() -> Path | None:
    """The icons an installed wheel put under its prefix (``share/tunnelgate/icons``)."""
    try:
        files = importlib.metadata.files("tunnelgate") or ()
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "tunnelgate.svg" and file.parent.name == "icons" \
                and file.parent.parent.name == "tunnelgate":
            return Path(str(file.locate())).resolve().parent
    return None


RESOURCES = CHECKOUT if CHECKOUT.is_dir() else (_installed() or CHECKOUT)
"""Where the SVG files are: the checkout's, else the installed ones."""

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
    """The SVG file of one look (or ``app``, the application's own icon)."""
    if kind not in KINDS and kind != "app":
        raise ValueError(f"no icon named {kind!r}")
    return RESOURCES / ("tunnelgate.svg" if kind == "app" else f"{kind}.svg")


@functools.cache
def _load(kind: str) -> QIcon:
    return QIcon(str(icon_path(kind)))


def state_icon(state: str) -> QIcon:
    """The tray icon for an engine state."""
    return _load(icon_kind(state))


def app_icon() -> QIcon:
    """The application's own icon (windows, dialogs, notifications)."""
    return _load("app")
