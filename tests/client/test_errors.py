"""The error tree's failure kinds: one per failure a program may act on, all documented."""

from __future__ import annotations

import asyncio
import pathlib

from client.control.errors import ControlError
from client.errors import ClientError, LoginFailed, WrongCredentials, failure_kind

API_DOC = pathlib.Path(__file__).parents[2] / "docs" / "control-api.md"


def _tree(cls: type) -> list[type]:
    return [cls] + [sub for child in cls.__subclasses__() for sub in _tree(child)]


def test_every_kind_is_documented_in_the_control_api():
    """Each kind a ClientError can carry is a row of the error kinds table."""
    text = API_DOC.read_text()
    classes = _tree(ClientError)
    assert ControlError in classes        # the control API's own errors too
    for cls in classes:
        assert f"| `{cls.kind}` |" in text, cls


def test_kind_of_a_failure():
    """A refused password is its own kind, a subclass of LoginFailed; anything else is "other"."""
    assert failure_kind(WrongCredentials("no")) == "wrong_credentials"
    assert failure_kind(LoginFailed("wrong user name or password")) == "login_failed"
    assert failure_kind(asyncio.CancelledError()) == failure_kind(None) == "other"
