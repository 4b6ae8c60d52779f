"""The TUN boundary: a device that yields and accepts whole IP packets.

`TunDevice` is the interface the engine uses. `KernelTun` is the real device
(python-pytun, IFF_TUN | IFF_NO_PI, non-persistent, non-blocking fd), so it
disappears, with its addresses and routes, when the process ends.
`MemoryTun` is the in-memory fake for fast tests; its fileno() is a real pipe
that is readable exactly while packets are queued, so asyncio's add_reader
works on it just as on the kernel device.

Both are read the same way: when the fd is readable, call read() until it
returns None.

``tcp_fast_path()`` offers the in-kernel rewriter for established TCP flows
(``client.bpf``): the kernel device loads and attaches the eBPF program; the
fake hands out the offload it was given (none by default).

IPv6 is not tunnelled, but a full tunnel routes it into the TUN to refuse it
there. So the kernel device comes up with IPv6 quiet: no link-local address, no
router solicitations, no autoconfiguration (set before it is up, so it never
says a word on its own), and ``enable_ipv6`` lets it take IPv6 routes when the
host has IPv6 at all. All of these are the device's own settings, which go
with it.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import logging
import os
import pathlib
import typing

__all__ = ["TunDevice", "KernelTun", "MemoryTun", "IPV6_CONF", "enable_ipv6"]

log = logging.getLogger(__name__)

#: The kernel's per-interface IPv6 settings (absent when the host has no IPv6 at all).
IPV6_CONF = pathlib.Path("/proc/sys/net/ipv6/conf")
# addr_gen_mode 1 is "none": no link-local address, hence no DAD, no router solicitation.
_QUIET_IPV6 = {"addr_gen_mode": "1", "accept_ra": "0", "autoconf": "0"}

# Slack above the MTU for one read: with IFF_NO_PI the kernel never hands out
# more than the MTU, but a larger buffer costs nothing and avoids truncation if
# the MTU is raised behind our back.
_READ_SLACK = 256


def _check_mtu(mtu: int) -> None:
    if not 68 <= mtu <= 65535:
        raise ValueError(f"TUN MTU must be within 68..65535, not {mtu}")


def _quiet_ipv6(name: str, conf: pathlib.Path = IPV6_CONF) -> None:
    """No IPv6 address or autoconfiguration on the (still down) device ``name``; a
    failure is a warning (the device works all the same, only chattier)."""
    if not (conf / name).is_dir():
        return                          # no IPv6 on this host or device
    try:
        for key, value in _QUIET_IPV6.items():
            (conf / name / key).write_text(value)
    except OSError as exc:
        log.warning("cannot turn off IPv6 autoconfiguration on %s: %s", name, exc)


def enable_ipv6(name: str, conf: pathlib.Path = IPV6_CONF) -> bool:
    """Let the device ``name`` carry IPv6 routes: True when it can (its own disable_ipv6
    is cleared if set; that setting goes with the device), False when the host has IPv6
    off (no IPv6 at all, or disabled for new interfaces and on every existing one but
    loopback): then there is no IPv6 to route. Raises OSError when the host has IPv6 but
    the device cannot take it."""
    if not conf.is_dir() or _host_ipv6_off(name, conf):
        return False
    if not (conf / name).is_dir():
        raise OSError(errno.ENODEV, f"{name} has no IPv6 (is its MTU below 1280?)")
    setting = conf / name / "disable_ipv6"
    if setting.read_text().strip() != "0":
        setting.write_text("0")
    return True


def _host_ipv6_off(name: str, conf: pathlib.Path) -> bool:
    """IPv6 disabled for new interfaces and on all but loopback and ``name``."""
    def disabled(entry: str) -> bool:
        try:
            return (conf / entry / "disable_ipv6").read_text().strip() != "0"
        except OSError:                 # the interface went away meanwhile
            return True
    others = [p.name for p in conf.iterdir() if p.name not in ("all", "default", "lo", name)]
    return disabled("default") and all(disabled(other) for other in others)


class TunDevice(typing.Protocol):
    """A TUN device carrying raw IPv4/IPv6 packets, no packet-info header."""

    name: str
    mtu: int

    def fileno(self) -> int:
        """A file descriptor that is readable while packets are waiting."""

    def read(self) -> bytes | None:
        """One packet, or None when nothing is waiting (never blocks)."""

    def write(self, packet: bytes) -> None:
        """Hand one packet to the host's IP stack."""

    def set_mtu(self, mtu: int) -> None:
        """Change the device's MTU (a resumed session may push another one).
        Raises OSError when the device refuses it."""

    def close(self) -> None:
        """Release the device; idempotent."""

    def tcp_fast_path(self) -> typing.Any:
        """A ``client.bpf`` offload (add/remove/counters/close) rewriting established TCP
        flows of this device in the kernel. Blocking (netlink): call it off the event loop.
        Raises OSError when the fast path is not available."""


