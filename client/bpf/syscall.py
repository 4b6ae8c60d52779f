"""The bpf(2) system call through ctypes: maps, program load, element access, test runs.

Theory of operation. bpf(2) takes a command and a pointer to ``union
bpf_attr``; each command reads its own leading fields of the union. We pack
those fields with ``struct`` into a zeroed buffer (the kernel insists that
bytes it does not know are zero) and pass the buffer's address. Pointers
inside the attribute (keys, values, instructions, the verifier log) point
into ctypes buffers that stay referenced for the duration of the call.

Errors come back as ``OSError`` with the errno; a program the verifier
rejects raises ``VerifierError`` carrying the verifier's log. File
descriptors are plain ints owned by the caller (``os.close``), with
close-on-exec set by the kernel for every bpf fd.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

#: bpf(2) syscall numbers by machine (uname -m).
_SYSCALL_NUMBERS = {"x86_64": 321, "aarch64": 280, "arm64": 280}

MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM = 0, 1, 2, 3
PROG_LOAD, PROG_TEST_RUN = 5, 10

MAP_TYPE_HASH, MAP_TYPE_ARRAY = 1, 2
PROG_TYPE_SCHED_CLS = 3
F_NO_PREALLOC = 1
ANY = 0                       # BPF_ANY: create or update

_ATTR_SIZE = 128              # covers every field we use; the rest stays zero
_LOG_SIZE = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class VerifierError(OSError):
    """The kernel refused to load a program; ``log`` holds the verifier's explanation."""

    def __init__(self, errno_: int, log: str) -> None:
        super().__init__(errno_, f"{os.strerror(errno_)}; verifier log:\n{log.strip()}")
        self.log = log


def _number() -> int:
    machine = platform.machine()
    try:
        return _SYSCALL_NUMBERS[machine]
    except KeyError:
        raise OSError(38, f"bpf(2) is not wired up for machine {machine!r}") from None


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    result = _libc.syscall(_number(), cmd, ctypes.byref(attr), len(attr))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf command {cmd}: {os.strerror(err)}")
    return result


def _attr(fmt: str, *fields) -> ctypes.Array:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, attr, 0, *fields)
    return attr


def _addr(buf) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, name: str = "") -> int:
    """A new map; returns its fd."""
    attr = _attr("=IIIIIII16s", map_type, key_size, value_size, max_entries, flags, 0, 0,
                 name.encode()[:15])
    return _bpf(MAP_CREATE, attr)


def prog_load(prog_type: int, insns: bytes, license: str = "GPL", name: str = "") -> int:
    """Load a program (``insns`` as encoded by ``asm.Program``); returns its fd.

    Raises VerifierError with the verifier's log when the kernel rejects the program.
    """
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr = _attr("=IIQQIIQII16s", prog_type, len(insns) // 8, _addr(code), _addr(lic),
                 1, _LOG_SIZE, _addr(log), 0, 0, name.encode()[:15])
    try:
        return _bpf(PROG_LOAD, attr)
    except OSError as exc:
        text = log.value.decode(errors="replace")
        if text:
            raise VerifierError(exc.errno, text) from None
        raise


def _elem(cmd: int, map_fd: int, key: bytes, value, flags: int = 0) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key))
    attr = _attr("=IIQQQ", map_fd, 0, _addr(kbuf), _addr(value), flags)
    _bpf(cmd, attr)


def map_update(map_fd: int, key: bytes, value: bytes, flags: int = ANY) -> None:
    """Create or replace the element ``key``."""
    _elem(MAP_UPDATE_ELEM, map_fd, key, ctypes.create_string_buffer(value, len(value)), flags)


def map_delete(map_fd: int, key: bytes) -> bool:
    """Delete the element ``key``; False if there was none."""
    try:
        _elem(MAP_DELETE_ELEM, map_fd, key, None)
    except OSError as exc:
        if exc.errno == 2:      # ENOENT
            return False
        raise
    return True


class MapElements:
    """Fast create/replace and delete of one map's elements, for a hot path.

    The attribute and the key and value buffers are made once and refilled
    per call, instead of three buffers and a pack per call as in
    ``map_update``. Not thread-safe: one user at a time (the event loop).
    """

    def __init__(self, map_fd: int, key_size: int, value_size: int) -> None:
        self._key = ctypes.create_string_buffer(key_size)
        self._value = ctypes.create_string_buffer(value_size)
        self._update = _attr("=IIQQQ", map_fd, 0, _addr(self._key), _addr(self._value), ANY)
        self._delete = _attr("=IIQQQ", map_fd, 0, _addr(self._key), 0, 0)
        self._update_ref, self._delete_ref = ctypes.byref(self._update), ctypes.byref(self._delete)
        self._number = _number()

    def update(self, key: bytes, value: bytes) -> None:
        """Create or replace the element ``key``; OSError if the kernel refuses."""
        self._key.raw, self._value.raw = key, value
        if _libc.syscall(self._number, MAP_UPDATE_ELEM, self._update_ref, _ATTR_SIZE) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"bpf map update: {os.strerror(err)}")

    def delete(self, key: bytes) -> bool:
        """Delete the element ``key``; False if there was none."""
        self._key.raw = key
        if _libc.syscall(self._number, MAP_DELETE_ELEM, self._delete_ref, _ATTR_SIZE) < 0:
            err = ctypes.get_errno()
            if err == 2:        # ENOENT
                return False
            raise OSError(err, f"bpf map delete: {os.strerror(err)}")
        return True


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value of ``key``, or None if there is none."""
    out = ctypes.create_string_buffer(value_size)
    try:
        _elem(MAP_LOOKUP_ELEM, map_fd, key, out)
    except OSError as exc:
        if exc.errno == 2:
            return None
        raise
    return out.raw


def prog_test_run(prog_fd: int, data: bytes, out_size: int = 70000) -> tuple[int, bytes]:
    """Run a program once on ``data`` (for SCHED_CLS: an Ethernet frame); returns the
    program's return value and the packet as it left the program."""
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(out_size)
    attr = _attr("=IIIIQQII", prog_fd, 0, len(data), out_size, _addr(din), _addr(dout), 1, 0)
    _bpf(PROG_TEST_RUN, attr)
    retval, _, size_out = struct.unpack_from("=III", attr, 4)
    return retval, dout.raw[:size_out]
