"""The TLS connection to the gateway, checked before anything is sent on it.

``connect_link`` opens a ``ClientLink``: the certificate must pass ``Trust`` (a CA
or a pinned fingerprint) and the server must choose ALPN ``h2``, or the
connection is aborted before a byte of HTTP/2 leaves. Every failure becomes a
``ClientError``; an untrusted certificate is fetched a second time, unverified,
only so that its fingerprint can be shown to the user.
"""

from __future__ import annotations

import asyncio
import ssl

from cryptography import x509

from client.errors import GatewayProtocolError, GatewayUnreachable, TrustError
from client.gateway_address import GatewayAddress
from client.prompter import CertificateInfo
from client.trust import Trust, fingerprint, untrusted_message
from client.wire import mux as m
from client.wire.link import Link


class ClientLink(Link):
    """A Link that enforces the certificate pin before sending anything."""

    def __init__(self, trust: Trust) -> None:
        super().__init__(m.Mux(client_side=True))
        self.trust = trust
        self.trust_error: TrustError | None = None
        self.alpn: str | None = None

    def connection_made(self, transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        self.alpn = ssl_object.selected_alpn_protocol() if ssl_object else None
        try:
            self.trust.check_peer(ssl_object)
        except TrustError as exc:
            self.trust_error = exc
            transport.abort()
            self._finish(str(exc))
            return
        if self.alpn != "h2":
            transport.abort()
            self._finish("the server does not speak HTTP/2 (no ALPN h2)")
            return
        super().connection_made(transport)


async def connect_link(gateway: GatewayAddress, trust: Trust, *, timeout: float = 10.0) -> ClientLink:
    """Open the TLS connection; every failure is a ClientError."""
    loop = asyncio.get_running_loop()
    link = ClientLink(trust)
    ctx = trust.ssl_context(gateway.host)
    try:
        await asyncio.wait_for(loop.create_connection(
            lambda: link, gateway.host, gateway.port, ssl=ctx, server_hostname=gateway.host,
            ssl_handshake_timeout=timeout), timeout)
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or str(exc)
        info = await _peek_certificate(gateway, reason, timeout)
        seen = info.fingerprint if info else None
        raise TrustError(untrusted_message(gateway.host, gateway.port, reason, seen), seen,
                         info) from None
    except ssl.SSLError as exc:
        raise GatewayUnreachable(f"TLS with the gateway at {gateway} failed: {exc.reason or exc}") from None
    except asyncio.TimeoutError:
        raise GatewayUnreachable(f"the gateway at {gateway} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise GatewayUnreachable(f"cannot reach the gateway at {gateway}: "
                                 f"{exc.strerror or exc}") from None
    if link.trust_error is not None:
        raise link.trust_error
    if not link.is_open:
        raise GatewayProtocolError(f"the gateway at {gateway}: {link.closed.result()}")
    return link


async def _peek_certificate(gateway: GatewayAddress, reason: str,
                            timeout: float) -> CertificateInfo | None:
    """Fetch the certificate of an untrusted server only to show it to the user."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            gateway.host, gateway.port, ssl=ctx, server_hostname=gateway.host), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        subject, issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
    except ValueError:
        subject = issuer = "(unreadable certificate)"
    return CertificateInfo(host=str(gateway), subject=subject, issuer=issuer,
                           fingerprint=fingerprint(der), reason=reason)
