"""The ``tunnelgate`` command line.

Two ways to connect. Through the service (``tunnelgate service``, root,
normally started by systemd): ``tunnelgate connect PROFILE|URL`` sends the
request over the control API, answers a one-time code or certificate
question on the terminal, prints the states until connected or failed and
returns; ``status`` and ``disconnect`` talk to the same service. In the
foreground (``--foreground``, or ``--state-dir``, or as root with no
service socket): ``tunnelgate connect URL --user NAME`` runs the engine in
this process until Ctrl-C or SIGTERM, printing each state change, and
exits non-zero with a one-line reason when the connection fails or is
lost; before anything else it undoes what a crashed earlier run left on
the host. ``profiles`` manages the per-user profiles and their keyring
passwords. Exit codes: 0 ok, 1 failure, 2 usage.
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
import threading

from client.errors import ClientError, UsageError
from client.resume_pacing import RECONNECT_FOR, reconnect_delays
from client.states import State

DEFAULT_STATE_DIR = pathlib.Path("/var/lib/tunnelgate")


def _state_dir_default() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TUNNELGATE_STATE_DIR", DEFAULT_STATE_DIR))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunnelgate", description="Tunnelgate SSL-VPN client")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    con = sub.add_parser("connect", help="connect a profile or gateway URL (through the service, "
                                         "or in the foreground with --foreground)")
    con.add_argument("url", metavar="PROFILE|URL", help="a profile name, or the gateway https://HOST[:PORT]")
    con.add_argument("--user", help="user name (needed with a URL)")
    con.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input "
                          "(and a one-time code, when asked, from the next)")
    trust = con.add_mutually_exclusive_group()
    trust.add_argument("--ca", type=pathlib.Path, help="CA file to verify the gateway with")
    trust.add_argument("--pin", help="pinned server certificate fingerprint, sha256:HEX")
    con.add_argument("--foreground", action="store_true",
                     help="run the engine in this process until Ctrl-C (needs root)")
    con.add_argument("--reconnect-for", type=_seconds, default=None, metavar="SECONDS",
                     help="how long to try to get a lost session back before giving up "
                          f"(default: the profile's, else {RECONNECT_FOR:g}; 0: never)")
    con.add_argument("--state-dir", type=pathlib.Path, default=None,
                     help="foreground only (implies --foreground): where the journal of host changes "
                          f"is kept (default $TUNNELGATE_STATE_DIR or {DEFAULT_STATE_DIR})")
    rec = sub.add_parser("recover", help="undo host changes left by a crashed client")
    rec.add_argument("--state-dir", type=pathlib.Path, default=_state_dir_default())
    svc = sub.add_parser("service", help="run the privileged service (root; systemd starts it)")
    svc.add_argument("--socket", type=pathlib.Path, default=None,
                     help="control socket (default $TUNNELGATE_SOCKET or /run/tunnelgate/control.sock)")
    svc.add_argument("--state-dir", type=pathlib.Path, default=_state_dir_default(),
                     help="where the journals of host changes are kept (default %(default)s)")
    svc.add_argument("--group", default="tunnelgate", help="group allowed to use the service")
    st = sub.add_parser("status", help="show the connection state (from the service)")
    st.add_argument("--json", action="store_true", help="print the raw Status object")
    sub.add_parser("disconnect", help="disconnect (through the service)")
    prof = sub.add_parser("profiles", help="manage your connection profiles")
    psub = prof.add_subparsers(dest="action", required=True)
    psub.add_parser("list", help="list profiles")
    add = psub.add_parser("add", help="add or replace a profile")
    add.add_argument("name")
    add.add_argument("--gateway", required=True, help="https://HOST[:PORT]")
    add.add_argument("--user", required=True, help="user name")
    ptrust = add.add_mutually_exclusive_group()
    ptrust.add_argument("--ca", type=pathlib.Path, help="CA file to verify the gateway with")
    ptrust.add_argument("--pin", help="pinned server certificate fingerprint, sha256:HEX")
    add.add_argument("--connect-at-start", action="store_true",
                     help="let the tray app connect this profile when it starts")
    add.add_argument("--reconnect-for", type=_seconds, default=None, metavar="SECONDS",
                     help="how long to try to get a lost session back before giving up "
                          f"(default {RECONNECT_FOR:g}; 0: never)")
    rm = psub.add_parser("remove", help="remove a profile and its saved password")
    rm.add_argument("name")
    pw = psub.add_parser("set-password", help="save a profile's password in the keyring")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true",
                    help="read the password from the first line of standard input")
    return parser


def _seconds(text: str) -> float:
    """A number of seconds, 0 or more (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin given but standard input is empty")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: use --password-stdin")
    try:
        return getpass.getpass("Password: ")
    except EOFError:  # Ctrl-D
        raise UsageError("no password given") from None


