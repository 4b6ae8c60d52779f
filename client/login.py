"""The HTTP exchanges of a login: credentials, then a one-time code if asked.

``post_login`` sends one ``POST /api/v1/session`` document; ``answer_challenge``
asks the ``Prompter`` for the one-time code a 200 answer calls for and posts it;
``error_text`` reads the short reason a gateway puts in an error body.
``open_session`` in ``client.session`` drives them and reads the final answer.
"""

from __future__ import annotations

import asyncio
import json

from client.errors import GatewayProtocolError, LoginFailed, SessionLost
from client.gateway_address import GatewayAddress
from client.gateway_link import ClientLink
from client.prompter import Prompter
from client.wire.link import LinkClosed, Response


def error_text(response: Response) -> str:
    try:
        return str(json.loads(response.body).get("error", ""))[:200]
    except (ValueError, AttributeError):
        return ""


async def post_login(link: ClientLink, gateway: GatewayAddress, doc: dict,
                      timeout: float) -> Response:
    headers = [(":method", "POST"), (":scheme", "https"), (":authority", str(gateway)),
               (":path", "/api/v1/session"), ("content-type", "application/json")]
    try:
        return await link.request(headers, json.dumps(doc).encode(), timeout=timeout)
    except (LinkClosed, asyncio.TimeoutError) as exc:
        raise SessionLost(f"the gateway at {gateway} dropped the login: {exc}") from None


async def answer_challenge(link: ClientLink, gateway: GatewayAddress, response: Response,
                            prompter: Prompter | None, timeout: float) -> Response:
    """Second login step: ask the user for the one-time code the gateway wants."""
    try:
        challenge = json.loads(response.body)["challenge"]
        cid, prompt = str(challenge["id"]), str(challenge.get("prompt", "One-time code"))
    except (ValueError, KeyError, TypeError):
        raise GatewayProtocolError("the gateway's login answer is not understood") from None
    if prompter is None:
        raise LoginFailed("login needs a one-time code, and there is nobody to ask for it")
    code = await prompter.one_time_code(prompt)
    if code is None:
        raise LoginFailed("login cancelled: no one-time code given")
    response = await post_login(link, gateway, {"challenge": cid, "response": code}, timeout)
    if response.status == 401:
        raise LoginFailed(f"login failed: {error_text(response) or 'wrong one-time code'}")
    return response
