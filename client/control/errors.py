"""Errors of the control API, as the clients see them (one tree under ClientError)."""

from __future__ import annotations

from client.errors import ClientError


class ServiceUnavailable(ClientError):
    """The service cannot be reached (not running, socket missing, connection lost)."""


class ControlError(ClientError):
    """The service answered a call with an error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        """The JSON-RPC error code (see docs/control-api.md)."""
        self.message = message
        """One line for the user."""


class NotAllowed(ControlError):
    """The service refused this user (not root, not in the tunnelgate group)."""


class Busy(ClientError):
    """Service side: a connection is already up or being made."""


class NoSuchQuestion(ClientError):
    """Service side: the challenge or certificate question is unknown (answered or expired)."""
