"""A tiny eBPF assembler: ``struct bpf_insn`` encoding and forward jumps by label.

Theory of operation. An eBPF instruction is 8 bytes: an opcode byte, a byte
holding the destination register (low nibble) and the source register (high
nibble, on the little-endian hosts we support), a signed 16-bit offset and a
signed 32-bit immediate. ``LD_IMM64`` is the one 16-byte instruction; with
``src = BPF_PSEUDO_MAP_FD`` its immediate is a map file descriptor that the
kernel swaps for the map's address at load time.

``Program`` collects instructions; jumps name a label, and ``assemble()``
resolves each to ``off = target - (jump index + 1)`` in instruction slots.
Only what the reflection program needs is here: 64-bit ALU with immediates,
byte-order conversion, loads and stores, atomic add, conditional jumps,
helper calls and exit.
"""

from __future__ import annotations

import struct

_INSN = struct.Struct("<BBhi")

# Instruction classes, sizes and modes (uapi/linux/bpf_common.h, bpf.h).
LD, LDX, ST, STX, ALU, JMP, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
K, X = 0x00, 0x08
ADD, SUB, LSH, RSH, AND, MOV, END = 0x00, 0x10, 0x60, 0x70, 0x50, 0xB0, 0xD0
TO_BE = 0x08
JA, JEQ, JGT, JGE, JNE, JLT, CALL, EXIT = 0x00, 0x10, 0x20, 0x30, 0x50, 0xA0, 0x80, 0x90
PSEUDO_MAP_FD = 1

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
_SIZES = {1: B, 2: H, 4: W, 8: DW}


class Program:
    """An instruction list under construction; see the module docstring."""

    def __init__(self) -> None:
        self._insns: list[list[int]] = []          # [code, dst, src, off, imm]
        self._labels: dict[str, int] = {}
        self._fixups: list[tuple[int, str]] = []

    def _emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self._insns.append([code, dst, src, off, imm])

    def label(self, name: str) -> None:
        """Name the position of the next instruction."""
        if name in self._labels:
            raise ValueError(f"label {name!r} defined twice")
        self._labels[name] = len(self._insns)

    # -- ALU (64-bit) ------------------------------------------------------------------
    def mov(self, dst: int, imm: int) -> None:
        """dst = imm (sign-extended 32-bit immediate)."""
        self._emit(ALU64 | MOV | K, dst, imm=imm)

    def mov_reg(self, dst: int, src: int) -> None:
        """dst = src."""
        self._emit(ALU64 | MOV | X, dst, src)

    def alu(self, op: int, dst: int, imm: int) -> None:
        """dst = dst <op> imm, for ADD, SUB, AND, LSH, RSH."""
        self._emit(ALU64 | op | K, dst, imm=imm)

    def alu_reg(self, op: int, dst: int, src: int) -> None:
        """dst = dst <op> src."""
        self._emit(ALU64 | op | X, dst, src)

    def to_be(self, dst: int, bits: int) -> None:
        """Convert the low ``bits`` of dst between host and network byte order."""
        self._emit(ALU | END | TO_BE, dst, imm=bits)

    # -- memory --------------------------------------------------------------------------
    def load(self, size: int, dst: int, src: int, off: int) -> None:
        """dst = *(uSIZE *)(src + off), zero-extended."""
        self._emit(LDX | MEM | _SIZES[size], dst, src, off)

    def store_imm(self, size: int, dst: int, off: int, imm: int) -> None:
        """*(uSIZE *)(dst + off) = imm."""
        self._emit(ST | MEM | _SIZES[size], dst, off=off, imm=imm)

    def atomic_add(self, size: int, dst: int, off: int, src: int) -> None:
        """*(uSIZE *)(dst + off) += src, atomically (size 4 or 8)."""
        self._emit(STX | ATOMIC | _SIZES[size], dst, src, off, ADD)

    def load_map_fd(self, dst: int, fd: int) -> None:
        """dst = the map behind ``fd`` (LD_IMM64 with BPF_PSEUDO_MAP_FD: two slots)."""
        self._emit(LD | DW | IMM, dst, PSEUDO_MAP_FD, imm=fd)
        self._emit(0, 0, 0, 0, 0)

    # -- control flow ---------------------------------------------------------------------
    def jump(self, op: int, dst: int, imm: int, target: str) -> None:
        """if (dst <op> imm) goto target; op JEQ, JNE, JGT, JGE, JLT (unsigned)."""
        self._fixups.append((len(self._insns), target))
        self._emit(JMP | op | K, dst, imm=imm)

    def jump_reg(self, op: int, dst: int, src: int, target: str) -> None:
        """if (dst <op> src) goto target."""
        self._fixups.append((len(self._insns), target))
        self._emit(JMP | op | X, dst, src)

    def goto(self, target: str) -> None:
        """goto target."""
        self._fixups.append((len(self._insns), target))
        self._emit(JMP | JA)

    def call(self, helper: int) -> None:
        """r0 = helper(r1..r5); r1..r5 are clobbered."""
        self._emit(JMP | CALL, imm=helper)

    def exit(self) -> None:
        """Return r0."""
        self._emit(JMP | EXIT)

    # -- output ---------------------------------------------------------------------------
    def assemble(self) -> bytes:
        """The encoded program; raises ValueError on an unknown label or a jump out of range."""
        insns = [list(i) for i in self._insns]
        for at, target in self._fixups:
            if target not in self._labels:
                raise ValueError(f"jump to undefined label {target!r}")
            off = self._labels[target] - (at + 1)
            if not -0x8000 <= off <= 0x7FFF:
                raise ValueError(f"jump to {target!r} out of range")
            insns[at][3] = off
        out = bytearray()
        for code, dst, src, off, imm in insns:
            out += _INSN.pack(code, (src << 4) | dst, off, imm)
        return bytes(out)

    def __len__(self) -> int:
        return len(self._insns)
