"""RFC 9297 capsules and QUIC variable-length integers (shared by client and gateway).

Theory of operation. A connect-udp or connect-ip stream carries, in its DATA
frames, a sequence of ``Capsule {Type (varint), Length (varint), Value}``.
DATA frame boundaries mean nothing: a capsule may span many frames and a frame
may hold many capsules. ``CapsuleParser.feed`` therefore keeps at most one
partial capsule and returns every capsule completed by the new bytes. The
parser is bounded: a DATAGRAM capsule that declares a length above
``max_capsule`` (more than any UDP payload or IP packet) raises
``CapsuleError`` before its value is buffered, and the caller resets the
stream (RFC 9297 3.2: a malformed capsule makes the message malformed).
Capsules of other types are returned like any other and the caller skips the
ones it does not know; one longer than ``max_capsule`` is skipped right here
as its bytes arrive, never buffered (RFC 9297 3.2: unknown types MUST be
skipped, whatever their length).

HTTP Datagrams travel in DATAGRAM capsules (type 0x00); for connect-udp and
connect-ip their payload starts with a varint Context ID, 0 meaning "a raw UDP
payload" (RFC 9298) or "a whole IP packet" (RFC 9484).

Varints are QUIC's (RFC 9000 16): the top two bits of the first byte give the
length (1, 2, 4 or 8 bytes), the rest is a big-endian value. We always encode
minimally and accept non-minimal encodings, as the RFC requires.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.wire.errors import ProtocolViolation, TunnelError

#: HTTP Datagram (RFC 9297).
DATAGRAM = 0x00
#: CONNECT-IP address assignment, request and routes (RFC 9484).
ADDRESS_ASSIGN = 0x01
ADDRESS_REQUEST = 0x02
ROUTE_ADVERTISEMENT = 0x03
#: Tunnelgate's own capsule ("TG" + 1): the gateway tells the client that the UDP
#: target answered with ICMP destination unreachable. Value: one byte, the ICMP
#: code (3 = port unreachable). Not a GREASE value; other peers skip it.
UNREACHABLE = 0x54470001

#: Largest value a varint can hold, plus one.
VARINT_LIMIT = 1 << 62
#: Default bound on a capsule's declared length: a maximal UDP payload plus headroom.
MAX_CAPSULE = 65535 + 16

#: HTTP/2 error code for a malformed capsule stream (RFC 9113 8.1.1: a stream error
#: of type PROTOCOL_ERROR).
_PROTOCOL_ERROR = 0x1


class NeedMore(TunnelError):
    """The buffer ends inside a varint or capsule: more bytes are needed (not a peer error)."""


class CapsuleError(ProtocolViolation):
    """The peer sent a malformed or oversized capsule; the stream must be reset."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=_PROTOCOL_ERROR)


@dataclass(frozen=True)
class Capsule:
    """One complete capsule."""

    type: int       #: the capsule type (DATAGRAM, UNREACHABLE, or one to skip)
    value: bytes    #: the capsule value, exactly ``Length`` bytes


