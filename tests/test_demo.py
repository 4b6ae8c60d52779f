"""Scenario: the README's demo runs end to end (root only)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from tests.lab.netns import lab_supported

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.lab
def test_demo_fetches_a_page_by_name_pings_and_cleans_up():
    """scripts/demo.py --once: page fetched by intranet name, ping answered, exit 0, routes gone after."""
    reason = lab_supported()
    if reason:
        pytest.skip(reason)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--once"],
                            capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Hello from the intranet web server!" in out
    assert "3 received" in out
    after = out.split("== disconnected", 1)[1]
    assert "tg0" not in after.split("== gateway audit log", 1)[0]
