"""``tunnelgate-gateway``: run the gateway and the tools that set it up.

    tunnelgate-gateway --config FILE          run the gateway (same as ``run``)
    tunnelgate-gateway run --config FILE
    tunnelgate-gateway check-config --config FILE
    tunnelgate-gateway hash-password          password on stdin, hash on stdout
    tunnelgate-gateway make-cert --out DIR --host H [--host H ...]
    tunnelgate-gateway make-totp --user NAME  a TOTP secret for [[user]] totp_secret

Errors the operator can fix print one line, ``tunnelgate-gateway: <message>``,
on stderr: exit status 2 for a bad config or bad arguments, 1 otherwise.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from pathlib import Path

from gateway_stub.certs import fingerprint_sha256, make_self_signed
from gateway_stub.config import GatewayConfig, load_config
from gateway_stub.errors import ConfigError
from gateway_stub.passwords import hash_password
from gateway_stub.policy import Policy

PROG = "tunnelgate-gateway"

log = logging.getLogger(__name__)


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Tunnelgate's SSL-VPN gateway.")
    parser.add_argument("--config", type=Path, help="gateway TOML file (runs the gateway)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="run the gateway")
    run.add_argument("--config", type=Path, required=True, help="gateway TOML file")
    check = commands.add_parser("check-config", help="validate a config file and summarise it")
    check.add_argument("--config", type=Path, required=True, help="gateway TOML file")
    commands.add_parser("hash-password", help="hash a password read from stdin")
    totp = commands.add_parser("make-totp", help="make a TOTP secret for a user's authenticator app")
    totp.add_argument("--user", required=True, help="the user name (shown in the app)")
    cert = commands.add_parser("make-cert", help="make a private CA and a server certificate")
    cert.add_argument("--out", type=Path, required=True, help="folder to write the files to")
    cert.add_argument("--host", action="append", required=True,
                      help="host name or IP address clients use (repeatable)")
    cert.add_argument("--force", action="store_true", help="overwrite existing files")
    return parser


def _run(config_path: Path) -> int:
    config = load_config(config_path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from gateway_stub.server import serve  # lazy: the server pulls in h2 and asyncio
    except ModuleNotFoundError as exc:
        if exc.name != "gateway_stub.server":
            raise
        return _fail("this build has no gateway server (gateway_stub.server is missing)", 1)
    log.info("open files limit: %d", raise_fd_limit())
    return serve(config)


def _check_config(config_path: Path) -> int:
    config = load_config(config_path)
    print(_summary(config))
    return 0


def _summary(config: GatewayConfig) -> str:
    server = config.server
    host = f"[{server.listen_host}]" if ":" in server.listen_host else server.listen_host
    policy = Policy(config)
    lines = [
        f"{config.source}: OK",
        f"listen: {host}:{server.listen_port}",
        f"certificate: {server.certificate}",
        f"pool: {config.pool or 'off'}",
        f"kept out of the tunnel: {', '.join(map(str, config.exclude)) or 'nothing'}",
        f"dns: {', '.join(map(str, config.dns.servers)) or 'none'}"
        + (f" (search {', '.join(config.dns.search)})" if config.dns.search else ""),
        f"audit log: {server.audit_log or 'logger gateway_stub.audit'}",
        f"resources ({len(config.resources)}):",
    ]
    for resource in config.resources:
        ports = ", ".join(map(str, resource.ports)) if resource.ports else "all ports"
        lines.append(f"  {resource.name}: {', '.join(map(str, resource.networks))} "
                     f"{'/'.join(sorted(resource.protocols))} {ports}")
    routed = [n for r in config.resources for n in r.networks]
    for network in config.exclude:
        if not any(network.overlaps(r) for r in routed):
            lines.append(f"  warning: routing.exclude {network} overlaps no resource; it has no effect")
    lines.append(f"users ({len(config.users)}):")
    for user in config.users:
        allowed = ", ".join(policy.resources_for(user)) or "nothing"
        lines.append(f"  {user.name} [{', '.join(user.groups)}]: may reach {allowed}")
        withheld = set(config.dns.servers) - set(policy.dns_servers_for(user, config.dns.servers))
        if withheld:
            lines.append(f"    warning: no policy lets {user.name} reach DNS server "
                         f"{', '.join(sorted(map(str, withheld)))} on udp 53; it is not pushed to them")
    return "\n".join(lines)


def _hash_password() -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            return _fail("the passwords do not match", 1)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        return _fail("empty password", 2)
    print(hash_password(password))
    return 0


def _make_cert(out: Path, hosts: list[str], force: bool) -> int:
    try:
        files = make_self_signed(out, hosts, overwrite=force)
    except ValueError as exc:
        return _fail(str(exc), 2)
    except FileExistsError as exc:
        return _fail(f"{exc.filename or exc} (use --force to overwrite)", 1)
    print(f"ca certificate: {files.ca_cert}")
    print(f"certificate:    {files.certificate}")
    print(f"private key:    {files.private_key}")
    print(f"fingerprint:    {fingerprint_sha256(files.certificate.read_bytes())}")
    return 0


def _make_totp(user: str) -> int:
    import pyotp
    secret = pyotp.random_base32()
    uri = pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name="Tunnelgate")
    print(f'totp_secret = "{secret}"      # put this line in the [[user]] table of {user}')
    print(f"authenticator app: {uri}")
    return 0


def raise_fd_limit() -> int:
    """Raise the soft limit of open files to the hard one; returns the new limit.

    Every flow holds a socket: with the usual soft limit of 1024, one user's
    flows could use up the descriptors and stop the gateway accepting others.
    """
    import resource   # Unix only, as is the gateway
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
            return soft
    return hard


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command in (None, "run"):
            if args.config is None:
                parser.print_usage(sys.stderr)
                return _fail("give --config FILE or a command", 2)
            return _run(args.config)
        if args.command == "check-config":
            return _check_config(args.config)
        if args.command == "hash-password":
            return _hash_password()
        if args.command == "make-totp":
            return _make_totp(args.user)
        return _make_cert(args.out, args.host, args.force)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except OSError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
