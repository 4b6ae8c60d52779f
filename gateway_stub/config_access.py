"""The access tables of the gateway's config: ``[[user]]``, ``[[resource]]`` and ``[[policy]]``.

Who may log in, what there is to reach, and who may reach what. They are read
in that order by ``gateway_stub.config_reader.parse``, so that every user and
resource a policy names can be checked to exist.
"""

from __future__ import annotations

import base64
import binascii
import re

from gateway_stub import passwords
from gateway_stub.config import _PORTED, PROTOCOLS, PolicyRule, PortRange, Resource, UserConfig
from gateway_stub.config_table import NAME, array_of_tables, parse_network, Table

_PORT_RANGE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")


def _unique_name(table: Table, what: str, seen: dict[str, str]) -> str:
    """The ``name`` of one table of an array (``what``: user, resource): a valid name
    that no table before it used; ``seen`` maps the names so far to their key paths."""
    name = table.get("name", str)
    if not NAME.match(name):
        raise table.error(table.key("name"), f"{name!r} is not a valid {what} name")
    if name in seen:
        raise table.error(table.key("name"), f'duplicate {what} "{name}" (also {seen[name]})')
    seen[name] = table.path
    return name


def parse_users(root: Table) -> tuple[UserConfig, ...]:
    users: list[UserConfig] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(array_of_tables(root, "user")):
        table = Table(raw, file=root.file, path=f"user[{i}]", known=("name", "password", "groups", "totp_secret"))
        name = _unique_name(table, "user", seen)
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


def _parse_ports(table: Table, protocols: frozenset[str]) -> tuple[PortRange, ...] | None:
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


def parse_resources(root: Table) -> tuple[Resource, ...]:
    resources: list[Resource] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(array_of_tables(root, "resource")):
        table = Table(raw, file=root.file, path=f"resource[{i}]",
                       known=("name", "networks", "protocols", "ports"))
        name = _unique_name(table, "resource", seen)
        networks = tuple(dict.fromkeys(
            parse_network(table, key, text) for key, text in table.items("networks", str, required=True)
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


def parse_policies(root: Table, users: tuple[UserConfig, ...],
                    resources: tuple[Resource, ...]) -> tuple[PolicyRule, ...]:
    user_names = {u.name for u in users}
    resource_names = [r.name for r in resources]
    rules: list[PolicyRule] = []
    for i, raw in enumerate(array_of_tables(root, "policy")):
        table = Table(raw, file=root.file, path=f"policy[{i}]", known=("groups", "users", "allow"))
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
