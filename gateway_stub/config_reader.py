"""The validating reader behind ``gateway_stub.config.load_config``.

Walks the parsed TOML document table by table; every problem becomes one
``ConfigError`` naming the file, the key path and what is wrong. Unknown keys
are errors, so a misspelt setting never falls back silently to its default.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from ipaddress import IPv4Network, IPv6Address
from pathlib import Path

from gateway_stub import passwords
from gateway_stub.config import (_PORTED, PROTOCOLS, DnsConfig, GatewayConfig, PolicyRule,
                                 PortRange, Resource, ServerConfig, UserConfig)
from gateway_stub.errors import ConfigError

_REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "an array", dict: "a table"}
_NAME = re.compile(r"^[^\s\x00-\x1f\x7f]{1,128}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$")
_PORT_RANGE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")
_INT_LIMIT = 2**31 - 1
_MIN_SECONDS = 0.01
_LIMITS = {
    "max_streams_per_session", "max_sessions_per_user", "max_connections_per_source",
    "connect_timeout", "idle_timeout", "session_idle_timeout", "max_header_bytes",
    "login_attempts_per_user", "login_attempts_per_source", "login_window", "keepalive", "mtu",
}


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return next((n for t, n in _TYPE_NAMES.items() if isinstance(value, t)), type(value).__name__)


class _Table:
    """One TOML table being read: knows its key path and rejects unknown keys."""

    def __init__(self, data: object, *, file: str, path: str, known: tuple[str, ...]) -> None:
        self.file = file
        self.path = path
        if not isinstance(data, dict):
            raise ConfigError(f"must be a table, not {_type_name(data)}", file=file, key=path)
        unknown = sorted(set(data) - set(known))
        if unknown:
            names = ", ".join(repr(k) for k in unknown)
            raise ConfigError(
                f"unknown key{'s' if len(unknown) > 1 else ''} {names} (known: {', '.join(known)})",
                file=file, key=path or None,
            )
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(problem, file=self.file, key=key)

    def get(self, name: str, kind: type, default: object = _REQUIRED) -> object:
        if name not in self.data:
            if default is _REQUIRED:
                raise self.error(self.key(name), "missing (required)")
            return default
        return self.check(self.key(name), self.data[name], kind)

    def check(self, key: str, value: object, kind: type) -> object:
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise self.error(key, f"must be {_TYPE_NAMES[kind]}, not {_type_name(value)}")
        return value

    def items(self, name: str, kind: type, *, required: bool = False) -> list[tuple[str, object]]:
        """The elements of array ``name`` as (key path, value), type-checked."""
        values = self.get(name, list, _REQUIRED if required else [])
        if required and not values:
            raise self.error(self.key(name), "must not be empty")
        return [(f"{self.key(name)}[{i}]", self.check(f"{self.key(name)}[{i}]", v, kind))
                for i, v in enumerate(values)]

    def names(self, name: str, what: str, *, required: bool = False) -> tuple[str, ...]:
        """An array of names (groups, users, resources): non-empty strings, deduplicated."""
        result: list[str] = []
        for key, value in self.items(name, str, required=required):
            if not _NAME.match(value):
                raise self.error(key, f"{value!r} is not a valid {what} name")
            if value not in result:
                result.append(value)
        return tuple(result)

    def file_path(self, name: str, base: Path, *, must_exist: bool) -> Path:
        key = self.key(name)
        value = self.get(name, str)
        if not value:
            raise self.error(key, "must not be empty")
        try:
            path = (base / Path(value).expanduser()).resolve()
        except (RuntimeError, ValueError, OSError) as exc:   # ~nobody/..., a NUL byte
            raise self.error(key, f"{value!r} is not a usable path ({exc})") from None
        if must_exist and not path.is_file():
            raise self.error(key, f"file not found: {path}")
        if not must_exist and not path.parent.is_dir():
            raise self.error(key, f"folder not found: {path.parent}")
        return path


def _array_of_tables(root: _Table, name: str) -> list[object]:
    value = root.data.get(name, [])
    if not isinstance(value, list):
        raise root.error(name, f"must be an array of tables ([[{name}]]), not {_type_name(value)}")
    return value


def parse(data: dict, *, file: str, source: Path) -> GatewayConfig:
    root = _Table(data, file=file, path="",
                  known=("server", "pool", "dns", "routing", "user", "resource", "policy"))
    if "server" not in data:
        raise ConfigError("missing the [server] table", file=file)
    users = _parse_users(root)
    resources = _parse_resources(root)
    return GatewayConfig(
        server=_parse_server(root, source.parent),
        pool=_parse_pool(root, resources),
        dns=_parse_dns(root),
        users=users,
        resources=resources,
        policies=_parse_policies(root, users, resources),
        source=source,
        exclude=_parse_routing(root),
    )


def _parse_listen(table: _Table) -> tuple[str, int]:
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


def _parse_server(root: _Table, base: Path) -> ServerConfig:
    known = ("listen", "certificate", "private_key", "audit_log", *sorted(_LIMITS))
    table = _Table(root.data["server"], file=root.file, path="server", known=known)
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


def _parse_users(root: _Table) -> tuple[UserConfig, ...]:
    users: list[UserConfig] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(_array_of_tables(root, "user")):
        table = _Table(raw, file=root.file, path=f"user[{i}]", known=("name", "password", "groups", "totp_secret"))
        name = table.get("name", str)
        if not _NAME.match(name):
            raise table.error(table.key("name"), f"{name!r} is not a valid user name")
        if name in seen:
            raise table.error(table.key("name"), f'duplicate user "{name}" (also {seen[name]})')
        seen[name] = f"user[{i}]"
        encoded = table.get("password", str)
        try:
            passwords.parse_hash(encoded)
        except ValueError as exc:  # the message never echoes the value
            raise table.error(
                table.key("password"), f"{exc} (make one with: tunnelgate-gateway hash-password)"
            ) from None
        groups = table.names("groups", "group")
        totp = table.get("totp_secret", str, None)
        if totp is not None:
            totp = totp.replace(" ", "").upper()
            try:
                if len(base64.b32decode(totp + "=" * (-len(totp) % 8))) < 10:
                    raise ValueError
            except (ValueError, binascii.Error):
                raise table.error(table.key("totp_secret"),
                                  "is not a base32 secret of at least 80 bits "
                                  "(make one with: tunnelgate-gateway make-totp)") from None
        users.append(UserConfig(name=name, password_hash=encoded, groups=groups, totp_secret=totp))
    return tuple(users)


def _parse_network(table: _Table, key: str, text: str) -> IPv4Network:
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise table.error(key, f'"{text}" is not an IPv4 network or address') from None
        raise table.error(key, f'"{text}" has host bits set (did you mean {loose}?)') from None
    if not isinstance(network, IPv4Network):
        raise table.error(key, f'"{text}" is an IPv6 network; only IPv4 is supported')
    return network


def _parse_ports(table: _Table, protocols: frozenset[str]) -> tuple[PortRange, ...] | None:
    if "ports" not in table.data:
        return None
    if not protocols & _PORTED:
        raise table.error(table.key("ports"), "icmp has no ports; remove the ports key")
    ranges: list[PortRange] = []
    values = table.get("ports", list)
    if not values:
        raise table.error(table.key("ports"), "must not be empty (omit ports for all ports)")
    for i, value in enumerate(values):
        key = f"{table.key('ports')}[{i}]"
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        match = _PORT_RANGE.match(text) if isinstance(text, str) else None
        low = int(match.group(1)) if match else 0
        high = int(match.group(2) or low) if match else 0
        if not match or not 1 <= low <= high <= 65535:
            shown = f'"{value}"' if isinstance(value, str) else repr(value)
            raise table.error(key, f"{shown} is not a port or port range (low-high, 1-65535)")
        ranges.append(PortRange(low=low, high=high))
    return tuple(ranges)


def _parse_resources(root: _Table) -> tuple[Resource, ...]:
    resources: list[Resource] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(_array_of_tables(root, "resource")):
        table = _Table(raw, file=root.file, path=f"resource[{i}]",
                       known=("name", "networks", "protocols", "ports"))
        name = table.get("name", str)
        if not _NAME.match(name):
            raise table.error(table.key("name"), f"{name!r} is not a valid resource name")
        if name in seen:
            raise table.error(table.key("name"), f'duplicate resource "{name}" (also {seen[name]})')
        seen[name] = f"resource[{i}]"
        networks = tuple(dict.fromkeys(
            _parse_network(table, key, text) for key, text in table.items("networks", str, required=True)
        ))
        protocols: set[str] = set()
        for key, proto in table.items("protocols", str, required=True):
            if proto.lower() not in PROTOCOLS:
                raise table.error(key, f'"{proto}" is not a protocol (one of: {", ".join(PROTOCOLS)})')
            protocols.add(proto.lower())
        ports = _parse_ports(table, frozenset(protocols))
        resources.append(Resource(name=name, networks=networks,
                                  protocols=frozenset(protocols), ports=ports))
    return tuple(resources)


def _parse_policies(root: _Table, users: tuple[UserConfig, ...],
                    resources: tuple[Resource, ...]) -> tuple[PolicyRule, ...]:
    user_names = {u.name for u in users}
    resource_names = [r.name for r in resources]
    rules: list[PolicyRule] = []
    for i, raw in enumerate(_array_of_tables(root, "policy")):
        table = _Table(raw, file=root.file, path=f"policy[{i}]", known=("groups", "users", "allow"))
        groups = table.names("groups", "group")
        rule_users = table.names("users", "user")
        if not groups and not rule_users:
            raise table.error(table.path, "needs a non-empty groups or users list (or both)")
        for j, name in enumerate(table.get("users", list, [])):
            if name not in user_names:
                raise table.error(table.key(f"users[{j}]"), f'unknown user "{name}"')
        allow = table.names("allow", "resource", required=True)
        for j, name in enumerate(table.data["allow"]):
            if name not in resource_names:
                defined = ", ".join(resource_names) or "none"
                raise table.error(table.key(f"allow[{j}]"),
                                  f'unknown resource "{name}" (defined: {defined})')
        rules.append(PolicyRule(groups=groups, users=rule_users, allow=allow))
    return tuple(rules)


def _parse_pool(root: _Table, resources: tuple[Resource, ...]) -> IPv4Network | None:
    if "pool" not in root.data:
        return None
    table = _Table(root.data["pool"], file=root.file, path="pool", known=("network",))
    key = table.key("network")
    pool = _parse_network(table, key, table.get("network", str))
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


def _parse_dns(root: _Table) -> DnsConfig:
    if "dns" not in root.data:
        return DnsConfig()
    table = _Table(root.data["dns"], file=root.file, path="dns", known=("servers", "search"))
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


def _parse_routing(root: _Table) -> tuple[IPv4Network, ...]:
    """``[routing] exclude``: the networks clients must keep out of the tunnel."""
    if "routing" not in root.data:
        return ()
    table = _Table(root.data["routing"], file=root.file, path="routing", known=("exclude",))
    networks = [_parse_network(table, key, text) for key, text in table.items("exclude", str)]
    return tuple(ipaddress.collapse_addresses(networks))
