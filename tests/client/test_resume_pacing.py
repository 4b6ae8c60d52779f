"""Tests of client.resume_pacing: the pauses before resume attempts."""

from __future__ import annotations

from client.resume_pacing import (MAX_FLAP_PAUSE, MAX_RECONNECT_PAUSE, RECONNECT_FOR, STABLE_AFTER,
                                  ResumePacing, reconnect_delays)

DELAYS = (0.5, 1.0, 2.0)


def test_a_session_that_lasted_resumes_after_the_configured_pauses():
    """A loss long after the session came up is not a quick one: the pauses are as given."""
    pacing = ResumePacing(DELAYS)
    pacing.established(100.0)
    assert pacing.lost(100.0 + STABLE_AFTER + 1) == DELAYS


def test_quick_losses_in_a_row_double_the_first_pause_up_to_the_cap():
    """Each session lost within STABLE_AFTER of coming up doubles the first pause, which
    never exceeds MAX_FLAP_PAUSE; the other pauses stay."""
    pacing = ResumePacing(DELAYS)
    now, firsts = 0.0, []
    for _ in range(8):
        pacing.established(now)
        now += 1.0
        pauses = pacing.lost(now)
        firsts.append(pauses[0])
        assert pauses[1:] == DELAYS[1:]
    assert firsts[:4] == [1.0, 2.0, 4.0, 8.0]
    assert firsts[-1] == MAX_FLAP_PAUSE


def test_a_session_that_lasts_resets_the_count():
    """After quick losses, one session that lasts brings the first pause back to normal."""
    pacing = ResumePacing(DELAYS)
    for now in (0.0, 2.0, 4.0):
        pacing.established(now)
        pacing.lost(now + 1.0)
    pacing.established(10.0)
    assert pacing.lost(10.0 + STABLE_AFTER) == DELAYS


def test_a_loss_before_any_session_and_no_delays_are_taken_as_they_are():
    """A loss with no session established yet is not quick; no delays means no attempts."""
    assert ResumePacing(DELAYS).lost(5.0) == DELAYS
    never = ResumePacing(())
    never.established(0.0)
    assert never.lost(1.0) == ()


def test_the_default_window_is_covered_by_doubling_pauses_up_to_the_cap():
    """The pauses start at half a second, double up to MAX_RECONNECT_PAUSE, and just cover
    the window asked for; a window of 0 makes no attempt."""
    delays = reconnect_delays(RECONNECT_FOR)
    assert delays[:4] == (0.5, 1.0, 2.0, 4.0) and max(delays) == MAX_RECONNECT_PAUSE
    assert sum(delays[:-1]) < RECONNECT_FOR <= sum(delays)
    assert reconnect_delays(7.5) == (0.5, 1.0, 2.0, 4.0)
    assert reconnect_delays(0) == ()
