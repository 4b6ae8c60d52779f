"""Sans-IO stream multiplexer for tunnel sessions, on top of ``h2``.

Theory of operation: one ``Mux`` wraps one ``h2.connection.H2Connection`` for
either end of a session. Bytes read from the TLS connection go into
``receive()``, which returns a list of the tunnel's own events (frozen
dataclasses, below); bytes to write come from ``data_to_send()``. Payload sent
on a stream is queued per stream and released only as the peer's flow-control
window allows, so a slow peer slows its own stream down; ``buffered()`` tells
the adapter how much is queued so it can stop reading from the local socket.
Received payload is credited back to the peer only when the adapter calls
``consumed()`` -- after it has handed the bytes on -- which is what makes
per-stream flow control real in both directions.
"""

from __future__ import annotations

import collections
import dataclasses

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

import client.wire.h2speed  # noqa: F401 - removes a per-frame repr cost


#: Per-stream receive window we advertise (bytes in flight per stream).
STREAM_WINDOW = 4 * 1024 * 1024
#: Connection-wide receive window we advertise.
CONNECTION_WINDOW = 64 * 1024 * 1024
#: Largest DATA frame we accept from the peer.
MAX_FRAME = 256 * 1024


@dataclasses.dataclass(frozen=True)
class RequestReceived:
    """The peer opened a stream with a request (gateway side)."""

    stream_id: int
    """The new stream."""
    headers: dict[str, str]
    """Request headers, pseudo-headers included (``:method``, ``:authority`` ...)."""
    ended: bool
    """True when the request has no body."""


@dataclasses.dataclass(frozen=True)
class ResponseReceived:
    """The peer answered a request we made (client side)."""

    stream_id: int
    """The stream of the request."""
    status: int
    """The HTTP status code."""
    headers: dict[str, str]
    """Response headers without ``:status``."""
    ended: bool
    """True when the response has no body."""


@dataclasses.dataclass(frozen=True)
class DataReceived:
    """Payload arrived on a stream; credit it back with ``Mux.consumed``."""

    stream_id: int
    """The stream."""
    data: bytes
    """The payload."""
    flow_length: int
    """Bytes to pass to ``consumed`` once the payload has been handed on."""


@dataclasses.dataclass(frozen=True)
class StreamEnded:
    """The peer half-closed a stream (END_STREAM, the TCP FIN of a flow)."""

    stream_id: int
    """The stream."""


@dataclasses.dataclass(frozen=True)
class StreamReset:
    """The peer reset a stream, or the stream was reset locally by a violation."""

    stream_id: int
    """The stream."""
    error_code: int
    """The HTTP/2 error code."""


@dataclasses.dataclass(frozen=True)
class StreamWritable:
    """Queued payload on a stream dropped below the low-water mark."""

    stream_id: int
    """The stream."""


@dataclasses.dataclass(frozen=True)
class PingAnswered:
    """The peer acknowledged one of our PINGs."""

    payload: bytes
    """The 8 opaque bytes we sent."""


@dataclasses.dataclass(frozen=True)
class ConnectionEnded:
    """The peer sent GOAWAY or broke the protocol; the session is over."""

    error_code: int
    """The HTTP/2 error code (0 for a clean GOAWAY)."""
    reason: str
    """A human-readable reason."""


Event = (
    RequestReceived | ResponseReceived | DataReceived | StreamEnded | StreamReset
    | StreamWritable | PingAnswered | ConnectionEnded
)

LOW_WATER = 256 * 1024


class StreamGone(Exception):
    """The stream was closed or reset before we could answer on it."""


class _Outbound:
    """Payload waiting for flow-control window on one stream."""

    __slots__ = ("chunks", "size", "end")

    def __init__(self) -> None:
        self.chunks: collections.deque[bytes | memoryview] = collections.deque()
        self.size = 0
        self.end = False


