"""The client's one exception tree.

Every error that ends a connection attempt or a session is a ``ClientError``
whose message is one clear line for the user (the CLI prints it as is), and
whose ``kind`` names the failure for programs: the control API carries it as
``error_kind`` (docs/control-api.md), so that no one has to match the text.
"""

from __future__ import annotations


class ClientError(Exception):
    """Root: something the user should be told about."""

    kind = "other"
    """The machine-readable failure kind (stable: the control API carries it)."""


def failure_kind(error: BaseException | None) -> str:
    """The kind of the error that ended an attempt; "other" for anything not a ClientError."""
    return error.kind if isinstance(error, ClientError) else "other"


class GatewayUnreachable(ClientError):
    """No TLS connection to the gateway could be made."""

    kind = "gateway_unreachable"


class TrustError(ClientError):
    """The gateway's certificate is not trusted (carries its fingerprint)."""

    kind = "untrusted_certificate"

    def __init__(self, message: str, fingerprint: str | None = None,
                 certificate: object | None = None) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.certificate = certificate
        """The CertificateInfo of the server, when it could be fetched."""


class LoginFailed(ClientError):
    """The gateway refused the login (a one-time code, throttling, an expired session…)."""

    kind = "login_failed"


class SessionExpired(LoginFailed):
    """The gateway no longer knows the session (it restarted, or the session expired)."""


class WrongCredentials(LoginFailed):
    """The gateway refused the user name or password (the tray app asks again on it)."""

    kind = "wrong_credentials"


class GatewayProtocolError(ClientError):
    """The gateway answered something that is not the protocol."""

    kind = "protocol_error"


class SessionLost(ClientError):
    """An established session ended (gateway gone, dead peer, GOAWAY)."""

    kind = "session_lost"


class HostSetupError(ClientError):
    """The TUN device, addresses or routes could not be set up."""

    kind = "host_setup_failed"


class UsageError(ClientError):
    """The caller misused the API or gave bad arguments."""
