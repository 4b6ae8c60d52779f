"""Header blocks of the tunnel: HPACK coding (via ``hpack``) and validation.

Theory of operation: one ``FieldCodec`` per connection owns the HPACK encoder
and decoder, whose dynamic tables must see every header block in wire order
-- also blocks of streams that are refused or already closed. A block that
cannot be decoded, or that inflates beyond the advertised
MAX_HEADER_LIST_SIZE, leaves the decoder's table unusable, so both are
connection errors (``ProtocolViolation``). A block that decodes but breaks
the HTTP/2 message rules (RFC 9113 8.2 and 8.3: pseudo-headers first and
known, lowercase token names, no connection-specific fields, no CR/LF/NUL or
edge whitespace in values, valid UTF-8) only makes its message malformed:
the ``request``/``response``/``trailers`` checks say so and the caller
resets that stream. Our own outbound headers are trusted and not checked.

Speed: we encode every field as a never-indexed literal, so our blocks never
touch the dynamic table and a CONNECT to a known target is the same bytes
every time. Both ends memoize on that: the encoder per field, the decoder
per whole block -- but only for blocks that are "context-free" (static-table
indexes and non-indexing literals only), which decode the same whatever the
table holds. Blocks from other encoders simply take the full ``hpack`` path.
"""

from __future__ import annotations

import re

import hpack

from client.wire import frames as f
from client.wire.errors import ProtocolViolation

_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_REQUEST_PSEUDO = {b":method": ":method", b":scheme": ":scheme", b":authority": ":authority",
                   b":path": ":path", b":protocol": ":protocol"}
_RESPONSE_PSEUDO = {b":status": ":status"}
_NO_PSEUDO: dict[bytes, str] = {}
#: Largest dynamic table we keep for the peer's blocks, whatever it offers.
_ENCODER_TABLE_LIMIT = 4096
_STATIC_ENTRIES = 61


class FieldCodec:
    """HPACK state of one connection, both directions, with memos for repeated blocks."""

    __slots__ = ("_encoder", "_decoder", "_encoded", "_requests", "_responses", "_resize",
                 "max_list", "max_block")

    def __init__(self, max_header_list_size: int) -> None:
        self._encoder = hpack.Encoder()
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._encoded: dict[tuple[str, str], bytes] = {}
        self._requests: dict[bytes, dict[str, str] | None] = {}
        self._responses: dict[bytes, tuple[int, dict[str, str]] | None] = {}
        #: (smallest, last) table size the peer allowed since our last block, not yet signalled
        self._resize: tuple[int, int] | None = None
        self.max_list = self.max_block = 0
        self.limit(max_header_list_size)

    def limit(self, max_header_list_size: int) -> None:
        """Bound the header lists decoded from now on (RFC 7541 size) and the encoded blocks
        buffered; blocks already memoized decoded within an earlier bound."""
        self.max_list = max_header_list_size
        self._decoder.max_header_list_size = max_header_list_size
        #: Largest encoded block we buffer: an encoded field is never much
        #: longer than its RFC size (name + value + 32), so this bounds memory
        #: and refuses oversized blocks before the decoder spends CPU on them.
        self.max_block = max_header_list_size + 1024

    def set_peer_table_size(self, size: int) -> None:
        """Note the peer's SETTINGS_HEADER_TABLE_SIZE; our next block signals it.

        Only the smallest and the last size since our last block are kept (RFC 7541
        4.2 asks for no more): ``hpack`` would keep every change and emit them all,
        so a flood of SETTINGS would cost memory per change and one huge block.
        """
        size = min(size, _ENCODER_TABLE_LIMIT)
        if self._resize is not None:
            self._resize = (min(self._resize[0], size), size)
        elif size != self._encoder.header_table_size:
            self._resize = (size, size)

    def _table_size_updates(self) -> bytes:
        """The dynamic table size updates owed to the peer, for the start of a block."""
        (smallest, last), self._resize = self._resize, None
        encoder = self._encoder
        for size in (smallest, last):      # never the same size twice: hpack would forget
            if size != encoder.header_table_size:   # the first (its ``resized`` flag drops)
                encoder.header_table_size = size
        return encoder.encode(()) if encoder.header_table.resized else b""

    def encode(self, headers: list[tuple[str, str]]) -> bytes:
        """One header block for our own (trusted) headers.

        Every field is a never-indexed literal without Huffman coding (or a
        static-table index): our dynamic table stays empty, which keeps the
        session token out of any compression context (RFC 7541 7.1.3), spares
        the peer a pure-Python Huffman decode, and makes each field's encoding
        a constant we can memoize -- and each whole block one the peer can.
        """
        encoder, memo = self._encoder, self._encoded
        parts = [self._table_size_updates()] if self._resize is not None else []
        for field in headers:
            piece = memo.get(field)
            if piece is None:
                piece = encoder.encode(((field[0], field[1], True),), huffman=False)
                _remember(memo, field, piece)
            parts.append(piece)
        return b"".join(parts)

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The raw fields of a peer's block; raises ProtocolViolation."""
        try:
            return self._decoder.decode(block, raw=True)
        except hpack.OversizedHeaderListError as exc:
            raise ProtocolViolation(f"header list too large: {exc}",
                                    error_code=f.ENHANCE_YOUR_CALM) from None
        except Exception as exc:  # any decoder failure leaves its table unusable
            raise ProtocolViolation(f"bad header block: {exc!r}",
                                    error_code=f.COMPRESSION_ERROR) from None

    def request(self, block: bytes) -> dict[str, str] | None:
        """A request block's checked headers, or None if malformed; raises ProtocolViolation."""
        headers = self._requests.get(block, _MISS)
        if headers is _MISS:
            headers = request(self.decode(block), extended_connect=True)
            if len(block) <= _MEMO_BLOCK and _context_free(block):
                _remember(self._requests, block, headers)
        return None if headers is None else dict(headers)

    def response(self, block: bytes) -> tuple[int, dict[str, str]] | None:
        """A response block's status and other headers, or None if malformed."""
        got = self._responses.get(block, _MISS)
        if got is _MISS:
            got = response(self.decode(block))
            if len(block) <= _MEMO_BLOCK and _context_free(block):
                _remember(self._responses, block, got)
        return None if got is None else (got[0], dict(got[1]))

    def trailers(self, block: bytes) -> bool:
        """True if a trailer block is well-formed (no pseudo-headers)."""
        return _to_dict(self.decode(block), _NO_PSEUDO) is not None


