"""Opening a session with the gateway: TLS, login, config.

``open_session`` returns a logged-in ``GatewaySession`` whose ``link`` carries
the tunnel streams. Every failure becomes a ``ClientError`` with one clear
line: unreachable gateway, untrusted certificate (with its fingerprint),
wrong password, throttling, or a gateway that does not speak the protocol.
The token lives only in this object's memory.

The TLS link is opened by ``client.gateway_link`` and the login exchanges are in
``client.login``; ``GatewayAddress`` and ``ClientConfig`` live in their own modules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import typing

# GatewayAddress and ClientConfig are public API, also imported from here by
# client.profiles, client.control.host and the GUI.
from client.client_config import ClientConfig
from client.errors import (ClientError, GatewayProtocolError, GatewayUnreachable, LoginFailed,
                           SessionExpired, SessionLost, WrongCredentials)
from client.gateway_address import GatewayAddress
from client.gateway_link import ClientLink, connect_link
from client.login import answer_challenge, error_text, post_login
from client.prompter import Prompter
from client.trust import Trust
from client.wire.link import LinkClosed


log = logging.getLogger(__name__)


class GatewaySession:
    """A logged-in session: the link plus the token and config."""

    def __init__(self, gateway: GatewayAddress, link: ClientLink, token: str,
                 config: ClientConfig) -> None:
        self.gateway = gateway
        self.link = link
        self.config = config
        self._token = token

    def auth_header(self) -> tuple[str, str]:
        """The header that every tunnel request carries."""
        return ("authorization", f"Bearer {self._token}")

    def connect_headers(self, authority: str) -> list[tuple[str, str]]:
        """Headers of a plain CONNECT (RFC 9113 8.5) for a TCP flow."""
        return [(":method", "CONNECT"), (":authority", authority), self.auth_header()]

    def extended_connect_headers(self, protocol: str, path: str) -> list[tuple[str, str]]:
        """Headers of an extended CONNECT (RFC 8441) with the capsule protocol."""
        return [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "https"),
                (":authority", str(self.gateway)), (":path", path),
                ("capsule-protocol", "?1"), self.auth_header()]

    async def resume(self, trust: Trust, *, timeout: float = 5.0) -> None:
        """Reconnect with the same token (no password, no one-time code again).

        Raises SessionExpired when the gateway no longer knows the session, and
        SessionLost when the gateway changed the address or networks (included or
        excluded). On success ``link`` and ``config`` are the new ones (the DNS, MTU
        or keepalive may differ).
        """
        link = await connect_link(self.gateway, trust, timeout=timeout)
        try:
            self.config = await self._resumed_config(link, timeout)
        except BaseException:  # cancelled (a disconnect) included: the new connection must go
            link.close("resume failed")
            raise
        self.link = link

    async def _resumed_config(self, link: ClientLink, timeout: float) -> ClientConfig:
        """The config the gateway gives this session's token on ``link``."""
        try:
            response = await link.request(self._api("GET", "/api/v1/config"), timeout=timeout)
        except (LinkClosed, asyncio.TimeoutError) as exc:
            raise GatewayUnreachable(f"the gateway at {self.gateway} dropped the session: {exc}") from None
        if response.status in (401, 403, 407):
            raise SessionExpired("the gateway no longer knows the session (it restarted, "
                                 "or the session expired)")
        if response.status != 200:  # busy or starting (503, a front's 502): worth another try
            answer = f"{response.status} {error_text(response)}".rstrip()
            raise GatewayUnreachable(f"the gateway at {self.gateway} could not resume the session ({answer})")
        try:
            config = ClientConfig.from_json(json.loads(response.body))
        except (ValueError, GatewayProtocolError):
            raise GatewayProtocolError("the gateway sent an invalid config") from None
        if _placement(config) != _placement(self.config):
            raise SessionLost("the gateway changed this session's address or networks; connect again")
        return config

    async def log_in_again(self, trust: Trust, username: str, password: str, *,
                           prompter: Prompter | None = None) -> None:
        """Log in anew on a new connection, for a session the gateway no longer knows; the
        user is asked again for a one-time code if the gateway wants one (never the old one).

        Raises as ``open_session`` does, and SessionLost when the new session has another
        address or other networks (the host is routed for the old ones; the new session is
        then logged out). On success ``link``, ``config`` and the token are the new ones.
        """
        fresh = await open_session(self.gateway, trust, username, password, prompter=prompter)
        if _placement(fresh.config) != _placement(self.config):
            await fresh.logout()
            raise SessionLost("the gateway gave the new login another address or other "
                              "networks; connect again")
        self.link, self.config, self._token = fresh.link, fresh.config, fresh._token

    async def logout(self, trust: Trust | None = None, *, timeout: float = 2.0) -> None:
        """Tell the gateway the session is over, best effort, then close.

        Over ``link`` while it is open; otherwise (the link died, say while the session
        was being resumed) over a new TLS connection made with ``trust``, or not at all
        without one. Takes at most ``timeout`` seconds in all, TLS handshake included,
        and raises nothing but a cancellation: a failure is only logged.
        """
        try:
            await asyncio.wait_for(self._end_on_gateway(trust, timeout), timeout)
        except (ClientError, ConnectionError, asyncio.TimeoutError) as exc:
            log.info("could not tell the gateway at %s the session is over: %s",
                     self.gateway, str(exc) or type(exc).__name__)
        except Exception as exc:   # logging out must not stop the host from being restored
            log.warning("telling the gateway at %s the session is over failed: %r", self.gateway, exc)
        finally:
            self.link.close("logged out")

    async def _end_on_gateway(self, trust: Trust | None, timeout: float) -> None:
        """DELETE the session on the open link, or on a new connection while it is down."""
        delete = self._api("DELETE", "/api/v1/session")
        if self.link.can_open:     # not a link that is going away: that refuses new streams
            await self.link.request(delete, timeout=timeout)
            return
        if trust is None:
            return
        link = await connect_link(self.gateway, trust, timeout=timeout)
        try:
            await link.request(delete, timeout=timeout)
        finally:   # cancelled by the time bound or a second stop included
            link.close("logged out")

    def _api(self, method: str, path: str) -> list[tuple[str, str]]:
        return [(":method", method), (":scheme", "https"), (":authority", str(self.gateway)),
                (":path", path), self.auth_header()]


