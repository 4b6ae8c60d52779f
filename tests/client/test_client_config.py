"""Validating the gateway's config document."""

from __future__ import annotations

import json

import pytest

from client.client_config import ClientConfig
from client.errors import GatewayProtocolError


def test_config_document_is_validated():
    """A config with a bad network or a wrong type is a GatewayProtocolError, not a crash."""
    good = ClientConfig.from_json({"address": "10.200.0.2/24", "include": ["10.77.0.0/24"],
                                   "dns": {"servers": ["10.77.0.53"], "search": ["corp.example"]}})
    assert str(good.include[0]) == "10.77.0.0/24" and good.mtu == 65000
    for bad in ({"include": ["10.77.0.1/24"]}, {"include": "x"}, {"mtu": "big"}, [], None,
                {"dns": {"servers": ["not an address"]}}, json.loads('{"mtu": Infinity}')):
        with pytest.raises(GatewayProtocolError):
            ClientConfig.from_json(bad)
