"""Tests of client.control.params: the checks on the params of control calls."""

from __future__ import annotations

import pytest

from client.control import protocol as p
from client.control.params import ConnectParams, decision, stats_interval

CONNECT = {"gateway": "https://gw.example", "username": "alice", "password": "pa55-w0rd"}


def test_connect_params_read():
    """gateway, username and password are required; ca_pem, pin and profile may be absent or null."""
    call = ConnectParams.read({**CONNECT, "ca_pem": "PEM", "pin": None})
    assert (call.gateway, call.username, call.password) == ("https://gw.example", "alice", "pa55-w0rd")
    assert (call.ca_pem, call.pin, call.profile) == ("PEM", None, None)
    assert "pa55-w0rd" not in repr(call)
    with pytest.raises(p.ProtocolError, match="password must be a string") as info:
        ConnectParams.read({"gateway": "https://gw.example", "username": "alice"})
    assert info.value.code == p.INVALID_PARAMS


def test_connect_refuses_a_ca_path():
    """A CA file path (ca) is refused with -32602 asking for the text as ca_pem; a null ca is ignored."""
    with pytest.raises(p.ProtocolError, match="ca_pem") as info:
        ConnectParams.read({**CONNECT, "ca": "/root/.ssh/id_ed25519"})
    assert info.value.code == p.INVALID_PARAMS and "/root" not in info.value.message
    assert ConnectParams.read({**CONNECT, "ca": None}).ca_pem is None


@pytest.mark.parametrize("value", [0.01, 4000, "1", True, float("nan")])
def test_stats_interval_out_of_range_or_not_a_number(value):
    """stats_interval must be a number of seconds in [0.05, 3600]."""
    with pytest.raises(p.ProtocolError, match="stats_interval"):
        stats_interval({"stats_interval": value})


def test_stats_interval_and_decision_defaults_and_choices():
    """stats_interval defaults to 1.0; decision must be once, always or cancel."""
    assert stats_interval({}) == 1.0 and stats_interval({"stats_interval": 2}) == 2.0
    assert decision({"decision": "once"}) == "once"
    with pytest.raises(p.ProtocolError, match="decision must be one of once, always, cancel"):
        decision({"decision": "maybe"})


def test_connect_reconnect_for_is_optional_seconds_up_to_a_day():
    """reconnect_for may be absent or null (the default), or 0 to 86400 seconds; anything
    else is -32602 naming it."""
    assert ConnectParams.read(CONNECT).reconnect_for is None
    assert ConnectParams.read({**CONNECT, "reconnect_for": None}).reconnect_for is None
    assert ConnectParams.read({**CONNECT, "reconnect_for": 0}).reconnect_for == 0.0
    assert ConnectParams.read({**CONNECT, "reconnect_for": 86400}).reconnect_for == 86400.0
    for value in (-1, 86400.5, "60", True, float("inf")):
        with pytest.raises(p.ProtocolError, match="reconnect_for") as info:
            ConnectParams.read({**CONNECT, "reconnect_for": value})
        assert info.value.code == p.INVALID_PARAMS
