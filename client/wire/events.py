"""Events of the tunnel's HTTP/2 connection, and its one stream-level error.

``h2conn.Connection.receive`` returns these; ``mux`` re-exports them as the
public API. Frozen dataclasses named in the past tense, one line per field.
"""

from __future__ import annotations

import dataclasses


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
    """True when the response has no body (a ``StreamEnded`` follows)."""


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
    """The peer half-closed a stream (END_STREAM, the TCP FIN of a flow).

    Also follows a ``ResponseReceived`` whose HEADERS ended the stream (a 2xx
    to a CONNECT whose target closed at once), so an owner needs no special case.
    """

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
class GoawayReceived:
    """The peer sent GOAWAY (RFC 9113 6.8): no new stream may be opened.

    With NO_ERROR, our streams above ``last_stream_id`` were not processed and
    are reported reset with REFUSED_STREAM right behind this event (safe to
    retry elsewhere); the others go on until they end. With any other code a
    ``ConnectionEnded`` follows: everything is over.
    """

    last_stream_id: int
    """The highest stream id of ours the peer may have processed."""
    error_code: int
    """The HTTP/2 error code (0 for a graceful shutdown)."""
    reason: str
    """A human-readable reason, with the peer's debug text made printable."""


@dataclasses.dataclass(frozen=True)
class ConnectionEnded:
    """The peer sent GOAWAY with an error, or broke the protocol; the session is over."""

    error_code: int
    """The HTTP/2 error code."""
    reason: str
    """A human-readable reason."""


Event = (
    RequestReceived | ResponseReceived | DataReceived | StreamEnded | StreamReset
    | StreamWritable | PingAnswered | GoawayReceived | ConnectionEnded
)


class StreamGone(Exception):
    """The stream was closed or reset before we could answer on it."""