class KernelTun:
    """A real, non-persistent TUN device, up and with the given MTU.

    Needs CAP_NET_ADMIN. `name` may contain "%d" for the kernel to pick a
    free number; the attribute holds the name actually given.
    """

    def __init__(self, name: str = "tg%d", mtu: int = 65000) -> None:
        import pytun  # imported here so the fake works without the C module

        _check_mtu(mtu)
        self._dev = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        try:
            self._dev.persist(False)
            self._dev.mtu = mtu
            _quiet_ipv6(self._dev.name)
            self._dev.up()
            fd = self._dev.fileno()
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        except BaseException:
            self._dev.close()
            raise
        self._fd = fd
        self._bufsize = mtu + _READ_SLACK
        self.name: str = self._dev.name
        self.mtu = mtu
        self._closed = False

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bytes | None:
        try:
            return os.read(self._fd, self._bufsize)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        os.write(self._fd, packet)

    def set_mtu(self, mtu: int) -> None:
        _check_mtu(mtu)
        self._dev.mtu = mtu             # SIOCSIFMTU; pytun.Error is an OSError
        self.mtu = mtu
        self._bufsize = mtu + _READ_SLACK

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._dev.close()

    def tcp_fast_path(self):
        from client.bpf.offload import KernelOffload

        offload = KernelOffload.create()
        try:
            offload.attach(self.name)
        except BaseException:
            offload.close()
            raise
        return offload

    def __repr__(self) -> str:
        return f"KernelTun(name={self.name!r}, mtu={self.mtu})"


class MemoryTun:
    """In-memory TUN for tests.

    `inject(packet)` queues a packet as if the host had sent it into the
    tunnel; `read()` returns queued packets in order. Packets the engine
    writes are appended to `written`.
    """

    def __init__(self, name: str = "memtun0", mtu: int = 65000, fast_path=None) -> None:
        self.name = name
        self.mtu = mtu
        self.fast_path = fast_path      #: what tcp_fast_path() returns (e.g. a MemoryOffload)
        self.written: list[bytes] = []
        self._queue: collections.deque[bytes] = collections.deque()
        # The pipe holds one byte while the queue is non-empty: level-triggered
        # readiness, like the kernel device.
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False

    def fileno(self) -> int:
        self._check_open()
        return self._rfd

    def inject(self, packet: bytes) -> None:
        """Queue a packet for read(), as if a local application had sent it."""
        self._check_open()
        if not self._queue:
            os.write(self._wfd, b"\x01")
        self._queue.append(bytes(packet))

    def read(self) -> bytes | None:
        self._check_open()
        if not self._queue:
            return None
        packet = self._queue.popleft()
        if not self._queue:
            os.read(self._rfd, 1)
        return packet

    def write(self, packet: bytes) -> None:
        self._check_open()
        self.written.append(bytes(packet))

    def set_mtu(self, mtu: int) -> None:
        """Sets ``mtu``, which tests read to see what the engine asked for."""
        self._check_open()
        _check_mtu(mtu)
        self.mtu = mtu

    def tcp_fast_path(self):
        if self.fast_path is None:
            raise OSError(errno.EOPNOTSUPP, "an in-memory TUN has no kernel fast path")
        return self.fast_path

    @property
    def pending(self) -> int:
        """Number of injected packets not read yet."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.clear()
            os.close(self._rfd)
            os.close(self._wfd)

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"{self.name} is closed")

    def __repr__(self) -> str:
        return f"MemoryTun(name={self.name!r}, pending={len(self._queue)}, written={len(self.written)})"
