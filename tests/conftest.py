"""Shared fixtures: the netns lab (root only; skipped otherwise)."""

from __future__ import annotations

import pytest
from hypothesis import settings

# Timing is not what the property tests check: on a loaded CI machine a slow
# example must not fail the run.
settings.register_profile("tunnelgate", deadline=None)
settings.load_profile("tunnelgate")

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
