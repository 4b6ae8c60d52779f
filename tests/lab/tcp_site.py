"""What the TCP lab scenarios (``tests/test_lab_tcp*.py``) share: the site and curl.

The fixtures are imported into each scenario module that uses them. ``site``
is module-scoped, so every scenario module gets its own gateway and web server
in its own lab (the ``lab`` fixture is module-scoped too).
"""

from __future__ import annotations

import os
import time

import pytest

from tests.lab import servers
from tests.lab import topology as topo
from tests.lab.tunnel import Tunnel


@pytest.fixture(scope="module")
def site(lab, tmp_path_factory):
    """Gateway up, intranet servers up; each test connects its own client."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path_factory.mktemp("tunnel"))
    tunnel.start_gateway(tcp_ports=["80", "81", "9000-9100"])
    root = tmp_path_factory.mktemp("www")
    (root / "index.html").write_text("hello from the intranet\n")
    web = servers.start_http(lab, topo.INTRANET_HOST, 80, root)
    yield tunnel, web
    tunnel.stop_gateway()


@pytest.fixture(params=["bpf", "python"])
def tcp_path(request) -> dict[str, str]:
    """The client's environment for the in-kernel fast path (default) or the forced Python path."""
    return dict(os.environ, TUNNELGATE_BPF="1" if request.param == "bpf" else "0")


def curl(lab, url: str, timeout: float = 10.0):
    """curl ``url`` from the client namespace: its completed process, and how long it took."""
    start = time.monotonic()
    result = lab.run(lab.client, ["curl", "-sS", "--max-time", str(timeout), url], check=False)
    return result, time.monotonic() - start
