"""HEADERS and CONTINUATION as they arrive: the receiving side of header blocks.

Theory of operation: ``h2conn.Connection._parse`` hands each HEADERS frame to
``_on_headers``, which strips padding and priority and checks the size. A
block that ends in its frame (END_HEADERS) is handled at once; one that does
not is kept as a ``_Block`` of pieces until its last CONTINUATION, which must
follow on the same stream (the parse loop refuses any other frame in between)
within ``_MAX_FRAGMENTS`` frames, and is joined once. ``_on_block`` then
decodes it -- exactly once on every path, since the HPACK table must stay in
step with the peer's even for a block we refuse -- and turns it into a
request (``_open_remote``, gateway side), a response or trailers.

Errors: a block on stream 0, one too large, or HEADERS on a stream we never
opened end the connection (``ProtocolViolation``); a malformed request or
response, or headers on a closed stream, reset only that stream
(``_stream_fault``).
"""

from __future__ import annotations

from client.wire import frames as f
from client.wire.errors import ProtocolViolation
from client.wire.events import RequestReceived, ResponseReceived, StreamEnded
from client.wire.frames import unpad
from client.wire.streams import Stream, Streams

_MAX_FRAGMENTS = 64        # CONTINUATION frames in one header block


class _Block:
    """A header block still being continued."""

    __slots__ = ("sid", "flags", "parts", "size")

    def __init__(self, sid: int, flags: int, first: bytes) -> None:
        self.sid, self.flags, self.parts, self.size = sid, flags, [first], len(first)


class HeaderFrames(Streams):
    """The handlers of HEADERS and CONTINUATION frames, mixed into ``h2conn.Connection``,
    which sets the state below in its ``__init__`` and calls them from its parse loop."""

    _cont: _Block | None           # the header block being continued, if any
    _settings_seen: bool           # the peer's first SETTINGS arrived
    _goaway_sent: bool             # we sent GOAWAY: new streams are refused
    _max_streams: int              # our SETTINGS_MAX_CONCURRENT_STREAMS

    def _on_headers(self, flags: int, sid: int, payload: memoryview, events: list) -> None:
        if not self._settings_seen:
            raise ProtocolViolation("the preface must be followed by SETTINGS")
        if sid == 0:
            raise ProtocolViolation("HEADERS on stream 0")
        block = unpad(payload, flags) if flags & f.PADDED else payload
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
