"""Tests of gateway_stub.certs."""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from gateway_stub.certs import fingerprint_sha256, make_self_signed


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_self_signed(tmp_path_factory.mktemp("certs"), ["gw.example.test", "127.0.0.1", "::1"])


def _load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_sans_hold_names_and_addresses(files):
    """Names become DNS SANs and addresses IP SANs."""
    san = _load(files.certificate).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def test_server_cert_verifies_against_the_ca(files):
    """cryptography's verifier builds a chain from the server cert to the CA for each host."""
    store = Store([_load(files.ca_cert)])
    for host in (x509.DNSName("gw.example.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verifier = PolicyBuilder().store(store).build_server_verifier(host)
        chain = verifier.verify(_load(files.certificate), [])
        assert chain[-1] == _load(files.ca_cert)


def test_ssl_context_loads_ca_and_server_pair(files):
    """The stdlib ssl module accepts the CA file and the certificate/key pair."""
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    assert client.cert_store_stats()["x509_ca"] == 1
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(files.certificate), str(files.private_key))


def test_keys_are_p256_and_private_key_is_0600(files):
    """The server key is EC P-256 and only its owner may read it."""
    key = serialization.load_pem_private_key(files.private_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600
    ca = _load(files.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_fingerprint_format_and_pem_der_agree(files):
    """Fingerprint is sha256:<64 hex> of the DER, the same from PEM or DER input."""
    pem = files.certificate.read_bytes()
    der = _load(files.certificate).public_bytes(serialization.Encoding.DER)
    fingerprint = fingerprint_sha256(pem)
    assert fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()
    assert fingerprint == fingerprint_sha256(der)
    assert len(fingerprint) == 7 + 64 and fingerprint == fingerprint.lower()


def test_existing_files_are_not_overwritten_unless_asked(files):
    """A second run refuses to clobber the key; overwrite=True replaces it."""
    with pytest.raises(FileExistsError):
        make_self_signed(files.certificate.parent, ["gw.example.test"])
    again = make_self_signed(files.certificate.parent, ["other.test"], overwrite=True)
    assert stat.S_IMODE(again.private_key.stat().st_mode) == 0o600


def test_bad_hosts_are_refused(tmp_path):
    """No hosts, or a host that is neither a name nor an address, is a ValueError."""
    with pytest.raises(ValueError):
        make_self_signed(tmp_path, [])
    with pytest.raises(ValueError):
        make_self_signed(tmp_path, ["bad host!"])
    assert not any(tmp_path.iterdir())
