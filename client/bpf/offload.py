"""The in-kernel fast path for established TCP flows: its maps, its program, its attachment.

Theory of operation. ``KernelOffload.create()`` makes two maps -- the flow
hash map (12-byte four-tuple -> replacement four-tuple and checksum diffs)
and a one-slot array of packet/byte counters -- assembles the reflection
program (``reflect_prog``) against them and loads it. ``attach(ifname)`` adds
a clsact qdisc to the TUN and the program as a direct-action bpf filter on its
egress hook. The reflector then calls ``add`` for both legs of a flow when the
gateway accepts it and ``remove`` when it forgets the flow; from then on the
kernel rewrites and re-injects the flow's segments itself, and only what the
map does not know reaches the TUN's reader.

Nothing needs undoing on the host: the filter and qdisc go with the TUN,
which is deleted on disconnect, and the maps and program go when their fds
are closed (``close()``, or the process ending).

``MemoryOffload`` is the fake beside it: a dict, for the reflector's tests.
``offload_enabled()`` reads ``TUNNELGATE_BPF`` (``0`` forces the Python path).
"""

from __future__ import annotations

import logging
import os

from client import packet as pk
from client.bpf import reflect_prog, syscall

log = logging.getLogger(__name__)

#: Egress hook of the clsact qdisc (TC_H_CLSACT:TC_H_MIN_EGRESS).
_EGRESS_PARENT = "ffff:fff3"
#: Two entries per flow; the NAT port range holds at most 55536 flows.
DEFAULT_MAX_ENTRIES = 131072
ENV = "TUNNELGATE_BPF"


def offload_enabled(environ=os.environ) -> bool:
    """False when ``$TUNNELGATE_BPF`` is ``0`` / ``no`` / ``off`` / ``false`` (force the Python path)."""
    return environ.get(ENV, "1").strip().lower() not in ("0", "no", "off", "false")


def value_for(rewrite: pk.Rewrite) -> bytes:
    """The flow map value of a ``packet.Rewrite``.

    ``Rewrite`` holds deltas to add to checksum *fields*; the kernel helpers add
    differences to the *sum*, which is the same change negated. The address part is
    ``ip_delta``; the port part is what the TCP delta adds beyond it.
    """
    addr_diff = -rewrite.ip_delta
    port_diff = rewrite.ip_delta - rewrite.tcp_delta
    return reflect_prog.flow_value(rewrite.four_tuple, addr_diff, port_diff)


class KernelOffload:
    """The loaded program and its maps; see the module docstring."""

    def __init__(self, flows_fd: int, counters_fd: int, prog_fd: int) -> None:
        self.flows_fd = flows_fd
        self.counters_fd = counters_fd
        self.prog_fd = prog_fd
        self._flows = syscall.MapElements(flows_fd, reflect_prog.KEY_SIZE, reflect_prog.VALUE.size)
        self.flows_added = 0
        self.add_failures = 0
        self._closed = False

    @classmethod
    def create(cls, *, l3_offset: int = 0, max_entries: int = DEFAULT_MAX_ENTRIES) -> "KernelOffload":
        """Make the maps and load the program. Raises OSError (``syscall.VerifierError``
        when the verifier refuses the program) if BPF is not available here."""
        fds: list[int] = []
        try:
            fds.append(syscall.map_create(syscall.MAP_TYPE_HASH, reflect_prog.KEY_SIZE,
                                          reflect_prog.VALUE.size, max_entries,
                                          syscall.F_NO_PREALLOC, "tg_flows"))
            fds.append(syscall.map_create(syscall.MAP_TYPE_ARRAY, 4, reflect_prog.COUNTERS.size, 1,
                                          0, "tg_counters"))
            code = reflect_prog.build(fds[0], fds[1], l3_offset)
            # None of the helpers used is GPL-only; the licence string is still required.
            fds.append(syscall.prog_load(syscall.PROG_TYPE_SCHED_CLS, code, "GPL", "tg_reflect"))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(*fds)

    def attach(self, ifname: str) -> None:
        """Run the program on ``ifname``'s tc egress (blocking netlink calls: run off the
        event loop, like the route changes). Raises OSError on failure."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        with IPRoute() as ipr:
            try:
                (index,) = ipr.link_lookup(ifname=ifname)
                ipr.tc("add", "clsact", index)
                ipr.tc("add-filter", "bpf", index, ":1", fd=self.prog_fd, name="tg_reflect",
                       parent=_EGRESS_PARENT, classid=1, direct_action=True)
            except NetlinkError as exc:
                raise OSError(exc.code, f"cannot attach the BPF program to {ifname}: {exc}") from None
            except ValueError:
                raise OSError(19, f"no interface named {ifname}") from None

    # -- the reflector's FlowOffload interface ------------------------------------------------
    def add(self, four_tuple: bytes, rewrite: pk.Rewrite) -> bool:
        """Rewrite packets of ``four_tuple`` in the kernel from now on; False if the map refused."""
        try:
            self._flows.update(four_tuple, value_for(rewrite))
        except OSError as exc:
            self.add_failures += 1
            if self.add_failures == 1:
                log.warning("cannot offload a TCP flow to the kernel (%s); it stays in Python", exc)
            return False
        self.flows_added += 1
        return True

    def remove(self, four_tuple: bytes) -> None:
        """Stop rewriting ``four_tuple`` in the kernel (no error if it was not there)."""
        try:
            self._flows.delete(four_tuple)
        except OSError as exc:
            log.warning("cannot remove an offloaded TCP flow from the kernel map: %s", exc)

    # -- counters and cleanup ----------------------------------------------------------------
    def counters(self) -> tuple[int, int]:
        """Packets and bytes the kernel has rewritten so far."""
        if self._closed:
            return 0, 0
        raw = syscall.map_lookup(self.counters_fd, bytes(4), reflect_prog.COUNTERS.size)
        return reflect_prog.COUNTERS.unpack(raw) if raw else (0, 0)

    def close(self) -> None:
        """Close the program and map fds (the kernel frees them once detached); idempotent."""
        if not self._closed:
            self._closed = True
            for fd in (self.prog_fd, self.counters_fd, self.flows_fd):
                os.close(fd)


class MemoryOffload:
    """The in-memory fake: ``entries`` maps each offloaded four-tuple to its Rewrite."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.entries: dict[bytes, pk.Rewrite] = {}
        self.refuse = refuse    #: make every add() fail, like a full map

    def add(self, four_tuple: bytes, rewrite: pk.Rewrite) -> bool:
        if self.refuse:
            return False
        self.entries[four_tuple] = rewrite
        return True

    def remove(self, four_tuple: bytes) -> None:
        self.entries.pop(four_tuple, None)

    def counters(self) -> tuple[int, int]:
        """Nothing is rewritten in memory: always (0, 0)."""
        return 0, 0

    def close(self) -> None:
        """Nothing to release."""
