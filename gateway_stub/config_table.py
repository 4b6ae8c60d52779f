"""One TOML table of the gateway's config being read, with the checks every table shares.

``Table`` knows its key path (``resource[2]``, indexes from 0), rejects keys
it does not know and type-checks values, so that every problem becomes one
``ConfigError`` naming the file, the key path and what is wrong. The IPv4
networks that several tables hold are read here too (``parse_network``).
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Network
from pathlib import Path

from gateway_stub.errors import ConfigError

_REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "an array", dict: "a table"}
NAME = re.compile(r"^[^\s\x00-\x1f\x7f]{1,128}$")


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return next((n for t, n in _TYPE_NAMES.items() if isinstance(value, t)), type(value).__name__)


class Table:
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
            if not NAME.match(value):
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


def array_of_tables(root: Table, name: str) -> list[object]:
    value = root.data.get(name, [])
    if not isinstance(value, list):
        raise root.error(name, f"must be an array of tables ([[{name}]]), not {_type_name(value)}")
    return value


def parse_network(table: Table, key: str, text: str) -> IPv4Network:
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
