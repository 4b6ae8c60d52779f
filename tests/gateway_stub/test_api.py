"""GatewayApi without I/O: login, sessions, config and tunnel authorization."""

from __future__ import annotations

import json

from gateway_stub.api import GatewayApi, parse_authority
from gateway_stub.config import load_config
from tests.support import PASSWORDS, write_gateway

import pytest


@pytest.fixture()
def api(tmp_path):
    setup = write_gateway(tmp_path, listen="127.0.0.1:0", hosts=["127.0.0.1"],
                          allowed_networks=["10.77.0.0/24"], denied_networks=["10.88.0.0/24"],
                          tcp_ports=["80"])
    return GatewayApi(load_config(setup.config))


def login(api, user="alice", now=0.0):
    ok = api.verify_login(user, PASSWORDS[user])
    response, session = api.finish_login(user, ok, "192.0.2.2", now)
    return response.body["token"], session


def bearer(token, authority="10.77.0.10:80"):
    return {"authorization": f"Bearer {token}", ":authority": authority}


def test_authorization_follows_policy_ports_and_token(api):
    """Allowed port passes; other port, other network, bad token and bad authority each get their status."""
    token, _ = login(api)
    assert api.authorize_connect(bearer(token), "tcp", 1.0).allowed
    assert api.authorize_connect(bearer(token, "10.77.0.10:22"), "tcp", 1.0).status == 403
    assert api.authorize_connect(bearer(token, "10.88.0.10:80"), "tcp", 1.0).status == 403
    assert api.authorize_connect(bearer("forged"), "tcp", 1.0).status == 407
    assert api.authorize_connect(bearer(token, "10.77.0.10"), "tcp", 1.0).status == 400


def test_sessions_expire_when_unused_and_release_their_lease(api):
    """A session unused past max_idle is ended: its token stops working and its address returns to the pool."""
    token, session = login(api, now=0.0)
    assert api.pool.in_use == 1
    api.authorize_connect(bearer(token), "tcp", 50.0)          # use refreshes it
    assert api.expire(100.0, max_idle=60.0) == []
    assert [s.id for s in api.expire(200.0, max_idle=60.0)] == [session.id]
    assert api.pool.in_use == 0
    assert api.authorize_connect(bearer(token), "tcp", 201.0).status == 407


def test_oldest_session_makes_room_past_the_per_user_limit(api):
    """Logging in once more than max_sessions_per_user ends the least recently used session."""
    tokens = [login(api, now=float(i))[0] for i in range(api.config.server.max_sessions_per_user)]
    newest, _ = login(api, now=100.0)
    assert api.authorize_connect(bearer(tokens[0]), "tcp", 101.0).status == 407
    assert api.authorize_connect(bearer(newest), "tcp", 101.0).allowed


def test_config_lists_only_allowed_networks(api):
    """The config document carries the lease and the networks of allowed resources only."""
    _, session = login(api)
    doc = json.loads(api.client_config(session).encoded())
    assert doc["include"] == ["10.77.0.0/24"] and doc["address"] == "10.200.0.2/24"


@pytest.mark.parametrize("text", ["", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", "host:80",
                                  "[::1]:80", ":80", "10.0.0.1:8a"])
def test_malformed_authorities_are_rejected(text):
    """Anything but an IPv4 literal with a port in 1-65535 is refused with ValueError."""
    with pytest.raises(ValueError):
        parse_authority(text)
