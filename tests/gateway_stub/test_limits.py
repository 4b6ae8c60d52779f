"""Tests of gateway_stub.limits."""

from __future__ import annotations

import pytest

from gateway_stub.limits import PRE_LOGIN_HEADER_BYTES, ConnectionCount, LoginThrottle, header_limit


def test_user_is_blocked_after_limit_and_freed_after_window():
    """Three failures in the window block the user; they expire one by one."""
    throttle = LoginThrottle(attempts_per_user=3, attempts_per_source=100, window=60.0)
    for t in (100.0, 110.0, 120.0):
        assert throttle.allowed("alice", "192.0.2.1", t)
        throttle.record_failure("alice", "192.0.2.1", t)
    assert not throttle.allowed("alice", "192.0.2.1", 121.0)
    assert not throttle.allowed("alice", "198.51.100.7", 121.0)  # any source
    assert throttle.retry_after("alice", "192.0.2.1", 121.0) == pytest.approx(39.0)
    assert not throttle.allowed("alice", "192.0.2.1", 159.9)
    assert throttle.allowed("alice", "192.0.2.1", 160.0)  # the 100.0 failure left the window
    assert throttle.allowed("bob", "192.0.2.1", 121.0)


def test_sliding_window_counts_only_recent_failures():
    """Failures spread wider than the window never add up to a block."""
    throttle = LoginThrottle(attempts_per_user=2, attempts_per_source=100, window=10.0)
    for t in (0.0, 11.0, 22.0, 33.0):
        assert throttle.allowed("alice", "src", t)
        throttle.record_failure("alice", "src", t)


def test_source_is_blocked_across_user_names():
    """Guessing many user names from one source hits the source limit."""
    throttle = LoginThrottle(attempts_per_user=5, attempts_per_source=3, window=60.0)
    for i, t in enumerate((1.0, 2.0, 3.0)):
        throttle.record_failure(f"user{i}", "203.0.113.9", t)
    assert not throttle.allowed("someone-new", "203.0.113.9", 4.0)
    assert throttle.allowed("someone-new", "203.0.113.10", 4.0)


def test_an_ipv6_source_is_its_slash_64():
    """Guesses from many addresses of one IPv6 /64 (one host may hold them all) count as one
    source; another /64, and IPv4-mapped addresses, count apart."""
    throttle = LoginThrottle(attempts_per_user=100, attempts_per_source=3, window=60.0)
    for i, t in enumerate((1.0, 2.0, 3.0)):
        throttle.record_failure(f"user{i}", f"2001:db8:1:2::{i + 1:x}", t)
    assert not throttle.allowed("someone-new", "2001:db8:1:2:ffff::9", 4.0)
    assert throttle.allowed("someone-new", "2001:db8:1:3::1", 4.0)
    for t in (5.0, 6.0, 7.0):
        throttle.record_failure("x", "::ffff:192.0.2.7", t)
    assert not throttle.allowed("y", "192.0.2.7", 8.0)      # the same IPv4 host
    assert throttle.allowed("y", "192.0.2.8", 8.0)


def test_success_clears_user_failures_but_not_source_failures():
    """record_success resets the user's count; the source's count remains."""
    throttle = LoginThrottle(attempts_per_user=2, attempts_per_source=3, window=60.0)
    throttle.record_failure("alice", "src", 1.0)
    throttle.record_failure("alice", "src", 2.0)
    assert not throttle.allowed("alice", "other", 3.0)
    throttle.record_success("alice", "src")
    assert throttle.allowed("alice", "other", 3.0)
    throttle.record_failure("bob", "src", 4.0)
    assert not throttle.allowed("carol", "src", 5.0)


def test_tracked_keys_are_capped():
    """No more than max_keys users and sources are remembered."""
    throttle = LoginThrottle(attempts_per_user=3, attempts_per_source=3, window=1000.0, max_keys=50)
    for i in range(500):
        throttle.record_failure(f"user{i}", f"src{i}", float(i))
    assert throttle.tracked <= 100


def test_expired_keys_are_forgotten():
    """Keys whose failures all left the window are dropped on later activity."""
    throttle = LoginThrottle(attempts_per_user=3, attempts_per_source=3, window=10.0)
    for i in range(100):
        throttle.record_failure(f"user{i}", f"src{i}", 0.0)
    throttle.record_failure("late", "late-src", 50.0)
    assert throttle.tracked == 2


