"""ServiceBridge: each notification becomes its Qt signal, the state with its error kind."""

from __future__ import annotations

from gui.bridge import ServiceBridge
from tests.gui.conftest import TIMEOUT_MS


def test_state_notification_carries_the_error_kind(qtbot):
    """A failed state emits its error_kind; a state without one emits an empty kind."""
    bridge = ServiceBridge()
    with qtbot.waitSignal(bridge.stateChanged, timeout=TIMEOUT_MS) as failed:
        bridge.deliver("state", {"state": "failed", "detail": "login failed: no",
                                 "error_kind": "wrong_credentials"})
    assert failed.args == ["failed", "login failed: no", "wrong_credentials"]
    with qtbot.waitSignal(bridge.stateChanged, timeout=TIMEOUT_MS) as connecting:
        bridge.deliver("state", {"state": "connecting", "detail": "gw:443", "error_kind": None})
    assert connecting.args == ["connecting", "gw:443", ""]
