"""A lean sans-IO HTTP/2 connection: exactly the subset the tunnel uses.

Theory of operation: ``Connection.receive`` takes bytes as read from TLS and
returns events (``client.wire.events``); everything to write is appended to
``self._out`` as pieces (frame headers as bytes, payloads as the caller's
own bytes or memoryviews) and joined once by ``Mux.data_to_send``. There are
no frame objects: the parse loop reads each 9-byte header with one
``unpack_from`` and hands a memoryview of the payload to one handler per
frame type. A frame that arrives split is kept as a list of pieces and
joined once, when the whole frame is there. Header blocks (with their
CONTINUATIONs) are decoded and checked by ``fields``; streams, windows and
the sending side live in the base class, ``streams.Streams``.

Errors: a peer's violation of connection scope raises ``ProtocolViolation``
inside the handlers; ``receive`` turns it into GOAWAY plus ``ConnectionEnded``
and ignores all later input. A peer's GOAWAY with an error code does the
same; a graceful one (NO_ERROR) refuses only our streams above its last
stream id and lets the others run to their end (``Streams._refuse_above``).
A stream-scope violation resets only its stream (``_stream_fault``), and the
owner hears ``StreamReset`` if it knew the stream. Frames on streams that are already closed are answered with
RST_STREAM STREAM_CLOSED, or dropped if we reset the stream ourselves.
"""

from __future__ import annotations

import logging

from client.wire import frames as f
from client.wire.errors import ProtocolViolation
from client.wire.events import (ConnectionEnded, DataReceived, GoawayReceived, PingAnswered,
                                RequestReceived, ResponseReceived, StreamEnded, StreamReset)
from client.wire.streams import MAX_FRAME, CONNECTION_WINDOW, STREAM_WINDOW, Stream, Streams

log = logging.getLogger(__name__)

_MAX_FRAGMENTS = 64        # CONTINUATION frames in one header block


#: Stream updates that SETTINGS changing the initial window may cause over a connection's
#: life (a peer changes it once or twice; a flood of changes is refused).
WINDOW_CHANGE_WORK = 1_000_000


class _Block:
    """A header block still being continued."""

    __slots__ = ("sid", "flags", "parts", "size")

    def __init__(self, sid: int, flags: int, first: bytes) -> None:
        self.sid, self.flags, self.parts, self.size = sid, flags, [first], len(first)


