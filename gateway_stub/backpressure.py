"""Backpressure towards a client that does not read what the gateway sends.

Theory of operation: the TLS transport calls ``pause_writing`` once its write
buffer passes ``WRITE_HIGH``. Everything that feeds that buffer then stops:
the client's own input (each PING, SETTINGS or reset it sends would queue an
answer) and the reading of every flow's target (TCP sockets stop being read,
UDP sockets stop being polled, so the kernel drops what does not fit, as UDP
does). ``resume_writing`` at a quarter of the mark undoes exactly what was
paused: a socket its pipe had paused itself (its stream's queue was full)
stays paused for the pipe to resume.
"""

from __future__ import annotations

import asyncio

from client.wire.pipe import StreamPipe
from gateway_stub.capsule_stream import CapsuleStream

#: TLS write buffer past which the client counts as not reading.
WRITE_HIGH = 4 * 1024 * 1024


class OutputHold:
    """Pauses a client's input and its flows' targets while its output backs up."""

    def __init__(self, tls: asyncio.Transport) -> None:
        self._tls = tls
        self.active = False
        self._held: list = []          # socket transports and relays paused by us
        tls.set_write_buffer_limits(high=WRITE_HIGH)

    def pause(self, flows) -> None:
        """The client stopped reading: stop its input and every flow in ``flows``."""
        self.active = True
        self._tls.pause_reading()
        for flow in flows:
            self.hold(flow)

    def hold(self, flow: StreamPipe | CapsuleStream) -> None:
        """Stop reading one flow's target (also for flows opened while paused)."""
        if isinstance(flow, CapsuleStream):
            flow.pause_reading()
            self._held.append(flow)
        elif flow.transport is not None and flow.transport.is_reading():
            flow.transport.pause_reading()
            self._held.append(flow.transport)

    def resume(self) -> None:
        """The client reads again: undo what ``pause`` and ``hold`` did."""
        self.active = False
        if not self._tls.is_closing():
            self._tls.resume_reading()
        held, self._held = self._held, []
        for item in held:
            if isinstance(item, CapsuleStream) or not item.is_closing():
                item.resume_reading()
