"""The in-kernel reflection program: NAT of established TCP flows at the TUN's tc egress.

Theory of operation. Packets the kernel sends out of the TUN pass this
program (clsact egress, direct action) before they reach the TUN's reader.
It copies the IPv4 header and the fixed TCP header to the stack, and passes
(``TC_ACT_OK``, so the Python reflector sees the packet as before) anything
that is not a plain case: not IPv4 with IHL 5, not TCP, a fragment, an IPv4
total length that disagrees with the packet (except 0 on a GSO packet larger
than 64 KB, which is how the kernel's "BIG TCP" marks them and how its
receive path reads them again), a TCP header that does not fit,
and every bare SYN (SYN without ACK or RST: new flows and four-tuple reuse are
Python's business). Otherwise bytes 12..24 -- source, destination, source
port, destination port, contiguous when IHL is 5 -- are the key of the flow
map. A miss passes the packet. A hit yields the replacement four-tuple and two
checksum differences, in the kernel's "sum" domain and host byte order:

* ``addr_diff`` (new addresses minus old) is applied to the IPv4 header
  checksum (``bpf_l3_csum_replace``) and, flagged as pseudo-header, to the TCP
  checksum (``bpf_l4_csum_replace`` with ``BPF_F_PSEUDO_HDR``);
* ``port_diff`` is applied to the TCP checksum without that flag.

The split matters for CHECKSUM_PARTIAL skbs (the kernel's own TCP output):
their TCP checksum field holds only the pseudo-header sum and the rest is
summed later, so the helper applies pseudo-header changes and rightly ignores
the ports; for a complete checksum both are applied. Then the 12 bytes are
stored, a global packet/byte counter is bumped, and the packet is redirected
to the TUN's own ingress (``bpf_redirect(skb->ifindex, BPF_F_INGRESS)``), as if
the reflector had written it back into the TUN. A helper failure after the
first change drops the packet (TCP retransmits) rather than send a half
rewritten one.

``l3_offset`` is where the IPv4 header starts: 0 on the TUN (no link
header), 14 under BPF_PROG_TEST_RUN, which hands SCHED_CLS programs an
Ethernet frame.
"""

from __future__ import annotations

import struct
import sys

from client.bpf import asm
from client.bpf.asm import R0, R1, R2, R3, R4, R5, R6, R7, R8, R10

# Helper function ids (uapi/linux/bpf.h, __BPF_FUNC_MAPPER order).
MAP_LOOKUP_ELEM, SKB_STORE_BYTES, L3_CSUM_REPLACE, L4_CSUM_REPLACE = 1, 9, 10, 11
REDIRECT, SKB_LOAD_BYTES = 23, 26
F_PSEUDO_HDR, F_INGRESS = 0x10, 0x01
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7

SKB_LEN, SKB_IFINDEX, SKB_GSO_SIZE = 0, 40, 176       # offsets in struct __sk_buff

KEY_SIZE = 12
#: Map value: new four-tuple, address diff (u32), port diff (u32), host byte order.
VALUE = struct.Struct("=12sII")
#: Counter map value: packets, bytes (u64 each).
COUNTERS = struct.Struct("=QQ")

_HEADERS = 40                         # IPv4 header (IHL 5) + fixed TCP header
_SYN, _RST, _ACK = 0x02, 0x04, 0x10


def _host_order(value: int) -> int:
    """A 16-bit ones' complement value (network order) as the kernel's native-load sum sees it."""
    return int.from_bytes(value.to_bytes(2, "big"), sys.byteorder)


def flow_value(new_four_tuple: bytes, addr_diff: int, port_diff: int) -> bytes:
    """The map value for a flow: replacement four-tuple and sum-domain diffs (network order ints)."""
    if len(new_four_tuple) != KEY_SIZE:
        raise ValueError("a four-tuple is 12 bytes")
    return VALUE.pack(new_four_tuple, _host_order(addr_diff % 0xFFFF), _host_order(port_diff % 0xFFFF))


