"""The control service end to end: a real ControlServer on a Unix socket in
front of an EngineHost (with a fake engine, and with the real Engine against
an in-process gateway), driven by the real ControlClient."""

from __future__ import annotations

import json
import socket

import pyotp
import pytest

from client.control import protocol as p
from client.control.client import ControlClient
from client.control.errors import ControlError, ServiceUnavailable
from tests.client.control.fakes import REFUSED, FakeEngine
from tests.client.control.rig import PASSWORD, Gw, Service, real_service, run


def test_connect_notifies_states_then_disconnect_restores(tmp_path):
    """connect returns at once, states arrive as notifications, status shows the config, disconnect ends it."""
    async def main():
        async with Service(tmp_path) as svc:
            client, notes = await svc.subscriber(stats_interval=0.05)
            await client.connect("https://gw.example:8443", "alice", PASSWORD, profile="work")
            await notes.wait_for("state", lambda s: s["state"] == "connected")
            assert notes.states() == ["connecting", "authenticating", "configuring", "connected"]
            status = await client.status()
            assert status["state"] == "connected" and status["profile"] == "work"
            assert status["gateway"] == "gw.example:8443" and status["username"] == "alice"
            assert status["address"] == "10.200.0.2/24" and status["networks"] == ["10.77.0.0/24"]
            assert status["excluded"] == [] and status["ipv6_blocked"] is False
            assert status["dns"] == {"servers": ["10.77.0.53"], "search": ["corp.example"]}
            assert status["resources"] == ["intranet-web"] and status["connected_since"] > 0
            await client.disconnect()
            assert notes.states()[-2:] == ["disconnecting", "disconnected"]
            assert (await client.status())["state"] == "disconnected"
            assert PASSWORD not in json.dumps(notes.seen)
            await client.close()
    run(main())


def test_failed_login_reports_the_error(tmp_path):
    """A failing attempt ends in state failed with the one-line reason and its kind in status."""
    async def main():
        async with Service(tmp_path) as svc:
            client, notes = await svc.subscriber()
            await client.connect("https://gw.example", "mallory", PASSWORD)
            failed = await notes.wait_for("state", lambda s: s["state"] == "failed")
            assert "wrong user name or password" in failed["detail"]
            assert failed["error_kind"] == "wrong_credentials"
            status = await client.status()
            assert status["state"] == "failed" and "wrong user name" in status["error"]
            assert status["error_kind"] == "wrong_credentials"
            await client.connect("https://gw.example", "alice", PASSWORD)  # failed is not busy
            await notes.wait_for("state", lambda s: s["state"] == "connected")
            assert (await client.status())["error_kind"] is None
            assert {params["error_kind"] for m, params in notes.seen
                    if m == "state" and params["state"] != "failed"} == {None}
            await client.disconnect()
            await client.close()
    run(main())


def test_error_kind_comes_from_the_failure_not_its_text(tmp_path):
    """A login failure of another kind in the very words of a refused password is login_failed,
    not wrong_credentials; a certificate the user does not trust is untrusted_certificate."""
    async def main():
        async with Service(tmp_path) as svc:
            client, notes = await svc.answerer("cancel")
            for gateway, user, kind in (("https://gw.example", "parrot", "login_failed"),
                                        ("https://untrusted.example", "alice", "untrusted_certificate")):
                notes.seen.clear()
                await client.connect(gateway, user, PASSWORD)
                failed = await notes.wait_for("state", lambda s: s["state"] == "failed")
                assert failed["error_kind"] == (await client.status())["error_kind"] == kind
                assert user != "parrot" or failed["detail"] == REFUSED
            await client.close()
    run(main())


def test_challenge_round_trip(tmp_path):
    """A one-time code question arrives as a challenge and the answer reaches the engine."""
    async def main():
        async with Service(tmp_path) as svc:
            client, notes = await svc.subscriber()
            await client.connect("https://gw.example", "carol", PASSWORD)
            challenge = await notes.wait_for("challenge")
            assert challenge["kind"] == "totp" and challenge["prompt"] == "One-time code"
            await client.answer_challenge(challenge["id"], "123456")
            await notes.wait_for("state", lambda s: s["state"] == "connected")
            with pytest.raises(ControlError) as info:  # answered already
                await client.answer_challenge(challenge["id"], "123456")
            assert info.value.code == p.NO_SUCH_QUESTION
            await client.disconnect()
            await client.close()
    run(main())


def test_unanswered_challenge_times_out_as_cancel(tmp_path):
    """A challenge nobody answers within the timeout cancels the login."""
    async def main():
        async with Service(tmp_path, prompt_timeout=0.2) as svc:
            client, notes = await svc.subscriber()
            await client.connect("https://gw.example", "carol", PASSWORD)
            await notes.wait_for("state", lambda s: s["state"] == "failed")
            await client.close()
    run(main())


