"""A lab of network namespaces: client, gateway, intranet.

Theory of operation. `Lab()` picks a unique prefix ("tg" + 4 hex digits),
writes a marker under /run/tunnelgate-lab naming the owning process, creates
the three namespaces, gives each its own /etc/netns/<ns>/resolv.conf (so
`ip netns exec` never shows the host's resolver to anything we run), and wires
them as described in `topology`. Commands run inside a namespace through
`run()` / `popen()`; every process started with `popen()` is tracked.

`close()` kills the tracked process groups and anything else still inside the
namespaces, deletes the namespaces (which deletes the veths), the resolver
files, the marker and the work directory. It is idempotent, never raises, and
runs from `with`, from the pytest fixture's finalizer and from atexit. A lab
whose owner died without closing (kill -9) is swept by the next `Lab()`.

Plain Python, no pytest: the demo and benchmark scripts use it too. Needs root.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile

from tests.lab import topology

__all__ = ["Lab", "REPO_ROOT", "lab_supported"]

log = logging.getLogger(__name__)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
NETNS_ETC = pathlib.Path("/etc/netns")
MARKERS = pathlib.Path("/run/tunnelgate-lab")
ROLES = ("c", "g", "i")


def lab_supported() -> str | None:
    """None when labs can be built here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "the netns lab needs root"
    if shutil.which("ip") is None:
        return "the netns lab needs iproute2 (`ip`)"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns` is unavailable: {exc}"
    return None


def _start_time(pid: int) -> int | None:
    try:
        return int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _existing_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class Lab:
    """Three wired namespaces; use as a context manager or call close()."""

    def __init__(self) -> None:
        reason = lab_supported()
        if reason:
            raise RuntimeError(reason)
        self._closed = False
        self._procs: list[subprocess.Popen] = []
        self._namespaces: list[str] = []
        self.sweep_stale()
        taken = _existing_namespaces()
        while True:
            self.prefix = "tg" + secrets.token_hex(2)
            if not any(self.prefix + r in taken for r in ROLES):
                break
        self.client, self.gateway, self.intranet = (self.prefix + r for r in ROLES)
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        """Scratch directory for server logs and journals; removed at close()."""
        atexit.register(self.close)
        try:
            self._write_marker()
            for ns in (self.client, self.gateway, self.intranet):
                self._add_namespace(ns)
            topology.build(self)
        except BaseException:
            self.close()
            raise
        log.info("lab %s is up", self.prefix)

    @classmethod
    def create(cls) -> Lab:
        """Build a lab (same as `Lab()`)."""
        return cls()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lab({self.prefix!r}, closed={self._closed})"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.client, self.gateway, self.intranet)

    # -- running things inside ---------------------------------------------

    def run(self, ns: str, argv: list[str], *, check: bool = True, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess:
        """Run argv in namespace `ns` and wait; output captured as text."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        try:
            return subprocess.run(self._wrap(ns, argv), check=check, timeout=timeout, **kw)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"[{ns}] {' '.join(map(str, argv))} failed ({exc.returncode}): "
                               f"{(exc.stderr or '').strip()}") from None

    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        """Start argv in namespace `ns` in its own process group; killed at close()."""
        self._check_open()
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self._wrap(ns, argv), start_new_session=True, **kw)
        self._procs.append(proc)
        return proc

    def run_python(self, ns: str, source: str, *args: str, **kw) -> subprocess.CompletedProcess:
        """Run a Python snippet in `ns` with the repository importable."""
        kw.setdefault("cwd", REPO_ROOT)
        kw.setdefault("env", self.python_env())
        return self.run(ns, [sys.executable, "-c", source, *args], **kw)

    def popen_python(self, ns: str, source: str, *args: str, **kw) -> subprocess.Popen:
        """Start a Python snippet in `ns` with the repository importable."""
        kw.setdefault("cwd", REPO_ROOT)
        kw.setdefault("env", self.python_env())
        return self.popen(ns, [sys.executable, "-c", source, *args], **kw)

    @staticmethod
    def python_env() -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def direct_path(self, enabled: bool) -> None:
        """Route client -> intranet through the gateway as a plain router (or stop)."""
        topology.set_forwarding(self, enabled)
        topology.set_direct_routes(self, enabled)

    def _wrap(self, ns: str, argv: list[str]) -> list[str]:
        self._check_open()
        if ns not in self._namespaces:
            raise ValueError(f"{ns!r} is not a namespace of lab {self.prefix}")
        return ["ip", "netns", "exec", ns, *map(str, argv)]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"lab {self.prefix} is closed")

    # -- building and tearing down -----------------------------------------

    def _write_marker(self) -> None:
        MARKERS.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        (MARKERS / f"{self.prefix}.json").write_text(json.dumps(
            {"pid": pid, "start": _start_time(pid), "workdir": str(self.workdir)}))

    def _add_namespace(self, ns: str) -> None:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=10)
        self._namespaces.append(ns)
        etc = NETNS_ETC / ns
        etc.mkdir(parents=True, exist_ok=True)
        # `ip netns exec` bind-mounts this over /etc/resolv.conf; anything that
        # rewrites it must write in place (a rename onto a bind mount fails).
        (etc / "resolv.conf").write_text(f"# tunnelgate lab namespace {ns}\nnameserver 127.0.0.1\n")

    def close(self) -> None:
        """Tear everything down; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for proc in self._procs:
            _stop_group(proc)
        for ns in list(self._namespaces):
            _remove_namespace(ns)
        if hasattr(self, "workdir"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        _unlink(MARKERS / f"{getattr(self, 'prefix', '')}.json")
        log.info("lab %s is down", getattr(self, "prefix", "?"))

    @staticmethod
    def sweep_stale() -> list[str]:
        """Remove labs whose owning process is gone; returns their prefixes."""
        swept = []
        for marker in sorted(MARKERS.glob("tg*.json")) if MARKERS.is_dir() else ():
            try:
                owner = json.loads(marker.read_text())
            except (OSError, ValueError):
                owner = {}
            if owner.get("pid") and _start_time(owner["pid"]) == owner.get("start"):
                continue  # its owner is alive
            prefix = marker.stem
            log.warning("sweeping lab %s left by dead process %s", prefix, owner.get("pid"))
            for role in ROLES:
                _remove_namespace(prefix + role)
            if owner.get("workdir"):
                shutil.rmtree(owner["workdir"], ignore_errors=True)
            _unlink(marker)
            swept.append(prefix)
        return swept


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        except OSError as exc:
            log.warning("cannot signal process group %d: %s", proc.pid, exc)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    log.warning("process %d did not exit", proc.pid)


def _remove_namespace(ns: str) -> None:
    try:
        if ns in _existing_namespaces():
            # Anything still running inside would keep the namespace alive.
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                  timeout=10).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            done = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True, timeout=10)
            if done.returncode != 0:
                log.warning("cannot delete namespace %s: %s", ns, done.stderr.strip())
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot delete namespace %s: %s", ns, exc)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
    if (NETNS_ETC / ns).exists():
        log.warning("cannot remove %s", NETNS_ETC / ns)


def _unlink(path: pathlib.Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