class Connection(Streams):
    """Framing, settings and the receiving side of one HTTP/2 connection."""

    def __init__(self, *, client_side: bool, max_concurrent_streams: int,
                 max_header_list_size: int) -> None:
        super().__init__(client_side=client_side, max_header_list_size=max_header_list_size)
        self._max_streams = max_concurrent_streams
        self._rest: list[bytes] = []       # a partial frame
        self._rest_len = 0
        self._need = 0                     # bytes needed before the partial frame can be parsed
        self._preface = 0 if client_side else len(f.PREFACE)
        self._settings_seen = False
        self._cont: _Block | None = None
        self._goaway_sent = False
        self._peer_connect = False
        self._window_work = 0              # streams re-windowed by SETTINGS so far
        ours = {f.INITIAL_WINDOW_SIZE: STREAM_WINDOW, f.MAX_FRAME_SIZE: MAX_FRAME,
                f.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                f.MAX_HEADER_LIST_SIZE: max_header_list_size}
        if client_side:
            ours[f.ENABLE_PUSH] = 0
            self._out.append(f.PREFACE)
        else:
            ours[f.ENABLE_CONNECT_PROTOCOL] = 1
        self._out.append(f.settings(ours))
        self._out.append(f.window_update(0, CONNECTION_WINDOW - f.DEFAULT_WINDOW))

    # -- input ----------------------------------------------------------------
    def receive(self, data: bytes) -> list:
        """Feed bytes read from the TLS connection; returns what happened."""
        events: list = []
        if self._ended or not data:
            return events
        if self._rest:
            self._rest.append(bytes(data))   # keep our own copy, never the caller's buffer
            self._rest_len += len(data)
            if self._rest_len < self._need:
                return events
            data = b"".join(self._rest)
            self._rest, self._rest_len = [], 0
        try:
            self._parse(data, events)
        except ProtocolViolation as exc:
            self._fail(exc.error_code, str(exc), events)
        except Exception:  # a bug must end this session, not the event loop
            log.exception("HTTP/2 input handling failed")
            self._fail(f.INTERNAL_ERROR, "internal error", events)
        return events

    def _parse(self, data: bytes, events: list) -> None:
        n, pos = len(data), 0
        if self._preface:
            start = len(f.PREFACE) - self._preface
            pos = min(self._preface, n)
            if data[:pos] != f.PREFACE[start:start + pos]:
                raise ProtocolViolation("bad connection preface")
            self._preface -= pos
        view = memoryview(data)
        unpack = f.HEAD.unpack_from
        while n - pos >= 9:
            word, flags, sid = unpack(view, pos)
            length = word >> 8
            if length > MAX_FRAME:
                raise ProtocolViolation(f"frame of {length} bytes", error_code=f.FRAME_SIZE_ERROR)
            end = pos + 9 + length
            if end > n:
                break
            ftype = word & 0xFF
            payload = view[pos + 9:end]
            pos = end
            sid &= 0x7FFFFFFF
            if self._cont is not None and ftype != f.CONTINUATION:
                raise ProtocolViolation("header block interrupted")
            if ftype == f.DATA:
                self._on_data(flags, sid, payload, events)
            elif ftype == f.HEADERS:
                self._on_headers(flags, sid, payload, events)
            elif not self._settings_seen and ftype != f.SETTINGS:
                raise ProtocolViolation("the preface must be followed by SETTINGS")
            elif ftype == f.WINDOW_UPDATE:
                self._on_window_update(sid, payload, events)
            elif ftype == f.RST_STREAM:
                self._on_rst_stream(sid, payload, events)
            elif ftype == f.SETTINGS:
                self._on_settings(flags, sid, payload, events)
            elif ftype == f.PING:
                self._on_ping(flags, sid, payload, events)
            elif ftype == f.GOAWAY:
                self._on_goaway(sid, payload, events)
            elif ftype == f.CONTINUATION:
                self._on_continuation(flags, sid, payload, events)
            elif ftype == f.PRIORITY:
                if sid == 0:
                    raise ProtocolViolation("PRIORITY on stream 0")
                if length != 5:
                    self._stream_fault(sid, f.FRAME_SIZE_ERROR, events)
            elif ftype == f.PUSH_PROMISE:
                raise ProtocolViolation("PUSH_PROMISE is not allowed")
            if self._ended:
                return
        if pos < n:
            self._rest, self._rest_len = [bytes(view[pos:])], n - pos
            self._need = 9 if n - pos < 9 else 9 + (f.HEAD.unpack_from(view, pos)[0] >> 8)

    def _on_data(self, flags: int, sid: int, payload: memoryview, events: list) -> None:
        if not self._settings_seen:
            raise ProtocolViolation("the preface must be followed by SETTINGS")
        length = len(payload)
        body = _unpad(payload, flags) if flags & f.PADDED else payload
        self._recv_window -= length
        if self._recv_window < 0:
            raise ProtocolViolation("connection window exceeded", error_code=f.FLOW_CONTROL_ERROR)
        stream = self._streams.get(sid)
        if stream is None or stream.remote_closed or not stream.headers_in:
            if sid == 0 or self._idle(sid):
                raise ProtocolViolation(f"DATA on idle stream {sid}")
            self._credit_connection(length)    # nobody will consume it
            code = f.PROTOCOL_ERROR if stream is not None and not stream.remote_closed else f.STREAM_CLOSED
            self._stream_fault(sid, code, events)
            return
        stream.recv_window -= length
        if stream.recv_window < 0:
            raise ProtocolViolation(f"stream {sid} window exceeded", error_code=f.FLOW_CONTROL_ERROR)
        if length:
            events.append(DataReceived(stream_id=sid, data=bytes(body), flow_length=length))
        if flags & f.END_STREAM:
            events.append(StreamEnded(stream_id=sid))
            stream.remote_closed = True
            if stream.local_closed:
                self._forget(stream)

    def _on_headers(self, flags: int, sid: int, payload: memoryview, events: list) -> None:
        if not self._settings_seen:
            raise ProtocolViolation("the preface must be followed by SETTINGS")
        if sid == 0:
            raise ProtocolViolation("HEADERS on stream 0")
        block = _unpad(payload, flags) if flags & f.PADDED else payload
        if flags & f.PRIORITY_FLAG:
            if len(block) < 5:
                raise ProtocolViolation("HEADERS too short for its priority", error_code=f.FRAME_SIZE_ERROR)
            block = block[5:]
        if len(block) > self._codec.max_block:
            raise ProtocolViolation("header block too large", error_code=f.ENHANCE_YOUR_CALM)
        if flags & f.END_HEADERS:
            self._on_block(sid, flags, bytes(block), events)
        else:
            self._cont = _Block(sid, flags, bytes(block))

    def _on_continuation(self, flags: int, sid: int, payload: memoryview, events: list) -> None:
        cont = self._cont
        if cont is None or cont.sid != sid:
            raise ProtocolViolation("unexpected CONTINUATION")
        cont.size += len(payload)
        if cont.size > self._codec.max_block or len(cont.parts) >= _MAX_FRAGMENTS:
            raise ProtocolViolation("header block too large", error_code=f.ENHANCE_YOUR_CALM)
        cont.parts.append(bytes(payload))
        if flags & f.END_HEADERS:
            self._cont = None
            self._on_block(sid, cont.flags, b"".join(cont.parts), events)

    def _on_block(self, sid: int, flags: int, block: bytes, events: list) -> None:
        # Every path decodes the block once: the HPACK table must stay in step.
        codec, end = self._codec, bool(flags & f.END_STREAM)
        stream = self._streams.get(sid)
        if stream is None:
            if not self._client:
                self._open_remote(sid, block, end, events)
                return
            codec.decode(block)
            if self._idle(sid):
                raise ProtocolViolation(f"HEADERS on stream {sid}, which we did not open")
            self._stream_fault(sid, f.STREAM_CLOSED, events)
            return
        if stream.remote_closed:
            codec.decode(block)
            self._stream_fault(sid, f.STREAM_CLOSED, events)
            return
        if not stream.headers_in:            # client side: the response
            got = codec.response(block)
            if got is None or (got[0] < 200 and end):
                self._stream_fault(sid, f.PROTOCOL_ERROR, events)
                return
            if got[0] < 200:                 # informational: wait for the final one
                return
            stream.headers_in = True
            events.append(ResponseReceived(stream_id=sid, status=got[0], headers=got[1], ended=end))
            if end:   # a complete answer is also the end of the peer's side, as on DATA
                events.append(StreamEnded(stream_id=sid))
        elif not codec.trailers(block) or not end:
            self._stream_fault(sid, f.PROTOCOL_ERROR, events)
            return
        else:
            events.append(StreamEnded(stream_id=sid))
        if end:
            stream.remote_closed = True
            if stream.local_closed:
                self._forget(stream)

    def _open_remote(self, sid: int, block: bytes, end: bool, events: list) -> None:
        if not sid & 1 or sid <= self._high:
            self._codec.decode(block)
            if sid in self._reset_ids:       # trailers in flight on a stream we reset
                return
            raise ProtocolViolation(f"stream id {sid} is not a new client stream")
        self._high = sid
        if len(self._streams) >= self._max_streams or self._goaway_sent:
            self._codec.decode(block)
            self._stream_fault(sid, f.REFUSED_STREAM, events)
            return
        headers = self._codec.request(block)
        if headers is None:
            self._stream_fault(sid, f.PROTOCOL_ERROR, events)
            return
        stream = self._streams[sid] = Stream(sid, self._peer_initial)
        stream.headers_in = True
        stream.remote_closed = end
        events.append(RequestReceived(stream_id=sid, headers=headers, ended=end))

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

    # -- errors -----------------------------------------------------------------
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

    def _fail(self, code: int, message: str, events: list) -> None:
        self._ended = True
        if not self._goaway_sent:
            self._goaway_sent = True
            self._out.append(f.goaway(self._last_peer_stream(), code, message.encode()[:200]))
        events.append(ConnectionEnded(error_code=code, reason=f"protocol error: {message}"))

def _unpad(payload: memoryview, flags: int) -> memoryview:
    """The payload of a PADDED frame without its pad length and padding."""
    if not payload or payload[0] >= len(payload):
        raise ProtocolViolation("padding exceeds the frame")
    return payload[1:len(payload) - payload[0]]
