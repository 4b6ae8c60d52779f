"""Stream bookkeeping and flow control: the base of ``h2conn`` and its sending half.

Theory of operation: ``Streams`` holds what both directions share -- the
output pieces, the table of open streams, the windows -- and does the
sending side. A ``Stream`` record exists only while a stream is open in at
least one direction; ``_high``, the highest stream id opened so far, tells
"idle" (above it) from "closed" (at or below it, not in the table), so a
closed stream costs no memory. A bounded memory of recently reset ids lets
the frames still in flight on them be dropped quietly.

Flow control follows RFC 9113 6.9. Outbound payload waits in a per-stream
queue until both the stream's and the connection's send windows allow it,
in frames no larger than the peer's MAX_FRAME_SIZE (``_pump``); END_STREAM
rides the last DATA frame. A stream short of its own window waits for its
own WINDOW_UPDATE (or SETTINGS); one short of the connection window sits in
``_blocked`` until a connection WINDOW_UPDATE, which visits only as many of
them as it can serve. Inbound, we advertise
``STREAM_WINDOW`` per stream and ``CONNECTION_WINDOW`` for the connection and
hand credit back (``consumed``) in batches of a quarter window, so a short
stream costs no WINDOW_UPDATE at all. Requests beyond the peer's
MAX_CONCURRENT_STREAMS wait in ``_pending`` and are opened in order as
earlier streams close. After a graceful GOAWAY nothing opens any more: the
waiting requests and our streams above its last stream id are refused.
"""

from __future__ import annotations

import collections

from client.wire import fields
from client.wire import frames as f
from client.wire.events import StreamReset, StreamWritable

#: Per-stream receive window we advertise (bytes in flight per stream).
STREAM_WINDOW = 4 * 1024 * 1024
#: Connection-wide receive window we advertise.
CONNECTION_WINDOW = 64 * 1024 * 1024
#: Largest DATA frame we accept from the peer.
MAX_FRAME = 256 * 1024
#: A stream whose queue drops below this after being above it is reported writable.
LOW_WATER = 256 * 1024

_STREAM_CREDIT = STREAM_WINDOW // 4
_CONNECTION_CREDIT = CONNECTION_WINDOW // 4
_RESET_MEMORY = 256        # recently reset stream ids remembered
_HEAD = f.HEAD


class Stream:
    """One open (or half-closed) stream."""

    __slots__ = ("sid", "send_window", "recv_window", "credit", "chunks", "queued", "fin",
                 "ready", "headers_in", "local_closed", "remote_closed", "request")

    def __init__(self, sid: int, send_window: int) -> None:
        self.sid = sid
        self.send_window = send_window
        self.recv_window = STREAM_WINDOW
        self.credit = 0                    # consumed but not yet handed back
        self.chunks: collections.deque = collections.deque()
        self.queued = 0                    # bytes in chunks
        self.fin = False                   # end() called: END_STREAM after the queue
        self.ready = False                 # our HEADERS went out: DATA may follow
        self.headers_in = False            # the peer's (final) HEADERS arrived
        self.local_closed = False          # END_STREAM (or RST) sent
        self.remote_closed = False         # END_STREAM received
        self.request: list[tuple[str, str]] | None = None   # headers of a waiting request