def _placement(config: ClientConfig) -> tuple:
    """What a resumed session must keep: its address and its networks, in and out."""
    return config.address, config.include, config.exclude


async def open_session(gateway: GatewayAddress, trust: Trust, username: str, password: str,
                       *, prompter: Prompter | None = None, timeout: float = 10.0,
                       on_secure: typing.Callable[[], None] = lambda: None) -> GatewaySession:
    """TLS + login (+ one-time code) + config; returns a session ready for tunnel streams.

    ``on_secure`` is called once the TLS connection is up and trusted, just
    before the credentials are sent.
    """
    link = await connect_link(gateway, trust, timeout=timeout)
    try:
        on_secure()
        response = await post_login(link, gateway, {"username": username, "password": password},
                                     timeout)
        if response.status == 200:
            response = await answer_challenge(link, gateway, response, prompter, timeout)
        if response.status == 401:
            raise WrongCredentials("login failed: wrong user name or password")
        if response.status == 429:
            raise LoginFailed("login refused: too many failed attempts, try again later")
        if response.status != 201:
            raise LoginFailed(f"login failed: the gateway answered {response.status} "
                              f"{error_text(response)}".rstrip())
        try:
            token = str(json.loads(response.body)["token"])
        except (ValueError, KeyError, TypeError):
            raise GatewayProtocolError("the gateway's login answer has no token") from None
        session = GatewaySession(gateway, link, token, ClientConfig.from_json({}))
        try:
            response = await link.request(session._api("GET", "/api/v1/config"), timeout=timeout)
        except (LinkClosed, asyncio.TimeoutError) as exc:
            raise SessionLost(f"the gateway at {gateway} dropped the session: {exc}") from None
        if response.status != 200:
            raise GatewayProtocolError(f"the gateway refused the config request ({response.status})")
        try:
            doc = json.loads(response.body)
        except ValueError:
            raise GatewayProtocolError("the gateway sent a config that is not JSON") from None
        return GatewaySession(gateway, link, token, ClientConfig.from_json(doc))
    except BaseException:
        link.close("login failed")
        raise
