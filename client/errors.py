"""The client's one exception tree.

Every error that ends a connection attempt or a session is a ``ClientError``
whose message is one clear line for the user (the CLI prints it as is).
"""

from __future__ import annotations


class ClientError(Exception):
    """Root: something the user should be told about."""


class GatewayUnreachable(ClientError):
    """No TLS connection to the gateway could be made."""


class TrustError(ClientError):
    """The gateway's certificate is not trusted (carries its fingerprint)."""

    def __init__(self, message: str, fingerprint: str | None = None,
                 certificate: object | None = None) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.certificate = certificate
        """The CertificateInfo of the server, when it could be fetched."""


#: In the message of a LoginFailed for a refused password (the tray app asks again on it).
WRONG_CREDENTIALS = "wrong user name or password"


class LoginFailed(ClientError):
    """The gateway refused the credentials (or throttled us)."""


class GatewayProtocolError(ClientError):
    """The gateway answered something that is not the protocol."""


class SessionLost(ClientError):
    """An established session ended (gateway gone, dead peer, GOAWAY)."""


class HostSetupError(ClientError):
    """The TUN device, addresses or routes could not be set up."""


class UsageError(ClientError):
    """The caller misused the API or gave bad arguments."""
