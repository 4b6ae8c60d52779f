"""The eBPF instruction encoder."""

from __future__ import annotations

import struct

import pytest

from client.bpf import asm


def test_encoding_registers_offsets_and_immediates():
    """Each instruction is opcode, dst | src << 4, signed offset, signed immediate (little-endian)."""
    p = asm.Program()
    p.mov(asm.R2, -40)
    p.load(2, asm.R1, asm.R10, -34)
    p.load_map_fd(asm.R1, 7)
    code = p.assemble()
    assert struct.unpack("<BBhi", code[:8]) == (0xB7, 0x02, 0, -40)
    assert struct.unpack("<BBhi", code[8:16]) == (0x69, 0xA1, -34, 0)
    assert struct.unpack("<BBhi", code[16:24]) == (0x18, 0x11, 0, 7)   # LD_IMM64, BPF_PSEUDO_MAP_FD
    assert code[24:32] == bytes(8)


def test_jumps_resolve_forward_labels_and_reject_unknown_ones():
    """A jump's offset counts the slots between it and its label (LD_IMM64 takes two)."""
    p = asm.Program()
    p.jump(asm.JEQ, asm.R0, 0, "out")
    p.load_map_fd(asm.R1, 3)
    p.label("out")
    p.exit()
    assert struct.unpack("<BBhi", p.assemble()[:8]) == (0x15, 0x00, 2, 0)
    p.goto("nowhere")
    with pytest.raises(ValueError):
        p.assemble()
