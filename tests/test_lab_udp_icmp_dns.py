"""Scenario: UDP, ICMP echo and split DNS through the real tunnel (root only).

The gateway pushes DNS (a real dnsmasq in the intranet) and allows UDP only to
some ports and ICMP only to some hosts, so both the allowed and the denied
paths can be seen from the client and checked on the intranet side. It also
pushes an MTU of 1500, so datagrams and pings larger than that leave the
client's kernel as IPv4 fragments, which the client must reassemble.
"""

from __future__ import annotations

import pathlib
import re
import sys
import textwrap
import time

import pytest

from tests.lab import servers
from tests.lab import topology as topo
from tests.lab.tunnel import Tunnel

pytestmark = pytest.mark.lab

RESOURCES = f"""
[[resource]]
name = "web"
networks = ["{topo.INTRANET_NET}"]
protocols = ["tcp"]

[[resource]]
name = "udp-services"
networks = ["{topo.INTRANET_NET}"]
protocols = ["udp"]
ports = ["53", "7000-7100"]

[[resource]]
name = "pingable"
networks = ["{topo.INTRANET_HOST}/32", "{topo.INTRANET_DNS}/32"]
protocols = ["icmp"]

[[policy]]
groups = ["staff"]
allow = ["web", "udp-services", "pingable"]
"""

DNS = f"""
[dns]
servers = ["{topo.INTRANET_DNS}"]
search = ["corp.example"]
"""


@pytest.fixture(scope="module")
def site(lab, tmp_path_factory):
    """Gateway with DNS push and per-protocol policy; dnsmasq and UDP echo servers."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path_factory.mktemp("tunnel"), port=8450)
    tunnel.start_gateway(resources=RESOURCES, extra=DNS, extra_server="mtu = 1500")
    dns = servers.start_dns(lab, topo.INTRANET_DNS, {"host.corp.example": str(topo.INTRANET_HOST)})
    echo = servers.start_udp_echo(lab, topo.INTRANET_HOST, 7007)
    denied_echo = servers.start_udp_echo(lab, topo.INTRANET_HOST2, 9999)
    resolv = pathlib.Path(f"/etc/netns/{lab.client}/resolv.conf")
    before = resolv.read_text()
    client = tunnel.connect()
    yield tunnel, client, dns, echo, denied_echo
    client.stop()
    tunnel.stop_gateway()
    assert resolv.read_text() == before


def icmp_in_echos(lab) -> int:
    """Echo requests the intranet namespace has received so far."""
    snmp = lab.run(lab.intranet, ["cat", "/proc/net/snmp"]).stdout.splitlines()
    names, values = [line.split()[1:] for line in snmp if line.startswith("Icmp:")][:2]
    return int(values[names.index("InEchos")])


def test_ping_gets_five_replies(lab, site):
    """ping -c 5 through the tunnel: 5 replies, 0% loss."""
    result = lab.run(lab.client, ["ping", "-c", "5", "-i", "0.2", "-W", "2", str(topo.INTRANET_HOST)],
                     check=False)
    assert "5 received" in result.stdout and " 0% packet loss" in result.stdout, result.stdout


def test_two_pings_to_one_host_at_once_each_get_all_their_replies(lab, site):
    """Two ping processes to the same host at the same time (same sequence numbers, one
    connect-ip stream): each gets its own 10 replies."""
    ping = f"ping -c 10 -i 0.2 -W 2 {topo.INTRANET_HOST}"
    result = lab.run(lab.client, ["sh", "-c", f"{ping} & {ping}; wait"], check=False)
    assert result.stdout.count(" 10 received") == 2, result.stdout


def test_ping_larger_than_the_mtu_gets_its_replies(lab, site):
    """ping -s 3000 at a TUN MTU of 1500: the fragmented requests are reassembled and answered."""
    result = lab.run(lab.client, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "3000",
                                  str(topo.INTRANET_HOST)], check=False)
    assert "3 received" in result.stdout, result.stdout


def test_denied_ping_never_reaches_the_intranet(lab, site):
    """A host that policy does not allow for ICMP: ping reports an error, the intranet sees no echo."""
    before = icmp_in_echos(lab)
    result = lab.run(lab.client, ["ping", "-c", "2", "-i", "0.2", "-W", "2", str(topo.INTRANET_HOST2)],
                     check=False)
    assert result.returncode != 0
    assert "prohibited" in result.stdout.lower() or "filtered" in result.stdout.lower(), result.stdout
    assert icmp_in_echos(lab) == before


def test_dig_asks_the_intranet_dns_through_the_tunnel(lab, site):
    """dig @10.77.0.53 host.corp.example returns the intranet answer, and dnsmasq logged the query."""
    _, _, dns, _, _ = site
    result = lab.run(lab.client, ["dig", f"@{topo.INTRANET_DNS}", "host.corp.example", "+short",
                                  "+time=2", "+tries=1"])
    assert result.stdout.strip() == str(topo.INTRANET_HOST)
    assert "host.corp.example" in dns.log_text()


MANY_LOOKUPS = textwrap.dedent("""
    import socket, struct, sys, time
    server, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    name = b"".join(bytes([len(p)]) + p for p in b"host.corp.example".split(b".")) + b"\\0"
    answered, failures, start = 0, [], time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:   # a new port each, as resolvers do
            s.settimeout(1.0)
            query_id = n & 0xFFFF
            s.sendto(struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + name + b"\\0\\1\\0\\1",
                     (server, 53))
            try:
                reply = s.recv(512)
            except OSError as exc:
                failures.append(f"lookup {n}: {exc}")
                if len(failures) >= 5:
                    break
                continue
            answered += struct.unpack_from("!H", reply)[0] == query_id
    print(answered); print(failures[:3])
