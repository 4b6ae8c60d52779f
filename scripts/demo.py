#!/usr/bin/env python3
"""The demo: gateway, intranet and a connected client in a namespace lab.

Shows a page fetched through the tunnel, the routes the client installed, and
the gateway's audit line for the flow. With a terminal it stays connected
until Ctrl-C (try the printed commands in another shell); with --once, or
without a terminal, it disconnects and tears the lab down right away.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab import servers  # noqa: E402
from tests.lab import topology as topo  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402
from tests.lab.tunnel import Tunnel  # noqa: E402


def show(title: str, text: str) -> None:
    print(f"\n== {title}\n{text.rstrip()}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true", help="disconnect and exit right away")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="tg-demo-"))
    with Lab() as lab:
        www = work / "www"
        www.mkdir()
        (www / "index.html").write_text("Hello from the intranet web server!\n")
        web = servers.start_http(lab, topo.INTRANET_HOST, 80, www)
        servers.start_dns(lab, topo.INTRANET_DNS, {"web.corp.example": str(topo.INTRANET_HOST)})
        tunnel = Tunnel(lab=lab, workdir=work)
        tunnel.start_gateway(extra=f'[dns]\nservers = ["{topo.INTRANET_DNS}"]\n'
                                   'search = ["corp.example"]\n')
        show("gateway", f"listening on {tunnel.url}, config {tunnel.setup.config}")
        client = tunnel.connect()
        show("client", client.output())
        page = lab.run(lab.client, ["curl", "-sS", "http://web.corp.example/index.html"])
        show("curl http://web.corp.example/index.html (from the client namespace; the name is "
             "resolved by the intranet DNS through the tunnel)", page.stdout)
        ping = lab.run(lab.client, ["ping", "-c", "3", "-i", "0.2", str(topo.INTRANET_HOST)], check=False)
        show(f"ping {topo.INTRANET_HOST} (ICMP echo through the tunnel)", ping.stdout)
        show("what the intranet server saw (reverse NAT: the gateway's address)", web.log_text())
        show("client routes", lab.run(lab.client, ["ip", "route"]).stdout)
        show("client resolver (split DNS pushed by the gateway)",
             lab.run(lab.client, ["cat", "/etc/resolv.conf"]).stdout)
        show("gateway audit log", tunnel.audit() or "(written when the flow closes)")
        if not args.once and sys.stdin.isatty():
            show("connected", f"try: sudo ip netns exec {lab.client} curl http://{topo.INTRANET_HOST}/\n"
                              "press Ctrl-C to disconnect and tear the lab down")
            try:
                client.proc.wait()
            except KeyboardInterrupt:
                pass
        code = client.stop()
        show("disconnected", f"client exit status {code}; routes now:\n"
                             + lab.run(lab.client, ["ip", "route"]).stdout)
        tunnel.stop_gateway()
        show("gateway audit log", tunnel.audit())
        return 0 if page.returncode == 0 and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