def test_invalid_limits_are_refused():
    """Zero limits or a non-positive window are caller errors."""
    with pytest.raises(ValueError):
        LoginThrottle(attempts_per_user=0, attempts_per_source=1, window=1.0)
    with pytest.raises(ValueError):
        LoginThrottle(attempts_per_user=1, attempts_per_source=1, window=0.0)


def test_attempts_in_flight_count_against_the_limits():
    """Attempts begun but not yet finished count, so a burst of concurrent guesses cannot
    all pass before the first failure is recorded; finishing one frees its place."""
    throttle = LoginThrottle(attempts_per_user=3, attempts_per_source=5, window=60.0)
    for _ in range(3):
        assert throttle.allowed("alice", "src", 1.0)
        throttle.begin("alice", "src")
    assert not throttle.allowed("alice", "other-src", 1.0)
    assert throttle.allowed("bob", "src", 1.0)
    throttle.begin("bob", "src")
    throttle.begin("bob", "src")
    assert not throttle.allowed("carol", "src", 1.0)         # five in flight from src
    throttle.end("alice", "src")
    throttle.record_success("alice", "src")
    assert throttle.allowed("alice", "other-src", 1.0)
    assert throttle.allowed("carol", "src", 1.0)


def test_connections_beyond_the_cap_are_refused_per_source():
    """A source holds at most max_per_source connections; others are unaffected, and a
    released slot lets one more in."""
    count = ConnectionCount(max_per_source=2)
    slots = [count.admit("192.0.2.1"), count.admit("192.0.2.1")]
    assert None not in slots
    assert count.admit("192.0.2.1") is None
    assert count.admit("192.0.2.2") is not None
    assert (count.open_from("192.0.2.1"), count.open) == (2, 3)
    slots[0].release()
    assert count.admit("192.0.2.1") is not None


def test_releasing_a_slot_twice_frees_one_place_only():
    """Every path that ends a connection may release its slot; only the first counts."""
    count = ConnectionCount(max_per_source=2)
    first = count.admit("src")
    count.admit("src")
    first.release()
    first.release()
    assert count.open_from("src") == 1
    assert count.admit("src") is not None and count.admit("src") is None


def test_connection_count_forgets_idle_sources():
    """A source with nothing open takes no memory, however many came and went."""
    count = ConnectionCount(max_per_source=1)
    for i in range(1000):
        count.admit(f"198.51.100.{i % 250}").release()
    assert count.open == 0 and count.open_from("198.51.100.7") == 0


def test_connections_from_one_ipv6_slash_64_share_a_count():
    """Addresses of one /64 count as one source; mapped IPv4 counts as the IPv4 host."""
    count = ConnectionCount(max_per_source=2)
    assert count.admit("2001:db8:1:2::1") and count.admit("2001:db8:1:2::ffff")
    assert count.admit("2001:db8:1:2:abcd::9") is None
    assert count.admit("2001:db8:1:3::1") is not None
    count.admit("192.0.2.7")
    count.admit("::ffff:192.0.2.7")
    assert count.admit("192.0.2.7") is None


def test_refusals_are_reported_at_most_once_per_interval():
    """The first refusal is reported at once; later ones add up until the interval has
    passed, and what is left can be taken by a timer."""
    count = ConnectionCount(max_per_source=1, report_every=10.0)
    assert count.note_refused(100.0) == 1
    assert [count.note_refused(t) for t in (101.0, 102.0, 109.0)] == [0, 0, 0]
    assert count.note_refused(110.0) == 4
    assert count.note_refused(111.0) == 0
    assert count.take_unreported(112.0) == 1
    assert count.take_unreported(113.0) == 0
    assert count.note_refused(119.0) == 0          # 112.0 was the last report
    assert count.note_refused(122.0) == 2
    assert count.refused == 8


def test_invalid_connection_caps_are_refused():
    """A cap below one or a non-positive report interval is a caller error."""
    with pytest.raises(ValueError):
        ConnectionCount(max_per_source=0)
    with pytest.raises(ValueError):
        ConnectionCount(max_per_source=1, report_every=0.0)


def test_header_limit_is_low_until_login_and_never_above_the_configured_one():
    """Before login a connection gets PRE_LOGIN_HEADER_BYTES (or less, if max_header_bytes is
    lower); after login, max_header_bytes."""
    assert header_limit(16384, logged_in=False) == PRE_LOGIN_HEADER_BYTES < 16384
    assert header_limit(1024, logged_in=False) == 1024
    assert header_limit(16384, logged_in=True) == 16384
