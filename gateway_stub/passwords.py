"""Password hashes for the gateway's users: scrypt, self-describing strings.

The stored form is ``scrypt:<n>:<r>:<p>:<salt base64>:<hash base64>``, so the
cost can be raised later without breaking old entries. Passwords are encoded
as UTF-8 as typed (no Unicode normalisation).

``verify_password_or_dummy`` exists so that a login for an unknown user costs
the same scrypt work as one for a known user: the response time must not tell
an attacker which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
from dataclasses import dataclass

DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32

# Bounds on what a stored hash may ask for, so that a hand-edited config file
# cannot make every login burn gigabytes of memory or minutes of CPU.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16


@dataclass(frozen=True, kw_only=True)
class ScryptHash:
    """A parsed ``scrypt:`` password hash."""

    n: int
    """CPU/memory cost (a power of two)."""
    r: int
    """Block size."""
    p: int
    """Parallelism."""
    salt: bytes
    """Random salt."""
    digest: bytes
    """The derived key to compare against."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # scrypt needs 128 * n * r bytes per lane; allow that plus some slack.
    maxmem = 128 * n * r * p + (1 << 20)
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length
    )


def hash_password(
    password: str,
    *,
    salt: bytes | None = None,
    n: int = DEFAULT_N,
    r: int = DEFAULT_R,
    p: int = DEFAULT_P,
) -> str:
    """Return the ``scrypt:n:r:p:salt:hash`` string for ``password``.

    A fresh random salt is drawn unless ``salt`` is given (tests pass one).
    """
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    _check_parameters(n, r, p, salt, HASH_BYTES)
    digest = _derive(password, salt, n, r, p, HASH_BYTES)
    return f"scrypt:{n}:{r}:{p}:{_b64(salt)}:{_b64(digest)}"


def _check_parameters(n: int, r: int, p: int, salt: bytes, length: int) -> None:
    if n < 2 or n > _MAX_N or n & (n - 1):
        raise ValueError(f"scrypt n must be a power of two from 2 to {_MAX_N}, not {n}")
    if not 1 <= r <= _MAX_R:
        raise ValueError(f"scrypt r must be from 1 to {_MAX_R}, not {r}")
    if not 1 <= p <= _MAX_P:
        raise ValueError(f"scrypt p must be from 1 to {_MAX_P}, not {p}")
    if len(salt) < 8:
        raise ValueError("scrypt salt must be at least 8 bytes")
    if not 16 <= length <= 64:
        raise ValueError("scrypt hash must be 16 to 64 bytes")


def parse_hash(encoded: str) -> ScryptHash:
    """Parse a stored hash; raise ``ValueError`` saying what is wrong with it.

    The message never repeats the string itself, which might be a password
    pasted into the wrong place.
    """
    if not isinstance(encoded, str):
        raise ValueError("password hash must be a string")
    fields = encoded.split(":")
    if fields[0] != "scrypt":
        raise ValueError('password hash must start with "scrypt:"')
    if len(fields) != 6:
        raise ValueError(
            "password hash must have the form scrypt:<n>:<r>:<p>:<salt>:<hash>"
        )
    try:
        n, r, p = (int(field, 10) for field in fields[1:4])
    except ValueError:
        raise ValueError("scrypt n, r and p must be decimal integers") from None
    try:
        salt = base64.b64decode(fields[4], validate=True)
        digest = base64.b64decode(fields[5], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("scrypt salt and hash must be base64") from None
    _check_parameters(n, r, p, salt, len(digest))
    return ScryptHash(n=n, r=r, p=p, salt=salt, digest=digest)


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches the stored hash (constant-time compare).

    Raises ``ValueError`` if ``encoded`` is not a well-formed hash.
    """
    parsed = parse_hash(encoded)
    candidate = _derive(password, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.digest))
    return hmac.compare_digest(candidate, parsed.digest)


@functools.cache
def _dummy_hash() -> str:
    # Computed once, on first use; its password is random and never kept.
    return hash_password(_b64(os.urandom(SALT_BYTES)))


def verify_password_or_dummy(password: str, encoded: str | None) -> bool:
    """Like ``verify_password``, but for an unknown user (``encoded`` None)
    do the same work against a dummy hash and return False."""
    if encoded is None:
        verify_password(password, _dummy_hash())
        return False
    return verify_password(password, encoded)
