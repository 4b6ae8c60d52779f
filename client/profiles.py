"""Per-user connection profiles (a TOML file) and their passwords (the OS keyring).

``ProfileStore`` reads and writes ``profiles.toml`` in the user's config
folder, one ``[[profile]]`` table per profile. It reads the file with
tomllib and changes it in place with tomlkit (``client.toml_tables``), so
that what the user wrote by hand (comments, blank lines, key order) stays;
it writes atomically (a temporary file renamed over the old one). A broken
file is a ``ProfileError`` naming the file and the line, or the profile at fault.

``PasswordStore`` keeps one password per profile in the keyring under the
service "tunnelgate" and the key "PROFILE:USERNAME"; when no keyring backend
is available it says so instead of falling back to anything weaker.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import stat
import tempfile
import tomllib

import tomlkit.exceptions

from client.errors import ClientError, UsageError
from client.toml_tables import TableArray

KEYRING_SERVICE = "tunnelgate"
_NAME = re.compile(r"^[\w][\w .@+-]{0,63}$")
_FIELDS = ("name", "gateway", "username", "ca", "pin", "connect_at_start", "reconnect_for")
#: The longest reconnect window a profile may ask for: a day.
MAX_RECONNECT_FOR = 86400


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
    reconnect_for: int | float | None = None
    """Seconds to keep trying to get a lost session back before giving up (0: never);
    None: the client's default (``client.resume_pacing.RECONNECT_FOR``)."""

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
        if self.reconnect_for is not None and (
                isinstance(self.reconnect_for, bool) or not isinstance(self.reconnect_for, (int, float))
                or not 0 <= self.reconnect_for <= MAX_RECONNECT_FOR):
            raise UsageError(f"reconnect_for must be a number of seconds from 0 to {MAX_RECONNECT_FOR}")
        if any(ord(c) < 32 for c in self.username + self.gateway):
            raise UsageError("profile fields may not contain control characters")
        if any("\ud800" <= c <= "\udfff" for c in self.username + self.gateway + (self.ca or "")):
            raise UsageError("profile fields must be UTF-8 text (a path given in another "
                             "encoding cannot be saved)")
        from client.session import GatewayAddress
        GatewayAddress.parse(self.gateway)
        if self.pin is not None:
            from client.trust import Trust
            Trust(pin=self.pin)


_HEADER = "# Tunnelgate connection profiles (passwords live in the keyring, not here)\n"


def _fields(profile: Profile) -> dict[str, object]:
    return {field: getattr(profile, field) for field in _FIELDS}


def render(profiles: list[Profile]) -> str:
    """The TOML text of a new profiles file holding ``profiles``."""
    tables = TableArray(_HEADER, "profile")
    for profile in profiles:
        tables.append(_fields(profile))
    return tables.text()


class ProfileStore:
    """The profiles file of one user.

    Saving changes the file in place (``client.toml_tables``): comments,
    blank lines, key order and the spelling of values that a change does not
    touch stay as the user wrote them. The file is written atomically (a
    temporary file with the old file's mode, synced, renamed over it) and only
    once the new text reads back as the intended profiles.
    """

    def __init__(self, path: pathlib.Path | None = None) -> None:
        self.path = pathlib.Path(path) if path is not None else default_path()

    def load(self) -> list[Profile]:
        """All profiles, in file order; [] when the file does not exist. Raises ProfileError."""
        return self._read()[1]

    def get(self, name: str) -> Profile | None:
        """The profile called ``name``, or None."""
        return next((p for p in self.load() if p.name == name), None)

    def save(self, profile: Profile, replacing: str | None = None) -> None:
        """Add ``profile``, or replace the one with its name (keeping its place).

        ``replacing``: the old name of a renamed profile, which is changed in
        place. Renaming onto the name of another profile is a UsageError.
        """
        text, profiles = self._read()
        names = [p.name for p in profiles]
        if replacing not in (None, profile.name) and profile.name in names:
            raise UsageError(f"a profile named {profile.name!r} already exists")
        tables = self._tables(text)
        old = replacing if replacing in names else profile.name
        if old in names:
            index = names.index(old)
            before, after = _fields(profiles[index]), _fields(profile)
            tables.update(index, {k: v for k, v in after.items() if v != before[k]})
            profiles[index] = profile
        else:
            tables.append(_fields(profile))
            profiles.append(profile)
        self._write(tables.text(), profiles)

    def remove(self, name: str) -> bool:
        """Remove the profile called ``name``; False if there was none."""
        text, profiles = self._read()
        names = [p.name for p in profiles]
        if name not in names:
            return False
        tables, index = self._tables(text), names.index(name)
        tables.remove(index)
        del profiles[index]
        self._write(tables.text(), profiles)
        return True

    def _read(self) -> tuple[str, list[Profile]]:
        """The file's text (a new file's when there is none) and its profiles."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _HEADER, []
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"cannot read {self.path}: {exc}") from None
        return text, self._parse(text)

    def _tables(self, text: str) -> TableArray:
        try:
            return TableArray(text, "profile")
        except tomlkit.exceptions.TOMLKitError as exc:  # tomllib read it: tomlkit should too
            raise ProfileError(f"{self.path}: cannot edit this file: {exc}") from None

    def _parse(self, text: str) -> list[Profile]:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"{self.path}: {exc}") from None  # the message names line and column
        unknown = sorted(set(doc) - {"profile"})
        if unknown:  # refused, not ignored: a typo would otherwise go unnoticed
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

    def _write(self, text: str, profiles: list[Profile]) -> None:
        try:
            intended = self._parse(text) == profiles
        except ProfileError:
            intended = False
        if not intended:  # a bug, not the user's doing: leave the file alone
            raise ProfileError(f"{self.path}: the edited file did not read back as intended; "
                               "it was left unchanged")
        try:
            try:
                mode = stat.S_IMODE(self.path.stat().st_mode)  # kept, like everything else
            except FileNotFoundError:
                mode = 0o600
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".profiles-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    os.fchmod(f.fileno(), mode)
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
            folder = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)  # makes the rename itself durable
            finally:
                os.close(folder)
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
