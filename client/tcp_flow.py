"""One flow of the TCP path: a CONNECT stream and, once accepted, the reflected socket.

Theory of operation. A ``TcpFlow`` is made for each held SYN, on the link the
session has then, where its ``TcpPath`` opens the CONNECT stream: every flow
talks to the link it was opened on, not the session's current one. It first
waits for the gateway's answer and reports it to the path, which releases the
SYN or refuses the flow. A 2xx that ends the stream at once (a gateway whose target closed
right away) is an accepted flow whose server side is over: the pipe hands the
app its FIN as soon as the connection arrives. A stream the gateway refused
unprocessed (REFUSED_STREAM) before answering is dropped without a word to the
app, whose SYN retransmission comes back as a new flow.

Once the kernel hands the reflected connection to the path's listener, the
flow is a ``StreamPipe`` between that socket and the stream. When both ways
have ended, our FIN goes at once, and the flow *drains*: it stays (socket
open, not released) until the app has acknowledged everything up to that FIN,
or its socket is gone (see ``TcpFlow._both_ended``).
"""

from __future__ import annotations

import asyncio
import time
import typing

from client.reflector_types import Refusal
from client.tcp_sockets import fin_acknowledged, send_fin
from client.wire.frames import REFUSED_STREAM
from client.wire.pipe import StreamPipe

if typing.TYPE_CHECKING:
    from client.tcp_path import TcpPath


class TcpFlow(StreamPipe):
    """A StreamPipe that first waits for the gateway's answer, and drains at its end.
    It reports to its ``path`` (``flow_answered``, ``refuse``, ``flow_done``, ``flow_drained``)."""

    def __init__(self, path: TcpPath, nat_port: int) -> None:
        super().__init__(path.session.link, on_done=path.flow_done)
        self.path = path
        self.nat_port = nat_port
        self.answered = False
        #: the one pending timer of the flow: waiting for the answer, then for the listener
        self.timer: asyncio.TimerHandle | None = None
        #: ended both ways but not yet delivered: (bytes left, when that last changed)
        self.draining: tuple[int, float] | None = None

    def disarm(self) -> None:
        """Cancel the pending timer (thousands of flows a second must not pile up timers)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def on_response(self, status: int, headers: dict[str, str], ended: bool) -> None:
        self.answered = True
        self.path.flow_answered(self, status, headers.get("proxy-status", ""))

    def on_reset(self, error_code: int) -> None:
        if not self.answered:
            self.answered = True
            self.path.refuse(self, Refusal.HOST_UNREACHABLE,
                             tell_app=error_code != REFUSED_STREAM)
            return
        super().on_reset(error_code)

    def _both_ended(self) -> None:
        # Our socket stands in for the server, and only the reflector's mapping carries its
        # last bytes to the app. When the app ended first (a half-close), those bytes may
        # still wait in our socket while the app reads slowly, and so may our FIN alone: an
        # answer that filled the app's buffer is all acknowledged, but the app's kernel
        # holds back or drops the FIN until the app reads. So the FIN goes now, and unless
        # it is acknowledged at once the socket stays open and the flow is not released
        # until it is (``TcpPath.after_batch``, ``TcpPath.expire``): the mapping would lapse
        # after its settle time, and the app would wait for its EOF for ever.
        transport = self.transport
        if not transport.is_closing():
            if transport.get_write_buffer_size():
                transport.write_eof()           # the FIN follows the buffered bytes
            else:
                send_fin(transport.get_extra_info("socket"))
        if self.delivered():
            super()._both_ended()
            return
        self.draining = (self.undelivered(), time.monotonic())
        self._finish()

    def delivered(self) -> bool:
        """Everything written to the socket, our FIN included, is acknowledged (or the
        socket is closing)."""
        transport = self.transport
        if transport.is_closing():
            return True
        return not transport.get_write_buffer_size() and fin_acknowledged(
            transport.get_extra_info("socket"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.draining is not None:
            self.path.flow_drained(self)
        super().connection_lost(exc)
