"""The lab's UDP servers: dnsmasq for DNS, and the UDP echo server."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.lab import servers
from tests.lab import topology as topo

pytestmark = pytest.mark.lab

# Sends each size as one datagram from a fresh socket, prints the echoed lengths as JSON.
UDP_CLIENT = ("import json, socket, sys\n"
              "got = []\n"
              "for size in map(int, sys.argv[3:]):\n"
              "    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n"
              "        s.settimeout(2)\n"
              "        payload = bytes(i % 251 for i in range(size))\n"
              "        s.sendto(payload, (sys.argv[1], int(sys.argv[2])))\n"
              "        try:\n"
              "            data, _ = s.recvfrom(65535)\n"
              "            got.append(len(data) if data == payload else -1)\n"
              "        except OSError:\n"
              "            got.append(None)\n"
              "print(json.dumps(got))\n")


def _udp(lab, ns, address, port, *sizes) -> list:
    out = lab.run_python(ns, UDP_CLIENT, str(address), str(port), *map(str, sizes)).stdout
    return json.loads(out)


@pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("dig") is None,
                    reason="needs dnsmasq and dig")
def test_dnsmasq_answers_records_and_logs_queries(lab):
    """start_dns answers its A records to the gateway namespace, refuses other corp names, logs each query."""
    dns = servers.start_dns(lab, topo.INTRANET_DNS, {"host": str(topo.INTRANET_HOST),
                                                     "host2.corp.example": str(topo.INTRANET_HOST2)})
    try:
        def dig(name: str) -> str:
            return lab.run(lab.gateway, ["dig", f"@{topo.INTRANET_DNS}", name, "+short", "+time=2",
                                         "+tries=1"]).stdout.strip()

        assert dig("host.corp.example") == str(topo.INTRANET_HOST)
        assert dig("host2.corp.example") == str(topo.INTRANET_HOST2)
        assert dig("nothere.corp.example") == ""
        assert dns.queries() == ["host.corp.example", "host2.corp.example", "nothere.corp.example"]
        assert f"from {topo.GATEWAY_INNER}" in dns.log_text()
    finally:
        dns.stop()


def test_udp_echo_echoes_and_logs_each_datagram(lab):
    """start_udp_echo returns each datagram unchanged and logs sender and length per datagram."""
    echo = servers.start_udp_echo(lab, topo.INTRANET_HOST, 7007)
    assert _udp(lab, lab.gateway, topo.INTRANET_HOST, 7007, 1, 512, 1400) == [1, 512, 1400]
    lines = [line.split() for line in echo.log_text().splitlines()]
    assert [line[0] for line in lines] == [str(topo.GATEWAY_INNER)] * 3
    assert [int(line[2]) for line in lines] == [1, 512, 1400]
    echo.stop()


def test_udp_echo_log_shows_when_nothing_arrived(lab):
    """A datagram from the client (no route to the intranet) gets no echo and leaves the log empty."""
    echo = servers.start_udp_echo(lab, topo.INTRANET_HOST2, 7008)
    out = lab.run_python(lab.client, UDP_CLIENT, str(topo.INTRANET_HOST2), "7008", "10", check=False)
    assert out.returncode != 0 or json.loads(out.stdout) == [None]
    assert echo.peers() == []
    echo.stop()
