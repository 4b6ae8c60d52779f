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
    """Quotes, backslashes, control characters and non-ASCII survive the written TOML."""
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
    ('name = "w"\ngateway = "https://gw"\nusername = "a"\nreconnect_for = -1', "reconnect_for"),
    ('name = "w"\ngateway = "https://gw"\nusername = "a"\nreconnect_for = 86401', "reconnect_for"),
    ('name = "w"\ngateway = "https://gw"\nusername = "a"\nreconnect_for = "2m"', "reconnect_for"),
    ('name = "w"\ngateway = "https://gw"\nusername = "a"\nreconnect_for = true', "reconnect_for"),
    ('name = "w"\ngateway = "https://gw"\nusername = "a"\nreconnect_for = nan', "reconnect_for"),
])
def test_invalid_profile_names_file_and_profile(tmp_path, body, message):
    """A profile with a missing, unknown or invalid field is reported with the file and profile."""
    path = tmp_path / "profiles.toml"
    path.write_text(f"[[profile]]\n{body}\n")
    with pytest.raises(ProfileError, match=message) as info:
        ProfileStore(path).load()
    assert str(path) in str(info.value) and "profile #1" in str(info.value)


def test_reconnect_window_is_saved_changed_and_dropped_in_place(tmp_path):
    """reconnect_for is written only when set, reads back as written (whole or fractional
    seconds, 0 included), and setting it back to the default removes the key."""
    path = tmp_path / "profiles.toml"
    store = ProfileStore(path)
    store.save(Profile(name="w", gateway="https://gw", username="a"))
    assert "reconnect_for" not in path.read_text() and store.get("w").reconnect_for is None
    for window in (0, 300, 2.5):
        store.save(Profile(name="w", gateway="https://gw", username="a", reconnect_for=window))
        assert f"reconnect_for = {window}\n" in path.read_text() and store.get("w").reconnect_for == window
    store.save(Profile(name="w", gateway="https://gw", username="a"))
    assert "reconnect_for" not in path.read_text()


def test_duplicate_names_are_an_error(tmp_path):
    """Two profiles with one name are refused."""
    one = Profile(name="w", gateway="https://gw", username="a")
    path = tmp_path / "profiles.toml"
    path.write_text(render([one, one]))
    with pytest.raises(ProfileError, match="used twice"):
        ProfileStore(path).load()


def test_profile_validation():
    """Bad names, both a CA and a pin, and text that cannot be written as UTF-8 (a path in
    another encoding, as the CLI gets it) are usage errors."""
    with pytest.raises(UsageError):
        Profile(name="a/b", gateway="https://gw", username="a")
    with pytest.raises(UsageError):
        Profile(name="a", gateway="https://gw", username="a", ca="/x", pin=PIN)
    latin1_path = b"/ca-\xe9.pem".decode(errors="surrogateescape")
    with pytest.raises(UsageError, match="UTF-8"):
        Profile(name="a", gateway="https://gw", username="a", ca=latin1_path)


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


# A file edited by hand: comments at the top, in and between profiles, odd spacing.
TOP = "# My VPN profiles, edited by hand.\n#   (passwords are in the keyring)\n\n"
WORK = ('[[profile]]   # the office\n'
        'name    = "work"\n'
        "gateway = 'https://vpn.example.com'     # literal string, odd spacing\n"
        '  username = "alice"\n'
        '# connect_at_start = true   (not yet)\n')
LAB = ('# The lab gateway: self-signed.\n'
       '[[profile]]\n'
       'name = "lab"\n'
       'gateway = "https://10.0.0.1:8443"\n'
       'username = "bob"\n'
       'ca = "/etc/ssl/lab.pem"  # from the lab wiki\n')
HOME_NOTE = "\n# ---- at home ----\n"
HOME = ('[[profile]]\n'
        'name="home"\n'
        'gateway="https://home.example.net:4433"\n'
        'username="alice"\n'
        'connect_at_start=true\n')
END = "\n# the end\n"
HAND_WRITTEN = TOP + WORK + "\n\n" + LAB + HOME_NOTE + "\n" + HOME + END


def saved(tmp_path, change) -> str:
    """The hand-written file's text after ``change(store)``."""
    path = tmp_path / "profiles.toml"
    path.write_text(HAND_WRITTEN)
    change(ProfileStore(path))
    return path.read_text()


