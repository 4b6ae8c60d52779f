"""Tests of client.tcp_sockets, on loopback sockets."""

from __future__ import annotations

import socket
import time

import pytest

from client.tcp_sockets import bind_listeners, fin_acknowledged, send_fin


def test_bind_listeners_listens_on_distinct_ports_or_raises():
    """Each listener is bound to the address on a port of its own and takes connections;
    an address that is not the host's is an OSError."""
    listeners = bind_listeners("127.0.0.1", 3)
    try:
        ports = {listener.getsockname()[1] for listener in listeners}
        assert len(ports) == 3
        for port in ports:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        for listener in listeners:
            listener.close()
    with pytest.raises(OSError):
        bind_listeners("192.0.2.1", 2)


def test_send_fin_half_closes_and_fin_acknowledged_follows_it():
    """send_fin ends our side at once (the peer reads EOF, and can still send); our FIN is
    acknowledged only after it went, and a second send_fin or a closed socket is no error."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        peer = socket.create_connection(server.getsockname(), timeout=5)
        ours, _ = server.accept()
    with peer, ours:
        assert not fin_acknowledged(ours)
        send_fin(ours)
        assert peer.recv(16) == b""
        peer.sendall(b"still open")
        assert ours.recv(16) == b"still open"
        deadline = time.monotonic() + 5
        while not fin_acknowledged(ours) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fin_acknowledged(ours)
        send_fin(ours)
    assert fin_acknowledged(ours)
