"""Bridge between one local TCP socket and one tunnel stream.

Used on both ends: the client pipes the locally accepted (reflected) socket
into its CONNECT stream, the gateway pipes its connection to the intranet
host into the same stream. Backpressure is end to end: when the stream's
queue is over ``HIGH`` the socket stops being read; when the socket's write
buffer is full the peer's payload is not credited back, so the peer's window
closes and it stops sending.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import logging
import socket
import struct
import termios
import time
import typing

from client.wire.link import Link

log = logging.getLogger(__name__)

HIGH = 1024 * 1024
NO_ERROR = 0x0


class StreamPipe(asyncio.Protocol):
    """Moves bytes between a socket transport and a stream, both ways.

    The stream may deliver data before the socket exists (a server that
    speaks first); it is kept, uncredited, until the socket is attached.
    """

    def __init__(self, link: Link, stream_id: int | None = None, *,
                 on_done: typing.Callable[["StreamPipe"], None] | None = None) -> None:
        self.link = link
        self._fd = -1          # the socket's descriptor, to notice a FIN right behind the data
        self.stream_id = stream_id
        self.transport: asyncio.Transport | None = None
        self.bytes_up = 0      # socket -> stream
        self.bytes_down = 0    # stream -> socket
        self.started = time.monotonic()
        self.last_active = self.started
        self.error: str | None = None
        self._on_done = on_done
        self._early: list[tuple[bytes, int]] = []
        self._unacked = 0
        self._write_paused = False
        self._read_paused = False
        self._local_eof = False
        self._remote_eof = False
        self._done = False

    def attach_stream(self, stream_id: int) -> None:
        """Bind to a stream and start receiving its events."""
        self.stream_id = stream_id
        self.link.register(stream_id, self)

    # -- socket side (asyncio.Protocol) ---------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=HIGH)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        early, self._early = self._early, []
        if early and self._remote_eof:
            self.expect_end()
        for data, flow_length in early:
            self.on_data(data, flow_length)
        if self._remote_eof:
            self._remote_eof = False
            self.on_end()
        if self._done:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.bytes_up += len(data)
        self.last_active = time.monotonic()
        sid = self.stream_id
        # A peer that writes and closes sends its FIN right behind the data:
        # pass both in one frame, so the far end gets them in one segment.
        end = eof_pending(self._fd)
        if end:
            self._local_eof = True
        self.link.send(sid, data, end=end)
        if self.link.buffered(sid) > HIGH and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        if not self._local_eof:
            self._local_eof = True
            if self.link.is_open:
                self.link.end(self.stream_id)
        if self._remote_eof:
            self._both_ended()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done:
            return
        if exc is not None:
            self.error = str(exc)
        clean = exc is None and self._local_eof and self._remote_eof
        if not clean and self.stream_id is not None and self.link.is_open:
            self.link.reset(self.stream_id)
        self._finish()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._unacked:
            n, self._unacked = self._unacked, 0
            self.link.consumed(self.stream_id, n)

    # -- stream side (StreamHandler) --------------------------------------------
    def on_response(self, status: int, headers: dict[str, str], ended: bool) -> None:
        pass

    def expect_end(self) -> None:
        """The stream ends right after the next payload: hold it for the FIN (TCP_CORK)."""
        if self.transport is not None and not self.transport.is_closing():
            sock = self.transport.get_extra_info("socket")
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            except OSError:
                pass    # only a missed coalescing, never lost data: the FIN pushes it out

    def on_data(self, data: bytes, flow_length: int) -> None:
        if self.transport is None:
            self._early.append((data, flow_length))
            return
        if self.transport.is_closing():
            self.link.consumed(self.stream_id, flow_length)
            return
        self.bytes_down += len(data)
        self.last_active = time.monotonic()
        self.transport.write(data)
        if self._write_paused:
            self._unacked += flow_length
        else:
            self.link.consumed(self.stream_id, flow_length)

    def on_end(self) -> None:
        if self.transport is None:
            self._remote_eof = True
            return
        self._remote_eof = True
        if self._local_eof:
            self._both_ended()
        elif not self.transport.is_closing():
            self.transport.write_eof()

    def on_reset(self, error_code: int) -> None:
        if error_code == NO_ERROR and self._remote_eof and not self._done:
            # The peer finished its side and then asks us to stop sending (RFC 9113 8.1;
            # Go's server does so whenever its handler returns first). What it sent stands:
            # the socket keeps that payload and the FIN behind it (a RST would throw away
            # what is still buffered). What the app sends now is dropped with the stream;
            # its own FIN ends the flow. Keep reading: closing on unread bytes is a RST.
            self.on_writable()
            self.link.register(self.stream_id, self)    # so that the session's end still ends it
            return
        if self.transport is not None:
            reset_socket(self.transport)
        self._finish()

    def on_writable(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Tear both sides down: RST on the socket, RST_STREAM on the stream."""
        if self.stream_id is not None and self.link.is_open:
            self.link.reset(self.stream_id)
        if self.transport is not None:
            reset_socket(self.transport)
        self._finish()

    def undelivered(self) -> int:
        """Bytes written to the socket that its peer has not acknowledged yet: those still in
        the transport's buffer, and those (and a FIN) in the kernel's send queue. 0 once the
        transport is closing (its descriptor may be gone)."""
        if self.transport is None or self.transport.is_closing():
            return 0
        return self.transport.get_write_buffer_size() + unacknowledged(self._fd)

    def _both_ended(self) -> None:
        """Both directions ended cleanly: close the socket (the kernel still sends what it
        holds) and finish."""
        self.transport.close()
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        # Payload never credited (held while the socket's buffer was full, or kept for a
        # socket that never came) goes back now: withheld, it would shrink the session's
        # connection window for good, until no stream could receive.
        held = self._unacked + sum(flow_length for _, flow_length in self._early)
        self._unacked, self._early = 0, []
        if self.stream_id is not None:
            if held:
                self.link.consumed(self.stream_id, held)
            self.link.unregister(self.stream_id)
        if self._on_done is not None:
            self._on_done(self)


_libc = ctypes.CDLL(None, use_errno=True)
_recv = _libc.recv
_recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_recv.restype = ctypes.c_ssize_t
_PEEK_BUFFER = ctypes.create_string_buffer(1)
_PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT


def eof_pending(fd: int) -> bool:
    """True when the peer's FIN is all that waits on socket ``fd`` (one MSG_PEEK).

    The transport hides its socket's recv(), so this calls the C library's;
    nothing is consumed. -1 (EAGAIN: nothing there, or any error, which the
    transport will see itself) and 1 (more data) both mean no.
    """
    return fd >= 0 and _recv(fd, _PEEK_BUFFER, 1, _PEEK_FLAGS) == 0


_OUTQ = struct.Struct("i")
_OUTQ_ZERO = bytes(_OUTQ.size)


def unacknowledged(fd: int) -> int:
    """Bytes (a FIN counts one) sent or queued on TCP socket ``fd`` that the peer has not
    acknowledged yet (SIOCOUTQ); 0 for a closed descriptor."""
    if fd < 0:
        return 0
    try:
        return _OUTQ.unpack(fcntl.ioctl(fd, termios.TIOCOUTQ, _OUTQ_ZERO))[0]
    except OSError:
        return 0


def reset_socket(transport: asyncio.BaseTransport) -> None:
    """Close a TCP transport with RST instead of FIN (SO_LINGER 0)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
