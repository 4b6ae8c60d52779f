"""HTTP/2 frame layout (RFC 9113 section 4 and 6): constants and builders.

Theory of operation: a frame is a 9-byte header (24-bit length, 8-bit type,
8-bit flags, 31-bit stream id) and a payload. Only the header is ever built
or parsed here; payloads stay the caller's bytes or memoryviews, so a DATA
frame costs one ``struct.pack`` and no copy. Parsing is done in place by the
connection (``h2conn``) with ``HEAD.unpack_from`` on the receive buffer.
Nothing here keeps state.
"""

from __future__ import annotations

import struct

from client.wire.errors import ProtocolViolation

#: The client connection preface (RFC 9113 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types.
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113 section 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB

# Settings identifiers (RFC 9113 6.5.2, RFC 8441).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6
ENABLE_CONNECT_PROTOCOL = 0x8

#: Defaults that hold until the peer's SETTINGS say otherwise.
DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
#: Bounds of a flow-control window and of SETTINGS_MAX_FRAME_SIZE.
MAX_WINDOW = 2**31 - 1
MAX_FRAME_LIMIT = 2**24 - 1

#: The frame header: (length << 8 | type), flags, stream id.
HEAD = struct.Struct(">LBL")
_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")
_TWO_U32 = struct.Struct(">LL")

SETTINGS_ACK = HEAD.pack(SETTINGS, ACK, 0)


def head(length: int, frame_type: int, flags: int, stream_id: int) -> bytes:
    """The 9-byte header of one frame."""
    return HEAD.pack(length << 8 | frame_type, flags, stream_id)


def settings(values: dict[int, int]) -> bytes:
    """A SETTINGS frame carrying ``values``."""
    body = b"".join(_SETTING.pack(k, v) for k, v in values.items())
    return head(len(body), SETTINGS, 0, 0) + body


def parse_settings(payload: memoryview) -> list[tuple[int, int]]:
    """The (identifier, value) pairs of a SETTINGS payload (length checked by the caller)."""
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame."""
    return head(4, WINDOW_UPDATE, 0, stream_id) + _U32.pack(increment)


def rst_stream(stream_id: int, error_code: int) -> bytes:
    """A RST_STREAM frame."""
    return head(4, RST_STREAM, 0, stream_id) + _U32.pack(error_code)


def ping(payload: bytes, *, ack: bool = False) -> bytes:
    """A PING frame (8 opaque bytes)."""
    return head(8, PING, ACK if ack else 0, 0) + payload


def goaway(last_stream_id: int, error_code: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame."""
    return head(8 + len(debug), GOAWAY, 0, 0) + _TWO_U32.pack(last_stream_id, error_code) + debug


def u32(payload: memoryview, offset: int = 0) -> int:
    """The 31-bit value at ``offset`` (reserved bit cleared)."""
    return _U32.unpack_from(payload, offset)[0] & 0x7FFFFFFF


def error_code(payload: memoryview, offset: int = 0) -> int:
    """The 32-bit error code at ``offset``."""
    return _U32.unpack_from(payload, offset)[0]


def unpad(payload: memoryview, flags: int) -> memoryview:
    """The payload of a PADDED frame without its pad length and padding."""
    if not payload or payload[0] >= len(payload):
        raise ProtocolViolation("padding exceeds the frame")
    return payload[1:len(payload) - payload[0]]


def header_frames(out: list, stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> None:
    """Append a HEADERS frame (and CONTINUATIONs if ``block`` exceeds ``max_frame``) to ``out``."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        out.append(HEAD.pack(len(block) << 8 | HEADERS, flags | END_HEADERS, stream_id))
        out.append(block)
        return
    view = memoryview(block)
    first, view = view[:max_frame], view[max_frame:]
    out.append(head(len(first), HEADERS, flags, stream_id))
    out.append(first)
    while view:
        piece, view = view[:max_frame], view[max_frame:]
        out.append(head(len(piece), CONTINUATION, 0 if view else END_HEADERS, stream_id))
        out.append(piece)
