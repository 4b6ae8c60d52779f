"""The EngineHost's questions (client.control.questions), without a socket: who may
answer, and what an unanswered, unsubscribed or cancelled question becomes."""

from __future__ import annotations

import pytest

from client.control.errors import NoSuchQuestion
from tests.client.control.fakes import FakeEngine
from tests.client.control.rig import PASSWORD, Notes, bare_host, run

OWNER = 1000


async def _asked(method: str, gateway: str, username: str = "alice", **host_kw):
    """A host whose attempt (started by OWNER) was asked ``method``: host, notes, question."""
    notes = Notes()
    host = bare_host(notes, **host_kw)
    await host.connect(gateway, username, PASSWORD, owner=OWNER)
    return host, notes, await notes.wait_for(method)


def test_only_the_owner_or_root_may_answer():
    """Another uid's answer is refused as NoSuchQuestion; the owner's code reaches the
    engine and is kept among the attempt's secrets until it ends."""
    async def main():
        host, notes, question = await _asked("challenge", "https://gw.example", "carol")
        with pytest.raises(NoSuchQuestion, match="another user"):
            host.answer("challenge", question["id"], "123456", uid=OWNER + 1)
        host.answer("challenge", question["id"], "123456", uid=OWNER)
        await notes.wait_for("state", lambda s: s["state"] == "connected")
        assert "123456" in host.secrets and PASSWORD in host.secrets
        await host.disconnect()
        assert host.secrets == set()
    run(main())


def test_answers_to_unknown_or_mismatched_questions_are_refused():
    """An unknown id, a non-string id, or the right id with the wrong kind is NoSuchQuestion;
    root's answer to the right one goes through."""
    async def main():
        host, notes, question = await _asked("certificate", "https://untrusted.example")
        for kind, id in (("certificate", "nope"), ("certificate", 7), ("challenge", question["id"])):
            with pytest.raises(NoSuchQuestion):
                host.answer(kind, id, "once", uid=0)
        host.answer("certificate", question["id"], "once", uid=0)
        await notes.wait_for("state", lambda s: s["state"] == "connected")
        assert FakeEngine.instances[-1].trust_decision == "once"
        await host.disconnect()
    run(main())


def test_a_certificate_answer_other_than_once_or_always_is_cancel():
    """Whatever else a subscriber answers to a certificate question, the engine hears cancel."""
    async def main():
        host, notes, question = await _asked("certificate", "https://untrusted.example")
        host.answer("certificate", question["id"], "sure")
        failed = await notes.wait_for("state", lambda s: s["state"] == "failed")
        assert failed["error_kind"] == "untrusted_certificate"
        assert FakeEngine.instances[-1].trust_decision == "cancel"
    run(main())


def test_a_question_nobody_is_subscribed_to_is_cancelled_at_once():
    """With no subscriber the certificate question is cancelled without waiting for the timeout."""
    async def main():
        notes = Notes()
        host = bare_host(notes, listeners=0, prompt_timeout=60.0)
        await host.connect("https://untrusted.example", "alice", PASSWORD)
        await notes.wait_for("state", lambda s: s["state"] == "failed", timeout=5.0)
        assert FakeEngine.instances[-1].trust_decision == "cancel"
    run(main())


def test_disconnect_cancels_a_pending_question():
    """Disconnecting while a one-time code is asked ends the attempt; the question is gone."""
    async def main():
        host, notes, question = await _asked("challenge", "https://gw.example", "carol")
        await host.disconnect()
        assert host.status()["state"] == "disconnected"
        with pytest.raises(NoSuchQuestion):
            host.answer("challenge", question["id"], "123456")
    run(main())
