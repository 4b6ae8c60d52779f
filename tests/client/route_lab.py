"""A RouteManager in the lab's client namespace for the route tests: a driver
process with its own TUN that applies and restores on command, the client's
routes as ``ip`` shows them, and addresses for a remote gateway (``conftest.nexthop``
routes to it)."""

from __future__ import annotations

import json
import subprocess
import textwrap


NEXTHOP_NET = "203.0.113.0/24"
PUSHED_NET = "203.0.113.0/25"
"""Pushed by the gateway; covers REMOTE_GATEWAY, narrower than NEXTHOP_NET."""
REMOTE_GATEWAY = "203.0.113.9"

# Runs in the client namespace: makes a TUN, then obeys one command a line.
DRIVER = textwrap.dedent("""
    import ipaddress, json, logging, pathlib, subprocess, sys
    from client.routes import HostState, RouteManager
    from client.tun import KernelTun
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    spec = json.loads(sys.argv[1])
    tun = KernelTun()
    state = HostState(interface=tun.name, addresses=tuple(spec["addresses"]), routes=tuple(spec["routes"]),
                      gateway=spec["gateway"], preferred_source=spec.get("src"),
                      block_ipv6=spec.get("block_ipv6", False))
    manager = RouteManager(pathlib.Path(spec["journal"]))
    print(tun.name, flush=True)
    for line in sys.stdin:
        command = line.split()
        try:
            if command[0] == "apply":
                if len(command) > 1:  # apply a state with fewer routes
                    state = HostState(interface=tun.name, addresses=state.addresses,
                                      routes=tuple(command[1:]), gateway=state.gateway,
                                      preferred_source=state.preferred_source,
                                      block_ipv6=state.block_ipv6)
                manager.apply(state)
            elif command[0] == "restore":
                manager.restore()
            elif command[0] == "close-tun":
                tun.close()
            elif command[0] == "hold-tun":  # a child keeps the TUN open after we are gone
                holder = subprocess.Popen(["sleep", "600"], pass_fds=[tun.fileno()])
                print(holder.pid, flush=True)
            print("ok", flush=True)
        except Exception as exc:
            print("error", type(exc).__name__, exc, flush=True)
""")


class Driver:
    """A RouteManager with its own TUN in a subprocess in the client namespace."""

    def __init__(self, lab, tmp_path, *, routes, gateway, addresses=("10.200.0.5/24", "198.18.255.1/30"),
                 src="10.200.0.5", block_ipv6=False) -> None:
        self.journal = tmp_path / "routes.journal"
        self.log = tmp_path / "driver.log"
        spec = {"addresses": list(addresses), "routes": list(routes), "gateway": gateway,
                "src": src, "journal": str(self.journal), "block_ipv6": block_ipv6}
        self.proc = lab.popen_python(lab.client, DRIVER, json.dumps(spec), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True)
        self.tun = self.proc.stdout.readline().strip()
        assert self.tun, self.log.read_text()

    def do(self, command: str) -> list[str]:
        """Run one command; returns the lines it printed before its "ok"."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        printed = []
        while (answer := self.proc.stdout.readline().strip()).isdigit():
            printed.append(answer)
        assert answer == "ok", f"{answer}\n{self.log.read_text()}"
        return printed

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


def routes(lab) -> list[dict]:
    """The client namespace's IPv4 routes, as ``ip -j`` gives them."""
    return json.loads(lab.run(lab.client, ["ip", "-j", "route", "show"]).stdout)


def route_to(lab, dst: str) -> dict | None:
    """The client namespace's route to exactly ``dst``, or None."""
    return next((r for r in routes(lab) if r["dst"] == dst), None)
