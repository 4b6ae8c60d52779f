"""Scenario: how TCP connections end through the real tunnel (root only).

An app that half-closes (FIN, then keeps reading) must get the whole answer,
also when it reads it only long after, past the minute a closed flow's NAT
slot is held.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.lab import topology as topo
from tests.lab.tunnel import Tunnel

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def tunnel(lab, tmp_path_factory):
    """The gateway up; each test connects its own client."""
    tunnel = Tunnel(lab=lab, workdir=tmp_path_factory.mktemp("tunnel"))
    tunnel.start_gateway(tcp_ports=["9000-9100"])
    yield tunnel
    tunnel.stop_gateway()


HALF_CLOSE_SERVER = textwrap.dedent("""
    import socket, sys
    srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("listening", flush=True)
    conn, _ = srv.accept()
    data = b""
    while chunk := conn.recv(65536):       # read until the client's FIN
        data += chunk
    conn.sendall(b"got %d bytes after your FIN\\n" % len(data))
    conn.close()
""")

HALF_CLOSE_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.sendall(b"x" * 100000)
    s.shutdown(socket.SHUT_WR)             # FIN, but keep reading
    reply = b""
    while chunk := s.recv(65536):
        reply += chunk
    print(reply.decode().strip())
""")


def serve_and_ask(lab, tunnel, server_source: str, client_source: str, port: int,
                  *client_args: str, timeout: float = 30) -> str:
    """Run a one-connection server in the intranet and its app in the client namespace,
    through a fresh client; the app's output."""
    server = lab.popen(lab.intranet, [sys.executable, "-c", server_source,
                                      str(topo.INTRANET_HOST), str(port)], stdout=subprocess.PIPE,
                       text=True)
    assert server.stdout.readline().strip() == "listening"
    client = tunnel.connect()
    try:
        return lab.run(lab.client, [sys.executable, "-c", client_source, str(topo.INTRANET_HOST),
                                    str(port), *client_args], timeout=timeout).stdout.strip()
    finally:
        client.stop()
        server.wait(10)


def test_half_close_carries_the_fin_and_the_reply_after_it(lab, tunnel):
    """The app's FIN reaches the server as EOF while the way back stays open for the reply."""
    answer = serve_and_ask(lab, tunnel, HALF_CLOSE_SERVER, HALF_CLOSE_CLIENT, 9050)
    assert answer == "got 100000 bytes after your FIN"


SLOW_READER_SERVER = textwrap.dedent("""
    import socket, sys
    srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("listening", flush=True)
    conn, _ = srv.accept()
    while conn.recv(65536):                # the request, up to the app's FIN
        pass
    conn.sendall(bytes(range(256)) * 8192) # 2 MiB, then close
    conn.close()
""")

SLOW_READER_CLIENT = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # the rest waits on the far side
    s.settimeout(20)
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.sendall(b"GET /big\\n")
    s.shutdown(socket.SHUT_WR)
    time.sleep(float(sys.argv[3]))
    reply = b""
    try:
        while chunk := s.recv(65536):
            reply += chunk
    except TimeoutError:
        print("stalled after %d bytes" % len(reply))
    else:
        print("intact" if reply == bytes(range(256)) * 8192 else "corrupt %d bytes" % len(reply))
""")


def test_half_closed_answer_still_arrives_after_the_app_paused_past_the_linger(lab, tunnel):
    """An app that half-closes, then reads its 2 MiB answer only after 65 s (past the 60 s
    a closed flow's mapping lingers) still gets all of it: the flow is held while its
    last bytes wait in the client's socket."""
    answer = serve_and_ask(lab, tunnel, SLOW_READER_SERVER, SLOW_READER_CLIENT, 9051, "65",
                           timeout=120)
    assert answer == "intact"
