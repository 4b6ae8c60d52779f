"""HostQuestions: the EngineHost's questions to the user (one-time codes, certificates).

Theory of operation. The host is the engine's ``Prompter`` through
``HostPrompter``: a question becomes a ``challenge`` or ``certificate``
notification with a fresh id, and the answer arrives through ``answer``
(unanswered after ``prompt_timeout`` seconds, or nobody subscribed, means
cancel). Only the user who started the attempt, or root, may answer; a
one-time code given as an answer joins the attempt's ``secrets``. When the
attempt ends or is stopped, ``_cancel_questions`` answers whatever is still
pending with None.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets as _secrets
import typing

from client.control.errors import NoSuchQuestion
from client.prompter import CertificateInfo

if typing.TYPE_CHECKING:
    from client.control.host import EngineHost

log = logging.getLogger(__name__)

DECISIONS = ("once", "always", "cancel")
"""The answers a ``certificate`` question takes."""


@dataclasses.dataclass
class Question:
    kind: str
    future: asyncio.Future


class HostQuestions:
    """The pending-questions half of EngineHost (a mixin).

    Uses the host's ``_questions`` (id -> Question), ``_notify``,
    ``prompt_timeout``, ``secrets`` and ``privy``, all set up by EngineHost.
    """

    def answer(self, kind: str, id: str, value: str, *, uid: int | None = None) -> None:
        """Answer a pending question as ``uid`` (None: unchecked); raises NoSuchQuestion.

        Only the user who started the attempt, or root, may answer: another member
        of the group must not trust a certificate for them (their password follows).
        """
        question = self._questions.get(id) if isinstance(id, str) else None
        if question is None or question.kind != kind or question.future.done():
            raise NoSuchQuestion(f"no pending {kind} question with id {id!r} "
                                 "(already answered, or it expired)")
        if not self.privy(uid):
            raise NoSuchQuestion(f"the {kind} question {id!r} was asked of another user")
        if kind == "challenge" and value:
            self.secrets.add(value)
        question.future.set_result(value)

    def _cancel_questions(self) -> None:
        for question in self._questions.values():
            if not question.future.done():
                question.future.set_result(None)

    async def ask(self, kind: str, params: dict) -> str | None:
        """Put a question to the subscribers; None when nobody answered in time."""
        id = _secrets.token_hex(8)
        future = asyncio.get_running_loop().create_future()
        self._questions[id] = Question(kind=kind, future=future)
        try:
            if self._notify(kind, {"id": id, **params}) == 0:
                log.info("nobody is subscribed to answer the %s question; cancelling", kind)
                return None
            try:
                return await asyncio.wait_for(asyncio.shield(future), self.prompt_timeout)
            except asyncio.TimeoutError:
                log.info("the %s question was not answered within %g s", kind, self.prompt_timeout)
                return None
        finally:
            del self._questions[id]


class HostPrompter:
    """The engine's Prompter, answered by whoever subscribed to the service."""

    def __init__(self, host: EngineHost) -> None:
        self._host = host

    async def one_time_code(self, prompt: str) -> str | None:
        answer = await self._host.ask("challenge", {"kind": "totp", "prompt": prompt})
        return answer or None

    async def trust_certificate(self, info: CertificateInfo) -> str:
        answer = await self._host.ask("certificate", {
            "host": info.host, "subject": info.subject, "issuer": info.issuer,
            "fingerprint": info.fingerprint, "reason": info.reason})
        return answer if answer in ("once", "always") else "cancel"
