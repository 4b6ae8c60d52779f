"""Errors of the tunnel wire layer.

``TunnelError`` is the root. ``ProtocolViolation`` means the peer misbehaved
(it carries the HTTP/2 error code to close with); ``UsageError`` means the
caller misused the API.
"""

from __future__ import annotations


class TunnelError(Exception):
    """Root of the wire layer's errors."""


class ProtocolViolation(TunnelError):
    """The peer broke the protocol."""

    def __init__(self, message: str, *, error_code: int = 1) -> None:
        super().__init__(message)
        self.error_code = error_code


class UsageError(TunnelError):
    """The caller misused the API."""
