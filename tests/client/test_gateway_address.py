"""Parsing what the user types as a gateway."""

from __future__ import annotations

import pytest

from client.errors import UsageError
from client.gateway_address import GatewayAddress


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
