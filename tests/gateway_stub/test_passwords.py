"""Tests of gateway_stub.passwords."""

from __future__ import annotations

import pytest

from gateway_stub.passwords import (
    hash_password,
    parse_hash,
    verify_password,
    verify_password_or_dummy,
)

# Cheap parameters keep the suite fast; the default cost is checked once.
FAST = {"n": 2**4, "r": 1, "p": 1}


def test_hash_has_documented_format_and_defaults():
    """A default hash is scrypt:16384:8:1:<salt>:<hash> and verifies."""
    encoded = hash_password("s3cret")
    fields = encoded.split(":")
    assert fields[:4] == ["scrypt", "16384", "8", "1"]
    assert len(fields) == 6
    assert verify_password("s3cret", encoded)


def test_wrong_password_is_rejected():
    """A different password does not verify."""
    encoded = hash_password("right", **FAST)
    assert not verify_password("wrong", encoded)
    assert not verify_password("", encoded)


def test_same_salt_gives_same_hash_and_fresh_salts_differ():
    """An explicit salt is deterministic; default salts are random."""
    salt = b"0123456789abcdef"
    assert hash_password("pw", salt=salt, **FAST) == hash_password("pw", salt=salt, **FAST)
    assert hash_password("pw", **FAST) != hash_password("pw", **FAST)


def test_non_ascii_password_round_trips():
    """Passwords are encoded as UTF-8 and verify."""
    encoded = hash_password("pässwörd✓", **FAST)
    assert verify_password("pässwörd✓", encoded)
    assert not verify_password("passwörd✓", encoded)


@pytest.mark.parametrize(
    ("encoded", "fragment"),
    [
        ("hunter2", 'start with "scrypt:"'),
        ("bcrypt:$2b$12$abc", 'start with "scrypt:"'),
        ("scrypt:16384:8:1:abc", "scrypt:<n>:<r>:<p>:<salt>:<hash>"),
        ("scrypt:x:8:1:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA==", "decimal integers"),
        ("scrypt:1000:8:1:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA==", "power of two"),
        ("scrypt:16384:8:1:!!!:AAAAAAAAAAAAAAAAAAAAAA==", "base64"),
        ("scrypt:16384:8:1:AAAA:AAAAAAAAAAAAAAAAAAAAAA==", "salt must be at least"),
        ("scrypt:16384:99:1:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA==", "scrypt r"),
    ],
)
def test_malformed_hash_raises_value_error_with_clear_text(encoded, fragment):
    """Malformed stored hashes raise ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=None) as info:
        verify_password("pw", encoded)
    assert fragment in str(info.value)


def test_error_message_does_not_echo_the_value():
    """A plaintext password pasted as a hash is not repeated in the error."""
    with pytest.raises(ValueError) as info:
        parse_hash("MyPlainPassword")
    assert "MyPlainPassword" not in str(info.value)


def test_dummy_verify_returns_false_for_unknown_user():
    """verify_password_or_dummy with no hash does the work and returns False."""
    assert verify_password_or_dummy("anything", None) is False


def test_dummy_verify_checks_real_hash_when_given():
    """verify_password_or_dummy behaves like verify_password for a known user."""
    encoded = hash_password("pw", **FAST)
    assert verify_password_or_dummy("pw", encoded) is True
    assert verify_password_or_dummy("nope", encoded) is False


def test_parse_hash_exposes_parameters():
    """parse_hash returns the parameters, salt and digest."""
    parsed = parse_hash(hash_password("pw", salt=b"saltsalt", **FAST))
    assert (parsed.n, parsed.r, parsed.p, parsed.salt) == (16, 1, 1, b"saltsalt")
    assert len(parsed.digest) == 32
