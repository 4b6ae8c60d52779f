"""The control frames as they arrive: SETTINGS, WINDOW_UPDATE, RST_STREAM, PING, GOAWAY.

Theory of operation: ``h2conn.Connection._parse`` hands each of these frames
(after the peer's first SETTINGS) to its handler here; none of them carries
a stream's content, each steers the connection or one stream.

* SETTINGS is acknowledged at once. A new initial window moves the send
  window of every open stream by the difference (RFC 9113 6.9.2), which can
  let queued payload go out; since each change walks every open stream, the
  work they may cause over a connection's life is bounded
  (``WINDOW_CHANGE_WORK``). Requests waiting for a stream slot open as far as
  the peer's (new) stream limit allows.
* WINDOW_UPDATE adds send window to the connection (serving the streams
  blocked on it, ``Streams._on_connection_window``) or to one stream.
* RST_STREAM forgets the stream and tells its owner (``StreamReset``).
* PING is answered; the answer to ours is reported (``PingAnswered``).
* GOAWAY is reported (``GoawayReceived``) with a printable reason. With an
  error code it ends the connection (``ConnectionEnded``); a graceful one
  refuses only our streams above its last stream id
  (``Streams._refuse_above``).

Errors: a malformed frame, or one on the wrong stream, ends the connection
(``ProtocolViolation``); a zero or overflowing stream WINDOW_UPDATE resets
only its stream.
"""

from __future__ import annotations

from client.wire import frames as f
from client.wire.errors import ProtocolViolation
from client.wire.events import ConnectionEnded, GoawayReceived, PingAnswered, StreamReset
from client.wire.streams import Streams

#: Stream updates that SETTINGS changing the initial window may cause over a connection's
#: life (a peer changes it once or twice; a flood of changes is refused).
WINDOW_CHANGE_WORK = 1_000_000


class ControlFrames(Streams):
    """The handlers of the control frames, mixed into ``h2conn.Connection``, which sets
    the state below in its ``__init__`` and calls them from its parse loop."""

    _settings_seen: bool           # the peer's first SETTINGS arrived
    _peer_connect: bool            # the peer allows extended CONNECT (RFC 8441)
    _window_work: int              # streams re-windowed by SETTINGS so far

    def _on_window_update(self, sid: int, payload: memoryview, events: list) -> None:
        if len(payload) != 4:
            raise ProtocolViolation("WINDOW_UPDATE of wrong length", error_code=f.FRAME_SIZE_ERROR)
        increment = f.u32(payload)
        if sid == 0:
            if increment == 0:
                raise ProtocolViolation("zero connection WINDOW_UPDATE")
            self._send_window += increment
            if self._send_window > f.MAX_WINDOW:
                raise ProtocolViolation("connection window overflow", error_code=f.FLOW_CONTROL_ERROR)
            if self._blocked:
                self._on_connection_window(events)
            return
        stream = self._streams.get(sid)
        if stream is None:
            if self._idle(sid):
                raise ProtocolViolation(f"WINDOW_UPDATE on idle stream {sid}")
            return
        if increment == 0:
            self._stream_fault(sid, f.PROTOCOL_ERROR, events)
            return
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            self._stream_fault(sid, f.FLOW_CONTROL_ERROR, events)
        elif stream.chunks and stream.ready:    # not before our HEADERS (a banner queued early)
            self._on_window((stream,), events)

    def _on_rst_stream(self, sid: int, payload: memoryview, events: list) -> None:
        if len(payload) != 4:
            raise ProtocolViolation("RST_STREAM of wrong length", error_code=f.FRAME_SIZE_ERROR)
        if sid == 0 or self._idle(sid):
            raise ProtocolViolation(f"RST_STREAM on idle stream {sid}")
        stream = self._streams.get(sid)
        if stream is not None:
            self._forget(stream)
            events.append(StreamReset(stream_id=sid, error_code=f.error_code(payload)))

    def _on_settings(self, flags: int, sid: int, payload: memoryview, events: list) -> None:
        if sid != 0:
            raise ProtocolViolation("SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise ProtocolViolation("SETTINGS ACK with a body", error_code=f.FRAME_SIZE_ERROR)
            return
        if len(payload) % 6:
            raise ProtocolViolation("SETTINGS of wrong length", error_code=f.FRAME_SIZE_ERROR)
        self._settings_seen = True
        delta = 0
        for ident, value in f.parse_settings(payload):
            if ident == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise ProtocolViolation("initial window too large", error_code=f.FLOW_CONTROL_ERROR)
                delta += value - self._peer_initial
                self._peer_initial = value
            elif ident == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME <= value <= f.MAX_FRAME_LIMIT:
                    raise ProtocolViolation(f"bad SETTINGS_MAX_FRAME_SIZE {value}")
                self._peer_max_frame = value
            elif ident == f.MAX_CONCURRENT_STREAMS:
                self._peer_max_streams = value
            elif ident == f.HEADER_TABLE_SIZE:
                self._codec.set_peer_table_size(value)
            elif ident == f.ENABLE_PUSH:
                if value > 1 or (value and self._client):
                    raise ProtocolViolation(f"bad SETTINGS_ENABLE_PUSH {value}")
            elif ident == f.ENABLE_CONNECT_PROTOCOL:
                if value > 1 or (self._peer_connect and not value):
                    raise ProtocolViolation(f"bad SETTINGS_ENABLE_CONNECT_PROTOCOL {value}")
                self._peer_connect = bool(value)
        self._out.append(f.SETTINGS_ACK)
        if delta:
            # Each change walks every open stream: a flood of them is CPU for nothing.
            self._window_work += len(self._streams)
            if self._window_work > WINDOW_CHANGE_WORK:
                raise ProtocolViolation("too many initial window changes",
                                        error_code=f.ENHANCE_YOUR_CALM)
            for stream in self._streams.values():
                stream.send_window += delta
                if stream.send_window > f.MAX_WINDOW:
                    raise ProtocolViolation("stream window overflow", error_code=f.FLOW_CONTROL_ERROR)
            if delta > 0:
                self._on_window([s for s in self._streams.values() if s.chunks and s.ready], events)
        if self._pending:
            self._release()

    def _on_ping(self, flags: int, sid: int, payload: memoryview, events: list) -> None:
        if len(payload) != 8:
            raise ProtocolViolation("PING of wrong length", error_code=f.FRAME_SIZE_ERROR)
        if sid != 0:
            raise ProtocolViolation("PING on a stream")
        if flags & f.ACK:
            events.append(PingAnswered(payload=bytes(payload)))
        else:
            self._out.append(f.ping(bytes(payload), ack=True))

    def _on_goaway(self, sid: int, payload: memoryview, events: list) -> None:
        if sid != 0:
            raise ProtocolViolation("GOAWAY on a stream")
        if len(payload) < 8:
            raise ProtocolViolation("GOAWAY too short", error_code=f.FRAME_SIZE_ERROR)
        last, code = f.u32(payload), f.error_code(payload, 4)
        reason = "gateway closed the session" if self._client else "client closed the session"
        debug = bytes(payload[8:])
        if debug:  # the peer's words go into one-line messages and logs: no control characters
            text = debug[:800].decode("utf-8", "replace")[:200]
            reason += ": " + "".join(c if c.isprintable() else "?" for c in text)
        events.append(GoawayReceived(last_stream_id=last, error_code=code, reason=reason))
        if code != f.NO_ERROR:
            self._ended = True
            events.append(ConnectionEnded(error_code=code, reason=reason))
            return
        self._refuse_above(last, events)
