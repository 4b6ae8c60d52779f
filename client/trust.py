"""How the client decides to trust a gateway's certificate.

Three ways, never a silent insecure mode: the system store, a CA file, or a
pinned SHA-256 fingerprint of the server certificate. With a pin, the chain
is not verified but the certificate must match the pin exactly; the check
runs right after the handshake, before the client sends a single byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re
import ssl

from client.errors import TrustError, UsageError

_PIN = re.compile(r"^sha256:([0-9a-f]{64})$")


@dataclasses.dataclass(frozen=True)
class Trust:
    """What makes the gateway's certificate acceptable."""

    ca_file: pathlib.Path | None = None
    """Verify the chain against this CA bundle instead of the system store."""
    pin: str | None = None
    """``sha256:<hex>`` of the server certificate (DER)."""

    def __post_init__(self) -> None:
        if self.ca_file is not None and self.pin is not None:
            raise UsageError("give either a CA file or a pinned fingerprint, not both")
        if self.pin is not None and not _PIN.match(normalize_pin(self.pin)):
            raise UsageError(f"pin {self.pin!r} is not of the form sha256:<64 hex digits>")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise UsageError(f"CA file {self.ca_file} does not exist")

    def ssl_context(self, server_name: str | None) -> ssl.SSLContext:
        """A TLS 1.3 client context with ALPN h2 that enforces this trust."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols(["h2"])
        if self.pin is not None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_file is not None:
            ctx.load_verify_locations(cafile=str(self.ca_file))
        else:
            ctx.load_default_certs()
        return ctx

    def check_peer(self, ssl_object: ssl.SSLObject) -> None:
        """Enforce the pin on an established connection; raises TrustError."""
        if self.pin is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        seen = fingerprint(der) if der else "none"
        if seen != normalize_pin(self.pin):
            raise TrustError(f"the gateway's certificate does not match the pinned fingerprint "
                             f"(pinned {normalize_pin(self.pin)}, server sent {seen})", seen)


def fingerprint(der: bytes) -> str:
    """``sha256:<hex>`` of a DER certificate."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def normalize_pin(pin: str) -> str:
    """Accept upper case and colon-separated hex, as browsers print it."""
    pin = pin.strip().lower()
    if pin.startswith("sha256:"):
        pin = "sha256:" + pin[7:].replace(":", "")
    return pin


def untrusted_message(host: str, port: int, reason: str, seen: str | None) -> str:
    """The one-line explanation for an unverified gateway."""
    text = f"the certificate of {host}:{port} is not trusted ({reason})"
    if seen:
        text += (f"; its fingerprint is {seen} -- if you know it is the right server, "
                 f"connect with --pin {seen} (or --ca FILE)")
    return text