class Streams:
    """The streams, windows and output of one connection; the sending side."""

    def __init__(self, *, client_side: bool, max_header_list_size: int) -> None:
        self._client = client_side
        self._codec = fields.FieldCodec(max_header_list_size)
        self._out: list = []
        self._ended = False
        self._streams: dict[int, Stream] = {}
        self._pending: dict[int, Stream] = {}      # requests waiting for a stream slot
        self._blocked: dict[int, Stream] = {}      # streams waiting for window
        self._reset_ids: dict[int, None] = {}
        self._high = 0
        self._next_sid = 1
        self._send_window = f.DEFAULT_WINDOW
        self._recv_window = CONNECTION_WINDOW
        self._conn_credit = 0
        self._peer_initial = f.DEFAULT_WINDOW
        self._peer_max_frame = f.DEFAULT_MAX_FRAME
        self._peer_max_streams = 2**31
        self._goaway_last: int | None = None      # lowest last id of the peer's graceful GOAWAYs

    # -- stream table -----------------------------------------------------------
    def _idle(self, sid: int) -> bool:
        """True for an id no stream was ever opened with (or one the peer may never use)."""
        return not sid & 1 or sid > self._high

    def _last_peer_stream(self) -> int:
        """The last stream id the peer opened (what GOAWAY reports)."""
        return 0 if self._client else self._high

    def _remember_reset(self, sid: int) -> None:
        ids = self._reset_ids
        ids[sid] = None
        if len(ids) > _RESET_MEMORY:
            del ids[next(iter(ids))]

    def _forget(self, stream: Stream) -> None:
        del self._streams[stream.sid]
        self._blocked.pop(stream.sid, None)
        if self._pending:
            self._release()

    def _stream_fault(self, sid: int, code: int, events: list) -> None:
        """Reset a stream for a stream-scope error; the owner hears of it if it knew the stream."""
        stream = self._streams.get(sid)
        if stream is None and sid in self._reset_ids:   # frames still in flight after our reset
            return
        self._out.append(f.rst_stream(sid, code))       # before _forget opens a waiting request
        self._remember_reset(sid)
        if stream is not None:
            self._forget(stream)
            events.append(StreamReset(stream_id=sid, error_code=code))

    def _refuse_above(self, last: int, events: list) -> None:
        """A graceful GOAWAY: no new stream may open, and the peer will not process ours
        above ``last`` -- waiting requests included. Each is forgotten and reported reset
        with REFUSED_STREAM (RFC 9113 8.7: safe to retry); the others go on."""
        if self._goaway_last is None or last < self._goaway_last:
            self._goaway_last = last
        waiting = list(self._pending)
        self._pending.clear()                      # first: _forget would open them
        mine = 1 if self._client else 0
        refused = [sid for sid in self._streams if sid > last and sid & 1 == mine]
        for sid in refused:
            self._forget(self._streams[sid])
            self._remember_reset(sid)              # its frames still in flight go quietly
        refused += waiting
        events.extend(StreamReset(stream_id=sid, error_code=f.REFUSED_STREAM) for sid in refused)

    # -- sending ------------------------------------------------------------------
    def _start_request(self, sid: int, headers: list[tuple[str, str]], end: bool) -> None:
        """Send a request now, or queue it if the peer's stream limit is reached."""
        stream = Stream(sid, self._peer_initial)
        if self._pending or len(self._streams) >= self._peer_max_streams:
            stream.request, stream.fin = headers, end
            self._pending[sid] = stream
        else:
            self._open_local(stream, headers, end)

    def _open_local(self, stream: Stream, headers: list[tuple[str, str]], end: bool) -> None:
        """Send a request's HEADERS (client side) and whatever was queued behind them."""
        sid = stream.sid
        self._high = sid
        self._streams[sid] = stream
        stream.send_window = self._peer_initial
        stream.ready = True
        f.header_frames(self._out, sid, self._codec.encode(headers), end, self._peer_max_frame)
        if end:
            stream.local_closed = True
        elif stream.chunks or stream.fin:
            self._pump(stream)

    def _release(self) -> None:
        """Open waiting requests, in order, while the peer's stream limit allows."""
        pending = self._pending
        while (pending and len(self._streams) < self._peer_max_streams and not self._ended
               and self._goaway_last is None):
            stream = pending.pop(next(iter(pending)))
            headers, stream.request = stream.request, None
            self._open_local(stream, headers, stream.fin and not stream.chunks)

    def _on_window(self, streams, events: list) -> None:
        for stream in streams:
            before = stream.queued
            self._pump(stream)
            if before >= LOW_WATER > stream.queued:
                events.append(StreamWritable(stream_id=stream.sid))

    def _on_connection_window(self, events: list) -> None:
        """Hand new connection window to waiting streams, in order, while it lasts: each
        visit drains a stream or ends the loop, so a tiny WINDOW_UPDATE never walks them all."""
        blocked = self._blocked
        while blocked and self._send_window > 0:
            stream = next(iter(blocked.values()))
            self._on_window((stream,), events)
            if blocked.get(stream.sid) is stream:   # still waiting: the window is used up
                return

    def _pump(self, stream: Stream) -> None:
        """Send queued payload as far as the windows allow; END_STREAM rides the last DATA."""
        chunks, out, sid = stream.chunks, self._out, stream.sid
        while chunks:
            window = stream.send_window
            if self._send_window < window:
                window = self._send_window
            if window <= 0:
                # Only a stream that waits for the connection window is kept here; one
                # short of its own window waits for its own WINDOW_UPDATE or SETTINGS.
                if stream.send_window > 0:
                    self._blocked[sid] = stream
                else:
                    self._blocked.pop(sid, None)
                return
            if window > self._peer_max_frame:
                window = self._peer_max_frame
            chunk = chunks[0]
            size = len(chunk)
            if size <= window:
                chunks.popleft()
            else:
                view = memoryview(chunk)
                chunk, chunks[0], size = view[:window], view[window:], window
            stream.queued -= size
            stream.send_window -= size
            self._send_window -= size
            last = stream.fin and not chunks
            out.append(_HEAD.pack(size << 8, f.END_STREAM if last else 0, sid))
            out.append(chunk)
            if last:
                self._closed_local(stream)
                return
        self._blocked.pop(sid, None)
        if stream.fin and not stream.local_closed:
            out.append(_HEAD.pack(0, f.END_STREAM, sid))
            self._closed_local(stream)

    def _closed_local(self, stream: Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            self._forget(stream)
        else:
            self._blocked.pop(stream.sid, None)

    def _credit_connection(self, n: int) -> None:
        self._conn_credit += n
        if self._conn_credit >= _CONNECTION_CREDIT:
            self._out.append(f.window_update(0, self._conn_credit))
            self._recv_window += self._conn_credit
            self._conn_credit = 0

    def consumed(self, stream_id: int, flow_length: int) -> None:
        """Credit received payload back to the peer once it was handed on."""
        if flow_length <= 0:
            return
        self._credit_connection(flow_length)
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.remote_closed:
            stream.credit += flow_length
            if stream.credit >= _STREAM_CREDIT:
                self._out.append(f.window_update(stream_id, stream.credit))
                stream.recv_window += stream.credit
                stream.credit = 0
