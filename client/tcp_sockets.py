"""The kernel's TCP sockets of the TCP path: the reflection listeners, and what the path
asks of a reflected connection's socket (a half-close at once, whether our FIN was
acknowledged). Plain socket calls, no asyncio.
"""

from __future__ import annotations

import socket

#: Backlog of each reflection listener (connections the kernel completed, not yet accepted).
LISTEN_BACKLOG = 4096
#: Reflection listeners: each adds 55 536 local four-tuples, which lets about 900 more
#: new connections per second through, sustained (each four-tuple spends 60 s in TIME_WAIT).
LISTENERS = 8


def bind_listeners(address: str, count: int = LISTENERS) -> list[socket.socket]:
    """``count`` listening sockets on ``address``, each on a port of the kernel's choice.
    Raises OSError (with none left open) when one cannot be bound."""
    listeners: list[socket.socket] = []
    try:
        for _ in range(count):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listeners.append(listener)
            listener.bind((address, 0))
            listener.listen(LISTEN_BACKLOG)
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


#: TCP states (include/net/tcp_states.h) in which our FIN has been acknowledged:
#: FIN_WAIT2, TIME_WAIT, and CLOSE (after LAST_ACK, or the socket's TIME_WAIT moved aside).
_FIN_ACKNOWLEDGED = frozenset((5, 6, 7))


def send_fin(sock) -> None:
    """Half-close TCP socket ``sock`` (a transport's socket) at once: a transport's own
    ``write_eof`` may wait for the loop's next turn (uvloop), and it is the FIN's fate that
    tells whether the flow may go. Nothing happens when it has already gone."""
    raw = socket.socket(fileno=sock.fileno())
    try:
        raw.shutdown(socket.SHUT_WR)
    except OSError:
        pass                    # ENOTCONN: closed already (its FIN acknowledged, or a reset)
    finally:
        raw.detach()


def fin_acknowledged(sock) -> bool:
    """True once the peer has acknowledged our FIN on TCP socket ``sock``, and with it
    every byte before it; True too when the socket cannot say (it is gone)."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] in _FIN_ACKNOWLEDGED
    except OSError:
        return True
