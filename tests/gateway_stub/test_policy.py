"""Tests of gateway_stub.policy."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

import pytest

from gateway_stub.config import (
    DnsConfig,
    GatewayConfig,
    PolicyRule,
    PortRange,
    Resource,
    ServerConfig,
    UserConfig,
)
from gateway_stub.policy import Policy

ALICE = UserConfig(name="alice", password_hash="scrypt:x", groups=("staff",))
BOB = UserConfig(name="bob", password_hash="scrypt:x", groups=("contractors",))
CAROL = UserConfig(name="carol", password_hash="scrypt:x", groups=())
DAVE = UserConfig(name="dave", password_hash="scrypt:x", groups=("ops", "staff"))


def _config(exclude: tuple[IPv4Network, ...] = ()) -> GatewayConfig:
    resources = (
        Resource(name="web", networks=(IPv4Network("10.77.0.0/24"),), protocols=frozenset({"tcp"}),
                 ports=(PortRange(low=80, high=80), PortRange(low=8000, high=8100))),
        Resource(name="dns", networks=(IPv4Network("10.77.0.53/32"),),
                 protocols=frozenset({"udp", "tcp"}), ports=(PortRange(low=53, high=53),)),
        Resource(name="lab", networks=(IPv4Network("10.78.0.0/25"), IPv4Network("10.78.0.128/25")),
                 protocols=frozenset({"tcp", "udp", "icmp"})),
        Resource(name="ssh", networks=(IPv4Network("10.77.0.0/24"),), protocols=frozenset({"tcp"}),
                 ports=(PortRange(low=22, high=22),)),
    )
    policies = (
        PolicyRule(groups=("staff",), allow=("web", "dns")),
        PolicyRule(groups=("ops",), allow=("lab", "ssh")),
        PolicyRule(users=("bob",), allow=("dns",)),
    )
    server = ServerConfig(listen_host="0.0.0.0", listen_port=443,
                          certificate=Path("/c"), private_key=Path("/k"))
    return GatewayConfig(server=server, pool=None, dns=DnsConfig(), users=(ALICE, BOB, CAROL, DAVE),
                         resources=resources, policies=policies, source=Path("/gateway.toml"),
                         exclude=exclude)


@pytest.fixture
def policy() -> Policy:
    return Policy(_config())


def test_allowed_by_network_protocol_and_port(policy):
    """Staff reach web on port 80 and in 8000-8100, naming the resource."""
    verdict = policy.check(ALICE, "tcp", IPv4Address("10.77.0.5"), 80)
    assert verdict.allowed and verdict.resource == "web"
    assert "allowed by resource web" in verdict.reason
    assert policy.check(ALICE, "tcp", IPv4Address("10.77.0.5"), 8000).allowed
    assert policy.check(ALICE, "tcp", IPv4Address("10.77.0.255"), 8100).allowed


def test_denied_outside_port_range(policy):
    """Ports just outside the ranges are denied."""
    for port in (79, 81, 7999, 8101):
        assert not policy.check(ALICE, "tcp", IPv4Address("10.77.0.5"), port).allowed


def test_denied_outside_network(policy):
    """An address outside every resource is denied with no resource named."""
    verdict = policy.check(ALICE, "tcp", IPv4Address("10.76.255.255"), 80)
    assert not verdict.allowed and verdict.resource is None
    assert "in no resource" in verdict.reason


def test_denied_wrong_protocol(policy):
    """UDP to a TCP-only resource is denied."""
    assert not policy.check(ALICE, "udp", IPv4Address("10.77.0.5"), 80).allowed
    assert policy.check(ALICE, "udp", IPv4Address("10.77.0.53"), 53).allowed
    assert not policy.check(ALICE, "icmp", IPv4Address("10.77.0.5"), None).allowed


def test_resource_not_granted_is_denied_and_named(policy):
    """A matching resource the user is not granted is denied, naming the resource."""
    verdict = policy.check(ALICE, "tcp", IPv4Address("10.77.0.5"), 22)
    assert not verdict.allowed and verdict.resource == "ssh"
    assert "no policy allows" in verdict.reason


def test_icmp_and_all_ports_resources(policy):
    """A resource without ports allows any port; icmp needs no port."""
    assert policy.check(DAVE, "icmp", IPv4Address("10.78.0.200"), None).allowed
    assert policy.check(DAVE, "udp", IPv4Address("10.78.0.1"), 65535).allowed
    assert policy.check(DAVE, "tcp", IPv4Address("10.77.0.9"), 22).allowed


def test_users_key_grants_by_name(policy):
    """A rule naming a user applies whatever the user's groups."""
    assert policy.check(BOB, "udp", IPv4Address("10.77.0.53"), 53).allowed
    assert not policy.check(BOB, "tcp", IPv4Address("10.77.0.5"), 80).allowed


