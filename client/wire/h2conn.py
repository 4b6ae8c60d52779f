"""A lean sans-IO HTTP/2 connection: exactly the subset the tunnel uses.

Theory of operation: ``Connection.receive`` takes bytes as read from TLS and
returns events (``client.wire.events``); everything to write is appended to
``self._out`` as pieces (frame headers as bytes, payloads as the caller's
own bytes or memoryviews) and joined once by ``Mux.data_to_send``. There are
no frame objects: the parse loop reads each 9-byte header with one
``unpack_from`` and hands a memoryview of the payload to one handler per
frame type. A frame that arrives split is kept as a list of pieces and
joined once, when the whole frame is there. DATA is handled here; HEADERS
and CONTINUATION in ``headers.HeaderFrames`` (header blocks are decoded and
checked by ``fields``); SETTINGS, WINDOW_UPDATE, RST_STREAM, PING and GOAWAY
in ``control.ControlFrames``. Those two are bases of ``Connection``, not
objects of their own: a frame costs one method call and no hop between
objects. Streams, windows and the sending side live in their common base,
``streams.Streams``.

Errors: a peer's violation of connection scope raises ``ProtocolViolation``
inside the handlers; ``receive`` turns it into GOAWAY plus ``ConnectionEnded``
and ignores all later input. A peer's GOAWAY with an error code does the
same; a graceful one (NO_ERROR) refuses only our streams above its last
stream id and lets the others run to their end (``Streams._refuse_above``).
A stream-scope violation resets only its stream (``Streams._stream_fault``),
and the owner hears ``StreamReset`` if it knew the stream. Frames on streams
that are already closed are answered with RST_STREAM STREAM_CLOSED, or
dropped if we reset the stream ourselves.
"""

from __future__ import annotations

import logging

from client.wire import frames as f
from client.wire.control import ControlFrames
from client.wire.errors import ProtocolViolation
from client.wire.events import ConnectionEnded, DataReceived, StreamEnded
from client.wire.frames import unpad
from client.wire.headers import HeaderFrames
from client.wire.streams import MAX_FRAME, CONNECTION_WINDOW, STREAM_WINDOW

log = logging.getLogger(__name__)


class Connection(HeaderFrames, ControlFrames):
    """Framing, our settings and the receiving side of one HTTP/2 connection."""

    def __init__(self, *, client_side: bool, max_concurrent_streams: int,
                 max_header_list_size: int) -> None:
        super().__init__(client_side=client_side, max_header_list_size=max_header_list_size)
        self._max_streams = max_concurrent_streams
        self._rest: list[bytes] = []       # a partial frame
        self._rest_len = 0
        self._need = 0                     # bytes needed before the partial frame can be parsed
        self._preface = 0 if client_side else len(f.PREFACE)
        self._settings_seen = False
        self._cont = None                  # a header block being continued (HeaderFrames)
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
        body = unpad(payload, flags) if flags & f.PADDED else payload
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

    # -- errors -----------------------------------------------------------------
    def _fail(self, code: int, message: str, events: list) -> None:
        self._ended = True
        if not self._goaway_sent:
            self._goaway_sent = True
            self._out.append(f.goaway(self._last_peer_stream(), code, message.encode()[:200]))
        events.append(ConnectionEnded(error_code=code, reason=f"protocol error: {message}"))
