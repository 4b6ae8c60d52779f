"""GatewayApi without I/O: sessions, config and tunnel authorization."""

from __future__ import annotations

import json

from gateway_stub.api import GatewayApi
from gateway_stub.config import load_config
from tests.support import ALICE_ADDRESS, PASSWORDS, write_gateway

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
    assert doc["include"] == ["10.77.0.0/24"] and doc["address"] == ALICE_ADDRESS


@pytest.mark.parametrize(("dns_port", "pushed"), [("53", True), ("80", False)])
def test_config_pushes_only_dns_servers_the_user_may_reach(tmp_path, dns_port, pushed):
    """A DNS server the user may not query (UDP 53) is not pushed, nor the search domains: the
    host's resolver would otherwise point at a server that refuses them, and no name would resolve."""
    resources = f"""
[[resource]]
name = "dns"
networks = ["10.77.0.53/32", "10.77.0.54/32"]
protocols = ["udp"]
ports = ["{dns_port}"]

[[policy]]
groups = ["staff"]
allow = ["dns"]
"""
    dns = '[dns]\nservers = ["10.77.0.53", "10.99.0.1"]\nsearch = ["corp.example"]\n'
    setup = write_gateway(tmp_path, listen="127.0.0.1:0", hosts=["127.0.0.1"], allowed_networks=[],
                          resources=resources, extra=dns)
    api = GatewayApi(load_config(setup.config))
    _, session = login(api)
    doc = json.loads(api.client_config(session).encoded())
    expected = {"servers": ["10.77.0.53"], "search": ["corp.example"]} if pushed else {"servers": [], "search": []}
    assert doc["dns"] == expected


def test_udp_and_icmp_requests_are_checked_against_their_own_protocol(api):
    """connect-udp and connect-ip targets come from the path and are checked as udp and icmp."""
    token, _ = login(api)
    h = {"authorization": f"Bearer {token}", ":path": "/.well-known/masque/udp/10.77.0.53/53/"}
    assert api.authorize_connect(h, "udp", 1.0).allowed is False      # udp limited to port 80 here
    h[":path"] = "/.well-known/masque/udp/10.77.0.53/80/"
    assert api.authorize_connect(h, "udp", 1.0).allowed
    h[":path"] = "/.well-known/masque/ip/10.77.0.10/1/"
    assert api.authorize_connect(h, "icmp", 1.0).allowed
    h[":path"] = "/.well-known/masque/ip/10.88.0.10/1/"
    assert api.authorize_connect(h, "icmp", 1.0).status == 403
    for bad in ("/.well-known/masque/ip/10.77.0.10/6/", "/.well-known/masque/ip/10.77.0.0%2F24/1/",
                "/.well-known/masque/udp/10.77.0.53/53", "/x"):
        h[":path"] = bad
        assert api.authorize_connect(h, "udp" if "udp" in bad else "icmp", 1.0).status == 400


def test_flows_are_limited_per_session(tmp_path):
    """An allowed flow holds one of the session's max_streams_per_session slots until it ends;
    beyond that the answer is 503 connection_limit_reached."""
    setup = write_gateway(tmp_path, listen="127.0.0.1:0", hosts=["127.0.0.1"],
                          allowed_networks=["10.77.0.0/24"], extra_server="max_streams_per_session = 2")
    api = GatewayApi(load_config(setup.config))
    token, session = login(api)
    assert api.authorize_connect(bearer(token), "tcp", 1.0).allowed
    assert api.authorize_connect(bearer(token), "tcp", 1.0).allowed
    refused = api.authorize_connect(bearer(token), "tcp", 1.0)
    assert (refused.allowed, refused.status, refused.proxy_status) == (False, 503, "connection_limit_reached")
    api.flow_ended(session)
    assert api.authorize_connect(bearer(token), "tcp", 1.0).allowed
