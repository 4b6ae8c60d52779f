"""Tests of gateway_stub.config."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from gateway_stub.config import PortRange, load_config
from gateway_stub.errors import ConfigError, GatewayError
from gateway_stub.passwords import hash_password

HASH = hash_password("pw", salt=b"saltsalt", n=16, r=1, p=1)

SERVER = """\
[server]
listen = "0.0.0.0:8443"
certificate = "gateway.crt"
private_key = "gateway.key"
"""

FULL = SERVER + f"""\
max_streams_per_session = 50
max_connections_per_source = 16
connect_timeout = 2
audit_log = "audit.log"

[pool]
network = "10.200.0.0/24"

[dns]
servers = ["10.77.0.53"]
search = ["corp.example"]

[[user]]
name = "alice"
password = "{HASH}"
groups = ["staff"]

[[user]]
name = "bob"
password = "{HASH}"

[[resource]]
name = "intranet-web"
networks = ["10.77.0.0/24", "10.78.0.9"]
protocols = ["tcp"]
ports = ["80", "8000-8100", 443]

[[resource]]
name = "pingable"
networks = ["10.77.0.0/24"]
protocols = ["icmp"]

[[policy]]
groups = ["staff"]
allow = ["intranet-web"]

[[policy]]
users = ["bob"]
allow = ["pingable"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "gateway.crt").write_text("cert")
    (tmp_path / "gateway.key").write_text("key")
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_full_example_loads(tmp_path):
    """Every documented section parses into the documented values."""
    config = load_config(_write(tmp_path, FULL))
    server = config.server
    assert (server.listen_host, server.listen_port) == ("0.0.0.0", 8443)
    assert server.certificate == (tmp_path / "gateway.crt").resolve()
    assert server.audit_log == (tmp_path / "audit.log").resolve()
    assert server.max_streams_per_session == 50
    assert server.max_connections_per_source == 16
    assert server.connect_timeout == 2.0 and isinstance(server.connect_timeout, float)
    assert server.max_sessions_per_user == 8 and server.mtu == 65000
    assert config.pool == IPv4Network("10.200.0.0/24")
    assert config.dns.servers == (IPv4Address("10.77.0.53"),)
    assert config.dns.search == ("corp.example",)
    assert [u.name for u in config.users] == ["alice", "bob"]
    assert config.users[1].groups == ()
    web = config.resources[0]
    assert web.networks == (IPv4Network("10.77.0.0/24"), IPv4Network("10.78.0.9/32"))
    assert web.ports == (PortRange(low=80, high=80), PortRange(low=8000, high=8100),
                         PortRange(low=443, high=443))
    assert config.resources[1].ports is None
    assert config.policies[1].users == ("bob",)
    assert config.source == (tmp_path / "gateway.toml").resolve()
    assert config.find_user("alice") is config.users[0]
    assert config.find_user("nobody") is None


def test_minimal_config_uses_defaults(tmp_path):
    """Only [server] is required; pool is off and dns empty."""
    config = load_config(_write(tmp_path, SERVER))
    assert config.pool is None
    assert config.dns.servers == () and config.dns.search == ()
    assert config.users == () and config.server.audit_log is None
    assert config.server.login_window == 300.0
    assert config.server.max_connections_per_source == 256


def test_routing_exclude_is_read_and_collapsed(tmp_path):
    """[routing] exclude lists the networks kept out of the tunnel, merged where they touch."""
    text = FULL.replace("[dns]", '[routing]\nexclude = ["10.77.0.128/26", "10.77.0.192/26", "192.168.0.0/16"]\n\n[dns]')
    config = load_config(_write(tmp_path, text))
    assert config.exclude == (IPv4Network("10.77.0.128/25"), IPv4Network("192.168.0.0/16"))
    assert load_config(_write(tmp_path, FULL)).exclude == ()


def test_a_pool_inside_a_resource_network_is_allowed(tmp_path):
    """A full tunnel (0.0.0.0/0) or a corporate /8 may hold the pool; the reverse is refused."""
    for around in ('"0.0.0.0/0"', '"10.0.0.0/8"'):
        config = load_config(_write(tmp_path, FULL.replace('"10.78.0.9"', around)))
        assert config.pool == IPv4Network("10.200.0.0/24")
    message = _error(tmp_path, FULL.replace('"10.78.0.9"', '"10.200.0.0/24"'))
    assert 'pool.network: pool 10.200.0.0/24 overlaps 10.200.0.0/24 of resource "intranet-web"' in message


