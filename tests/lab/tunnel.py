"""The product in the lab: the real gateway in the gateway namespace and the
real ``tunnelgate connect`` in the client namespace, as subprocesses.

Used by the lab tests, the demo and the benchmark.
"""

from __future__ import annotations

import dataclasses
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time

from tests.lab import topology as topo
from tests.support import PASSWORDS, GatewaySetup, write_gateway

GATEWAY_PORT = 8443
#: Resources and policy of a full tunnel: alice may reach everything (tcp, icmp).
FULL_TUNNEL = """
[[resource]]
name = "everything"
networks = ["0.0.0.0/0"]
protocols = ["tcp", "icmp"]

[[policy]]
groups = ["staff"]
allow = ["everything"]
"""
#: A network the gateway may forward to but has no route for: "unreachable".
UNROUTED_NET = "10.99.0.0/24"


class ClientProcess:
    """A running ``tunnelgate connect`` and what it printed."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float = 30.0) -> bool:
        """Read output until a line starts with ``prefix``; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                return False
            self.lines.append(line)
            if line.startswith(prefix):
                return True
        return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the client and wait for it to exit; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.wait_for("\0", timeout=2.0)   # drain the rest of the output
        return code

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the client to exit on its own; returns the exit status."""
        code = self.proc.wait(timeout)
        self.wait_for("\0", timeout=2.0)
        return code

    def output(self) -> str:
        """Everything printed so far (stdout and stderr)."""
        return "\n".join(self.lines)


@dataclasses.dataclass
class Tunnel:
    """Gateway and client started in a lab."""

    lab: object
    """The Lab."""
    workdir: pathlib.Path
    """Config, certificates, journal."""
    setup: GatewaySetup | None = None
    """The gateway's files."""
    gateway_proc: subprocess.Popen | None = None
    """The gateway process."""
    port: int = GATEWAY_PORT
    """The gateway's TCP port."""

    @property
    def url(self) -> str:
        """The gateway URL as the client sees it."""
        return f"https://{topo.GATEWAY_OUTER}:{self.port}"

    @property
    def state_dir(self) -> pathlib.Path:
        """The client's journal folder."""
        return self.workdir / "client-state"

    def start_gateway(self, *, pool: str | None = "10.200.0.0/24", extra_server: str = "",
                      tcp_ports: list[str] | None = None, resources: str | None = None,
                      extra: str = "") -> None:
        """Write a config and start the gateway."""
        self.setup = write_gateway(
            self.workdir / "gateway", listen=f"{topo.GATEWAY_OUTER}:{self.port}",
            hosts=[str(topo.GATEWAY_OUTER)], pool=pool,
            allowed_networks=[str(topo.INTRANET_NET), UNROUTED_NET],
            denied_networks=[str(topo.DENIED_NET)], extra_server=extra_server,
            tcp_ports=tcp_ports, resources=resources, extra=extra)
        self.launch()

    def launch(self) -> None:
        """Start the gateway with the config already written; waits until it listens."""
        log = open(self.workdir / "gateway.log", "w")
        self.gateway_proc = self.lab.popen(
            self.lab.gateway, [sys.executable, "-m", "gateway_stub.cli", "--config",
                               str(self.setup.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.gateway_proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.gateway_log()}")
            if "gateway listening" in self.gateway_log():
                return
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not start: {self.gateway_log()}")

    def gateway_log(self) -> str:
        """What the gateway logged."""
        path = self.workdir / "gateway.log"
        return path.read_text() if path.exists() else ""

    def audit(self) -> str:
        """The gateway's audit log."""
        path = self.setup.config.parent / "audit.log"
        return path.read_text() if path.exists() else ""

    def client_argv(self, *, user: str = "alice", trust: list[str] | None = None,
                    url: str | None = None, verbose: bool = False,
                    reconnect_for: float | None = None) -> list[str]:
        """The ``tunnelgate connect`` command line (``reconnect_for``: its option, if given)."""
        if trust is None:
            trust = ["--ca", str(self.setup.certs.ca_cert)]
        return [sys.executable, "-m", "client.cli", *(["-v"] if verbose else []), "connect",
                url or self.url, "--user", user,
                "--password-stdin", *trust, "--state-dir", str(self.state_dir),
                *(["--reconnect-for", f"{reconnect_for:g}"] if reconnect_for is not None else [])]

    def connect(self, *, user: str = "alice", password: str | None = None,
                trust: list[str] | None = None, url: str | None = None,
                wait: bool = True, timeout: float = 30.0,
                more_input: list[str] = (), verbose: bool = False,
                env: dict[str, str] | None = None,
                reconnect_for: float | None = None) -> ClientProcess:
        """Start the client; with ``wait``, return once it printed 'connected'.
        ``verbose`` adds the engine's INFO lines to the output; ``env`` replaces the environment."""
        proc = self.lab.popen(self.lab.client,
                              self.client_argv(user=user, trust=trust, url=url, verbose=verbose,
                                               reconnect_for=reconnect_for),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
        proc.stdin.write((PASSWORDS.get(user, "") if password is None else password) + "\n")
        for line in more_input:              # e.g. a one-time code
            proc.stdin.write(line + "\n")
        proc.stdin.close()
        client = ClientProcess(proc)
        if wait and not client.wait_for("connected", timeout):
            code = client.stop()
            raise RuntimeError(f"client did not connect (exit {code}):\n{client.output()}\n"
                               f"gateway:\n{self.gateway_log()[-3000:]}")
        return client

    def stop_gateway(self, sig: int = signal.SIGTERM) -> None:
        """Stop (or kill) the gateway."""
        if self.gateway_proc is not None and self.gateway_proc.poll() is None:
            self.gateway_proc.send_signal(sig)
            try:
                self.gateway_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.gateway_proc.kill()
                self.gateway_proc.wait()


def host_snapshot(lab) -> str:
    """Link names, IPv4 addresses and IPv4 routes of the client namespace."""
    links = lab.run(lab.client, ["ip", "-o", "link", "show"]).stdout
    names = sorted(line.split(":")[1].strip() for line in links.splitlines())
    addrs = lab.run(lab.client, ["ip", "-4", "-o", "addr", "show"]).stdout
    routes = lab.run(lab.client, ["ip", "-4", "route", "show", "table", "all"]).stdout
    return "\n".join([*names, *sorted(addrs.splitlines()), *sorted(routes.splitlines())])
