"""How the engine asks the user something in the middle of a connection.

The foreground CLI answers on the terminal; the service forwards the
question to the tray app or CLI over the control API. Without a prompter,
the engine never asks: a challenge or an untrusted certificate is a failure.
"""

from __future__ import annotations

import dataclasses
import typing


@dataclasses.dataclass(frozen=True)
class CertificateInfo:
    """An untrusted gateway certificate, as shown to the user."""

    host: str
    """host:port the client connected to."""
    subject: str
    """The certificate's subject (RFC 4514 string)."""
    issuer: str
    """The certificate's issuer (RFC 4514 string)."""
    fingerprint: str
    """``sha256:<hex>`` of the certificate, the value a pin takes."""
    reason: str
    """Why verification failed."""


class Prompter(typing.Protocol):
    """Answers the engine's questions."""

    async def one_time_code(self, prompt: str) -> str | None:
        """A one-time code, or None when the user cancelled."""
        ...

    async def trust_certificate(self, info: CertificateInfo) -> str:
        """``once``, ``always`` or ``cancel``."""
        ...