class Mux:
    """One end of an HTTP/2 tunnel session, without I/O."""

    def __init__(self, *, client_side: bool, max_concurrent_streams: int = 1000,
                 max_header_list_size: int = 16384) -> None:
        # Our own outbound headers are well-formed by construction: skip h2's
        # per-request validation of them. Inbound headers are always validated.
        config = h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8",
                                           validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        self._conn = h2.connection.H2Connection(config=config)
        self._client_side = client_side
        self._out: dict[int, _Outbound] = {}
        self._blocked: set[int] = set()
        self._ended = False
        settings = {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
        }
        if not client_side:
            settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        self._conn.initiate_connection()
        self._conn.update_settings(settings)
        self._conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)

    # -- output -------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Bytes to write to the TLS connection now (may be empty)."""
        return self._conn.data_to_send()

    # -- requests and responses ---------------------------------------------
    def request(self, headers: list[tuple[str, str]], *, end: bool = False) -> int:
        """Open a stream with a request; returns its id (client side)."""
        stream_id = self._conn.get_next_available_stream_id()
        self._conn.send_headers(stream_id, headers, end_stream=end)
        return stream_id

    def respond(self, stream_id: int, status: int, headers: list[tuple[str, str]] = (),
                *, end: bool = False) -> None:
        """Answer a request (gateway side); raises StreamGone if it was reset."""
        try:
            self._conn.send_headers(stream_id, [(":status", str(status)), *headers], end_stream=end)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            raise StreamGone(f"stream {stream_id} is gone") from exc

    # -- payload --------------------------------------------------------------
    def send(self, stream_id: int, data: bytes | memoryview) -> None:
        """Queue payload on a stream; it leaves as the peer's window allows."""
        if not data:
            return
        out = self._out.get(stream_id)
        if out is None:
            out = self._out[stream_id] = _Outbound()
        out.chunks.append(data)
        out.size += len(data)
        self._pump(stream_id, out)

    def end(self, stream_id: int) -> None:
        """Half-close a stream once its queued payload has left (TCP FIN)."""
        out = self._out.get(stream_id)
        if out is None:
            out = self._out[stream_id] = _Outbound()
        out.end = True
        self._pump(stream_id, out)

    def reset(self, stream_id: int, error_code: int = h2.errors.ErrorCodes.CONNECT_ERROR) -> None:
        """Abort a stream (a TCP RST, or a refused flow)."""
        self._out.pop(stream_id, None)
        self._blocked.discard(stream_id)
        try:
            self._conn.reset_stream(stream_id, error_code)
        except h2.exceptions.StreamClosedError:
            pass
        except h2.exceptions.ProtocolError:
            pass

    def buffered(self, stream_id: int) -> int:
        """Payload bytes queued on a stream, waiting for window."""
        out = self._out.get(stream_id)
        return out.size if out is not None else 0

    def consumed(self, stream_id: int, flow_length: int) -> None:
        """Credit received payload back to the peer once it was handed on."""
        if flow_length <= 0:
            return
        try:
            self._conn.acknowledge_received_data(flow_length, stream_id)
        except (h2.exceptions.StreamClosedError, KeyError):
            # Stream gone: h2 still owes the connection window.
            self._conn.increment_flow_control_window(flow_length)
        except h2.exceptions.ProtocolError:
            pass

    def ping(self, payload: bytes) -> None:
        """Send an HTTP/2 PING with 8 opaque bytes."""
        self._conn.ping(payload)

    def close(self, error_code: int = 0) -> None:
        """Send GOAWAY."""
        if not self._ended:
            self._ended = True
            try:
                self._conn.close_connection(error_code)
            except h2.exceptions.ProtocolError:
                pass

    @property
    def open_streams(self) -> int:
        """Streams currently open in either direction."""
        return self._conn.open_inbound_streams + self._conn.open_outbound_streams

    @property
    def peer_allows_extended_connect(self) -> bool:
        """The peer advertised SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441)."""
        return bool(self._conn.remote_settings.enable_connect_protocol)

    # -- input ----------------------------------------------------------------
    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes read from the TLS connection; returns what happened."""
        try:
            h2_events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._ended = True
            code = getattr(exc, "error_code", h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return [ConnectionEnded(error_code=int(code), reason=f"protocol error: {exc}")]
        events: list[Event] = []
        for ev in h2_events:
            self._translate(ev, events)
        return events

    def _translate(self, ev: h2.events.Event, events: list[Event]) -> None:
        if isinstance(ev, h2.events.DataReceived):
            events.append(DataReceived(stream_id=ev.stream_id, data=ev.data,
                                       flow_length=ev.flow_controlled_length))
            if ev.stream_ended is not None:
                events.append(StreamEnded(stream_id=ev.stream_id))
        elif isinstance(ev, h2.events.RequestReceived):
            ended = ev.stream_ended is not None
            events.append(RequestReceived(stream_id=ev.stream_id, headers=dict(ev.headers),
                                          ended=ended))
        elif isinstance(ev, h2.events.ResponseReceived):
            headers = dict(ev.headers)
            status = headers.pop(":status", "0")
            ended = ev.stream_ended is not None
            events.append(ResponseReceived(stream_id=ev.stream_id, status=int(status),
                                           headers=headers, ended=ended))
        elif isinstance(ev, h2.events.StreamEnded):
            # Already reported with the DATA/HEADERS event that carried it.
            pass
        elif isinstance(ev, h2.events.StreamReset):
            self._out.pop(ev.stream_id, None)
            self._blocked.discard(ev.stream_id)
            events.append(StreamReset(stream_id=ev.stream_id, error_code=int(ev.error_code)))
        elif isinstance(ev, h2.events.WindowUpdated):
            self._on_window(ev.stream_id, events)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
                self._on_window(0, events)
        elif isinstance(ev, h2.events.PingAckReceived):
            events.append(PingAnswered(payload=ev.ping_data))
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self._ended = True
            reason = "gateway closed the session" if self._client_side else "client closed the session"
            if ev.additional_data:
                reason += f": {ev.additional_data.decode('utf-8', 'replace')[:200]}"
            events.append(ConnectionEnded(error_code=int(ev.error_code), reason=reason))
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            pass
        elif isinstance(ev, h2.events.TrailersReceived):
            if ev.stream_ended is not None:
                events.append(StreamEnded(stream_id=ev.stream_id))

    def _on_window(self, stream_id: int, events: list[Event]) -> None:
        targets = list(self._blocked) if stream_id == 0 else [stream_id]
        for sid in targets:
            out = self._out.get(sid)
            if out is None:
                self._blocked.discard(sid)
                continue
            before = out.size
            self._pump(sid, out)
            if before >= LOW_WATER > out.size:
                events.append(StreamWritable(stream_id=sid))

    def _pump(self, stream_id: int, out: _Outbound) -> None:
        conn = self._conn
        try:
            while out.chunks:
                window = conn.local_flow_control_window(stream_id)
                if window <= 0:
                    self._blocked.add(stream_id)
                    return
                chunk = out.chunks[0]
                size = min(window, conn.max_outbound_frame_size, len(chunk))
                if size == len(chunk):
                    out.chunks.popleft()
                    piece = chunk
                else:
                    view = memoryview(chunk)
                    piece = view[:size]
                    out.chunks[0] = view[size:]
                out.size -= size
                if out.end and not out.chunks:
                    # The FIN rides on the last DATA frame: one frame less per close.
                    del self._out[stream_id]
                    conn.send_data(stream_id, piece, end_stream=True)
                    self._blocked.discard(stream_id)
                    return
                conn.send_data(stream_id, piece)
            self._blocked.discard(stream_id)
            if out.end:
                del self._out[stream_id]
                conn.end_stream(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._out.pop(stream_id, None)
            self._blocked.discard(stream_id)
        if not out.chunks and not out.end and out.size == 0:
            # Nothing queued: forget the bookkeeping (a later send recreates it).
            if self._out.get(stream_id) is out:
                del self._out[stream_id]