def test_certificate_round_trip(tmp_path):
    """An untrusted certificate is put to the subscriber; "always" lets the engine go on."""
    async def main():
        async with Service(tmp_path) as svc:
            client, notes = await svc.subscriber()
            await client.connect("https://untrusted.example", "alice", PASSWORD)
            question = await notes.wait_for("certificate")
            assert question["fingerprint"] == "sha256:" + "ab" * 32
            assert question["subject"] == "CN=untrusted.example" and question["reason"]
            with pytest.raises(ControlError) as info:
                await client.answer_certificate(question["id"], "maybe")
            assert info.value.code == p.INVALID_PARAMS
            await client.answer_certificate(question["id"], "always")
            await notes.wait_for("state", lambda s: s["state"] == "connected")
            assert FakeEngine.instances[-1].trust_decision == "always"
            await client.disconnect()
            await client.close()
    run(main())


def test_log_notifications_never_carry_the_password(tmp_path, caplog):
    """Log lines reach subscribers; the password is blanked even if something logs it."""
    import logging
    async def main():
        async with Service(tmp_path) as svc:
            client, notes = await svc.subscriber()
            await client.connect("https://gw.example", "carol", PASSWORD)
            challenge = await notes.wait_for("challenge")
            logging.getLogger("client.careless").info("oops %s", PASSWORD)
            await client.answer_challenge(challenge["id"], "123456")
            await notes.wait_for("state", lambda s: s["state"] == "connected")
            await notes.wait_for("log", lambda entry: "oops" in entry["message"])
            logs = [params for m, params in notes.seen if m == "log"]
            assert any("logging in as carol" in entry["message"] for entry in logs)
            assert all(entry["level"] == "INFO" and entry["time"] > 0 for entry in logs)
            assert PASSWORD not in json.dumps(notes.seen)
            await client.disconnect()
            await client.close()
    run(main())


def test_service_not_running_message(tmp_path):
    """Without a service the client says so and names the command that starts it."""
    async def main():
        with pytest.raises(ServiceUnavailable, match="systemctl start tunnelgate"):
            await ControlClient.open(tmp_path / "missing.sock")
    run(main())


# -- the real Engine against an in-process gateway ---------------------------

def test_real_engine_connects_and_restores(tmp_path):
    """The real Engine, hosted by the service, logs in, applies routes and DNS, and undoes them."""
    from tests.support import PASSWORDS

    async def main():
        async with Gw(tmp_path) as gw, real_service(tmp_path) as svc:
            client, notes = await svc.subscriber()
            await client.connect(gw.url, "alice", PASSWORDS["alice"], ca=str(gw.setup.certs.ca_cert))
            await notes.wait_for("state", lambda s: s["state"] in ("connected", "failed"))
            status = await client.status()
            assert status["state"] == "connected", status
            assert status["networks"] == ["10.77.0.0/24"] and status["address"].startswith("10.200.0.")
            assert svc.routes.state is not None
            await client.disconnect()
            assert svc.routes.state is None and svc.routes.restore_count >= 1
            assert PASSWORDS["alice"] not in json.dumps(notes.seen)
            assert any("state connected" in params["message"] for m, params in notes.seen if m == "log")
            await client.close()
    run(main())


def test_real_engine_failures_carry_their_kind(tmp_path):
    """Real gateway: a wrong password, a certificate the user does not trust and a closed port
    reach the client as wrong_credentials, untrusted_certificate and gateway_unreachable."""
    from tests.support import PASSWORDS

    async def main():
        with socket.create_server(("127.0.0.1", 0)) as closed:
            closed_port = closed.getsockname()[1]
        async with Gw(tmp_path) as gw, real_service(tmp_path) as svc:
            client, notes = await svc.answerer("cancel")

            async def kind_of_failure(url: str, password: str, ca) -> str:
                notes.seen.clear()
                await client.connect(url, "alice", password, ca=ca)
                ended = await notes.wait_for("state", lambda s: s["state"] in ("connected", "failed"))
                return ended["error_kind"]
            ca, right = gw.setup.certs.ca_cert, PASSWORDS["alice"]
            assert await kind_of_failure(gw.url, "not " + right, ca) == "wrong_credentials"
            assert await kind_of_failure(gw.url, right, None) == "untrusted_certificate"
            assert await kind_of_failure(f"https://127.0.0.1:{closed_port}", right, ca) \
                == "gateway_unreachable"
            assert (await client.status())["error_kind"] == "gateway_unreachable"
            await client.close()
    run(main())


def test_real_engine_challenge_and_certificate(tmp_path):
    """Real gateway: an unknown certificate and a TOTP challenge are both answered over the API."""
    from tests.support import PASSWORDS, TOTP_SECRET

    async def main():
        async with Gw(tmp_path) as gw, real_service(tmp_path) as svc:
            client, notes = await svc.answerer("once", code=pyotp.TOTP(TOTP_SECRET).now)
            await client.connect(gw.url, "carol", PASSWORDS["carol"])  # no CA: untrusted
            await notes.wait_for("state", lambda s: s["state"] in ("connected", "failed"))
            assert (await client.status())["state"] == "connected", notes.seen
            certificate = next(params for m, params in notes.seen if m == "certificate")
            assert certificate["fingerprint"].startswith("sha256:")
            assert any(m == "challenge" for m, _ in notes.seen)
            await client.disconnect()
            await client.close()
    run(main())
