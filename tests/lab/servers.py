"""Intranet servers for the lab, and the programs they run.

Launchers (`start_http`, `start_iperf3`, `start_tcp_sink`, `start_tcp_logger`,
`start_dns`, `start_udp_echo`) start a server inside a lab namespace, wait
until it listens (TCP) or its port is bound (UDP) and return a `Server` whose
log file can be read with `log_text()`.

The TCP sink speaks "echo-hash", made for "N bytes each way, equal SHA-256":

    client -> server   8 bytes N (big-endian), then N bytes
    server -> client   SHA-256 hex of the N bytes received + "\n",
                       then N bytes of `pattern(N)`,
                       then SHA-256 hex of those N bytes + "\n"

The client compares the first line with its own digest of what it sent, and
the digest of what it read with the last line. `sink_exchange()` is that
client; run it in the client namespace with
`python -m tests.lab.servers sink-client ADDRESS PORT N` (prints JSON).

The TCP logger accepts every connection, writes "PEER_IP PEER_PORT" to its log
and closes it: it proves whether anything reached an intranet address at all.
The UDP echo server sends every datagram back to its sender and writes
"PEER_IP PEER_PORT LENGTH" per datagram, so a test can count what arrived,
including nothing. The DNS server is dnsmasq answering fixed A records, with
its query log as the log.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.server
import json
import pathlib
import random
import re
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import time
import typing

if typing.TYPE_CHECKING:
    from tests.lab.netns import Lab

__all__ = ["Server", "start_http", "start_iperf3", "start_tcp_sink", "start_tcp_logger",
           "start_dns", "start_udp_echo", "pattern", "pattern_digest", "sink_exchange", "SinkResult"]

CHUNK = 1 << 16
PATTERN_SEED = 0x7467


@dataclasses.dataclass
class Server:
    """A server process running in a lab namespace."""

    kind: str
    """"http", "nginx", "iperf3", "sink", "logger", "dns" or "udp-echo"."""
    namespace: str
    address: str
    port: int
    process: subprocess.Popen
    log_path: pathlib.Path
    """Where the server writes its log (access log, peers)."""

    def log_text(self) -> str:
        """The log so far ("" if nothing was written)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def peers(self) -> list[str]:
        """Peer IP addresses in the log, one per connection (or request), in order."""
        return [line.split()[0] for line in self.log_text().splitlines()
                if line.strip() and line.split()[0][:1].isdigit()]

    def queries(self) -> list[str]:
        """For "dns": the names asked for, one per query in the log, in order."""
        return re.findall(r"query\[\w+\] (\S+) from ", self.log_text())

    def stop(self) -> None:
        """Stop the server now (the lab would do it at close() anyway)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_http(lab: Lab, address, port: int, root_dir: pathlib.Path) -> Server:
    """Python's http.server serving root_dir (with a deep accept backlog, so that
    hundreds of simultaneous connections are not refused); its access log
    records each peer."""
    argv = [sys.executable, "-u", "-m", "tests.lab.servers", "http", str(address), str(port),
            "{log}", "--root", str(root_dir)]
    return _start(lab, "http", address, port, argv, stderr_is_log=False)


def start_page(lab: Lab, address, root_dir: pathlib.Path, text: str, port: int = 80) -> Server:
    """``start_http`` serving one page, ``index.html``, that reads ``text``."""
    root_dir.mkdir(parents=True, exist_ok=True)
    (root_dir / "index.html").write_text(text)
    return start_http(lab, address, port, root_dir)


NGINX_CONF = """
user root;
worker_processes 1;
pid {dir}/nginx-{port}.pid;
error_log {dir}/nginx-{port}.error.log;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 0;
    server {{
        listen {addr}:{port} backlog=4096;
        root {root};
    }}
}}
"""


def start_nginx(lab: Lab, address, port: int, root_dir: pathlib.Path) -> Server:
    """nginx (one worker, no keep-alive) serving root_dir: a server fast enough that
    the tunnel, not the server, sets the pace of short connections."""
    conf = lab.workdir / f"nginx-{port}.conf"
    conf.write_text(NGINX_CONF.format(dir=lab.workdir, addr=address, port=port, root=root_dir))
    return _start(lab, "nginx", address, port, ["nginx", "-c", str(conf)], stderr_is_log=False)


def start_iperf3(lab: Lab, address, port: int = 5201) -> Server:
    """An iperf3 server bound to address:port."""
    return _start(lab, "iperf3", address, port,
                  ["iperf3", "--server", "--bind", str(address), "--port", str(port)], stderr_is_log=False)


def start_tcp_sink(lab: Lab, address, port: int) -> Server:
    """The echo-hash TCP server (see the module docstring)."""
    return _start_program(lab, "sink", address, port)


def start_tcp_logger(lab: Lab, address, port: int) -> Server:
    """A TCP server that logs the peer of every connection and closes it."""
    return _start_program(lab, "logger", address, port)


def start_dns(lab: Lab, address, records: dict[str, str], *, domain: str = "corp.example") -> Server:
    """dnsmasq on address:53 answering `records` (name -> IPv4 address) and nothing else.

    Names without a dot are taken as hosts in `domain`. Other names in `domain`
    get NXDOMAIN; there is no upstream, so nothing is ever forwarded out of the
    lab. Every query is logged (see `Server.queries()`).
    """
    if shutil.which("dnsmasq") is None:
        raise RuntimeError("start_dns needs dnsmasq (apt-get install dnsmasq-base)")
    argv = ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--pid-file", "--user=root",
            f"--listen-address={address}", "--bind-interfaces", "--port=53", f"--local=/{domain}/",
            "--log-queries", "--log-facility={log}"]
    for name, ip in records.items():
        fqdn = name.rstrip(".") if "." in name else f"{name}.{domain}"
        argv.append(f"--host-record={fqdn},{ip}")
    return _start(lab, "dns", address, 53, argv, stderr_is_log=False, proto="udp")


def start_udp_echo(lab: Lab, address, port: int) -> Server:
    """A UDP server that echoes every datagram to its sender and logs "IP PORT LEN"."""
    argv = [sys.executable, "-u", "-m", "tests.lab.servers", "udp-echo", str(address), str(port), "{log}"]
    return _start(lab, "udp-echo", address, port, argv, stderr_is_log=False, proto="udp")


def _start_program(lab: Lab, kind: str, address, port: int) -> Server:
    argv = [sys.executable, "-u", "-m", "tests.lab.servers", kind, str(address), str(port), "{log}"]
    return _start(lab, kind, address, port, argv, stderr_is_log=False)


def _start(lab: Lab, kind: str, address, port: int, argv: list[str], *, stderr_is_log: bool,
           proto: str = "tcp") -> Server:
    ns = lab.intranet
    log_path = lab.workdir / f"{kind}-{address}-{port}.log"
    out_path = lab.workdir / f"{kind}-{address}-{port}.out"
    argv = [a.replace("{log}", str(log_path)) for a in argv]
    with open(out_path, "ab") as out:
        target = log_path if stderr_is_log else out_path
        with open(target, "ab") as err:
            proc = lab.popen(ns, argv, cwd=str(_repo_root()), env=lab.python_env(),
                             stdout=out, stderr=err)
    server = Server(kind=kind, namespace=ns, address=str(address), port=port, process=proc, log_path=log_path)
    _wait_listening(lab, server, out_path, proto=proto)
    return server


def _repo_root() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[2]


def _wait_listening(lab: Lab, server: Server, out_path: pathlib.Path, timeout: float = 10.0,
                    proto: str = "tcp") -> None:
    # Ask the kernel (ss) rather than connecting: a test connection would show
    # up in the logger's record (and a test datagram in the echo server's).
    flags = {"tcp": "-Hltn", "udp": "-Hlun"}[proto]
    want = f"{server.address}:{server.port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.kind} server exited with {server.process.returncode}: "
                               f"{out_path.read_text(errors='replace')[-2000:]}")
        listening = lab.run(server.namespace, ["ss", flags]).stdout.split()
        if want in listening:
            return
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{server.kind} server did not listen on {proto} {want} within {timeout}s")


# -- the echo-hash pattern and client -----------------------------------------

def pattern(n: int, seed: int = PATTERN_SEED) -> typing.Iterator[bytes]:
    """n deterministic pseudo-random bytes, in chunks of at most 64 KiB."""
    rng = random.Random(seed)
    while n > 0:
        chunk = rng.randbytes(CHUNK)
        yield chunk[:n] if n < CHUNK else chunk
        n -= CHUNK


def pattern_digest(n: int, seed: int = PATTERN_SEED) -> str:
    """SHA-256 hex of pattern(n, seed)."""
    h = hashlib.sha256()
    for chunk in pattern(n, seed):
        h.update(chunk)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class SinkResult:
    """Outcome of one echo-hash exchange."""

    up_ok: bool
    """The server's digest of what we sent equals ours."""
    down_ok: bool
    """We received N bytes and their digest equals the server's."""
    received: int
    """Payload bytes received from the server."""
    seconds: float
    """Wall time of the whole exchange."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += part
    return bytes(buf)


def sink_exchange(address: str, port: int, size: int, timeout: float = 120.0) -> SinkResult:
    """Send `size` pattern bytes to a sink, read `size` back, and check both digests."""
    start = time.monotonic()
    with socket.create_connection((str(address), port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!Q", size))
        sent = hashlib.sha256()
        for chunk in pattern(size):
            sock.sendall(chunk)
            sent.update(chunk)
        f = sock.makefile("rb")
        echoed = f.readline().decode("ascii", "replace").strip()
        got, received = hashlib.sha256(), 0
        while received < size:
            part = f.read(min(1 << 20, size - received))
            if not part:
                break
            got.update(part)
            received += len(part)
        server_sent = f.readline().decode("ascii", "replace").strip()
    return SinkResult(up_ok=echoed == sent.hexdigest(),
                      down_ok=received == size and got.hexdigest() == server_sent,
                      received=received, seconds=time.monotonic() - start)


# -- the server programs (run as `python -m tests.lab.servers KIND ...`) --------

class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    log_file: typing.TextIO

    def record(self, line: str) -> None:
        self.log_file.write(line + "\n")
        self.log_file.flush()


class _SinkHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        peer = f"{self.client_address[0]} {self.client_address[1]}"
        try:
            (size,) = struct.unpack("!Q", _recv_exact(sock, 8))
            got, left = hashlib.sha256(), size
            while left:
                part = sock.recv(min(1 << 20, left))
                if not part:
                    raise ConnectionError(f"client closed with {left} bytes missing")
                got.update(part)
                left -= len(part)
            sock.sendall(got.hexdigest().encode("ascii") + b"\n")
            sent = hashlib.sha256()
            for chunk in pattern(size):
                sock.sendall(chunk)
                sent.update(chunk)
            sock.sendall(sent.hexdigest().encode("ascii") + b"\n")
            self.server.record(f"{peer} size={size} received_sha256={got.hexdigest()}")
        except (OSError, struct.error) as exc:
            self.server.record(f"{peer} error={exc}")


class _LoggerHandler(socketserver.BaseRequestHandler):
    def setup(self) -> None:
        self.server.record(f"{self.client_address[0]} {self.client_address[1]}")

    def handle(self) -> None:
        pass


def _serve_udp_echo(address: str, port: int, log_path: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, open(log_path, "a", buffering=1) as log_file:
        sock.bind((address, port))
        while True:
            data, peer = sock.recvfrom(65535)
            log_file.write(f"{peer[0]} {peer[1]} {len(data)}\n")
            sock.sendto(data, peer)


class _HttpServer(http.server.ThreadingHTTPServer):
    request_queue_size = 1024


def _serve_http(address: str, port: int, log_path: str, root: str) -> None:
    log_file = open(log_path, "a", buffering=1)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=root, **kwargs)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
            log_file.write(f"{self.client_address[0]} - - [{self.log_date_time_string()}] "
                           f"{format % args}\n")

    _HttpServer((address, port), Handler).serve_forever()


def _serve(kind: str, address: str, port: int, log_path: str) -> None:
    handler = {"sink": _SinkHandler, "logger": _LoggerHandler}[kind]
    server = _Server((address, port), handler)
    with open(log_path, "a") as log_file:
        server.log_file = log_file
        server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.servers")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for kind in ("sink", "logger", "http", "udp-echo"):
        p = sub.add_parser(kind)
        p.add_argument("address")
        p.add_argument("port", type=int)
        p.add_argument("log")
        if kind == "http":
            p.add_argument("--root", required=True)
    p = sub.add_parser("sink-client")
    p.add_argument("address")
    p.add_argument("port", type=int)
    p.add_argument("size", type=int)
    args = parser.parse_args(argv)
    if args.cmd == "sink-client":
        print(json.dumps(dataclasses.asdict(sink_exchange(args.address, args.port, args.size))))
    elif args.cmd == "http":
        _serve_http(args.address, args.port, args.log, args.root)
    elif args.cmd == "udp-echo":
        _serve_udp_echo(args.address, args.port, args.log)
    else:
        _serve(args.cmd, args.address, args.port, args.log)


if __name__ == "__main__":
    main()
