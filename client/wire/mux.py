"""Sans-IO stream multiplexer for tunnel sessions, on our own lean HTTP/2.

Theory of operation: one ``Mux`` is one end of a session's HTTP/2
connection (``h2conn.Connection``: framing and DATA; its bases
``headers.HeaderFrames`` and ``control.ControlFrames``: the other frames
received, settings among them; their base ``streams.Streams``: stream
bookkeeping and flow control; ``fields``: header blocks through ``hpack``).
Bytes read from the TLS connection go into ``receive()``, which returns a
list of the tunnel's own events (frozen dataclasses from ``events``,
re-exported here); bytes to write come from ``data_to_send()``. Payload
sent on a stream is queued per stream and released only as the peer's
flow-control window allows, so a slow peer slows its own stream down;
``buffered()`` tells the adapter how much is queued so it can stop reading
from the local socket.
Received payload is credited back to the peer only when the adapter calls
``consumed()`` -- after it has handed the bytes on -- which is what makes
per-stream flow control real in both directions.

After the peer's graceful GOAWAY (``GoawayReceived``) the streams it
processed go on; ``request`` raises, since the peer would not process a new one.

A request beyond the peer's SETTINGS_MAX_CONCURRENT_STREAMS is not an error
for the caller: it gets its stream id at once, and its HEADERS (with any
payload queued behind them) go out, in order, as soon as earlier streams
close. ``reset()`` of such a waiting stream just drops it.
"""

from __future__ import annotations

from client.wire import frames as f
from client.wire.errors import UsageError
from client.wire.events import (ConnectionEnded, DataReceived, Event, GoawayReceived,  # noqa: F401
                                PingAnswered, RequestReceived, ResponseReceived, StreamEnded,
                                StreamGone, StreamReset, StreamWritable)
from client.wire.h2conn import Connection
from client.wire.streams import CONNECTION_WINDOW, LOW_WATER, MAX_FRAME, STREAM_WINDOW

__all__ = [
    "Mux", "Event", "RequestReceived", "ResponseReceived", "DataReceived", "StreamEnded",
    "StreamReset", "StreamWritable", "PingAnswered", "GoawayReceived", "ConnectionEnded",
    "StreamGone",
    "STREAM_WINDOW", "CONNECTION_WINDOW", "MAX_FRAME", "LOW_WATER",
]


