"""Per-user connection profiles (a TOML file) and their passwords (the OS keyring).

``ProfileStore`` reads and writes ``profiles.toml`` in the user's config
folder, one ``[[profile]]`` table per profile. The file is written by a
tiny writer here (the standard library reads TOML but cannot write it),
atomically (a temporary file renamed over the old one). A broken file is a
``ProfileError`` naming the file and the line, or the profile at fault.

``PasswordStore`` keeps one password per profile in the keyring under the
service "tunnelgate" and the key "PROFILE:USERNAME"; when no keyring backend
is available it says so instead of falling back to anything weaker.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import tempfile
import tomllib

from client.errors import ClientError, UsageError

KEYRING_SERVICE = "tunnelgate"
_NAME = re.compile(r"^[\w][\w .@+-]{0,63}$")
_FIELDS = ("name", "gateway", "username", "ca", "pin", "connect_at_start")


class ProfileError(ClientError):
    """The profiles file cannot be read or holds an invalid profile."""


class KeyringUnavailable(ClientError):
    """No usable keyring backend, or the keyring refused the request."""


def default_path() -> pathlib.Path:
    """``$TUNNELGATE_PROFILES``, else profiles.toml in the user's config folder."""
    env = os.environ.get("TUNNELGATE_PROFILES")
    if env:
        return pathlib.Path(env)
    import platformdirs
    return pathlib.Path(platformdirs.user_config_dir("tunnelgate")) / "profiles.toml"


