"""Parsing what the user types as a gateway, and the gateway's config document."""

from __future__ import annotations

import asyncio
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


def test_a_resume_cancelled_midway_closes_its_new_connection(tmp_path, monkeypatch):
    """A disconnect that cancels a resume after its TLS connection is up (while the
    config is asked for) closes that connection: nothing is left open per resume."""
    import client.session as session_module
    from tests.client.engine_rig import run
    from tests.gateway_stub.rig import Bench

    async def main():
        async with Bench(tmp_path) as bench:
            session = await bench.login()
            session.link.close("test drops the connection")
            opened, real = [], session_module.connect_link

            async def connected_then_cancelled(*args, **kwargs):
                link = await real(*args, **kwargs)
                opened.append(link)
                asyncio.current_task().cancel()     # lands on the config request
                return link
            monkeypatch.setattr(session_module, "connect_link", connected_then_cancelled)
            task = asyncio.ensure_future(session.resume(bench.trust))
            await asyncio.wait({task})
            assert task.cancelled() and len(opened) == 1 and not opened[0].is_open
    run(main())
