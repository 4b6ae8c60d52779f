"""GatewayApi without I/O: login, sessions, config and tunnel authorization."""

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


def totp_code(step: int) -> str:
    import pyotp
    from tests.support import TOTP_SECRET
    return pyotp.TOTP(TOTP_SECRET).at(step * 30)


def challenge_for(api, now=0.0):
    response, session = api.finish_login("carol", api.verify_login("carol", PASSWORDS["carol"]),
                                         "192.0.2.2", now)
    assert session is None and response.status == 200
    return response.body["challenge"]["id"]


def test_a_user_holds_only_a_few_code_requests_at_once(api):
    """Each password login of a TOTP user opens a code request; beyond four open at once the
    oldest goes, so one user who knows their password cannot fill the gateway's table."""
    from gateway_stub.api import CHALLENGES_PER_USER, ChallengeAnswer
    challenges = [challenge_for(api, now=float(i)) for i in range(CHALLENGES_PER_USER + 2)]
    wall = 1_800_000_000.0
    for cid in challenges[:2]:
        response, _ = api.answer_challenge(ChallengeAnswer(cid, "000000"), "192.0.2.2", 9.0, wall)
        assert response.body["error"] == "the one-time code request expired; log in again"
    response, session = api.answer_challenge(
        ChallengeAnswer(challenges[2], totp_code(int(wall // 30))), "192.0.2.2", 9.0, wall)
    assert response.status == 201 and session is not None


def test_totp_user_gets_a_challenge_then_a_session_for_the_right_code(api):
    """A password alone is not enough for carol; the current code completes the login."""
    from gateway_stub.api import ChallengeAnswer
    cid = challenge_for(api)
    wall = 1_800_000_000.0
    response, session = api.answer_challenge(ChallengeAnswer(cid, totp_code(int(wall // 30))),
                                             "192.0.2.2", 1.0, wall)
    assert response.status == 201 and session is not None and session.user.name == "carol"


def test_wrong_expired_and_replayed_codes_are_refused_clearly(api):
    """A wrong code, an expired challenge and a code used before each get their own message."""
    from gateway_stub.api import ChallengeAnswer
    wall = 1_800_000_000.0
    step = int(wall // 30)
    cid = challenge_for(api)
    response, _ = api.answer_challenge(ChallengeAnswer(cid, "000000"), "s", 1.0, wall)
    assert (response.status, response.body["error"]) == (401, "wrong one-time code")
    cid = challenge_for(api, now=0.0)
    response, _ = api.answer_challenge(ChallengeAnswer(cid, totp_code(step)), "s", 500.0, wall)
    assert response.status == 401 and "expired" in response.body["error"]
    cid = challenge_for(api, now=1000.0)
    assert api.answer_challenge(ChallengeAnswer(cid, totp_code(step)), "s", 1001.0, wall)[1]
    cid = challenge_for(api, now=1002.0)
    response, session = api.answer_challenge(ChallengeAnswer(cid, totp_code(step)), "s", 1003.0,
                                             wall + 5)
    assert session is None and "already used" in response.body["error"]


def test_concurrent_logins_cannot_overtake_the_throttle(api):
    """Attempts still being checked count: the sixth concurrent guess for alice is refused
    before any password work, and finished attempts count as their outcome says."""
    for i in range(5):
        assert api.throttled("alice", f"192.0.2.{i}", 1.0) is None     # five scrypt checks running
    assert api.throttled("alice", "192.0.2.99", 1.0).status == 429
    for i in range(5):
        response, _ = api.finish_login("alice", False, f"192.0.2.{i}", 2.0)
        assert response.status == 401
    assert api.throttled("alice", "192.0.2.99", 3.0).status == 429       # five failures now


def test_one_time_codes_are_throttled_too(api):
    """Challenges fetched in advance cannot be used to go on guessing codes once the user
    has failed too often: even the right code is refused with 429 for the window."""
    from gateway_stub.api import ChallengeAnswer
    wall = 1_800_000_000.0
    challenges = [challenge_for(api, now=0.0) for _ in range(3)]
    for cid, guesses in zip(challenges, (3, 2)):
        for _ in range(guesses):
            response, _ = api.answer_challenge(ChallengeAnswer(cid, "000000"), "s", 1.0, wall)
            assert response.status == 401
    right = totp_code(int(wall // 30))
    response, session = api.answer_challenge(ChallengeAnswer(challenges[2], right), "s", 2.0, wall)
    assert (response.status, session) == (429, None)


def test_text_that_cannot_be_hashed_or_compared_is_refused_cleanly(api):
    """A lone surrogate in the password is a 400, not a crash in the hashing thread; a code of
    non-ASCII digits is just a wrong code, not a TypeError in the comparison."""
    from gateway_stub.api import ChallengeAnswer
    response = api.parse_login(b'{"username": "alice", "password": "pw\\ud800"}')
    assert response.status == 400
    cid = challenge_for(api)
    response, session = api.answer_challenge(ChallengeAnswer(cid, "\uff11" * 6), "s", 1.0,
                                             1_800_000_000.0)
    assert (response.status, response.body["error"], session) == (401, "wrong one-time code", None)


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