_MISS = object()
_MEMO_LIMIT = 512
#: Largest block remembered (a CONNECT with its token is a few hundred bytes): the
#: memo keys are the peer's bytes, and 512 blocks of up to MAX_HEADER_LIST_SIZE each
#: would let a peer park megabytes per connection with refused requests.
_MEMO_BLOCK = 1024


def _remember(memo: dict, key: object, value: object) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()                 # a new working set: start over, stay bounded
    memo[key] = value


def _integer(block: bytes, i: int, bits: int) -> tuple[int, int]:
    """An HPACK integer with a ``bits``-bit prefix at ``i``: (value, next index)."""
    mask = (1 << bits) - 1
    value = block[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    while True:
        byte = block[i]
        i += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80 or shift > 28:
            return value, i


def _context_free(block: bytes) -> bool:
    """True if a block neither uses nor changes the dynamic table (RFC 7541 6):
    only static-table indexes and literals without indexing. Such a block
    decodes the same at any time, so its result may be memoized."""
    i, n = 0, len(block)
    try:
        while i < n:
            first = block[i]
            if first & 0x80:
                index, i = _integer(block, i, 7)
                if not 0 < index <= _STATIC_ENTRIES:
                    return False
                continue
            if first & 0x60:                 # incremental indexing, or a table size update
                return False
            index, i = _integer(block, i, 4)
            if index > _STATIC_ENTRIES:
                return False
            for _ in range(1 if index else 2):
                length, i = _integer(block, i, 7)
                i += length
        return i == n
    except IndexError:
        return False


def _to_dict(fields: list[tuple[bytes, bytes]], pseudo: dict[bytes, str]) -> dict[str, str] | None:
    """Checked fields as a dict (pseudo-headers included), or None if malformed."""
    out: dict[str, str] = {}
    regular = False
    try:
        for name, value in fields:
            if name[:1] == b":":
                key = pseudo.get(name)
                if key is None or regular or key in out:
                    return None
            else:
                regular = True
                if (_NAME.fullmatch(name) is None or name in _CONNECTION_SPECIFIC
                        or (name == b"te" and value != b"trailers")):
                    return None
                key = name.decode("ascii")
            if _BAD_VALUE.search(value) is not None:
                return None
            out[key] = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return out


def request(fields: list[tuple[bytes, bytes]], *, extended_connect: bool) -> dict[str, str] | None:
    """Request headers (RFC 9113 8.3.1, 8.5; RFC 8441 4), or None if malformed."""
    h = _to_dict(fields, _REQUEST_PSEUDO)
    if h is None:
        return None
    method = h.get(":method")
    if not method:
        return None
    if method == "CONNECT":
        if ":protocol" in h:
            ok = extended_connect and bool(h[":protocol"] and h.get(":scheme")
                                           and h.get(":path") and h.get(":authority"))
        else:
            ok = bool(h.get(":authority")) and ":scheme" not in h and ":path" not in h
    else:
        ok = ":protocol" not in h and bool(h.get(":scheme") and h.get(":path"))
    return h if ok else None


def response(fields: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, str]] | None:
    """The status and the other headers of a response, or None if malformed."""
    h = _to_dict(fields, _RESPONSE_PSEUDO)
    if h is None:
        return None
    status = h.pop(":status", "")
    if len(status) != 3 or not status.isascii() or not status.isdigit():
        return None
    return int(status), h

