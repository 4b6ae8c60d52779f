"""The reflection program run by the kernel (BPF_PROG_TEST_RUN) against the Python reflector.

Needs root (or CAP_BPF + CAP_NET_ADMIN) and a kernel with BPF; skipped otherwise.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.bpf import reflect_prog, syscall
from client.bpf.offload import KernelOffload
from client.reflector import Reflector
from tests.client.packets import (ACK, FIN, PSH, RST, SYN, fields, ipv4_ok, tcp_ok, tcp_packet,
                                  udp_packet)

L, N, LP = "198.18.255.253", "198.18.255.254", 4321
A, D = "10.200.0.7", "10.77.0.10"
ETH = bytes(12) + b"\x08\x00"        # test runs see an Ethernet frame: the L3 offset is 14


@pytest.fixture
def kernel():
    try:
        offload = KernelOffload.create(l3_offset=14, max_entries=1024)
    except OSError as exc:
        pytest.skip(f"BPF is not available here: {exc}")
    yield offload
    offload.close()


@pytest.fixture
def pair(kernel):
    """A Python reflector whose flows are offloaded into the test-run program's map."""
    reflector = Reflector(tun_address=IPv4Address(L), fake_address=IPv4Address(N), listener_port=LP,
                          offload=kernel)
    return reflector, kernel


def run(kernel: KernelOffload, packet: bytes) -> tuple[int, bytes]:
    """The program's verdict and the packet (without the Ethernet header) as it left."""
    verdict, out = syscall.prog_test_run(kernel.prog_fd, ETH + packet)
    return verdict, out[14:]


def app(flags=ACK, sport=40000, **kw) -> bytes:
    return tcp_packet(src=A, dst=D, sport=sport, dport=80, flags=flags, **kw)


def from_listener(nat_port, flags=ACK, **kw) -> bytes:
    return tcp_packet(src=L, dst=N, sport=LP, dport=nat_port, flags=flags, **kw)


def open_flow(reflector: Reflector, sport=40000) -> int:
    assert reflector.from_tun(app(SYN, sport=sport), 0.0) is None
    (event,) = reflector.pop_events()
    assert reflector.accept_flow(event.nat_port, 0.0) is not None
    return event.nat_port


def test_forward_and_return_legs_match_the_python_rewrite(pair):
    """Both legs of an accepted flow are rewritten in the kernel byte for byte like in Python."""
    reflector, kernel = pair
    nat_port = open_flow(reflector)
    for packet in (app(ACK, payload=b"GET / HTTP/1.0\r\n\r\n"), app(ACK | FIN), app(RST),
                   from_listener(nat_port, SYN | ACK), from_listener(nat_port, ACK | PSH, payload=b"x" * 999),
                   from_listener(nat_port, ACK, payload=b"odd")):
        verdict, out = run(kernel, packet)
        assert verdict == reflect_prog.TC_ACT_REDIRECT
        assert out == bytes(reflector.from_tun(packet, 1.0))
        assert ipv4_ok(out) and tcp_ok(out)
    assert fields(run(kernel, app(ACK))[1])["dst"] == L
    assert fields(run(kernel, from_listener(nat_port))[1])["src"] == D


def test_counters_count_kernel_rewrites(pair):
    """The packet and byte counters grow with every packet the kernel rewrites."""
    reflector, kernel = pair
    nat_port = open_flow(reflector, sport=40001)
    packets, octets = kernel.counters()
    packet = from_listener(nat_port, payload=b"y" * 100)
    run(kernel, packet)
    assert kernel.counters() == (packets + 1, octets + len(packet))


def test_what_the_map_does_not_cover_passes_unchanged(pair):
    """Bare SYNs, unknown flows, UDP, IPv4 options, fragments, short and padded packets pass."""
    reflector, kernel = pair
    nat_port = open_flow(reflector, sport=40002)
    known = app(ACK, sport=40002)
    padded = known + b"\0" * 6
    truncated = bytearray(known)
    struct.pack_into("!H", truncated, 2, len(known) + 10)
    zero_length = bytearray(known)
    struct.pack_into("!H", zero_length, 2, 0)      # only GSO packets above 64 KB may say 0
    bad_offset = bytearray(known)
    bad_offset[32] = 0x40                      # data offset 4 words
    for packet in (app(SYN, sport=40002), from_listener(nat_port, SYN), app(ACK, sport=40999),
                   udp_packet(src=A, dst=D, sport=40002, dport=80, payload=b"dns?"),
                   app(ACK, sport=40002, ip_options=b"\x01\x01\x01\x01"),
                   app(ACK, sport=40002, frag=0x2000), app(ACK, sport=40002, frag=0x0001),
                   known[:30], padded, bytes(truncated), bytes(zero_length), bytes(bad_offset)):
        verdict, out = run(kernel, packet)
        assert (verdict, out) == (reflect_prog.TC_ACT_OK, packet)
    assert run(kernel, known)[0] == reflect_prog.TC_ACT_REDIRECT


def test_forgotten_and_reused_flows_leave_the_map(pair):
    """Expiry removes both legs; four-tuple reuse removes the old ones before the new flow."""
    reflector, kernel = pair
    nat_port = open_flow(reflector, sport=40003)
    reflector.release(nat_port, 10.0)
    assert run(kernel, app(ACK | FIN, sport=40003))[0] == reflect_prog.TC_ACT_REDIRECT
    assert reflector.from_tun(app(SYN, sport=40003), 11.0) is None      # reuse of the tuple
    assert run(kernel, app(ACK, sport=40003))[0] == reflect_prog.TC_ACT_OK
    assert run(kernel, from_listener(nat_port))[0] == reflect_prog.TC_ACT_OK
    (event,) = reflector.pop_events()
    reflector.accept_flow(event.nat_port, 12.0)
    packet = app(ACK, sport=40003)
    verdict, out = run(kernel, packet)
    assert verdict == reflect_prog.TC_ACT_REDIRECT and fields(out)["sport"] == event.nat_port
    reflector.release(event.nat_port, 13.0)
    assert event.nat_port in reflector.expire(13.0 + 60)
    assert run(kernel, packet)[0] == reflect_prog.TC_ACT_OK


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sport=st.integers(1024, 65535), flags=st.integers(0, 0x3F).filter(lambda f: f & 0x16 != SYN),
       seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
       payload=st.binary(max_size=300), tcp_options=st.binary(max_size=40).map(lambda b: b[:40]),
       back=st.booleans())
def test_any_segment_of_a_flow_matches_python(pair, sport, flags, seq, ack, payload, tcp_options, back):
    """For any non-SYN segment of an offloaded flow, kernel and Python produce the same bytes."""
    reflector, kernel = pair
    nat_port = open_flow(reflector, sport=sport)
    make = (lambda **kw: from_listener(nat_port, **kw)) if back else (lambda **kw: app(sport=sport, **kw))
    packet = make(flags=flags, seq=seq, ack=ack, payload=payload, tcp_options=tcp_options)
    verdict, out = run(kernel, packet)
    assert verdict == reflect_prog.TC_ACT_REDIRECT
    assert out == bytes(reflector.from_tun(packet, 1.0))
    assert ipv4_ok(out) and tcp_ok(out)
    reflector.release(nat_port, 1.0)
    reflector.expire(100.0)
