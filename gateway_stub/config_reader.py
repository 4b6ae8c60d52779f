"""The validating reader behind ``gateway_stub.config.load_config``.

Walks the parsed TOML document table by table; every problem becomes one
``ConfigError`` naming the file, the key path and what is wrong. Unknown keys
are errors, so a misspelt setting never falls back silently to its default.

``parse`` reads the top level and the single tables (``[server]``, ``[pool]``,
``[dns]``, ``[routing]``) here; the access tables (``[[user]]``,
``[[resource]]``, ``[[policy]]``) are read in ``gateway_stub.config_access``,
and every table through ``gateway_stub.config_table``.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Network, IPv6Address
from pathlib import Path

from gateway_stub.config import DnsConfig, GatewayConfig, Resource, ServerConfig
from gateway_stub.config_access import parse_policies, parse_resources, parse_users
from gateway_stub.config_table import parse_network, Table
from gateway_stub.errors import ConfigError

_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$")
_INT_LIMIT = 2**31 - 1
_MIN_SECONDS = 0.01
_LIMITS = {
    "max_streams_per_session", "max_sessions_per_user", "max_connections_per_source",
    "connect_timeout", "idle_timeout", "session_idle_timeout", "max_header_bytes",
    "login_attempts_per_user", "login_attempts_per_source", "login_window", "keepalive", "mtu",
}


def parse(data: dict, *, file: str, source: Path) -> GatewayConfig:
    root = Table(data, file=file, path="",
                  known=("server", "pool", "dns", "routing", "user", "resource", "policy"))
    if "server" not in data:
        raise ConfigError("missing the [server] table", file=file)
    users = parse_users(root)
    resources = parse_resources(root)
    return GatewayConfig(
        server=_parse_server(root, source.parent),
        pool=_parse_pool(root, resources),
        dns=_parse_dns(root),
        users=users,
        resources=resources,
        policies=parse_policies(root, users, resources),
        source=source,
        exclude=_parse_routing(root),
    )


def _parse_listen(table: Table) -> tuple[str, int]:
    key = table.key("listen")
    listen = table.get("listen", str)
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\[\]:\s]+):(\d{1,5})", listen)
    if not match:
        raise table.error(key, f'"{listen}" is not host:port (IPv6 as [::]:443)')
    host, port = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    if match.group(1):
        try:
            IPv6Address(host)
        except ValueError:
            raise table.error(key, f'"{host}" is not an IPv6 address') from None
    if int(port) > 65535:
        raise table.error(key, f"port {port} is out of range (0-65535)")
    return host, int(port)


def _parse_server(root: Table, base: Path) -> ServerConfig:
    known = ("listen", "certificate", "private_key", "audit_log", *sorted(_LIMITS))
    table = Table(root.data["server"], file=root.file, path="server", known=known)
    host, port = _parse_listen(table)
    limits: dict[str, object] = {}
    for field in ServerConfig.__dataclass_fields__.values():
        if field.name not in _LIMITS:
            continue
        kind = float if field.type == "float" else int
        value = table.get(field.name, kind, field.default)
        if kind is float and not (_MIN_SECONDS <= value < float("inf")):   # tiny ones spin the loop
            raise table.error(table.key(field.name),
                              f"must be a positive number of seconds, at least {_MIN_SECONDS}, not {value}")
        if kind is int and value < 1:
            raise table.error(table.key(field.name), f"must be at least 1, not {value}")
        if kind is int and value > _INT_LIMIT:   # HTTP/2 SETTINGS values are 32-bit
            raise table.error(table.key(field.name), f"must be at most {_INT_LIMIT}, not {value}")
        limits[field.name] = value
    if not 576 <= limits["mtu"] <= 65535:
        raise table.error(table.key("mtu"), f"must be from 576 to 65535, not {limits['mtu']}")
    audit_log = None
    if "audit_log" in table.data:
        audit_log = table.file_path("audit_log", base, must_exist=False)
    return ServerConfig(
        listen_host=host,
        listen_port=port,
        certificate=table.file_path("certificate", base, must_exist=True),
        private_key=table.file_path("private_key", base, must_exist=True),
        audit_log=audit_log,
        **limits,
    )


def _parse_pool(root: Table, resources: tuple[Resource, ...]) -> IPv4Network | None:
    if "pool" not in root.data:
        return None
    table = Table(root.data["pool"], file=root.file, path="pool", known=("network",))
    key = table.key("network")
    pool = parse_network(table, key, table.get("network", str))
    if pool.prefixlen > 30:
        raise table.error(key, f"pool {pool} is too small: it needs the gateway's address and "
                               "at least one lease (use /30 or larger)")
    for resource in resources:
        for network in resource.networks:
            # A resource around the whole pool (a full tunnel's 0.0.0.0/0, a corporate /8)
            # is deliberate; a pool over part or all of a resource would hide its hosts.
            if pool.overlaps(network) and not (pool.subnet_of(network) and pool != network):
                raise table.error(key, f'pool {pool} overlaps {network} of resource "{resource.name}"')
    return pool


def _parse_dns(root: Table) -> DnsConfig:
    if "dns" not in root.data:
        return DnsConfig()
    table = Table(root.data["dns"], file=root.file, path="dns", known=("servers", "search"))
    servers = []
    for key, text in table.items("servers", str):
        try:
            servers.append(ipaddress.ip_address(text.strip()))
        except ValueError:
            raise table.error(key, f'"{text}" is not an IP address') from None
    search = []
    for key, text in table.items("search", str):
        if not _DOMAIN.match(text):
            raise table.error(key, f'"{text}" is not a domain name')
        search.append(text.rstrip("."))
    return DnsConfig(servers=tuple(dict.fromkeys(servers)), search=tuple(dict.fromkeys(search)))


def _parse_routing(root: Table) -> tuple[IPv4Network, ...]:
    """``[routing] exclude``: the networks clients must keep out of the tunnel."""
    if "routing" not in root.data:
        return ()
    table = Table(root.data["routing"], file=root.file, path="routing", known=("exclude",))
    networks = [parse_network(table, key, text) for key, text in table.items("exclude", str)]
    return tuple(ipaddress.collapse_addresses(networks))
