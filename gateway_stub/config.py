"""The gateway's configuration: one TOML file read into frozen dataclasses.

``load_config(path)`` parses and validates the whole file up front, so that a
mistake is reported once, at start-up, as one ``ConfigError`` naming the file,
the key path (``resource[2].ports[1]``, indexes from 0) and the problem. Keys
the gateway does not know are rejected rather than ignored: a misspelt limit
must not silently fall back to its default.

Relative paths (certificate, key, audit log) are taken relative to the folder
holding the config file, not to the working directory.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

from gateway_stub.errors import ConfigError

PROTOCOLS = ("tcp", "udp", "icmp")
_PORTED = frozenset({"tcp", "udp"})


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """The ``[server]`` table: where to listen, TLS files and limits."""

    listen_host: str
    """Address or name to listen on (``"::"`` for ``[::]:443``)."""
    listen_port: int
    """TCP port to listen on (0 lets the OS pick one)."""
    certificate: Path
    """PEM certificate chain presented to clients (absolute path)."""
    private_key: Path
    """PEM private key of the certificate (absolute path)."""
    max_streams_per_session: int = 1000
    """Concurrent tunnel streams one session may hold open."""
    max_sessions_per_user: int = 8
    """Concurrent sessions one user may hold."""
    max_connections_per_source: int = 256
    """Concurrent client connections one source address (an IPv6 /64) may hold open."""
    connect_timeout: float = 5.0
    """Seconds to wait for the gateway's own connection to a target."""
    idle_timeout: float = 7200.0
    """Seconds a flow may stay idle before the gateway closes it."""
    session_idle_timeout: float = 300.0
    """Seconds a session may stay silent (no PING answered) before it is dropped."""
    max_header_bytes: int = 16384
    """Largest header block the gateway accepts on a request."""
    login_attempts_per_user: int = 5
    """Failed logins allowed per user name within ``login_window``."""
    login_attempts_per_source: int = 20
    """Failed logins allowed per source address within ``login_window``."""
    login_window: float = 300.0
    """Sliding window, in seconds, for the login attempt limits."""
    audit_log: Path | None = None
    """File the audit lines are appended to; None sends them to a logger."""
    keepalive: float = 15.0
    """Keepalive interval in seconds pushed to clients."""
    mtu: int = 65000
    """MTU hint pushed to clients."""


@dataclass(frozen=True, kw_only=True)
class DnsConfig:
    """The ``[dns]`` table: resolvers and search domains pushed to clients."""

    servers: tuple[IPv4Address | IPv6Address, ...] = ()
    """DNS servers for the secured networks."""
    search: tuple[str, ...] = ()
    """Search domains."""


@dataclass(frozen=True, kw_only=True)
class UserConfig:
    """One ``[[user]]`` entry."""

    name: str
    """Login name."""
    password_hash: str
    """``scrypt:`` hash from ``tunnelgate-gateway hash-password``."""
    groups: tuple[str, ...] = ()
    """Groups the user belongs to (matched by policies)."""
    totp_secret: str | None = None
    """Base32 TOTP secret: when set, login also asks for a one-time code."""


@dataclass(frozen=True, kw_only=True)
class PortRange:
    """An inclusive range of ports; a single port has low == high."""

    low: int
    """First port of the range."""
    high: int
    """Last port of the range."""

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True, kw_only=True)
class Resource:
    """One ``[[resource]]`` entry: something users may be allowed to reach."""

    name: str
    """Name used by policies and shown to users."""
    networks: tuple[IPv4Network, ...]
    """IPv4 networks the resource covers."""
    protocols: frozenset[str]
    """Subset of ``tcp``, ``udp``, ``icmp``."""
    ports: tuple[PortRange, ...] | None = None
    """TCP/UDP ports covered; None means every port. ICMP ignores ports."""

    def matches(self, protocol: str, address: IPv4Address, port: int | None) -> bool:
        """True if a flow of ``protocol`` to ``address``:``port`` falls in this resource."""
        if protocol not in self.protocols:
            return False
        if not any(address in network for network in self.networks):
            return False
        if protocol not in _PORTED or self.ports is None:
            return True
        return port is not None and any(port in r for r in self.ports)


@dataclass(frozen=True, kw_only=True)
class PolicyRule:
    """One ``[[policy]]`` entry: who may reach which resources."""

    groups: tuple[str, ...] = ()
    """Members of any of these groups are covered."""
    users: tuple[str, ...] = ()
    """These users are covered, whatever their groups."""
    allow: tuple[str, ...]
    """Names of the resources the covered users may reach."""


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """The whole gateway configuration."""

    server: ServerConfig
    """Listener, TLS files and limits."""
    pool: IPv4Network | None
    """Address pool; None when pools are off."""
    dns: DnsConfig
    """DNS to push."""
    users: tuple[UserConfig, ...]
    """Users, in file order."""
    resources: tuple[Resource, ...]
    """Resources, in file order."""
    policies: tuple[PolicyRule, ...]
    """Policy rules, in file order."""
    source: Path
    """The file this configuration was read from."""
    exclude: tuple[IPv4Network, ...] = ()
    """``[routing] exclude``: networks clients keep out of the tunnel (split-exclude),
    such as the home LAN inside a full tunnel; pushed where they overlap a user's routes."""

    def find_user(self, name: str) -> UserConfig | None:
        """The user called ``name``, or None."""
        return next((u for u in self.users if u.name == name), None)


def load_config(path: Path) -> GatewayConfig:
    """Read and validate the TOML file at ``path``; raise ``ConfigError``."""
    path = Path(path)
    file = str(path)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
        line = int(where.group(1)) if where else None
        if where:
            message = message[: where.start()]
        raise ConfigError(f"invalid TOML: {message}", file=file, line=line) from None
    from gateway_stub.config_reader import parse  # the reader needs the dataclasses above
    return parse(data, file=file, source=path.resolve())
