"""Login without I/O: passwords, the login throttle and one-time codes (TOTP)."""

from __future__ import annotations

from gateway_stub.api import GatewayApi
from gateway_stub.config import load_config
from gateway_stub.login import CHALLENGES_PER_USER, ChallengeAnswer
from tests.support import PASSWORDS, write_gateway

import pytest


@pytest.fixture()
def api(tmp_path):
    """A gateway where alice logs in with a password and carol also with a one-time code."""
    setup = write_gateway(tmp_path, listen="127.0.0.1:0", hosts=["127.0.0.1"], allowed_networks=["10.77.0.0/24"])
    return GatewayApi(load_config(setup.config))


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
    cid = challenge_for(api)
    wall = 1_800_000_000.0
    response, session = api.answer_challenge(ChallengeAnswer(cid, totp_code(int(wall // 30))),
                                             "192.0.2.2", 1.0, wall)
    assert response.status == 201 and session is not None and session.user.name == "carol"


def test_wrong_expired_and_replayed_codes_are_refused_clearly(api):
    """A wrong code, an expired challenge and a code used before each get their own message."""
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
    response = api.parse_login(b'{"username": "alice", "password": "pw\\ud800"}')
    assert response.status == 400
    cid = challenge_for(api)
    response, session = api.answer_challenge(ChallengeAnswer(cid, "\uff11" * 6), "s", 1.0,
                                             1_800_000_000.0)
    assert (response.status, response.body["error"], session) == (401, "wrong one-time code", None)
