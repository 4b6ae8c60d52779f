"""The CLI commands that talk to the service, run it, or manage profiles.

``tunnelgate connect`` through the service subscribes first (so no state is
missed), sends ``connect``, answers a one-time code (terminal, or the next
line of stdin) or a certificate question (terminal only; elsewhere it is
refused with the fingerprint to pin), and returns 0 once connected, 1 when
the attempt fails.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import pathlib
import signal
import sys
import time

from client.control.client import ControlClient, describe_secured, socket_path
from client.errors import UsageError
from client.profiles import KeyringUnavailable, PasswordStore, Profile, ProfileError, ProfileStore

log = logging.getLogger(__name__)


def resolve_profile(args: argparse.Namespace) -> Profile | None:
    """If ``args.url`` names a profile, fill in what the command line left out from it."""
    if "://" in args.url:
        return None
    try:
        profile = ProfileStore().get(args.url)
    except ProfileError:
        raise
    if profile is None:
        return None
    args.url = profile.gateway
    args.user = args.user or profile.username
    if args.ca is None and args.pin is None:
        args.ca = pathlib.Path(profile.ca) if profile.ca else None
        args.pin = profile.pin
    if args.reconnect_for is None:
        args.reconnect_for = profile.reconnect_for
    return profile


def _password(args: argparse.Namespace, profile: Profile | None) -> str:
    from client.cli import _read_password
    if profile is not None and not args.password_stdin:
        try:
            saved = PasswordStore().get(profile.name, profile.username)
        except KeyringUnavailable as exc:
            log.warning("%s", exc)
            saved = None
        if saved is not None:
            return saved
    return _read_password(args.password_stdin)


def connect(args: argparse.Namespace, profile: Profile | None) -> int:
    """Connect through the service; see the module docstring."""
    if args.user is None:
        raise UsageError("--user is needed to connect to a URL (or give a profile name)")
    password = _password(args, profile)
    return asyncio.run(_connect(args, profile, password))


async def _connect(args: argparse.Namespace, profile: Profile | None, password: str) -> int:
    from client.cli import TerminalPrompter, in_daemon_thread
    client = await ControlClient.open(client="tunnelgate-cli 0.1")
    outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    started = False

    async def answer_challenge(params: dict) -> None:
        code = await TerminalPrompter().one_time_code(params.get("prompt", "One-time code"))
        await client.answer_challenge(params["id"], code or "")

    async def answer_certificate(params: dict) -> None:
        print(f"the certificate of {params['host']} is not trusted ({params['reason']})\n"
              f"  subject:     {params['subject']}\n  issuer:      {params['issuer']}\n"
              f"  fingerprint: {params['fingerprint']}", flush=True)
        decision = "cancel"
        if sys.stdin.isatty():
            reply = await in_daemon_thread(input, "Trust it? [once/always/NO]: ")
            decision = reply.strip().lower() if reply.strip().lower() in ("once", "always") else "cancel"
        else:
            print(f"not trusting it without a terminal; to trust it, connect with --pin "
                  f"{params['fingerprint']}", flush=True)
        if decision == "always" and profile is not None:
            ProfileStore().save(dataclasses.replace(profile, ca=None, pin=params["fingerprint"]))
            print(f"saved the pin in profile {profile.name}", flush=True)
        await client.answer_certificate(params["id"], decision)

    def on_note(method: str, params: dict):
        if method == "state" and started:
            state, detail = params.get("state"), params.get("detail", "")
            print(f"{state}{': ' + detail if detail else ''}", flush=True)
            if not outcome.done() and state in ("connected", "failed", "disconnected"):
                outcome.set_result(0 if state == "connected" else 1)
        elif method == "challenge" and started:
            return answer_challenge(params)
        elif method == "certificate" and started:
            return answer_certificate(params)
        return None

    try:
        await client.subscribe(on_note, stats_interval=3600)
        started = True
        await client.connect(args.url, args.user, password, ca=str(args.ca.resolve()) if args.ca else None,
                             pin=args.pin, profile=profile.name if profile else None,
                             reconnect_for=args.reconnect_for)
        closed = asyncio.ensure_future(client.wait_closed())
        done, _ = await asyncio.wait({outcome, closed}, return_when=asyncio.FIRST_COMPLETED)
        if outcome in done:
            return outcome.result()
        print(f"tunnelgate: lost the service ({closed.result()})", file=sys.stderr)
        return 1
    finally:
        await client.close()


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def render_status(status: dict) -> str:
    """The Status object as a few lines for people."""
    lines = [f"state:     {status['state']}" + (f" ({status['detail']})" if status.get("detail") else "")]
    if status.get("error"):
        lines.append(f"error:     {status['error']}")
    for key, label in (("profile", "profile"), ("gateway", "gateway"), ("username", "user"),
                       ("address", "address")):
        if status.get(key):
            lines.append(f"{label + ':':<10} {status[key]}")
    if status.get("networks"):
        lines.append(f"networks:  {describe_secured(status)}")
    if status.get("resources"):
        lines.append(f"resources: {', '.join(status['resources'])}")
    dns = status.get("dns") or {}
    if dns.get("servers") or dns.get("search"):
        lines.append(f"dns:       {', '.join(dns.get('servers', []))}"
                     f"{' for ' + ', '.join(dns['search']) if dns.get('search') else ''}")
    if status.get("connected_since"):
        lines.append(f"since:     {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(status['connected_since']))}")
    stats = status.get("stats") or {}
    if status["state"] == "connected":
        lines.append(f"traffic:   in {_size(stats['bytes_in'])} ({_size(stats['rate_in'])}/s), "
                     f"out {_size(stats['bytes_out'])} ({_size(stats['rate_out'])}/s), "
                     f"{stats['flows']} open flow(s)")
        if "fast_path" in stats:
            lines.append(f"tcp path:  {'in-kernel fast path' if stats['fast_path'] else 'Python'}"
                         f", {stats.get('flows_offloaded', 0)} flow(s) offloaded")
    return "\n".join(lines)


def status(args: argparse.Namespace) -> int:
    """``tunnelgate status``."""
    async def main() -> dict:
        client = await ControlClient.open(client="tunnelgate-cli 0.1")
        try:
            return await client.status()
        finally:
            await client.close()
    result = asyncio.run(main())
    print(json.dumps(result, indent=2) if args.json else render_status(result))
    return 0


def disconnect(args: argparse.Namespace) -> int:
    """``tunnelgate disconnect``."""
    async def main() -> None:
        client = await ControlClient.open(client="tunnelgate-cli 0.1")
        try:
            await client.disconnect()
        finally:
            await client.close()
    asyncio.run(main())
    print("disconnected")
    return 0


def profiles(args: argparse.Namespace) -> int:
    """``tunnelgate profiles list|add|remove|set-password``."""
    store = ProfileStore()
    if args.action == "list":
        found = store.load()
        if not found:
            print("no profiles (add one with: tunnelgate profiles add NAME --gateway URL --user NAME)")
        for p in found:
            trust = f"pin {p.pin}" if p.pin else f"ca {p.ca}" if p.ca else "system CAs"
            window = "" if p.reconnect_for is None else f"\treconnect for {p.reconnect_for:g} s"
            print(f"{p.name}\t{p.username}@{p.gateway}\t{trust}{window}"
                  f"{chr(9) + 'connect at start' if p.connect_at_start else ''}")
        return 0
    if args.action == "add":
        store.save(Profile(name=args.name, gateway=args.gateway, username=args.user,
                           ca=str(args.ca.resolve()) if args.ca else None, pin=args.pin,
                           connect_at_start=args.connect_at_start, reconnect_for=args.reconnect_for))
        print(f"saved profile {args.name} in {store.path}")
        return 0
    profile = store.get(args.name)
    if profile is None:
        print(f"tunnelgate: no profile named {args.name!r} in {store.path}", file=sys.stderr)
        return 1
    if args.action == "remove":
        store.remove(args.name)
        try:
            PasswordStore().delete(profile.name, profile.username)
        except KeyringUnavailable as exc:  # say so: the secret stays behind
            print(f"tunnelgate: warning: the saved password of {args.name} could not be removed "
                  f"from the keyring: {exc}", file=sys.stderr)
        print(f"removed profile {args.name}")
        return 0
    if args.action == "set-password":
        from client.cli import _read_password
        PasswordStore().set(profile.name, profile.username, _read_password(args.password_stdin))
        print(f"saved the password of {args.name} in the keyring")
        return 0
    return 2


def service(args: argparse.Namespace) -> int:
    """``tunnelgate service``: the control API with the real TUN, routes and DNS, until SIGTERM."""
    from client.control.host import EngineHost
    from client.control.server import ControlServer
    from client.dns import DnsManager
    from client.routes import RouteManager
    from client.tun import KernelTun
    from client.wire.runloop import run_loop

    if os.geteuid() != 0:
        raise UsageError("the service needs root (it creates a TUN device and routes)")
    if not args.verbose:  # the engine's INFO lines go to subscribers, not to the journal
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
    state_dir: pathlib.Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    host = EngineHost(tun_factory=lambda mtu: KernelTun(mtu=mtu),
                      routes_factory=lambda: RouteManager(state_dir / "host-changes.json"),
                      dns_factory=lambda: DnsManager(state_dir / "dns-changes.json"),
                      state_dir=state_dir)
    host.recover()
    server = ControlServer(socket_path(args.socket), host, group=args.group)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        await server.run(stop)

    run_loop(main())
    return 0