class Mux(Connection):
    """One end of an HTTP/2 tunnel session, without I/O."""

    def __init__(self, *, client_side: bool, max_concurrent_streams: int = 1000,
                 max_header_list_size: int = 16384) -> None:
        super().__init__(client_side=client_side, max_concurrent_streams=max_concurrent_streams,
                         max_header_list_size=max_header_list_size)

    # -- output -------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Bytes to write to the TLS connection now (may be empty)."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    # -- requests and responses ---------------------------------------------
    def request(self, headers: list[tuple[str, str]], *, end: bool = False) -> int:
        """Open a stream with a request; returns its id (client side)."""
        if not self._client:
            raise UsageError("only the client side opens streams")
        if self._goaway_last is not None:
            raise UsageError("the peer sent GOAWAY: open new streams on a new session")
        sid = self._next_sid
        if sid > f.MAX_WINDOW:
            raise UsageError("stream ids exhausted: open a new session")
        self._next_sid = sid + 2
        if self._ended:
            return sid                       # the session is over; the caller hears of it
        self._start_request(sid, headers, end)
        return sid

    def respond(self, stream_id: int, status: int, headers: list[tuple[str, str]] = (),
                *, end: bool = False) -> None:
        """Answer a request (gateway side); raises StreamGone if it was reset.

        With ``end`` the exchange is over: if the client's side is still open, the
        answer is followed by RST_STREAM NO_ERROR, and the stream is gone on both ends.
        """
        stream = self._streams.get(stream_id)
        if stream is None or stream.ready or self._client or self._ended:
            raise StreamGone(f"stream {stream_id} is gone")
        stream.ready = True
        block = self._codec.encode([(":status", str(status)), *headers])
        f.header_frames(self._out, stream_id, block, end, self._peer_max_frame)
        if end:
            stream.chunks.clear()
            stream.queued = 0
            if stream.remote_closed:
                self._closed_local(stream)
            else:
                # A complete answer (a refusal) while the request side is open: ask the
                # client to stop with RST_STREAM NO_ERROR (RFC 9113 8.1). Else the stream
                # stays half-open on both ends, held against the stream limit, since a
                # client that was refused has no reason to end it.
                self._out.append(f.rst_stream(stream_id, f.NO_ERROR))
                self._remember_reset(stream_id)
                self._forget(stream)
        elif stream.chunks or stream.fin:
            self._pump(stream)

    # -- payload --------------------------------------------------------------
    def _writable(self, stream_id: int):
        stream = self._streams.get(stream_id) or self._pending.get(stream_id)
        if stream is None or stream.fin or stream.local_closed:
            return None
        return stream

    def send(self, stream_id: int, data: bytes | memoryview, *, end: bool = False) -> None:
        """Queue payload on a stream; it leaves as the peer's window allows.

        With ``end`` the stream is half-closed too, END_STREAM riding on the
        payload's last frame (a TCP FIN that came with the data).
        """
        if not data and not end:
            return
        stream = self._writable(stream_id)
        if stream is None:
            return                           # closed or reset meanwhile: nobody wants it
        if data:
            stream.chunks.append(data)
            stream.queued += len(data)
        if end:
            stream.fin = True
        if stream.ready:
            self._pump(stream)

    def end(self, stream_id: int) -> None:
        """Half-close a stream once its queued payload has left (TCP FIN)."""
        stream = self._writable(stream_id)
        if stream is None:
            return
        stream.fin = True
        if stream.ready:
            self._pump(stream)

    def reset(self, stream_id: int, error_code: int = f.CONNECT_ERROR) -> None:
        """Abort a stream (a TCP RST, or a refused flow)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            self._pending.pop(stream_id, None)   # never on the wire: nothing to tell
            return
        if not self._ended:                  # before _forget, which may open a waiting request
            self._out.append(f.rst_stream(stream_id, error_code))
            self._remember_reset(stream_id)
        self._forget(stream)

    def buffered(self, stream_id: int) -> int:
        """Payload bytes queued on a stream, waiting for window."""
        stream = self._streams.get(stream_id) or self._pending.get(stream_id)
        return stream.queued if stream is not None else 0

    # consumed() is Connection.consumed: credit received payload back to the peer.

    def ping(self, payload: bytes) -> None:
        """Send an HTTP/2 PING with 8 opaque bytes."""
        if len(payload) != 8:
            raise UsageError("a PING carries exactly 8 bytes")
        self._out.append(f.ping(bytes(payload)))

    def close(self, error_code: int = 0) -> None:
        """Send GOAWAY."""
        if not self._goaway_sent:
            self._goaway_sent = True
            self._out.append(f.goaway(self._last_peer_stream(), error_code))

    def limit_header_lists(self, size: int) -> None:
        """Accept header lists of at most ``size`` bytes from now on, and tell the peer
        (SETTINGS_MAX_HEADER_LIST_SIZE). A larger block ends the session with
        ENHANCE_YOUR_CALM, refused on its encoded size before any decoding where it can be."""
        if size != self._codec.max_list:
            self._codec.limit(size)
            if not self._ended:
                self._out.append(f.settings({f.MAX_HEADER_LIST_SIZE: size}))

    @property
    def goaway_last_stream_id(self) -> int | None:
        """The last stream id of the peer's graceful GOAWAY (the lowest if several), or
        None while it sent none; once set, ``request`` raises."""
        return self._goaway_last

    @property
    def open_streams(self) -> int:
        """Streams currently open in either direction."""
        return len(self._streams)

    @property
    def peer_allows_extended_connect(self) -> bool:
        """The peer advertised SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441)."""
        return self._peer_connect
