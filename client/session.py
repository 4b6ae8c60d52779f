"""Opening a session with the gateway: TLS, login, config.

``open_session`` returns a logged-in ``GatewaySession`` whose ``link`` carries
the tunnel streams. Every failure becomes a ``ClientError`` with one clear
line: unreachable gateway, untrusted certificate (with its fingerprint),
wrong password, throttling, or a gateway that does not speak the protocol.
The token lives only in this object's memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import re
import ssl
import typing
import urllib.parse

from cryptography import x509

from client.errors import (ClientError, GatewayProtocolError, GatewayUnreachable, LoginFailed,
                           SessionExpired, SessionLost, TrustError, UsageError,
                           WrongCredentials)
from client.prompter import CertificateInfo, Prompter
from client.trust import Trust, fingerprint, untrusted_message
from client.wire import mux as m
from client.wire.link import Link, LinkClosed, Response


log = logging.getLogger(__name__)

_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?)+$|^\[?[0-9a-f:.]+\]?$",
                   re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class GatewayAddress:
    """Where the gateway listens."""

    host: str
    """Host name or IP literal."""
    port: int
    """TCP port (443 by default)."""

    @classmethod
    def parse(cls, url: str) -> "GatewayAddress":
        """Parse ``https://HOST[:PORT]`` (a bare ``HOST[:PORT]`` is accepted too)."""
        if "://" not in url:
            url = "https://" + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https":
            raise UsageError(f"gateway URL {url!r} must start with https://")
        try:
            port = parts.port or 443
        except ValueError:
            raise UsageError(f"gateway URL {url!r} has an invalid port") from None
        if not parts.hostname or not _HOST.match(parts.hostname):
            raise UsageError(f"gateway URL {url!r} has no valid host name or address")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise UsageError(f"gateway URL {url!r} must be just https://HOST[:PORT]")
        return cls(host=parts.hostname, port=port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """What the gateway told this client to set up."""

    address: ipaddress.IPv4Interface | None
    """The pool address for the TUN, when pools are on."""
    include: tuple[ipaddress.IPv4Network, ...]
    """Networks to send through the tunnel."""
    exclude: tuple[ipaddress.IPv4Network, ...]
    """Networks inside ``include`` to leave out."""
    dns_servers: tuple[ipaddress.IPv4Address, ...]
    """Resolvers for the search domains."""
    dns_search: tuple[str, ...]
    """Split-DNS domains."""
    mtu: int
    """MTU hint for the TUN."""
    keepalive: float
    """Seconds between PINGs."""
    resources: tuple[str, ...]
    """Names of what the user may reach (for display)."""
    session: str
    """The gateway's public id of this session."""

    @classmethod
    def from_json(cls, doc: object) -> "ClientConfig":
        """Validate the gateway's config document."""
        try:
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            address = doc.get("address")
            dns = doc.get("dns") or {}
            return cls(
                address=ipaddress.IPv4Interface(address) if address else None,
                include=tuple(ipaddress.IPv4Network(n) for n in doc.get("include", [])),
                exclude=tuple(ipaddress.IPv4Network(n) for n in doc.get("exclude", [])),
                dns_servers=tuple(ipaddress.IPv4Address(s) for s in dns.get("servers", [])),
                dns_search=tuple(str(s) for s in dns.get("search", [])),
                mtu=max(1280, min(65535, int(doc.get("mtu", 65000)))),
                keepalive=max(1.0, float(doc.get("keepalive", 15.0))),
                resources=tuple(str(r) for r in doc.get("resources", [])),
                session=str(doc.get("session", "")),
            )
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:  # Overflow: int(Infinity)
            raise GatewayProtocolError(f"the gateway sent an invalid config: {exc}") from None


class ClientLink(Link):
    """A Link that enforces the certificate pin before sending anything."""

    def __init__(self, trust: Trust) -> None:
        super().__init__(m.Mux(client_side=True))
        self.trust = trust
        self.trust_error: TrustError | None = None
        self.alpn: str | None = None

    def connection_made(self, transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        self.alpn = ssl_object.selected_alpn_protocol() if ssl_object else None
        try:
            self.trust.check_peer(ssl_object)
        except TrustError as exc:
            self.trust_error = exc
            transport.abort()
            self._finish(str(exc))
            return
        if self.alpn != "h2":
            transport.abort()
            self._finish("the server does not speak HTTP/2 (no ALPN h2)")
            return
        super().connection_made(transport)


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
            answer = f"{response.status} {_error_text(response)}".rstrip()
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


async def connect_link(gateway: GatewayAddress, trust: Trust, *, timeout: float = 10.0) -> ClientLink:
    """Open the TLS connection; every failure is a ClientError."""
    loop = asyncio.get_running_loop()
    link = ClientLink(trust)
    ctx = trust.ssl_context(gateway.host)
    try:
        await asyncio.wait_for(loop.create_connection(
            lambda: link, gateway.host, gateway.port, ssl=ctx, server_hostname=gateway.host,
            ssl_handshake_timeout=timeout), timeout)
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or str(exc)
        info = await _peek_certificate(gateway, reason, timeout)
        seen = info.fingerprint if info else None
        raise TrustError(untrusted_message(gateway.host, gateway.port, reason, seen), seen,
                         info) from None
    except ssl.SSLError as exc:
        raise GatewayUnreachable(f"TLS with the gateway at {gateway} failed: {exc.reason or exc}") from None
    except asyncio.TimeoutError:
        raise GatewayUnreachable(f"the gateway at {gateway} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise GatewayUnreachable(f"cannot reach the gateway at {gateway}: "
                                 f"{exc.strerror or exc}") from None
    if link.trust_error is not None:
        raise link.trust_error
    if not link.is_open:
        raise GatewayProtocolError(f"the gateway at {gateway}: {link.closed.result()}")
    return link


async def _peek_certificate(gateway: GatewayAddress, reason: str,
                            timeout: float) -> CertificateInfo | None:
    """Fetch the certificate of an untrusted server only to show it to the user."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            gateway.host, gateway.port, ssl=ctx, server_hostname=gateway.host), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        subject, issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
    except ValueError:
        subject = issuer = "(unreadable certificate)"
    return CertificateInfo(host=str(gateway), subject=subject, issuer=issuer,
                           fingerprint=fingerprint(der), reason=reason)


def _placement(config: ClientConfig) -> tuple:
    """What a resumed session must keep: its address and its networks, in and out."""
    return config.address, config.include, config.exclude


def _error_text(response: Response) -> str:
    try:
        return str(json.loads(response.body).get("error", ""))[:200]
    except (ValueError, AttributeError):
        return ""


async def _post_login(link: ClientLink, gateway: GatewayAddress, doc: dict,
                      timeout: float) -> Response:
    headers = [(":method", "POST"), (":scheme", "https"), (":authority", str(gateway)),
               (":path", "/api/v1/session"), ("content-type", "application/json")]
    try:
        return await link.request(headers, json.dumps(doc).encode(), timeout=timeout)
    except (LinkClosed, asyncio.TimeoutError) as exc:
        raise SessionLost(f"the gateway at {gateway} dropped the login: {exc}") from None


async def _answer_challenge(link: ClientLink, gateway: GatewayAddress, response: Response,
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
    response = await _post_login(link, gateway, {"challenge": cid, "response": code}, timeout)
    if response.status == 401:
        raise LoginFailed(f"login failed: {_error_text(response) or 'wrong one-time code'}")
    return response


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
        response = await _post_login(link, gateway, {"username": username, "password": password},
                                     timeout)
        if response.status == 200:
            response = await _answer_challenge(link, gateway, response, prompter, timeout)
        if response.status == 401:
            raise WrongCredentials("login failed: wrong user name or password")
        if response.status == 429:
            raise LoginFailed("login refused: too many failed attempts, try again later")
        if response.status != 201:
            raise LoginFailed(f"login failed: the gateway answered {response.status} "
                              f"{_error_text(response)}".rstrip())
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
