"""How the client decides to trust a gateway's certificate.

Three ways, never a silent insecure mode: the system store, CA certificates
(a file this process reads, or PEM text), or a pinned SHA-256 fingerprint of
the server certificate. With a pin, the chain is not verified but the
certificate must match the pin exactly; the check runs right after the
handshake, before the client sends a single byte. The privileged service
only takes PEM text: it never opens a path that an unprivileged user chose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re
import ssl

from client.errors import TrustError, UsageError

_PIN = re.compile(r"^sha256:([0-9a-f]{64})$")
_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)

MAX_CA_PEM = 512 * 1024
"""Longest CA text accepted, in characters. A system bundle is about 220 KB; half the
control API's 1 MiB line leaves room for a connect request to carry it."""


@dataclasses.dataclass(frozen=True)
class Trust:
    """What makes the gateway's certificate acceptable."""

    ca_file: pathlib.Path | None = None
    """Verify the chain against this CA bundle (a file this process reads) instead of the system store."""
    ca_pem: str | None = None
    """Verify the chain against these PEM CA certificates (text) instead of the system store."""
    pin: str | None = None
    """``sha256:<hex>`` of the server certificate (DER)."""

    def __post_init__(self) -> None:
        given = [what for what, value in (("a CA file", self.ca_file), ("CA certificate text", self.ca_pem),
                                          ("a pinned fingerprint", self.pin)) if value is not None]
        if len(given) > 1:
            raise UsageError(f"give only one of a CA file, CA certificate text or a pinned fingerprint "
                             f"(got {' and '.join(given)})")
        if self.pin is not None and not _PIN.match(normalize_pin(self.pin)):
            raise UsageError(f"pin {self.pin!r} is not of the form sha256:<64 hex digits>")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise UsageError(f"CA file {self.ca_file} does not exist")
        if self.ca_file is not None:
            try:  # now, so a bad file is a clear error rather than a crash at connect time
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(self.ca_file))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise UsageError(f"CA file {self.ca_file} could not be read as PEM certificates "
                                 f"({getattr(exc, 'reason', None) or exc})") from None
        if self.ca_pem is not None:
            _load_ca_pem(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), self.ca_pem)

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
        elif self.ca_pem is not None:
            _load_ca_pem(ctx, self.ca_pem)
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


def _load_ca_pem(ctx: ssl.SSLContext, pem: str) -> None:
    """Load the certificates of ``pem`` into ``ctx``; raises UsageError, never quoting the text."""
    if not isinstance(pem, str):
        raise UsageError("the CA certificate(s) must be given as PEM text")
    if not pem.strip():
        raise UsageError("the CA certificate text is empty")
    if len(pem) > MAX_CA_PEM:
        raise UsageError(f"the CA certificate text is longer than {MAX_CA_PEM} characters")
    # Only the certificate blocks: like a CA file, the text may carry comments
    # (even non-ASCII ones, as in curl's bundle), which cadata would refuse.
    blocks = _CERTIFICATE.findall(pem)
    if blocks:
        try:
            ctx.load_verify_locations(cadata="\n".join(blocks))
            return
        except (ssl.SSLError, ValueError, TypeError):  # TypeError: non-ASCII inside a block
            pass
    raise UsageError("the CA certificate(s) could not be read: expected PEM text with "
                     "one or more -----BEGIN CERTIFICATE----- blocks")


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