def test_user_without_policy_is_denied_everything(policy):
    """Default deny: a user no rule covers reaches nothing."""
    assert not policy.check(CAROL, "tcp", IPv4Address("10.77.0.5"), 80).allowed
    assert policy.networks_for(CAROL) == ()
    assert policy.resources_for(CAROL) == ()


def test_ipv6_destination_is_denied(policy):
    """Resources are IPv4; an IPv6 destination is denied, not an error."""
    verdict = policy.check(ALICE, "tcp", IPv6Address("fd00::1"), 80)
    assert not verdict.allowed and "IPv4" in verdict.reason


def test_caller_errors_raise(policy):
    """An unknown protocol or a missing TCP port is a ValueError."""
    with pytest.raises(ValueError):
        policy.check(ALICE, "sctp", IPv4Address("10.77.0.5"), 80)
    with pytest.raises(ValueError):
        policy.check(ALICE, "tcp", IPv4Address("10.77.0.5"), None)


def test_networks_for_collapses_and_deduplicates(policy):
    """Routes are the collapsed union of the user's resources' networks."""
    assert policy.networks_for(ALICE) == (IPv4Network("10.77.0.0/24"),)
    assert policy.networks_for(DAVE) == (IPv4Network("10.77.0.0/24"), IPv4Network("10.78.0.0/24"))
    assert policy.networks_for(BOB) == (IPv4Network("10.77.0.53/32"),)


def test_resources_for_lists_names_in_config_order(policy):
    """Display names follow the config's order, each once."""
    assert policy.resources_for(DAVE) == ("web", "dns", "lab", "ssh")
    assert policy.resources_for(ALICE) == ("web", "dns")


def test_memoized_verdicts_follow_the_users_groups(policy):
    """Asked again, the same question gets the same answer; the same name with other
    groups is another question."""
    first = policy.check(ALICE, "tcp", IPv4Address("10.77.0.10"), 80)
    assert policy.check(ALICE, "tcp", IPv4Address("10.77.0.10"), 80) == first and first.allowed
    demoted = UserConfig(name="alice", password_hash="scrypt:x", groups=())
    assert not policy.check(demoted, "tcp", IPv4Address("10.77.0.10"), 80).allowed
    assert policy.check(ALICE, "tcp", IPv4Address("10.77.0.10"), 22).allowed is False


def test_exclude_pushed_only_where_it_overlaps_the_users_routes():
    """A split-exclude network goes to the users whose routes it cuts into, and to no one else."""
    home, printer = IPv4Network("10.78.0.0/28"), IPv4Network("10.77.0.250/32")
    policy = Policy(_config(exclude=(home, printer, IPv4Network("192.168.0.0/16"))))
    assert policy.exclude_for(ALICE) == (printer,)          # web + dns: 10.77.0.0/24
    assert policy.exclude_for(DAVE) == (home, printer)      # also lab: 10.78.0.0/24
    assert policy.exclude_for(CAROL) == ()                   # no routes at all