def test_ipv6_listen_address(tmp_path):
    """[::]:443 is parsed into host :: and port 443."""
    config = load_config(_write(tmp_path, SERVER.replace("0.0.0.0:8443", "[::]:443")))
    assert (config.server.listen_host, config.server.listen_port) == ("::", 443)


def test_bad_port_range_names_file_key_and_problem(tmp_path):
    """The brief's example message, for a reversed port range."""
    text = FULL.replace('ports = ["80", "8000-8100", 443]', 'ports = ["80", "80-70"]')
    message = _error(tmp_path, text)
    assert message.endswith(
        'resource[0].ports[1]: "80-70" is not a port or port range (low-high, 1-65535)')


def test_syntax_error_reports_file_and_line(tmp_path):
    """TOML syntax errors name the file and the line."""
    message = _error(tmp_path, SERVER + "mtu = \n")
    assert ": line 5: invalid TOML" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('listen = "0.0.0.0:8443"', 'lisen = "0.0.0.0:8443"', "server: unknown key 'lisen'"),
        ('listen = "0.0.0.0:8443"', 'listen = "0.0.0.0"', 'server.listen: "0.0.0.0" is not host:port'),
        ('listen = "0.0.0.0:8443"', 'listen = "0.0.0.0:70000"', "server.listen: port 70000 is out of range"),
        ('certificate = "gateway.crt"', 'certificate = "missing.crt"', "server.certificate: file not found"),
        ("connect_timeout = 2", "connect_timeout = -1", "server.connect_timeout: must be a positive number"),
        ("connect_timeout = 2", "session_idle_timeout = 1e-9",
         "server.session_idle_timeout: must be a positive number of seconds, at least 0.01"),
        ("connect_timeout = 2", 'connect_timeout = "2s"', "server.connect_timeout: must be a number, not a string"),
        ("max_streams_per_session = 50", "max_streams_per_session = true",
         "server.max_streams_per_session: must be an integer, not a boolean"),
        ("max_streams_per_session = 50", "mtu = 100", "server.mtu: must be from 576 to 65535"),
        ("max_connections_per_source = 16", "max_connections_per_source = 0",
         "server.max_connections_per_source: must be at least 1, not 0"),
        ("max_connections_per_source = 16", "max_connections_per_source = 2147483648",
         "server.max_connections_per_source: must be at most 2147483647, not 2147483648"),
        ("max_connections_per_source = 16", 'max_connections_per_source = "64"',
         "server.max_connections_per_source: must be an integer, not a string"),
        ("max_connections_per_source = 16", "max_connections_per_source = 6.5",
         "server.max_connections_per_source: must be an integer, not a number"),
        ("max_connections_per_source = 16", "max_connections_per_sources = 16",
         "server: unknown key 'max_connections_per_sources'"),
        ('network = "10.200.0.0/24"', 'network = "10.200.0.0/31"', "pool.network: pool 10.200.0.0/31 is too small"),
        ('network = "10.200.0.0/24"', 'network = "10.77.0.0/16"',
         'pool.network: pool 10.77.0.0/16 overlaps 10.77.0.0/24 of resource "intranet-web"'),
        ('servers = ["10.77.0.53"]', 'servers = ["dns.example"]', 'dns.servers[0]: "dns.example" is not an IP address'),
        ('name = "bob"', 'name = "alice"', 'user[1].name: duplicate user "alice" (also user[0])'),
        ('groups = ["staff"]\n\n[[user]]', 'groups = ["staff", ""]\n\n[[user]]',
         "user[0].groups[1]: '' is not a valid group name"),
        ('name = "pingable"', 'name = "intranet-web"',
         'resource[1].name: duplicate resource "intranet-web" (also resource[0])'),
        ('"10.78.0.9"', '"10.78.0.9/16"', 'resource[0].networks[1]: "10.78.0.9/16" has host bits set'),
        ('"10.78.0.9"', '"10.78.0.300"', 'resource[0].networks[1]: "10.78.0.300" is not an IPv4 network'),
        ('"10.78.0.9"', '"fd00::/64"', 'resource[0].networks[1]: "fd00::/64" is an IPv6 network'),
        ('protocols = ["tcp"]', 'protocols = ["sctp"]', 'resource[0].protocols[0]: "sctp" is not a protocol'),
        ('protocols = ["tcp"]', "protocols = []", "resource[0].protocols: must not be empty"),
        ('protocols = ["icmp"]', 'protocols = ["icmp"]\nports = ["1"]', "resource[1].ports: icmp has no ports"),
        ('443]', '0]', 'resource[0].ports[2]: 0 is not a port or port range'),
        ('allow = ["pingable"]', 'allow = ["pingable", "printer"]',
         'policy[1].allow[1]: unknown resource "printer" (defined: intranet-web, pingable)'),
        ('users = ["bob"]', 'users = ["carol"]', 'policy[1].users[0]: unknown user "carol"'),
        ('users = ["bob"]', "groups = []", "policy[1]: needs a non-empty groups or users list"),
        ('[dns]', '[dnss]', "unknown key 'dnss'"),
        ('[dns]', '[routing]\nexclude = ["10.77.0.128/24"]\n\n[dns]',
         'routing.exclude[0]: "10.77.0.128/24" has host bits set (did you mean 10.77.0.0/24?)'),
        ('[dns]', '[routing]\nexclude = "10.77.0.0/24"\n\n[dns]',
         "routing.exclude: must be an array, not a string"),
        ('[dns]', '[routing]\nexclud = ["10.77.0.0/24"]\n\n[dns]', "routing: unknown key 'exclud'"),
    ],
)
def test_broken_configs_name_key_and_problem(tmp_path, old, new, expected):
    """Each broken config raises one ConfigError naming the file, key path and problem."""
    assert old in FULL
    message = _error(tmp_path, FULL.replace(old, new, 1))
    assert expected in message