def test_hand_written_file_loads(tmp_path):
    """The hand-written file the tests below edit is a valid profiles file."""
    path = tmp_path / "profiles.toml"
    path.write_text(HAND_WRITTEN)
    assert [(p.name, p.connect_at_start) for p in ProfileStore(path).load()] == [
        ("work", False), ("lab", False), ("home", True)]


def test_adding_appends_and_keeps_the_hand_written_text(tmp_path):
    """A new profile goes at the end after a blank line; nothing else in the file changes."""
    text = saved(tmp_path, lambda s: s.save(Profile(name="new", gateway="https://n.example", username="z")))
    assert text == HAND_WRITTEN + ('\n[[profile]]\nname = "new"\ngateway = "https://n.example"\n'
                                   'username = "z"\nconnect_at_start = false\n')


def test_editing_changes_only_the_changed_values(tmp_path):
    """Changed values are rewritten where they stand, new keys follow the profile's last line,
    dropped ones go with their comment; spelling, spacing and comments elsewhere stay."""
    def edit(store):
        store.save(Profile(name="work", gateway="https://vpn.example.com", username="carol",
                           ca="/etc/ssl/work.pem"))
        store.save(Profile(name="lab", gateway="https://10.0.0.2:8443", username="bob",
                           connect_at_start=True))
    work = WORK.replace('"alice"', '"carol"') + 'ca = "/etc/ssl/work.pem"\n'
    lab = (LAB.replace("10.0.0.1", "10.0.0.2")
           .replace('ca = "/etc/ssl/lab.pem"  # from the lab wiki\n', "connect_at_start = true\n"))
    assert saved(tmp_path, edit) == TOP + work + "\n\n" + lab + HOME_NOTE + "\n" + HOME + END


def test_renaming_changes_the_name_in_place(tmp_path):
    """A renamed profile keeps its place, its comments and its spacing: only the name changes."""
    renamed = Profile(name="office", gateway="https://vpn.example.com", username="alice")
    text = saved(tmp_path, lambda s: s.save(renamed, replacing="work"))
    assert text == HAND_WRITTEN.replace('name    = "work"', 'name    = "office"')
    assert [p.name for p in ProfileStore(tmp_path / "profiles.toml").load()] == ["office", "lab", "home"]


@pytest.mark.parametrize("name, expected", [
    ("work", TOP + LAB + HOME_NOTE + "\n" + HOME + END),
    ("lab", TOP + WORK + HOME_NOTE + "\n" + HOME + END),
    ("home", TOP + WORK + "\n\n" + LAB + HOME_NOTE + END),
], ids=["first", "middle", "last"])
def test_removing_takes_the_profile_and_the_comments_right_above_it(tmp_path, name, expected):
    """A removed profile leaves with the comment lines right above it and one blank run;
    the file's top comment, comments standing apart and the other profiles stay as written."""
    assert saved(tmp_path, lambda s: s.remove(name)) == expected


def test_renaming_onto_another_profile_is_refused(tmp_path):
    """Renaming a profile to the name of another is a usage error and leaves the file alone."""
    with pytest.raises(UsageError, match="already exists"):
        saved(tmp_path, lambda s: s.save(Profile(name="lab", gateway="https://gw", username="a"),
                                         replacing="work"))
    assert (tmp_path / "profiles.toml").read_text() == HAND_WRITTEN


def test_unknown_key_in_a_profile_is_reported_and_never_dropped(tmp_path):
    """A key the store does not know (a typo, say) is an error naming it, and saving another
    profile then fails instead of rewriting the file."""
    path = tmp_path / "profiles.toml"
    text = HAND_WRITTEN.replace('username = "bob"\n', 'username = "bob"\ncolour = "red"  # mine\n')
    path.write_text(text)
    with pytest.raises(ProfileError, match=r"profiles\.toml: profile #2 \('lab'\): unknown key\(s\) colour"):
        ProfileStore(path).save(Profile(name="x", gateway="https://gw2", username="b"))
    assert path.read_text() == text


def test_saving_keeps_the_file_mode(tmp_path):
    """A rewritten file keeps its permissions; a new one is private to the user."""
    path = tmp_path / "profiles.toml"
    ProfileStore(path).save(Profile(name="a", gateway="https://gw", username="a"))
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)
    ProfileStore(path).save(Profile(name="b", gateway="https://gw", username="b"))
    assert path.stat().st_mode & 0o777 == 0o640