# -- varints ----------------------------------------------------------------------------
def encode_varint(n: int) -> bytes:
    """The minimal QUIC varint encoding of ``n`` (0 <= n < 2**62), else ValueError."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"varint value must be an int, not {type(n).__name__}")
    if n < 0 or n >= VARINT_LIMIT:
        raise ValueError(f"{n} cannot be encoded as a varint (0 .. 2**62-1)")
    if n < 0x40:
        return bytes((n,))
    if n < 0x4000:
        return (n | 0x4000).to_bytes(2, "big")
    if n < 0x4000_0000:
        return (n | 0x8000_0000).to_bytes(4, "big")
    return (n | 0xC000_0000_0000_0000).to_bytes(8, "big")


def decode_varint(buf, offset: int = 0) -> tuple[int, int]:
    """Decode the varint at ``buf[offset:]``; return (value, offset just past it).

    Raises ``NeedMore`` when ``buf`` ends before the varint does. Non-minimal
    encodings are accepted.
    """
    if offset < 0:
        raise ValueError(f"negative offset {offset}")
    if offset >= len(buf):
        raise NeedMore("no bytes for a varint")
    first = buf[offset]
    size = 1 << (first >> 6)
    end = offset + size
    if end > len(buf):
        raise NeedMore(f"a {size}-byte varint is truncated")
    if size == 1:
        return first, end
    return int.from_bytes(buf[offset:end], "big") & ((1 << (8 * size - 2)) - 1), end


# -- encoding ---------------------------------------------------------------------------
def encode_capsule(capsule_type: int, value) -> bytes:
    """One capsule: varint type, varint length, then ``value``."""
    return b"".join((encode_varint(capsule_type), encode_varint(len(value)), value))


def encode_datagram(payload, context_id: int = 0) -> bytes:
    """A DATAGRAM capsule whose HTTP Datagram is varint(``context_id``) + ``payload``.

    Builds the whole capsule with one copy of the payload.
    """
    context = encode_varint(context_id)
    return b"".join((b"\x00", encode_varint(len(context) + len(payload)), context, payload))


def parse_datagram(value) -> tuple[int, bytes]:
    """Split a DATAGRAM capsule's value into (context id, payload); CapsuleError if truncated."""
    try:
        context_id, at = decode_varint(value, 0)
    except NeedMore:
        raise CapsuleError("DATAGRAM capsule without a complete context id") from None
    return context_id, bytes(value[at:])


# -- parsing ----------------------------------------------------------------------------
class CapsuleParser:
    """Incremental parser of one stream's capsules, holding at most one partial capsule."""

    def __init__(self, *, max_capsule: int = MAX_CAPSULE) -> None:
        if max_capsule < 0:
            raise ValueError(f"max_capsule {max_capsule} is negative")
        self._max = max_capsule
        self._buffer = bytearray()
        self._skip = 0                  # bytes still to pass over of an oversized non-DATAGRAM capsule
        self._failed: CapsuleError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held of a capsule not yet complete (at most a header plus ``max_capsule``)."""
        return len(self._buffer)

    def feed(self, data) -> list[Capsule]:
        """The capsules completed by ``data``, in order.

        Raises ``CapsuleError`` when a DATAGRAM capsule declares a length above
        ``max_capsule`` (capsules completed earlier in the same call are dropped
        with the stream); the parser then stays failed (every later call raises).
        Longer capsules of other types are skipped and not returned.
        """
        if self._failed is not None:
            raise self._failed
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            if skipped == len(data):
                return []
            data = memoryview(data)[skipped:]
        if self._buffer:
            self._buffer += data          # amortised append: byte-by-byte feeding stays linear
            buffered = True
            view = memoryview(self._buffer)
        else:
            buffered = False
            view = memoryview(data)
        capsules: list[Capsule] = []
        at, size = 0, len(view)
        try:
            while at < size:
                try:
                    capsule_type, value_at = decode_varint(view, at)
                    length, value_at = decode_varint(view, value_at)
                except NeedMore:
                    break
                if length > self._max:
                    if capsule_type != DATAGRAM:
                        at = min(value_at + length, size)
                        self._skip = value_at + length - at
                        continue
                    self._failed = CapsuleError(
                        f"capsule type {capsule_type:#x} declares {length} bytes (limit {self._max})")
                    break
                end = value_at + length
                if end > size:
                    break
                capsules.append(Capsule(type=capsule_type, value=bytes(view[value_at:end])))
                at = end
            rest = None if buffered else bytearray(view[at:])
        finally:
            view.release()
        if self._failed is not None:
            self._buffer = bytearray()
            raise self._failed
        if buffered:
            if at:
                del self._buffer[:at]
        else:
            self._buffer = rest
        return capsules

    def finish(self) -> None:
        """The stream ended: raise ``CapsuleError`` if a capsule was left incomplete."""
        if self._failed is not None:
            raise self._failed
        if self._buffer or self._skip:
            raise CapsuleError(f"stream ended inside a capsule "
                               f"({len(self._buffer) or self._skip} bytes pending)")
