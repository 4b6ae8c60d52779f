"""A fake engine with the real Engine's constructor, for control-service tests.

User "carol" must answer a one-time code ("123456"); host "untrusted.example"
asks whether to trust its certificate; user "mallory" gives a wrong password;
user "parrot" fails on a gateway that answers a one-time code with the words
of a wrong password (a failure of another kind with the same text); user
"slow" waits in authenticating until disconnected. While connected, the byte
counters grow by 1000 per `tick`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from client.engine import Stats
from client.errors import ClientError, LoginFailed, TrustError, WrongCredentials
from client.prompter import CertificateInfo
from client.client_config import ClientConfig
from client.states import State, check_transition

log = logging.getLogger("client.fake_engine")

CONFIG = ClientConfig(address=ipaddress.IPv4Interface("10.200.0.2/24"),
                      include=(ipaddress.IPv4Network("10.77.0.0/24"),), exclude=(),
                      dns_servers=(ipaddress.IPv4Address("10.77.0.53"),), dns_search=("corp.example",),
                      mtu=65000, keepalive=15.0, resources=("intranet-web",), session="s1")


REFUSED = "login failed: wrong user name or password"
"""The text of a refused password (and of user parrot's other failure)."""


class _Session:
    config = CONFIG


class FakeEngine:
    """Walks the real state table; see the module docstring."""

    instances: list["FakeEngine"] = []

    def __init__(self, options, password, *, tun_factory, routes, dns=None,
                 on_state=lambda s, d: None, prompter=None) -> None:
        self.options = options
        self.password = password
        self.routes = routes
        self.dns = dns
        self._on_state = on_state
        self._prompter = prompter
        self.state = State.DISCONNECTED
        self.session = None
        self.bytes = 0
        self.trust_decision = None
        self.failure = None
        FakeEngine.instances.append(self)

    @property
    def stats(self) -> Stats:
        return Stats(bytes_in=self.bytes, bytes_out=self.bytes // 2, open_flows=1, flows_refused=0,
                     fast_path=True, flows_offloaded=4)

    def _set(self, state: State, detail: str = "") -> None:
        check_transition(self.state, state)
        self.state = state
        log.info("state %s %s", state.value, detail)
        self._on_state(state, detail)

    async def run(self, stop: asyncio.Event) -> None:
        self._set(State.CONNECTING, str(self.options.gateway))
        try:
            if self.options.gateway.host == "untrusted.example":
                self.trust_decision = await self._prompter.trust_certificate(CertificateInfo(
                    host=str(self.options.gateway), subject="CN=untrusted.example",
                    issuer="CN=untrusted.example", fingerprint="sha256:" + "ab" * 32,
                    reason="self-signed certificate"))
                if self.trust_decision not in ("once", "always"):
                    raise TrustError("certificate not trusted")
            self._set(State.AUTHENTICATING, self.options.username)
            log.info("logging in as %s", self.options.username)
            if self.options.username == "slow":
                await asyncio.Event().wait()
            if self.options.username == "mallory":
                raise WrongCredentials(REFUSED)
            if self.options.username == "parrot":
                raise LoginFailed(REFUSED)
            if self.options.username == "carol":
                code = await self._prompter.one_time_code("One-time code")
                if code != "123456":
                    raise LoginFailed("login failed: wrong one-time code")
            self.session = _Session()
            self._set(State.CONFIGURING)
            self._set(State.CONNECTED, "address 10.200.0.2/24")
            ticker = asyncio.ensure_future(self._tick())
            try:
                await stop.wait()
            finally:
                ticker.cancel()
        except ClientError as exc:
            self.failure = exc
            self._set(State.FAILED, str(exc))
            raise
        except BaseException:
            self._set(State.FAILED, "interrupted")
            raise
        self._set(State.DISCONNECTING)
        self._set(State.DISCONNECTED)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.bytes += 1000
