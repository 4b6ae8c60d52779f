"""The control API's wire format, sans-IO: JSON-RPC 2.0, one object a line.

``LineBuffer`` cuts a byte stream into lines (at most ``MAX_LINE`` bytes
each, the newline not counted); ``parse`` turns one line into a ``Request``,
``Notification``, ``Response`` or ``ErrorResponse``; ``encode`` does the
reverse. Every malformed input becomes a ``ProtocolError`` carrying the
JSON-RPC code to answer with (and the request id, when it could be read);
nothing else escapes, whatever the bytes.

Only named parameters are used by this API, so ``params`` is always an
object (an omitted ``params`` reads as ``{}``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing

MAX_LINE = 1 << 20
"""Longest line accepted, in bytes, without its newline."""

API_VERSION = 1
"""The major version of the control API spoken here."""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVICE_ERROR = -32000
NOT_ALLOWED = -32001
UNSUPPORTED_VERSION = -32002
TOO_MANY_CLIENTS = -32003
BUSY = -32010
NO_SUCH_QUESTION = -32011

Id = typing.Union[int, str]


class ProtocolError(Exception):
    """Input that is not a valid control API message."""

    def __init__(self, code: int, message: str, id: Id | None = None) -> None:
        super().__init__(message)
        self.code = code
        """The JSON-RPC error code to answer with."""
        self.message = message
        """One line for the user."""
        self.id = id
        """The id of the offending request, when it could be read."""


@dataclasses.dataclass(frozen=True)
class Request:
    """A call that expects an answer."""

    id: Id
    """Chosen by the caller; the answer carries it back."""
    method: str
    """What to do."""
    params: dict = dataclasses.field(default_factory=dict)
    """Named parameters."""


@dataclasses.dataclass(frozen=True)
class Notification:
    """A one-way message (no id, no answer)."""

    method: str
    """What happened."""
    params: dict = dataclasses.field(default_factory=dict)
    """Its details."""


@dataclasses.dataclass(frozen=True)
class Response:
    """The successful answer to a request."""

    id: Id
    """The request's id."""
    result: typing.Any
    """The method's result."""


@dataclasses.dataclass(frozen=True)
class ErrorResponse:
    """The failed answer to a request (id None when the request was unreadable)."""

    id: Id | None
    """The request's id, or None."""
    code: int
    """JSON-RPC error code."""
    message: str
    """One line for the user."""


Message = typing.Union[Request, Notification, Response, ErrorResponse]


class LineBuffer:
    """Splits received bytes into lines; a line longer than ``limit`` is an error."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self._limit = limit
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete lines (without newlines).

        Raises ProtocolError(PARSE_ERROR) once a line exceeds the limit; the
        buffer is then unusable (the connection should be closed).
        """
        self._pending += data
        lines = []
        start = 0
        while True:
            end = self._pending.find(b"\n", start)
            if end < 0:
                break
            if end - start > self._limit:
                raise ProtocolError(PARSE_ERROR, f"line longer than {self._limit} bytes")
            lines.append(bytes(self._pending[start:end]))
            start = end + 1
        del self._pending[:start]
        if len(self._pending) > self._limit:
            raise ProtocolError(PARSE_ERROR, f"line longer than {self._limit} bytes")
        return lines


def _reject_constant(name: str) -> typing.NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _valid_id(value: object) -> bool:
    return (isinstance(value, str) or
            (isinstance(value, int) and not isinstance(value, bool)))


def parse(line: bytes) -> Message:
    """One line (without its newline) as a message; raises ProtocolError."""
    if len(line) > MAX_LINE:
        raise ProtocolError(PARSE_ERROR, f"line longer than {MAX_LINE} bytes")
    try:
        doc = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProtocolError(PARSE_ERROR, f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(INVALID_REQUEST, "a message must be a JSON object")
    raw_id = doc.get("id")
    known_id = raw_id if _valid_id(raw_id) else None
    if doc.get("jsonrpc") != "2.0":
        raise ProtocolError(INVALID_REQUEST, 'missing "jsonrpc": "2.0"', known_id)
    if "method" in doc:
        method = doc["method"]
        if not isinstance(method, str) or not method:
            raise ProtocolError(INVALID_REQUEST, "method must be a non-empty string", known_id)
        params = doc.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ProtocolError(INVALID_PARAMS, "params must be an object", known_id)
        if "id" not in doc:
            return Notification(method=method, params=params)
        if known_id is None:
            raise ProtocolError(INVALID_REQUEST, "id must be a string or an integer")
        return Request(id=known_id, method=method, params=params)
    if "result" in doc and "error" not in doc:
        if known_id is None:
            raise ProtocolError(INVALID_REQUEST, "a response needs a string or integer id")
        return Response(id=known_id, result=doc["result"])
    if "error" in doc and "result" not in doc:
        if raw_id is not None and known_id is None:
            raise ProtocolError(INVALID_REQUEST, "id must be a string, an integer or null")
        error = doc["error"]
        if not isinstance(error, dict):
            raise ProtocolError(INVALID_REQUEST, "error must be an object", known_id)
        code, message = error.get("code"), error.get("message")
        if not isinstance(code, int) or isinstance(code, bool) or not isinstance(message, str):
            raise ProtocolError(INVALID_REQUEST, "error needs an integer code and a string message",
                                known_id)
        return ErrorResponse(id=known_id, code=code, message=message)
    raise ProtocolError(INVALID_REQUEST, "neither a request nor a response", known_id)


def encode(message: Message) -> bytes:
    """The message as one line, newline included.

    Raises ProtocolError(INVALID_PARAMS) for values JSON cannot carry.
    """
    if isinstance(message, Request):
        doc = {"jsonrpc": "2.0", "id": message.id, "method": message.method, "params": message.params}
    elif isinstance(message, Notification):
        doc = {"jsonrpc": "2.0", "method": message.method, "params": message.params}
    elif isinstance(message, Response):
        doc = {"jsonrpc": "2.0", "id": message.id, "result": message.result}
    elif isinstance(message, ErrorResponse):
        doc = {"jsonrpc": "2.0", "id": message.id,
               "error": {"code": message.code, "message": message.message}}
    else:
        raise TypeError(f"not a message: {message!r}")
    try:
        # ASCII escapes keep any str (even a lone surrogate) valid on the wire.
        data = json.dumps(doc, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ProtocolError(INVALID_PARAMS, f"cannot encode: {exc}") from None
    if len(data) > MAX_LINE:
        raise ProtocolError(INVALID_PARAMS, f"message longer than {MAX_LINE} bytes")
    return data + b"\n"


def is_finite_number(value: object) -> bool:
    """A JSON number usable as a duration (not a bool, not NaN or infinite)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