def test_single_bracket_table_for_an_array_is_explained(tmp_path):
    """[user] written where [[user]] is meant gets a hint."""
    message = _error(tmp_path, SERVER + f'[user]\nname = "alice"\npassword = "{HASH}"\n')
    assert message.endswith("user: must be an array of tables ([[user]]), not a table")


def test_bad_password_hash_is_reported_without_echoing_it(tmp_path):
    """A plaintext password in the config is rejected and not repeated."""
    message = _error(tmp_path, FULL.replace(HASH, "Sup3rS3cret", 1))
    assert 'user[0].password: password hash must start with "scrypt:"' in message
    assert "hash-password" in message
    assert "Sup3rS3cret" not in message


def test_missing_required_key(tmp_path):
    """A missing required key is named with its path."""
    message = _error(tmp_path, FULL.replace('private_key = "gateway.key"\n', ""))
    assert message.endswith("server.private_key: missing (required)")


def test_missing_file_and_missing_server(tmp_path):
    """A missing file or [server] table is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")
    message = _error(tmp_path, "[pool]\nnetwork = \"10.0.0.0/24\"\n")
    assert "missing the [server] table" in message


def test_config_error_is_a_gateway_error(tmp_path):
    """ConfigError belongs to the gateway's one exception tree."""
    assert issubclass(ConfigError, GatewayError)
    error = ConfigError("bad", file="gateway.toml", key="resource[2].ports[1]")
    assert str(error) == "gateway.toml: resource[2].ports[1]: bad"


def test_port_range_membership():
    """PortRange contains its inclusive bounds only."""
    ports = PortRange(low=8000, high=8100)
    assert 8000 in ports and 8100 in ports
    assert 7999 not in ports and 8101 not in ports
    assert str(ports) == "8000-8100" and str(PortRange(low=80, high=80)) == "80"


def test_limits_too_large_for_http2_settings_are_refused(tmp_path):
    """A limit that HTTP/2 SETTINGS cannot carry is a config error, not a gateway that
    drops every connection later."""
    message = _error(tmp_path, SERVER + "max_streams_per_session = 4294967296\n")
    assert "server.max_streams_per_session: must be at most 2147483647" in message


@pytest.mark.parametrize("path", ["~no-such-user-here/gateway.crt", "gate\\u0000way.crt"])
def test_unusable_paths_name_the_key(tmp_path, path):
    """A path that cannot even be resolved (unknown ~user, NUL byte) is a ConfigError
    naming its key, not a traceback."""
    message = _error(tmp_path, SERVER.replace('"gateway.crt"', f'"{path}"'))
    assert "server.certificate: " in message and "is not a usable path" in message
