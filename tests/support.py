"""Builds both ends of a conversation for tests: certificates, a gateway
config file, and an in-process gateway on loopback."""

from __future__ import annotations

import dataclasses
import pathlib

from gateway_stub.certs import CertFiles, make_self_signed
from gateway_stub.passwords import hash_password

#: Cheap scrypt parameters keep the tests fast; the format is the real one.
_FAST = dict(n=2, r=1, p=1)

PASSWORDS = {"alice": "correct horse battery", "bob": "bob's secret", "carol": "carol's secret"}
#: alice's own address in the pool 10.200.0.0/24, derived from her name alone
#: (gateway_stub.pool): the same in every session and after a gateway restart.
ALICE_ADDRESS = "10.200.0.242/24"
#: carol must also give a one-time code from this TOTP secret.
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@dataclasses.dataclass(frozen=True)
class GatewaySetup:
    """Files of a test gateway."""

    config: pathlib.Path
    """The TOML config."""
    certs: CertFiles
    """CA, certificate and key."""


def write_small_config(folder: pathlib.Path, password_hash: str, extra: str = "") -> pathlib.Path:
    """A config for one user (alice, group staff, allowed tcp 80 on 10.77.0.0/24) with
    stand-in TLS files, listening on [::]:8443: enough for check-config. ``extra`` is
    appended."""
    (folder / "gw.crt").write_text("cert")
    (folder / "gw.key").write_text("key")
    path = folder / "gateway.toml"
    path.write_text(f"""\
[server]
listen = "[::]:8443"
certificate = "gw.crt"
private_key = "gw.key"

[[user]]
name = "alice"
password = "{password_hash}"
groups = ["staff"]

[[resource]]
name = "intranet-web"
networks = ["10.77.0.0/24"]
protocols = ["tcp"]
ports = ["80"]

[[policy]]
groups = ["staff"]
allow = ["intranet-web"]
{extra}""")
    return path


def write_gateway(tmp: pathlib.Path, *, listen: str, hosts: list[str], pool: str | None = "10.200.0.0/24",
                  allowed_networks: list[str], denied_networks: list[str] = (),
                  extra_server: str = "", tcp_ports: list[str] | None = None,
                  resources: str | None = None, extra: str = "") -> GatewaySetup:
    """Write certs and a config: alice (group staff) may reach ``allowed_networks``
    over tcp (optionally limited to ``tcp_ports``); ``denied_networks`` is a
    resource nobody is allowed; bob has no policy at all. ``resources``
    replaces the resource and policy tables; ``extra`` is appended (e.g. [dns])."""
    tmp.mkdir(parents=True, exist_ok=True)
    certs = make_self_signed(tmp, hosts)
    ports = "" if tcp_ports is None else f"ports = {list(tcp_ports)!r}\n".replace("'", '"')
    denied = ""
    if denied_networks:
        denied = ("[[resource]]\nname = \"secret\"\n"
                  f"networks = {list(denied_networks)!r}\n".replace("'", '"') +
                  "protocols = [\"tcp\", \"udp\", \"icmp\"]\n\n")
    text = f"""
[server]
listen = "{listen}"
certificate = "{certs.certificate.name}"
private_key = "{certs.private_key.name}"
audit_log = "audit.log"
{extra_server}

{"[pool]" if pool else ""}
{f'network = "{pool}"' if pool else ""}

[[user]]
name = "alice"
password = "{hash_password(PASSWORDS['alice'], **_FAST)}"
groups = ["staff"]

[[user]]
name = "carol"
password = "{hash_password(PASSWORDS['carol'], **_FAST)}"
groups = ["staff"]
totp_secret = "{TOTP_SECRET}"

[[user]]
name = "bob"
password = "{hash_password(PASSWORDS['bob'], **_FAST)}"
groups = ["visitors"]

[[resource]]
name = "intranet"
networks = {list(allowed_networks)!r}
protocols = ["tcp", "udp", "icmp"]
{ports}
{denied}
[[policy]]
groups = ["staff"]
allow = ["intranet"]
""".replace("networks = ['", 'networks = ["').replace("', '", '", "').replace("']", '"]')
    if resources is not None:
        text = text[:text.index("[[resource]]")] + resources
    config = tmp / "gateway.toml"
    config.write_text(text + "\n" + extra)
    return GatewaySetup(config=config, certs=certs)


class UdpEcho:
    """A UDP echo server on loopback, served by the running event loop."""

    def __init__(self) -> None:
        import asyncio
        import socket
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._echo)

    def _echo(self) -> None:
        try:
            data, peer = self._sock.recvfrom(70000)
        except BlockingIOError:
            return
        self._sock.sendto(data, peer)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