def build(flows_fd: int, counters_fd: int, l3_offset: int = 0) -> bytes:
    """The program, encoded, for the given map fds (see the module docstring)."""
    L = l3_offset
    p = asm.Program()
    hdr = -_HEADERS                                    # the headers live at fp-40 .. fp-1
    p.mov_reg(R6, R1)                                  # r6 = skb
    p.mov(R2, L)
    p.mov_reg(R3, R10)
    p.alu(asm.ADD, R3, hdr)
    p.mov(R4, _HEADERS)
    p.call(SKB_LOAD_BYTES)                             # fails on a packet shorter than 40 bytes
    p.jump(asm.JNE, R0, 0, "pass")
    p.load(1, R1, R10, hdr + 0)                        # version / IHL
    p.jump(asm.JNE, R1, 0x45, "pass")
    p.load(1, R1, R10, hdr + 9)                        # protocol
    p.jump(asm.JNE, R1, 6, "pass")
    p.load(2, R1, R10, hdr + 6)                        # flags / fragment offset
    p.to_be(R1, 16)
    p.alu(asm.AND, R1, 0x3FFF)
    p.jump(asm.JNE, R1, 0, "pass")
    p.load(2, R7, R10, hdr + 2)                        # r7 = total length
    p.to_be(R7, 16)
    p.load(4, R1, R6, SKB_LEN)
    p.alu(asm.SUB, R1, L)
    p.jump_reg(asm.JEQ, R1, R7, "sized")
    p.jump(asm.JNE, R7, 0, "pass")                     # trailing bytes or a truncated packet
    p.load(4, R2, R6, SKB_GSO_SIZE)                    # total length 0: a GSO packet above 64 KB
    p.jump(asm.JEQ, R2, 0, "pass")
    p.mov_reg(R7, R1)
    p.label("sized")
    p.load(1, R1, R10, hdr + 32)                       # TCP data offset
    p.alu(asm.RSH, R1, 4)
    p.alu(asm.LSH, R1, 2)
    p.jump(asm.JLT, R1, 20, "pass")
    p.alu(asm.ADD, R1, 20)
    p.jump_reg(asm.JGT, R1, R7, "pass")
    p.load(1, R1, R10, hdr + 33)                       # TCP flags
    p.alu(asm.AND, R1, _SYN | _RST | _ACK)
    p.jump(asm.JEQ, R1, _SYN, "pass")                  # bare SYN: always Python's
    p.load_map_fd(R1, flows_fd)
    p.mov_reg(R2, R10)
    p.alu(asm.ADD, R2, hdr + 12)                       # key: addresses and ports
    p.call(MAP_LOOKUP_ELEM)
    p.jump(asm.JEQ, R0, 0, "pass")
    p.mov_reg(R8, R0)                                  # r8 = the flow's value
    _csum(p, L3_CSUM_REPLACE, L + 10, 12, 0)
    p.jump(asm.JNE, R0, 0, "pass")                     # nothing changed yet
    _csum(p, L4_CSUM_REPLACE, L + 36, 12, F_PSEUDO_HDR)
    p.jump(asm.JNE, R0, 0, "drop")
    _csum(p, L4_CSUM_REPLACE, L + 36, 16, 0)
    p.jump(asm.JNE, R0, 0, "drop")
    p.mov_reg(R1, R6)
    p.mov(R2, L + 12)
    p.mov_reg(R3, R8)
    p.mov(R4, KEY_SIZE)
    p.mov(R5, 0)
    p.call(SKB_STORE_BYTES)
    p.jump(asm.JNE, R0, 0, "drop")
    p.store_imm(4, R10, hdr - 8, 0)                    # counter key 0
    p.load_map_fd(R1, counters_fd)
    p.mov_reg(R2, R10)
    p.alu(asm.ADD, R2, hdr - 8)
    p.call(MAP_LOOKUP_ELEM)
    p.jump(asm.JEQ, R0, 0, "redirect")
    p.mov(R1, 1)
    p.atomic_add(8, R0, 0, R1)
    p.atomic_add(8, R0, 8, R7)
    p.label("redirect")
    p.load(4, R1, R6, SKB_IFINDEX)
    p.mov(R2, F_INGRESS)
    p.call(REDIRECT)
    p.exit()
    p.label("pass")
    p.mov(R0, TC_ACT_OK)
    p.exit()
    p.label("drop")
    p.mov(R0, TC_ACT_SHOT)
    p.exit()
    return p.assemble()


def _csum(p: asm.Program, helper: int, offset: int, diff_at: int, flags: int) -> None:
    """helper(skb, offset, 0, value[diff_at], flags): size 0 means "add this precomputed diff"."""
    p.mov_reg(R1, R6)
    p.mov(R2, offset)
    p.mov(R3, 0)
    p.load(4, R4, R8, diff_at)
    p.mov(R5, flags)
    p.call(helper)
