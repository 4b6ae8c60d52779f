"""What a tunnel request names, and how a refusal says why.

A TCP CONNECT names its target in ``:authority`` (IPv4 address and port);
connect-udp (RFC 9298) and connect-ip (RFC 9484) name theirs in the path
under ``/.well-known/masque/``. A refused or failed request carries an
RFC 9209 ``proxy-status`` header.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress


def proxy_status_header(error: str, detail: str = "") -> tuple[str, str]:
    """An RFC 9209 Proxy-Status header naming this gateway.

    ``detail`` may quote the client's own input or names from the config, so it
    is made a valid RFC 8941 string: printable ASCII, with quote and backslash
    escaped.
    """
    value = f"tunnelgate; error={error}"
    if detail:
        text = "".join(c if " " <= c <= "~" else "?" for c in detail)
        value += '; details="' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return ("proxy-status", value)


def connect_failure(exc: BaseException) -> tuple[int, str]:
    """Map a failed connect to an HTTP status and an RFC 9209 error."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return 504, "connection_timeout"
    if isinstance(exc, ConnectionRefusedError):
        return 502, "connection_refused"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return 502, "destination_ip_unroutable"     # no route: the app sees net unreachable
    return 502, "destination_unavailable"           # EHOSTUNREACH and the rest: host unreachable


@functools.lru_cache(maxsize=4096)
def parse_authority(authority: str) -> tuple[ipaddress.IPv4Address, int]:
    """Parse ``a.b.c.d:port``; raises ValueError with a clear message (cached: a
    session connects to the same few targets over and over)."""
    host, sep, port_text = authority.rpartition(":")
    if not sep or not host:
        raise ValueError(f"authority {authority[:80]!r} is not host:port")
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"authority {authority[:80]!r} has no valid port")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"authority {authority[:80]!r} is not an IPv4 address") from None
    return address, int(port_text)


UDP_PREFIX = "/.well-known/masque/udp/"
IP_PREFIX = "/.well-known/masque/ip/"


def parse_udp_path(path: str) -> tuple[ipaddress.IPv4Address, int]:
    """Parse RFC 9298's default template ``/.well-known/masque/udp/{host}/{port}/``."""
    if not path.startswith(UDP_PREFIX):
        raise ValueError(f"path {path[:80]!r} is not a connect-udp path")
    parts = path[len(UDP_PREFIX):].split("/")
    if len(parts) != 3 or parts[2] != "":
        raise ValueError(f"path {path[:80]!r} is not {UDP_PREFIX}HOST/PORT/")
    return parse_authority(f"{parts[0]}:{parts[1]}")


def parse_ip_path(path: str) -> ipaddress.IPv4Address:
    """Parse RFC 9484's ``/.well-known/masque/ip/{target}/{ipproto}/``, scoped to
    one IPv4 address and ICMP (the only use this gateway allows)."""
    if not path.startswith(IP_PREFIX):
        raise ValueError(f"path {path[:80]!r} is not a connect-ip path")
    parts = path[len(IP_PREFIX):].split("/")
    if len(parts) != 3 or parts[2] != "":
        raise ValueError(f"path {path[:80]!r} is not {IP_PREFIX}TARGET/IPPROTO/")
    if parts[1] != "1":
        raise ValueError("only ICMP (IP protocol 1) may be carried over connect-ip")
    try:
        return ipaddress.IPv4Address(parts[0])
    except ValueError:
        raise ValueError(f"connect-ip target {parts[0][:40]!r} is not one IPv4 address") from None
