#!/usr/bin/env python3
"""Takes the README's screenshots from a real session in the namespace lab.

The bundled gateway and an intranet run in the lab; the privileged service
runs in the client namespace; the tray app (under Xvfb with the trayer tray
host) logs in through the login dialog, and iperf3 and curl make traffic for
the status window's chart. Needs root, Xvfb, trayer and ImageMagick
(apt-get install xvfb trayer imagemagick).

    sudo python3 scripts/screenshots.py [docs/screenshots]
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab import servers  # noqa: E402
from tests.lab import topology as topo  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402
from tests.lab.tunnel import Tunnel  # noqa: E402
from tests.support import PASSWORDS  # noqa: E402

DISPLAY = ":99"


def main() -> int:
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "screenshots").resolve()
    work = pathlib.Path(tempfile.mkdtemp(prefix="tg-shots-"))
    env = {**os.environ, "DISPLAY": DISPLAY}
    xvfb = subprocess.Popen(["Xvfb", DISPLAY, "-screen", "0", "1280x800x24"],
                            stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    tray = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype",
                             "request", "--height", "28"], env=env, stderr=subprocess.DEVNULL)
    try:
        with Lab() as lab:
            www = work / "www"
            www.mkdir()
            (www / "index.html").write_text("hello\n" * 2000)
            servers.start_http(lab, topo.INTRANET_HOST, 80, www)
            servers.start_iperf3(lab, topo.INTRANET_HOST, 5201)
            servers.start_dns(lab, topo.INTRANET_DNS, {"web.corp.example": str(topo.INTRANET_HOST)})
            tunnel = Tunnel(lab=lab, workdir=work)
            tunnel.start_gateway(extra=f'[dns]\nservers = ["{topo.INTRANET_DNS}"]\n'
                                       'search = ["corp.example"]\n')
            sock = work / "control.sock"
            lab.popen(lab.client, [sys.executable, "-m", "client.cli", "service", "--socket",
                                   str(sock), "--state-dir", str(work / "state"), "--group", "root"])
            while not sock.exists():
                time.sleep(0.1)
            app = lab.popen(lab.client, [sys.executable, "-m", "gui.screenshots", str(out),
                                         "--socket", str(sock), "--gateway", tunnel.url,
                                         "--user", "alice", "--ca", str(tunnel.setup.certs.ca_cert)],
                            stdin=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
            app.stdin.write(PASSWORDS["alice"] + "\n")
            app.stdin.close()
            # Traffic for the chart once the tunnel is up: a rate-limited download
            # and a burst of page loads by name.
            while "tg0" not in lab.run(lab.client, ["ip", "-o", "link"]).stdout:
                time.sleep(0.2)
            time.sleep(2)
            lab.popen(lab.client, ["iperf3", "-c", str(topo.INTRANET_HOST), "-R", "-b", "60M",
                                   "-t", "40"], stdout=subprocess.DEVNULL)
            for _ in range(10):
                lab.run(lab.client, ["curl", "-s", "-o", "/dev/null", "http://web.corp.example/"],
                        check=False)
                time.sleep(1.5)
            app.wait(120)
            tunnel.stop_gateway()
    finally:
        tray.terminate()
        xvfb.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
