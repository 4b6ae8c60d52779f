"""The host's resolver: which one runs here, and the few operations on it.

`client.dns` decides what the host's DNS should be and journals every change;
this module is what it uses to touch the host. Nothing here journals or
decides: each function does one thing to systemd-resolved or the resolver file
and raises on failure.

"resolved"  systemd-resolved runs here (`detect_backend`). Servers and
            routing-only domains are set per link with `resolvectl`
            (`set_link`), and `resolvectl revert` drops them again
            (`revert_link`); resolved also drops a link's settings by itself
            when the link goes away.

"file"      Anything else: the resolver file. It is read and written as bytes
            and overwritten in place (`write_in_place`), never replaced, because
            it may be a bind mount where a rename onto it fails. `encode` and
            `decode` turn those bytes into text that survives a JSON journal
            byte for byte, non-UTF-8 bytes included. Overwriting in place is
            not atomic: a crash part way leaves the new bytes' head on the old
            bytes' tail, which `cut_short` recognises so that recovery can
            still put the original back.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import pathlib
import subprocess
import typing

__all__ = ["RESOLV_CONF", "RESOLVED_RUN_DIR", "Runner", "run_command", "detect_backend",
           "set_link", "revert_link", "encode", "decode", "read_bytes", "write_in_place", "cut_short"]

log = logging.getLogger(__name__)

Runner = typing.Callable[[list[str]], object]
"""Runs one command; raises OSError or subprocess.CalledProcessError on failure."""

RESOLV_CONF = pathlib.Path("/etc/resolv.conf")
RESOLVED_RUN_DIR = pathlib.Path("/run/systemd/resolve")
_RESOLVED_STUB = "127.0.0.53"


def run_command(argv: list[str]) -> None:
    """The default `Runner`: run argv, raise CalledProcessError (with stderr) on failure."""
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=15)


def detect_backend(resolv_conf: pathlib.Path = RESOLV_CONF, *, run: Runner = run_command,
                   run_dir: pathlib.Path = RESOLVED_RUN_DIR) -> str:
    """"resolved" when systemd-resolved is running and answers `resolvectl`, else "file".

    Either sign of resolved (its runtime directory, or the resolver file pointing
    at its stub 127.0.0.53) is enough, but `resolvectl status` must also work:
    a stub address with no daemon behind it is better served by the file backend.
    Inside a network namespace other than init's, resolved (which lives in init's)
    cannot see our TUN and must not be told about it: "file".
    """
    if _in_other_netns():
        return "file"
    if not (run_dir.is_dir() or _points_at_stub(resolv_conf)):
        return "file"
    try:
        run(["resolvectl", "status"])
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("systemd-resolved signs found but resolvectl fails (%s); using the resolver file", exc)
        return "file"
    return "resolved"


def _in_other_netns() -> bool:
    """Whether this process runs outside init's network namespace (as far as we can tell)."""
    def ident(path: str | pathlib.Path) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    own = ident("/proc/self/ns/net")
    if own is None:
        return False  # cannot tell: trust the other signs
    init = ident("/proc/1/ns/net")  # some sandboxes hide this even from root
    if init is not None:
        return own != init
    try:  # a namespace made by `ip netns add` is bind-mounted under /run/netns
        return any(ident(entry) == own for entry in pathlib.Path("/run/netns").iterdir())
    except OSError:
        return False


def _points_at_stub(resolv_conf: pathlib.Path) -> bool:
    try:
        text = resolv_conf.read_text(errors="replace")
    except OSError:
        return False
    return any(line.split()[:2] == ["nameserver", _RESOLVED_STUB] for line in text.splitlines())


def set_link(run: Runner, interface: str, servers: typing.Sequence[ipaddress.IPv4Address],
             domains: typing.Sequence[str]) -> None:
    """Give the link its DNS servers and routing-only domains ("~corp.example"); empty clears."""
    run(["resolvectl", "dns", interface, *(str(s) for s in servers)] if servers
        else ["resolvectl", "dns", interface, ""])
    run(["resolvectl", "domain", interface, *(f"~{d}" for d in domains)] if domains
        else ["resolvectl", "domain", interface, ""])


def revert_link(run: Runner, interface: str) -> None:
    """Drop the link's DNS settings; a link that is gone took them with it.

    Raises CalledProcessError when resolvectl fails on a link that still exists.
    """
    try:
        run(["resolvectl", "revert", interface])
    except subprocess.CalledProcessError:
        if not pathlib.Path("/sys/class/net", interface).exists():
            # resolved drops a link's settings when the link goes away.
            log.info("DNS settings of %s went with the interface", interface)
            return
        raise
    log.info("reverted DNS settings of %s", interface)


def encode(text: str) -> bytes:
    """Text from `decode` (or a journal) back to the exact bytes."""
    return text.encode("utf-8", "surrogateescape")


def decode(data: bytes) -> str:
    """File bytes as text that survives a JSON journal."""
    # surrogateescape keeps any non-UTF-8 byte, and JSON keeps the surrogates,
    # so the original comes back byte for byte.
    return data.decode("utf-8", "surrogateescape")


def read_bytes(path: pathlib.Path) -> bytes | None:
    """The file's contents, None when there is no such file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_in_place(path: pathlib.Path, data: bytes) -> None:
    """Overwrite the file's contents without replacing the file (it may be a bind mount)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def cut_short(current: bytes, old: bytes, new: bytes) -> bool:
    """Whether `current` is what `write_in_place(new)` leaves over `old` when it
    stops part way: the first k bytes of `new` on the rest of `old`, for some
    k, before the final truncate (the two ends themselves included)."""
    if current == new or (len(current) >= len(old) and new.startswith(current)):
        return True  # all of `old` overwritten, not yet truncated or fully written
    if len(current) != len(old):
        return False
    tail = len(current)  # the shortest tail of `current` that is also `old`'s
    while tail and current[tail - 1] == old[tail - 1]:
        tail -= 1
    return current[:tail] == new[:tail]
