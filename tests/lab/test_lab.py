"""The lab itself: topology, isolation, direct path, servers, teardown."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from tests.lab import servers
from tests.lab import topology as topo
from tests.lab.netns import NETNS_ETC, Lab, lab_supported

pytestmark = pytest.mark.lab


def _connect(lab: Lab, address, port: int) -> subprocess.CompletedProcess:
    source = ("import socket, sys\n"
              "try:\n"
              "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()\n"
              "except OSError as exc:\n"
              "    print(exc); sys.exit(1)\n")
    return lab.run_python(lab.client, source, str(address), str(port), check=False)


def test_client_reaches_gateway_outer_address(lab):
    """The client pings the gateway across the outer veth."""
    lab.run(lab.client, ["ping", "-c", "1", "-W", "2", str(topo.GATEWAY_OUTER)])


def test_client_has_no_route_to_the_intranet(lab):
    """Without a tunnel or direct path, a connect to the intranet fails and nothing arrives."""
    logger = servers.start_tcp_logger(lab, topo.INTRANET_HOST, 7001)
    assert _connect(lab, topo.INTRANET_HOST, 7001).returncode == 1
    assert _connect(lab, topo.DENIED_HOST, 7001).returncode == 1
    assert logger.peers() == []
    routes = json.loads(lab.run(lab.client, ["ip", "-j", "route"]).stdout)
    assert [r["dst"] for r in routes] == [str(topo.OUTER_NET)]


def test_each_namespace_has_its_own_resolver_file(lab):
    """`ip netns exec` shows each namespace the lab's resolv.conf, not the host's."""
    for ns in lab.namespaces:
        text = lab.run(ns, ["cat", "/etc/resolv.conf"]).stdout
        assert f"tunnelgate lab namespace {ns}" in text


def test_direct_path_toggles_reachability(lab):
    """direct_path(True) routes the client to both intranet networks; False takes it away."""
    logger = servers.start_tcp_logger(lab, topo.INTRANET_HOST2, 7002)
    denied = servers.start_tcp_logger(lab, topo.DENIED_HOST, 7002)
    lab.direct_path(True)
    try:
        assert _connect(lab, topo.INTRANET_HOST2, 7002).returncode == 0
        assert _connect(lab, topo.DENIED_HOST, 7002).returncode == 0
    finally:
        lab.direct_path(False)
    assert _connect(lab, topo.INTRANET_HOST2, 7002).returncode == 1
    assert logger.peers() == [str(topo.CLIENT_OUTER)]
    assert denied.peers() == [str(topo.CLIENT_OUTER)]
    forwarding = lab.run(lab.gateway, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
    assert forwarding == "0"


def test_http_server_logs_the_peer(lab, tmp_path):
    """start_http serves files and its access log names the client address."""
    (tmp_path / "index.html").write_text("hello from the intranet\n")
    web = servers.start_http(lab, topo.INTRANET_HOST, 8080, tmp_path)
    lab.direct_path(True)
    try:
        page = lab.run(lab.client, ["curl", "-sS", "--max-time", "5", f"http://{topo.INTRANET_HOST}:8080/"])
    finally:
        lab.direct_path(False)
    assert "hello from the intranet" in page.stdout
    assert web.peers() == [str(topo.CLIENT_OUTER)]


def test_tcp_sink_round_trip_hashes_match(lab):
    """The echo-hash sink returns equal digests both ways for 8 MB over the direct path."""
    servers.start_tcp_sink(lab, topo.INTRANET_HOST, 9000)
    lab.direct_path(True)
    try:
        out = lab.run_python(lab.client, "from tests.lab.servers import main; main()",
                             "sink-client", str(topo.INTRANET_HOST), "9000", str(8 << 20)).stdout
    finally:
        lab.direct_path(False)
    result = json.loads(out)
    assert result["up_ok"] and result["down_ok"] and result["received"] == 8 << 20


def test_iperf3_server_listens(lab):
    """start_iperf3 returns once iperf3 listens on its address."""
    server = servers.start_iperf3(lab, topo.INTRANET_HOST, 5201)
    assert f"{topo.INTRANET_HOST}:5201" in lab.run(lab.intranet, ["ss", "-Hltn"]).stdout
    server.stop()


@pytest.mark.skipif(lab_supported() is not None, reason=str(lab_supported()))
def test_close_removes_everything_and_is_idempotent():
    """close() kills processes, deletes the namespaces and /etc/netns dirs, and can be repeated."""
    with Lab() as lab:
        names = lab.namespaces
        proc = lab.popen(lab.gateway, ["sleep", "600"])
        workdir = lab.workdir
        assert all((NETNS_ETC / ns / "resolv.conf").is_file() for ns in names)
    lab.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed for ns in names)
    assert not any((NETNS_ETC / ns).exists() for ns in names)
    assert proc.poll() is not None
    assert not pathlib.Path(workdir).exists()
    with pytest.raises(RuntimeError):
        lab.run(names[0], ["true"])
