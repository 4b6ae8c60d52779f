"""Both ends of a reflected flow for the reflector's tests: a ``Reflector`` on the lab's
addresses, segments from the app and from the listener, and a flow opened and accepted."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from client.reflector import Reflector
from tests.client.packets import ACK, SYN, tcp_packet

L, N, LP = "10.77.0.1", "10.77.0.254", 4321      # TUN address, fake source, listener port
A, D = "10.77.0.1", "192.168.5.9"                # the app's source is the TUN address


def make(**kw) -> Reflector:
    """A reflector with one listener, LP on L, and fake source N."""
    return Reflector(tun_address=IPv4Address(L), fake_address=IPv4Address(N), listener_port=LP, **kw)


def app(flags=ACK, sport=40000, dst=D, dport=80, **kw) -> bytes:
    """A segment from the app, A:sport -> D:dport."""
    return tcp_packet(src=A, dst=dst, sport=sport, dport=dport, flags=flags, **kw)


def kernel(nat_port, flags=ACK, **kw) -> bytes:
    """A segment from the listener, L:lp -> N:np."""
    return tcp_packet(src=L, dst=N, sport=LP, dport=nat_port, flags=flags, **kw)


def open_flow(r: Reflector, now=0.0, **kw) -> int:
    """Send a SYN, accept it, return the NAT port."""
    assert r.from_tun(app(SYN, **kw), now) is None
    (event,) = r.pop_events()
    assert r.accept_flow(event.nat_port, now) is not None
    return event.nat_port


def four(src, dst, sport, dport) -> bytes:
    """A four-tuple as the fast path keys it (12 bytes)."""
    return IPv4Address(src).packed + IPv4Address(dst).packed + struct.pack("!HH", sport, dport)
