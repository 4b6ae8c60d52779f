"""Shared fixtures: the netns lab (root only; skipped otherwise)."""

from __future__ import annotations

import pytest

from tests.lab.netns import Lab, lab_supported


@pytest.fixture(scope="module")
def lab():
    """A fresh client/gateway/intranet lab for the test module, torn down after it."""
    reason = lab_supported()
    if reason:
        pytest.skip(reason)
    built = Lab()
    try:
        yield built
    finally:
        built.close()
