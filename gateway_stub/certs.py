"""Certificates for a gateway that has none: a small private CA and a server cert.

``make_self_signed`` creates an EC P-256 CA and a server certificate signed by
it, with the given host names and addresses as subject alternative names.
Clients either trust the CA file or pin the server certificate's fingerprint
(``fingerprint_sha256``, the format of the client's ``--pin`` option).

The CA's private key is deliberately not written anywhere: nothing else can
ever be signed with it, so leaking the CA file gives nobody a way to mint
certificates. Re-run ``make-cert`` to renew.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825
_DNS_NAME = re.compile(r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True, kw_only=True)
class CertFiles:
    """Where ``make_self_signed`` wrote its files."""

    ca_cert: Path
    """PEM certificate of the private CA (give it to clients)."""
    certificate: Path
    """PEM server certificate, for ``server.certificate``."""
    private_key: Path
    """PEM server private key (mode 0600), for ``server.private_key``."""


def _subject_names(hosts: list[str]) -> list[x509.GeneralName]:
    if not hosts:
        raise ValueError("at least one host name or address is needed")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            if len(host) > 253 or not _DNS_NAME.match(host):
                raise ValueError(f"{host!r} is neither an IP address nor a DNS name") from None
            names.append(x509.DNSName(host.lower()))
    return list(dict.fromkeys(names))


def _write(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    if not overwrite:
        flags |= os.O_EXCL
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)  # an existing file keeps its mode otherwise
        out.write(data)


def make_self_signed(
    out_dir: Path,
    hosts: list[str],
    *,
    now: datetime.datetime | None = None,
    overwrite: bool = False,
) -> CertFiles:
    """Write ``ca.crt``, ``gateway.crt`` and ``gateway.key`` into ``out_dir``.

    Raises ``ValueError`` for a bad host, ``FileExistsError`` if a file is
    already there and ``overwrite`` is false.
    """
    names = _subject_names(hosts)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(minutes=5)  # tolerate small clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tunnelgate gateway CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True,
            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = CertFiles(ca_cert=out_dir / "ca.crt", certificate=out_dir / "gateway.crt",
                      private_key=out_dir / "gateway.key")
    if not overwrite:
        for path in (files.ca_cert, files.certificate, files.private_key):
            if path.exists():
                raise FileExistsError(f"{path} already exists")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write(files.private_key, key_pem, mode=0o600, overwrite=overwrite)
    _write(files.certificate, cert.public_bytes(serialization.Encoding.PEM),
           mode=0o644, overwrite=overwrite)
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM),
           mode=0o644, overwrite=overwrite)
    return files


def fingerprint_sha256(cert_pem_or_der: bytes) -> str:
    """``"sha256:<64 lowercase hex>"`` of the certificate's DER encoding.

    Takes a PEM (the first certificate is used) or DER certificate; raises
    ``ValueError`` if it is neither.
    """
    if cert_pem_or_der.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(cert_pem_or_der)
    else:
        cert = x509.load_der_x509_certificate(cert_pem_or_der)
    der = cert.public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()
