"""The ``tunnelgate`` command line.

``tunnelgate connect URL --user NAME`` runs the engine in the foreground (as
root) until Ctrl-C or SIGTERM, printing each state change; it exits non-zero
with a one-line reason when the connection fails or is lost. Before anything
else it undoes what a crashed earlier run left on the host.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import pathlib
import signal
import sys

from client.errors import ClientError, UsageError
from client.states import State

DEFAULT_STATE_DIR = pathlib.Path("/var/lib/tunnelgate")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunnelgate", description="Tunnelgate SSL-VPN client")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    con = sub.add_parser("connect", help="connect in the foreground until Ctrl-C (needs root)")
    con.add_argument("url", help="the gateway, https://HOST[:PORT]")
    con.add_argument("--user", required=True, help="user name")
    con.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    trust = con.add_mutually_exclusive_group()
    trust.add_argument("--ca", type=pathlib.Path, help="CA file to verify the gateway with")
    trust.add_argument("--pin", help="pinned server certificate fingerprint, sha256:HEX")
    con.add_argument("--state-dir", type=pathlib.Path,
                     default=pathlib.Path(os.environ.get("TUNNELGATE_STATE_DIR", DEFAULT_STATE_DIR)),
                     help="where the journal of host changes is kept (default %(default)s)")
    rec = sub.add_parser("recover", help="undo host changes left by a crashed client")
    rec.add_argument("--state-dir", type=pathlib.Path,
                     default=pathlib.Path(os.environ.get("TUNNELGATE_STATE_DIR", DEFAULT_STATE_DIR)))
    return parser


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin given but standard input is empty")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: use --password-stdin")
    return getpass.getpass("Password: ")


class TerminalPrompter:
    """Answers the engine's questions on the terminal (or the next line of stdin).

    A certificate is never trusted from here: the error names the fingerprint
    to pass with --pin.
    """

    async def one_time_code(self, prompt: str) -> str | None:
        loop = asyncio.get_running_loop()
        if sys.stdin.isatty():
            line = await loop.run_in_executor(None, input, f"{prompt}: ")
        else:
            line = await loop.run_in_executor(None, sys.stdin.readline)
        line = line.strip()
        return line or None

    async def trust_certificate(self, info) -> str:
        return "cancel"


def _journal(state_dir: pathlib.Path) -> pathlib.Path:
    return state_dir / "host-changes.json"


def _connect(args: argparse.Namespace) -> int:
    from client.dns import DnsManager
    from client.engine import Engine, EngineOptions
    from client.routes import RouteManager
    from client.session import GatewayAddress
    from client.trust import Trust
    from client.tun import KernelTun
    from client.wire.runloop import run_loop

    gateway = GatewayAddress.parse(args.url)
    trust = Trust(ca_file=args.ca, pin=args.pin)
    if os.geteuid() != 0:
        raise UsageError("connect needs root (it creates a TUN device and routes)")
    password = _read_password(args.password_stdin)
    args.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    journal = _journal(args.state_dir)
    dns_journal = args.state_dir / "dns-changes.json"
    recovered = RouteManager.recover(journal)
    recovered = DnsManager.recover(dns_journal) or recovered
    if recovered:
        print("restored host changes left by an earlier run that did not finish", flush=True)
    engine = Engine(EngineOptions(gateway=gateway, trust=trust, username=args.user), password,
                    tun_factory=lambda mtu: KernelTun(mtu=mtu), routes=RouteManager(journal),
                    dns=DnsManager(dns_journal), prompter=TerminalPrompter(),
                    on_state=lambda s, d: print(f"{s.value}{': ' + d if d else ''}", flush=True))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        await engine.run(stop)

    run_loop(main())
    return 0 if engine.state is State.DISCONNECTED else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tunnelgate``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "connect":
            return _connect(args)
        if args.command == "recover":
            from client.routes import RouteManager
            done = RouteManager.recover(_journal(args.state_dir))
            print("restored host changes" if done else "nothing to restore")
            return 0
    except UsageError as exc:
        print(f"tunnelgate: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"tunnelgate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
