"""The in-kernel TCP fast path: an eBPF program, assembled and loaded from Python.

See ``offload`` for how it fits together; ``asm`` encodes instructions,
``syscall`` wraps bpf(2), ``reflect_prog`` is the program itself.
"""

from client.bpf.offload import KernelOffload, MemoryOffload, offload_enabled

__all__ = ["KernelOffload", "MemoryOffload", "offload_enabled"]
