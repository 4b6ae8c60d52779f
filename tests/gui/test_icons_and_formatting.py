"""Icons per state, and how figures are written."""

from __future__ import annotations

import pytest

from gui.formatting import human_bytes, human_duration, human_rate
from gui.icons import KINDS, app_icon, icon_kind, icon_path, state_icon


@pytest.mark.parametrize("state,kind", [
    ("disconnected", "disconnected"), ("connecting", "connecting"), ("authenticating", "connecting"),
    ("configuring", "connecting"), ("reconnecting", "connecting"), ("disconnecting", "connecting"),
    ("connected", "connected"), ("failed", "error"), ("something-new", "disconnected")])
def test_every_state_has_a_look(state, kind):
    """Each engine state maps to one of the four tray looks."""
    assert icon_kind(state) == kind


def test_icons_load_from_svg(qapp):
    """Every look and the app icon load from their SVG files and render."""
    for kind in KINDS + ("app",):
        assert icon_path(kind).is_file()
    for state in ("disconnected", "connecting", "connected", "failed"):
        assert not state_icon(state).pixmap(22, 22).isNull()
    assert not app_icon().pixmap(64, 64).isNull()


def test_icons_look_different(qapp):
    """The four looks are four different images."""
    images = {state_icon(s).pixmap(32, 32).toImage().bits().tobytes()
              for s in ("disconnected", "connecting", "connected", "failed")}
    assert len(images) == 4


def test_figures_read_naturally():
    """Bytes, rates and durations are written the way people read them."""
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_rate(3 * 1024 ** 2) == "3.0 MiB/s"
    assert human_duration(3725) == "1:02:05"
    assert human_duration(-3) == "0:00:00"