async def in_daemon_thread(func, *args):
    """``func(*args)`` (a blocking read of the terminal) in a daemon thread: unlike the
    loop's executor, Ctrl-C or SIGTERM meanwhile need not wait for the user to press Enter."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome, failed: bool) -> None:
        if not future.done():
            (future.set_exception if failed else future.set_result)(outcome)

    def run() -> None:
        try:
            outcome, failed = func(*args), False
        except BaseException as exc:  # handed to the awaiting task, EOFError included
            outcome, failed = exc, True
        try:
            loop.call_soon_threadsafe(settle, outcome, failed)
        except RuntimeError:  # the loop is gone: nobody waits any more
            pass

    threading.Thread(target=run, name="terminal-prompt", daemon=True).start()
    return await future


class TerminalPrompter:
    """Answers the engine's questions on the terminal (or the next line of stdin).

    A certificate is never trusted from here: the error names the fingerprint
    to pass with --pin.
    """

    async def one_time_code(self, prompt: str) -> str | None:
        if sys.stdin.isatty():
            try:
                line = await in_daemon_thread(input, f"{prompt}: ")
            except EOFError:  # Ctrl-D: no code, the login is cancelled with a clear message
                return None
        else:
            line = await in_daemon_thread(sys.stdin.readline)
        line = line.strip()
        return line or None

    async def trust_certificate(self, info) -> str:
        return "cancel"


def _journal(state_dir: pathlib.Path) -> pathlib.Path:
    return state_dir / "host-changes.json"


def _dns_journal(state_dir: pathlib.Path) -> pathlib.Path:
    return state_dir / "dns-changes.json"


def _connect(args: argparse.Namespace) -> int:
    from client.dns import DnsManager
    from client.engine import Engine, EngineOptions
    from client.routes import RouteManager
    from client.gateway_address import GatewayAddress
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
    dns_journal = _dns_journal(args.state_dir)
    recovered = RouteManager.recover(journal)
    recovered = DnsManager.recover(dns_journal) or recovered
    if recovered:
        print("restored host changes left by an earlier run that did not finish", flush=True)
    window = RECONNECT_FOR if args.reconnect_for is None else args.reconnect_for
    options = EngineOptions(gateway=gateway, trust=trust, username=args.user,
                            reconnect_delays=reconnect_delays(window))
    engine = Engine(options, password,
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


def _foreground(args: argparse.Namespace) -> bool:
    """Whether ``connect`` runs the engine here rather than through the service."""
    if args.foreground or args.state_dir is not None:
        return True
    from client.control.client import socket_path
    return os.geteuid() == 0 and not socket_path().exists()


def _connect_command(args: argparse.Namespace) -> int:
    from client.control import commands
    profile = commands.resolve_profile(args)
    if not _foreground(args):
        return commands.connect(args, profile)
    if args.user is None:
        raise UsageError("--user is needed to connect to a URL")
    if args.state_dir is None:
        args.state_dir = _state_dir_default()
    return _connect(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tunnelgate``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "connect":
            return _connect_command(args)
        if args.command == "recover":
            if os.geteuid() != 0:
                raise UsageError("recover needs root (it removes routes and restores DNS settings)")
            from client.dns import DnsManager
            from client.routes import RouteManager
            done = RouteManager.recover(_journal(args.state_dir))
            done = DnsManager.recover(_dns_journal(args.state_dir)) or done
            print("restored host changes" if done else "nothing to restore")
            return 0
        from client.control import commands
        if args.command == "service":
            return commands.service(args)
        if args.command == "status":
            return commands.status(args)
        if args.command == "disconnect":
            return commands.disconnect(args)
        if args.command == "profiles":
            return commands.profiles(args)
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