""")


def test_lookups_at_a_steady_rate_keep_being_answered(lab, site, tmp_path):
    """1 300 lookups at 100 a second, each from a new port: more than the flow table holds within
    a minute, but an answered DNS flow ends at once, so every lookup is answered."""
    script = tmp_path / "lookups.py"
    script.write_text(MANY_LOOKUPS)
    result = lab.run(lab.client, [sys.executable, str(script), str(topo.INTRANET_DNS), "1300", "100"],
                     timeout=120)
    answered, failures = result.stdout.splitlines()[:2]
    assert (int(answered), failures) == (1300, "[]")


MANY_DATAGRAMS = textwrap.dedent("""
    import socket, sys, threading
    host, port, flows, per_flow = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ok = [0] * flows
    bad = []
    def run(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.connect((host, port))
        for n in range(per_flow):
            msg = f"flow {i} datagram {n} ".encode() * (1 + (n % 40))
            s.send(msg)
            try:
                reply = s.recv(65535)
            except OSError as e:
                bad.append(f"flow {i} #{n}: {e}"); return
            if reply != msg:
                bad.append(f"flow {i} #{n}: wrong content"); return
            ok[i] += 1
    threads = [threading.Thread(target=run, args=(i,)) for i in range(flows)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(sum(ok)); print(bad[:3])
""")


def test_ten_thousand_datagrams_on_many_flows_all_come_back(lab, site, tmp_path):
    """10 000 datagrams on 50 flows to a UDP echo server: every reply arrives with its content."""
    _, _, _, echo, _ = site
    script = tmp_path / "udp_many.py"
    script.write_text(MANY_DATAGRAMS)
    result = lab.run(lab.client, [sys.executable, str(script), str(topo.INTRANET_HOST), "7007",
                                  "50", "200"], timeout=180)
    count, bad = result.stdout.splitlines()[:2]
    assert (int(count), bad) == (10000, "[]")
    assert len(echo.log_text().splitlines()) >= 10000


LARGE_DATAGRAM = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.connect((sys.argv[1], int(sys.argv[2])))
    for size in (1473, 51200, 65507):      # above the TUN's and the outer MTU, up to the maximum
        msg = bytes(range(256)) * (size // 256) + bytes(size % 256)
        s.send(msg)
        print(s.recv(65535) == msg)
""")


def test_datagram_larger_than_the_outer_mtu_works(lab, site, tmp_path):
    """Datagrams of 1473, 51 200 and 65 507 bytes (fragmented by the client's kernel for the
    TUN's MTU of 1500) go through and come back intact."""
    script = tmp_path / "udp_large.py"
    script.write_text(LARGE_DATAGRAM)
    result = lab.run(lab.client, [sys.executable, str(script), str(topo.INTRANET_HOST), "7007"])
    assert result.stdout.split() == ["True"] * 3, result.stdout


DENIED_UDP = textwrap.dedent("""
    import errno, socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.send(b"hello?")
    try:
        s.recv(100); print("reply")
    except socket.timeout:
        print("timeout")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e)))
""")


def test_denied_udp_port_errors_and_never_reaches_the_intranet(lab, site, tmp_path):
    """UDP to a port policy denies: the app gets an error (not a hang); the server logs nothing."""
    tunnel, _, _, _, denied_echo = site
    script = tmp_path / "udp_denied.py"
    script.write_text(DENIED_UDP)
    result = lab.run(lab.client, [sys.executable, str(script), str(topo.INTRANET_HOST2), "9999"])
    assert result.stdout.strip() in ("EHOSTUNREACH", "ECONNREFUSED"), result.stdout
    time.sleep(0.2)
    assert denied_echo.log_text() == ""
    assert re.search(r'"protocol":"udp".*"verdict":"deny"', tunnel.audit())


def test_closed_udp_port_reports_port_unreachable(lab, site, tmp_path):
    """UDP to an allowed port where nothing listens: the gateway's ICMP port unreachable reaches the app."""
    script = tmp_path / "udp_closed.py"
    script.write_text(DENIED_UDP)
    result = lab.run(lab.client, [sys.executable, str(script), str(topo.INTRANET_HOST), "7050"])
    assert result.stdout.strip() == "ECONNREFUSED", result.stdout


def test_pushed_dns_resolves_names_then_disconnect_restores_it(lab, site):
    """While connected getent resolves the intranet name via the pushed DNS; after
    disconnect the resolver file is back byte for byte (runs last: it disconnects)."""
    tunnel, client, _, _, _ = site
    resolv = pathlib.Path(f"/etc/netns/{lab.client}/resolv.conf")
    text = resolv.read_text()
    assert str(topo.INTRANET_DNS) in text and "corp.example" in text
    result = lab.run(lab.client, ["getent", "hosts", "host.corp.example"], check=False)
    assert str(topo.INTRANET_HOST) in result.stdout, (result.stdout, text)
    assert client.stop() == 0, client.output()
    assert str(topo.INTRANET_DNS) not in resolv.read_text()
