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


def answering_server(blocks: int, pause: float = 0.0) -> str:
    """A one-connection server that reads the request up to the app's FIN, answers
    ``blocks`` x 256 bytes, waits ``pause`` seconds and closes."""
    return textwrap.dedent(f"""
        import socket, sys, time
        srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
        print("listening", flush=True)
        conn, _ = srv.accept()
        while conn.recv(65536):                # the request, up to the app's FIN
            pass
        conn.sendall(bytes(range(256)) * {blocks})
        time.sleep({pause})
        conn.close()
    """)


SLOW_READER_CLIENT = textwrap.dedent("""
    import socket, sys, time
    answer = bytes(range(256)) * int(sys.argv[4])
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
        print("intact" if reply == answer else "corrupt %d bytes" % len(reply))
""")


def test_half_closed_answer_still_arrives_after_the_app_paused_past_the_linger(lab, tunnel):
    """An app that half-closes, then reads its 2 MiB answer only after 65 s (past the 60 s
    a closed flow's mapping lingers) still gets all of it: the flow is held while its
    last bytes wait in the client's socket."""
    answer = serve_and_ask(lab, tunnel, answering_server(8192), SLOW_READER_CLIENT, 9051, "65",
                           "8192", timeout=120)
    assert answer == "intact"


def test_our_fin_reaches_an_app_whose_full_buffer_held_it_back(lab, tunnel):
    """An app that half-closes and reads its answer only after 12 s, when the answer filled
    its buffer: every byte was acknowledged, but its kernel held our FIN back; the flow
    waits for that FIN, so the app still gets its EOF (it used to wait for ever)."""
    # 4 KiB is just what the app's 4 KiB buffer takes; the server closes 1 s later, when
    # all of it has been acknowledged.
    answer = serve_and_ask(lab, tunnel, answering_server(16, pause=1.0), SLOW_READER_CLIENT, 9052,
                           "12", "16", timeout=60)
    assert answer == "intact"