@dataclasses.dataclass(frozen=True)
class Profile:
    """One saved way to connect."""

    name: str
    """What the user calls it (letters, digits, space, ``.@+-_``; 64 at most)."""
    gateway: str
    """Gateway URL, https://HOST[:PORT]."""
    username: str
    """Login name."""
    ca: str | None = None
    """CA file to verify the gateway with, if not the system store."""
    pin: str | None = None
    """Pinned certificate fingerprint, sha256:HEX."""
    connect_at_start: bool = False
    """Whether the tray app connects this profile when it starts."""

    def __post_init__(self) -> None:
        for field in ("name", "gateway", "username"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise UsageError(f"profile {field} must be a non-empty string")
        if not _NAME.match(self.name):
            raise UsageError(f"profile name {self.name!r} may hold letters, digits, spaces and .@+-_ "
                             "(64 characters at most)")
        for field in ("ca", "pin"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise UsageError(f"profile {field} must be a non-empty string when given")
        if self.ca is not None and self.pin is not None:
            raise UsageError("give a profile either a CA file or a pin, not both")
        if not isinstance(self.connect_at_start, bool):
            raise UsageError("connect_at_start must be true or false")
        if any(ord(c) < 32 for c in self.username + self.gateway):
            raise UsageError("profile fields may not contain control characters")
        from client.session import GatewayAddress
        GatewayAddress.parse(self.gateway)
        if self.pin is not None:
            from client.trust import Trust
            Trust(pin=self.pin)


def _toml_string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 32 or ord(ch) == 127 or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render(profiles: list[Profile]) -> str:
    """The TOML text of a list of profiles."""
    lines = ["# Tunnelgate connection profiles (passwords live in the keyring, not here)"]
    for profile in profiles:
        lines += ["", "[[profile]]"]
        for field in _FIELDS:
            value = getattr(profile, field)
            if value is None:
                continue
            text = ("true" if value else "false") if isinstance(value, bool) else _toml_string(value)
            lines.append(f"{field} = {text}")
    return "\n".join(lines) + "\n"


class ProfileStore:
    """The profiles file of one user."""

    def __init__(self, path: pathlib.Path | None = None) -> None:
        self.path = pathlib.Path(path) if path is not None else default_path()

    def load(self) -> list[Profile]:
        """All profiles, in file order; [] when the file does not exist. Raises ProfileError."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"cannot read {self.path}: {exc}") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"{self.path}: {exc}") from None  # the message names line and column
        unknown = sorted(set(doc) - {"profile"})
        if unknown:  # refused, not ignored: the next save would silently drop them
            raise ProfileError(f"{self.path}: unknown top-level key(s) {', '.join(unknown)} "
                               "(only [[profile]] tables belong here)")
        tables = doc.get("profile", [])
        if not isinstance(tables, list):
            raise ProfileError(f"{self.path}: profiles must be [[profile]] tables")
        profiles, seen = [], set()
        for index, table in enumerate(tables, 1):
            where = f"{self.path}: profile #{index}"
            if isinstance(table, dict) and isinstance(table.get("name"), str):
                where += f" ({table['name']!r})"
            if not isinstance(table, dict):
                raise ProfileError(f"{where} is not a table")
            unknown = sorted(set(table) - set(_FIELDS))
            if unknown:
                raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}")
            missing = [k for k in ("name", "gateway", "username") if k not in table]
            if missing:
                raise ProfileError(f"{where}: missing {', '.join(missing)}")
            try:
                profile = Profile(**table)
            except (UsageError, TypeError) as exc:
                raise ProfileError(f"{where}: {exc}") from None
            if profile.name in seen:
                raise ProfileError(f"{where}: the name {profile.name!r} is used twice")
            seen.add(profile.name)
            profiles.append(profile)
        return profiles

    def get(self, name: str) -> Profile | None:
        """The profile called ``name``, or None."""
        return next((p for p in self.load() if p.name == name), None)

    def save(self, profile: Profile) -> None:
        """Add ``profile``, or replace the one with its name (keeping its place)."""
        profiles = self.load()
        for i, old in enumerate(profiles):
            if old.name == profile.name:
                profiles[i] = profile
                break
        else:
            profiles.append(profile)
        self._write(profiles)

    def remove(self, name: str) -> bool:
        """Remove the profile called ``name``; False if there was none."""
        profiles = self.load()
        kept = [p for p in profiles if p.name != name]
        if len(kept) == len(profiles):
            return False
        self._write(kept)
        return True

    def _write(self, profiles: list[Profile]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".profiles-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(render(profiles))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            raise ProfileError(f"cannot write {self.path}: {exc}") from None


class PasswordStore:
    """Profile passwords in the OS keyring (service "tunnelgate", key "PROFILE:USERNAME")."""

    def __init__(self, service: str = KEYRING_SERVICE) -> None:
        self.service = service

    @staticmethod
    def key(profile: str, username: str) -> str:
        """The keyring user name under which a profile's password is kept."""
        return f"{profile}:{username}"

    def get(self, profile: str, username: str) -> str | None:
        """The saved password, or None. Raises KeyringUnavailable."""
        import keyring
        with _keyring_errors():
            return keyring.get_password(self.service, self.key(profile, username))

    def set(self, profile: str, username: str, password: str) -> None:
        """Save the password. Raises KeyringUnavailable."""
        import keyring
        with _keyring_errors():
            keyring.set_password(self.service, self.key(profile, username), password)

    def delete(self, profile: str, username: str) -> bool:
        """Forget the password; False if none was saved. Raises KeyringUnavailable."""
        import keyring
        try:
            with _keyring_errors():
                keyring.delete_password(self.service, self.key(profile, username))
        except _Missing:
            return False
        return True


class _Missing(Exception):
    pass


class _keyring_errors:
    """Turns keyring's errors into KeyringUnavailable (a missing password into _Missing)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            return False
        import keyring.errors
        if isinstance(exc, keyring.errors.PasswordDeleteError):
            raise _Missing() from None
        if isinstance(exc, keyring.errors.NoKeyringError):
            raise KeyringUnavailable(
                "no keyring is available to keep passwords (install and unlock a Secret Service "
                "such as GNOME Keyring or KWallet, or give the password each time)") from None
        if isinstance(exc, keyring.errors.KeyringError):
            raise KeyringUnavailable(f"the keyring refused: {exc}") from None
        return False
