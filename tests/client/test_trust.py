"""Tests of client.trust: the ways to trust a gateway, checked with real TLS
handshakes over memory BIOs against a certificate from gateway_stub.certs."""

from __future__ import annotations

import pathlib
import ssl

import pytest

from client.errors import UsageError
from client.trust import MAX_CA_PEM, Trust
from gateway_stub.certs import CertFiles, make_self_signed

PIN = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> CertFiles:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    return make_self_signed(tmp_path_factory.mktemp("gw"), ["127.0.0.1"])


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> pathlib.Path:
    """The CA of another gateway, which did not sign ``gateway``'s certificate."""
    return make_self_signed(tmp_path_factory.mktemp("other"), ["127.0.0.1"]).ca_cert


def handshake(trust: Trust, gateway: CertFiles) -> ssl.SSLObject:
    """Run a TLS handshake between ``trust``'s client context and the gateway's certificate."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(gateway.certificate), str(gateway.private_key))
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    from_client, from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = trust.ssl_context("127.0.0.1").wrap_bio(to_client, from_client, server_hostname="127.0.0.1")
    server = server_ctx.wrap_bio(to_server, from_server, server_side=True)
    for _ in range(10):
        done = True
        for end, out, peer_in in ((client, from_client, to_server), (server, from_server, to_client)):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                done = False
            peer_in.write(out.read())
        if done:
            return client
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("how", ["ca_file", "ca_pem"])
def test_gateway_ca_verifies_the_handshake(gateway, how):
    """The gateway's CA, as a file or as PEM text, verifies a real TLS 1.3 handshake."""
    trust = (Trust(ca_file=gateway.ca_cert) if how == "ca_file"
             else Trust(ca_pem=gateway.ca_cert.read_text()))
    client = handshake(trust, gateway)
    assert client.version() == "TLSv1.3"
    trust.check_peer(client)


def test_another_ca_as_pem_fails_the_handshake(gateway, other_ca):
    """PEM text of a CA that did not sign the gateway's certificate makes verification fail."""
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(Trust(ca_pem=other_ca.read_text()), gateway)


def test_ca_pem_may_hold_several_certificates_and_comments(gateway, other_ca):
    """A bundle with several CAs and (non-ASCII) comments around them works like a CA file."""
    bundle = (f"# Főtanúsítvány, another CA\n{other_ca.read_text()}\n"
              f"# the gateway's CA\n{gateway.ca_cert.read_text()}trailing words\n")
    assert handshake(Trust(ca_pem=bundle), gateway).version() == "TLSv1.3"


@pytest.mark.parametrize("given", [("ca_file", "ca_pem"), ("ca_pem", "pin"), ("ca_file", "pin"),
                                   ("ca_file", "ca_pem", "pin")])
def test_only_one_way_of_trust(gateway, given):
    """A CA file, CA text and a pin exclude each other."""
    values = {"ca_file": gateway.ca_cert, "ca_pem": gateway.ca_cert.read_text(), "pin": PIN}
    with pytest.raises(UsageError, match="only one of"):
        Trust(**{name: values[name] for name in given})


@pytest.mark.parametrize("text", [
    "not a certificate at all, secret-words",
    "-----BEGIN CERTIFICATE-----\nsecret-words\n-----END CERTIFICATE-----\n",
    "-----BEGIN CERTIFICATE-----\nsécret-words\n-----END CERTIFICATE-----\n",
    "-----BEGIN PRIVATE KEY-----\nsecret-words\n-----END PRIVATE KEY-----\n",
])
def test_unreadable_ca_pem_is_refused_without_quoting_it(text):
    """Text without a readable certificate is a UsageError that says so and does not echo the text."""
    with pytest.raises(UsageError, match=r"CA certificate\(s\) could not be read") as info:
        Trust(ca_pem=text)
    assert "secret-words" not in str(info.value)


@pytest.mark.parametrize("text", ["", " \n"])
def test_empty_ca_pem_is_refused(text):
    """Empty CA text is a UsageError, not the system store."""
    with pytest.raises(UsageError, match="empty"):
        Trust(ca_pem=text)


def test_oversize_ca_pem_is_refused(gateway):
    """CA text longer than MAX_CA_PEM is refused before it is parsed."""
    pem = gateway.ca_cert.read_text()
    text = pem * (MAX_CA_PEM // len(pem) + 1)
    with pytest.raises(UsageError, match="longer than"):
        Trust(ca_pem=text)
    assert len(Trust(ca_pem=pem * (MAX_CA_PEM // len(pem))).ca_pem) <= MAX_CA_PEM


def test_missing_ca_file_is_refused(tmp_path):
    """A CA file that does not exist is a UsageError naming it (the CLI's own argument)."""
    with pytest.raises(UsageError, match="missing.pem"):
        Trust(ca_file=tmp_path / "missing.pem")


def test_ca_file_without_certificates_is_refused_naming_it(tmp_path):
    """A CA file that holds no certificate is a UsageError naming it, not an ssl.SSLError at connect time."""
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a certificate\n")
    with pytest.raises(UsageError, match="notes.txt could not be read"):
        Trust(ca_file=bad)
