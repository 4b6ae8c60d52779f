"""Profiles in TOML and passwords in the keyring."""

from __future__ import annotations

import keyring
import keyring.backend
import keyring.errors
import pytest

from client.errors import UsageError
from client.profiles import (KeyringUnavailable, PasswordStore, Profile, ProfileError, ProfileStore,
                             render)

PIN = "sha256:" + "0f" * 32


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that lives in a dict, for tests."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.items.get((service, username))

    def set_password(self, service, username, password):
        self.items[(service, username)] = password

    def delete_password(self, service, username):
        if self.items.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError("no such password")


class NoKeyring(keyring.backend.KeyringBackend):
    """Behaves like keyring's fail backend."""

    priority = 0

    def get_password(self, service, username):
        raise keyring.errors.NoKeyringError("No recommended backend was available.")

    def set_password(self, service, username, password):
        raise keyring.errors.NoKeyringError("No recommended backend was available.")

    def delete_password(self, service, username):
        raise keyring.errors.NoKeyringError("No recommended backend was available.")


@pytest.fixture
def memory_keyring():
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_missing_file_means_no_profiles(tmp_path):
    """A store whose file does not exist yet is empty."""
    assert ProfileStore(tmp_path / "none.toml").load() == []


def test_save_load_replace_remove(tmp_path):
    """Profiles round-trip through the file; saving a known name replaces it in place."""
    store = ProfileStore(tmp_path / "sub" / "profiles.toml")
    work = Profile(name="work", gateway="https://vpn.example.com", username="alice", pin=PIN,
                   connect_at_start=True)
    lab = Profile(name="lab", gateway="https://10.0.0.1:8443", username="bob", ca="/etc/ssl/lab.pem")
    store.save(work)
    store.save(lab)
    assert store.load() == [work, lab]
    moved = Profile(name="work", gateway="https://vpn2.example.com", username="alice")
    store.save(moved)
    assert store.load() == [moved, lab]
    assert store.get("lab") == lab and store.get("nope") is None
    assert store.remove("work") and not store.remove("work")
    assert store.load() == [lab]


def test_strings_are_escaped(tmp_path):
    """Quotes, backslashes, control characters and non-ASCII survive the hand-written TOML."""
    store = ProfileStore(tmp_path / "p.toml")
    odd = Profile(name="ök work", gateway="https://gw.example", username='dom\\user"x\u00e9',
                  ca='/tmp/a "b"\\c\td.pem')
    store.save(odd)
    assert store.load() == [odd]


def test_broken_toml_names_file_and_line(tmp_path):
    """A syntax error is reported with the file and its line."""
    path = tmp_path / "profiles.toml"
    path.write_text('[[profile]]\nname = "work"\ngateway = "https://gw\n')
    with pytest.raises(ProfileError, match=r"profiles\.toml.*line 3"):
        ProfileStore(path).load()


@pytest.mark.parametrize("body, message", [
    ('name = "w"\ngateway = "https://gw"', "missing username"),
    ('name = "w"\ngateway = "https://gw"\nusername = "a"\ncolour = "red"', "unknown key"),
    ('name = "w"\ngateway = "ftp://gw"\nusername = "a"', "https"),
    ('name = "w"\ngateway = "https://gw"\nusername = "a"\npin = "md5:1"', "pin"),
    ('name = "w"\ngateway = "https://gw"\nusername = "a"\nconnect_at_start = "yes"', "true or false"),
])
def test_invalid_profile_names_file_and_profile(tmp_path, body, message):
    """A profile with a missing, unknown or invalid field is reported with the file and profile."""
    path = tmp_path / "profiles.toml"
    path.write_text(f"[[profile]]\n{body}\n")
    with pytest.raises(ProfileError, match=message) as info:
        ProfileStore(path).load()
    assert str(path) in str(info.value) and "profile #1" in str(info.value)


def test_duplicate_names_are_an_error(tmp_path):
    """Two profiles with one name are refused."""
    one = Profile(name="w", gateway="https://gw", username="a")
    path = tmp_path / "profiles.toml"
    path.write_text(render([one, one]))
    with pytest.raises(ProfileError, match="used twice"):
        ProfileStore(path).load()


def test_profile_validation():
    """Bad names and both a CA and a pin are usage errors."""
    with pytest.raises(UsageError):
        Profile(name="a/b", gateway="https://gw", username="a")
    with pytest.raises(UsageError):
        Profile(name="a", gateway="https://gw", username="a", ca="/x", pin=PIN)


def test_passwords_in_keyring(memory_keyring):
    """Passwords are kept under service "tunnelgate" and key "profile:username"."""
    store = PasswordStore()
    assert store.get("work", "alice") is None
    store.set("work", "alice", "s3cret")
    assert memory_keyring.items == {("tunnelgate", "work:alice"): "s3cret"}
    assert store.get("work", "alice") == "s3cret"
    assert store.delete("work", "alice") and not store.delete("work", "alice")


def test_no_keyring_backend_is_said_clearly():
    """Without a keyring backend every call raises KeyringUnavailable that says so."""
    previous = keyring.get_keyring()
    keyring.set_keyring(NoKeyring())
    try:
        with pytest.raises(KeyringUnavailable, match="no keyring is available"):
            PasswordStore().get("work", "alice")
        with pytest.raises(KeyringUnavailable):
            PasswordStore().set("work", "alice", "x")
    finally:
        keyring.set_keyring(previous)


def test_unknown_top_level_data_is_reported_and_never_dropped(tmp_path):
    """A table the store does not know is an error naming the file and the key; saving
    another profile then fails instead of rewriting the file without the user's data."""
    path = tmp_path / "profiles.toml"
    text = '[settings]\ntheme = "dark"\n\n[[profile]]\nname = "w"\ngateway = "https://gw"\nusername = "a"\n'
    path.write_text(text)
    store = ProfileStore(path)
    with pytest.raises(ProfileError, match=r"profiles\.toml.*settings"):
        store.load()
    with pytest.raises(ProfileError):
        store.save(Profile(name="x", gateway="https://gw2", username="b"))
    assert path.read_text() == text
