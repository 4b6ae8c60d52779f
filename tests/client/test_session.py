"""Parsing what the user types as a gateway, and the gateway's config document."""

from __future__ import annotations

import json

import pytest

from client.errors import GatewayProtocolError, UsageError
from client.session import ClientConfig, GatewayAddress


@pytest.mark.parametrize("text,host,port", [
    ("https://vpn.example.com", "vpn.example.com", 443),
    ("vpn.example.com:8443", "vpn.example.com", 8443),
    ("https://192.0.2.1:8443/", "192.0.2.1", 8443),
])
def test_gateway_urls_parse(text, host, port):
    """https://HOST[:PORT], with or without the scheme, gives host and port (443 by default)."""
    assert GatewayAddress.parse(text) == GatewayAddress(host, port)


@pytest.mark.parametrize("text", ["not a url at all", "http://vpn.example.com", "https://",
                                  "https://vpn.example.com:99999", "https://x/some/path",
                                  "https://x?q=1"])
def test_bad_gateway_urls_are_refused_with_a_usage_error(text):
    """Anything but https://HOST[:PORT] is a UsageError naming the URL."""
    with pytest.raises(UsageError):
        GatewayAddress.parse(text)


def test_config_document_is_validated():
    """A config with a bad network or a wrong type is a GatewayProtocolError, not a crash."""
    good = ClientConfig.from_json({"address": "10.200.0.2/24", "include": ["10.77.0.0/24"],
                                   "dns": {"servers": ["10.77.0.53"], "search": ["corp.example"]}})
    assert str(good.include[0]) == "10.77.0.0/24" and good.mtu == 65000
    for bad in ({"include": ["10.77.0.1/24"]}, {"include": "x"}, {"mtu": "big"}, [], None,
                {"dns": {"servers": ["not an address"]}}, json.loads('{"mtu": Infinity}')):
        with pytest.raises(GatewayProtocolError):
            ClientConfig.from_json(bad)
