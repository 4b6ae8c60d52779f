"""ControlClient's own work, against a real ControlServer + EngineHost (fake
engine) on a Unix socket: a CA file is read in the caller's process and only
its text reaches the service."""

from __future__ import annotations

import pathlib

import pytest

from client.control.client import describe_secured
from client.errors import UsageError
from client.trust import MAX_CA_PEM
from gateway_stub.certs import make_self_signed
from tests.client.control.fakes import FakeEngine
from tests.client.control.rig import PASSWORD, Service, run


def test_connect_sends_the_ca_file_text(tmp_path):
    """connect(ca=PATH) reads the file here and the service's engine trusts its text, not a path."""
    ca = make_self_signed(tmp_path / "gw", ["gw.example"]).ca_cert

    async def main():
        async with Service(tmp_path) as svc:
            client, notes = await svc.subscriber()
            for given in (ca, str(ca)):
                await client.connect("https://gw.example", "alice", PASSWORD, ca=given)
                await notes.wait_for("state", lambda s: s["state"] == "connected")
                trust = FakeEngine.instances[-1].options.trust
                assert trust.ca_pem == ca.read_text() and trust.ca_file is None
                await client.disconnect()
            await client.close()
    run(main())


@pytest.mark.parametrize("make", [
    lambda folder: folder / "missing.pem",
    lambda folder: folder,
    lambda folder: _write(folder / "garbage.pem", "not a certificate"),
    lambda folder: _write(folder / "huge.pem", "#" * (MAX_CA_PEM + 1)),
])
def test_unusable_ca_file_is_a_usage_error_and_nothing_is_sent(tmp_path, make):
    """A missing, unreadable, certificate-less or oversize CA file raises UsageError naming it;
    the service sees no connect."""
    folder = tmp_path / "cas"
    folder.mkdir()
    path = make(folder)

    async def main():
        async with Service(tmp_path) as svc:
            client, notes = await svc.subscriber()
            engines = len(FakeEngine.instances)
            with pytest.raises(UsageError) as info:
                await client.connect("https://gw.example", "alice", PASSWORD, ca=path)
            assert str(path) in str(info.value)
            assert (await client.status())["state"] == "disconnected"
            assert len(FakeEngine.instances) == engines and notes.states() == []
            await client.close()
    run(main())


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("status", "shown"), [
    ({"networks": ["10.77.0.0/24", "10.78.0.0/16"]}, "10.77.0.0/24, 10.78.0.0/16"),
    ({"networks": ["0.0.0.0/0"], "excluded": ["192.168.0.0/16", "10.9.0.0/16"], "ipv6_blocked": True},
     "0.0.0.0/0 except 192.168.0.0/16, 10.9.0.0/16; IPv6 blocked"),
    ({"networks": [], "excluded": []}, ""),
])
def test_the_secured_networks_read_as_people_say_them(status, shown):
    """Networks, what they leave out, and a full tunnel's IPv6 block, in one line (CLI and tray)."""
    assert describe_secured(status) == shown
