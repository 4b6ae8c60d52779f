"""The control API wire format, sans-IO: framing, parsing, encoding."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.control import protocol as p


def test_request_round_trip():
    """A request encodes to one line and parses back to an equal value."""
    request = p.Request(id=7, method="connect", params={"gateway": "https://gw", "username": "ä"})
    line = p.encode(request)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert p.parse(line[:-1]) == request


@pytest.mark.parametrize("message", [
    p.Notification(method="state", params={"state": "connected", "detail": ""}),
    p.Response(id="a", result={"api": 1}),
    p.ErrorResponse(id=None, code=p.NOT_ALLOWED, message="not allowed: user x is not in group y"),
    p.ErrorResponse(id=3, code=p.BUSY, message="busy"),
])
def test_other_messages_round_trip(message):
    """Notifications, responses and errors survive encode/parse unchanged."""
    assert p.parse(p.encode(message)[:-1]) == message


def test_omitted_params_read_as_empty_object():
    """A request without params has params {}."""
    assert p.parse(b'{"jsonrpc":"2.0","id":1,"method":"status"}') == p.Request(1, "status", {})


@pytest.mark.parametrize("line, code", [
    (b"not json", p.PARSE_ERROR),
    (b"\xff\xfe", p.PARSE_ERROR),
    (b'{"jsonrpc":"2.0","id":1,"method":"x","params":NaN}', p.PARSE_ERROR),
    (b"[" * 100000, p.PARSE_ERROR),
    (b"[1, 2]", p.INVALID_REQUEST),
    (b'{"id":1,"method":"status"}', p.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":true,"method":"status"}', p.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":""}', p.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":"status","params":[1]}', p.INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":1}', p.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}', p.INVALID_REQUEST),
])
def test_malformed_lines_give_their_codes(line, code):
    """Each kind of malformed line raises ProtocolError with the JSON-RPC code of the spec."""
    with pytest.raises(p.ProtocolError) as info:
        p.parse(line)
    assert info.value.code == code


def test_error_keeps_a_readable_id():
    """A bad request whose id could be read reports that id, so the answer can carry it."""
    with pytest.raises(p.ProtocolError) as info:
        p.parse(b'{"jsonrpc":"2.0","id":"q1","method":"x","params":3}')
    assert info.value.id == "q1"


def test_line_buffer_splits_and_keeps_partial_lines():
    """Lines split across reads come out whole, in order."""
    buf = p.LineBuffer()
    assert buf.feed(b'{"a"') == []
    assert buf.feed(b':1}\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert buf.feed(b":3}\n") == [b'{"c":3}']


def test_line_buffer_rejects_over_long_line():
    """A line over the limit is a parse error even before its newline arrives."""
    buf = p.LineBuffer(limit=16)
    assert buf.feed(b"x" * 16 + b"\n") == [b"x" * 16]
    with pytest.raises(p.ProtocolError) as info:
        buf.feed(b"y" * 17)
    assert info.value.code == p.PARSE_ERROR
    with pytest.raises(p.ProtocolError):
        p.LineBuffer(limit=16).feed(b"z" * 17 + b"\n")


def test_default_limit_is_one_mebibyte():
    """The default line limit is 1 MiB: exactly that much passes, one byte more does not."""
    assert p.LineBuffer().feed(b"a" * p.MAX_LINE + b"\n") == [b"a" * p.MAX_LINE]
    with pytest.raises(p.ProtocolError):
        p.LineBuffer().feed(b"a" * (p.MAX_LINE + 1) + b"\n")


def test_encode_rejects_values_json_cannot_carry():
    """NaN or non-JSON values in a message are a ProtocolError, not a crash or invalid JSON."""
    with pytest.raises(p.ProtocolError):
        p.encode(p.Notification(method="stats", params={"rate_in": float("nan")}))
    with pytest.raises(p.ProtocolError):
        p.encode(p.Response(id=1, result=object()))


def test_encode_keeps_odd_strings_valid():
    """A string with a lone surrogate still encodes to valid ASCII JSON."""
    line = p.encode(p.Notification(method="log", params={"message": "bad \udcff byte"}))
    assert json.loads(line.decode("ascii"))["params"]["message"] == "bad \udcff byte"


@settings(max_examples=500)
@given(st.binary(max_size=2000))
def test_parser_raises_only_its_own_error_on_arbitrary_bytes(data):
    """Whatever the bytes, parse and LineBuffer raise nothing but ProtocolError."""
    try:
        p.parse(data)
    except p.ProtocolError:
        pass
    try:
        for line in p.LineBuffer(limit=512).feed(data):
            try:
                p.parse(line)
            except p.ProtocolError:
                pass
    except p.ProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300)
@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_parser_on_arbitrary_json_objects(doc):
    """Arbitrary JSON objects (with or without the right fields) parse or raise ProtocolError."""
    for extra in ({}, {"jsonrpc": "2.0"}, {"jsonrpc": "2.0", "method": "m"}, {"jsonrpc": "2.0", "id": 1}):
        try:
            p.parse(json.dumps({**doc, **extra}).encode())
        except p.ProtocolError:
            pass


@given(st.integers(min_value=-2**31, max_value=2**31) | st.text(max_size=20),
       st.text(min_size=1, max_size=20), st.dictionaries(st.text(max_size=10), json_values, max_size=4))
def test_requests_round_trip(id, method, params):
    """Any request built from JSON values parses back to itself."""
    request = p.Request(id=id, method=method, params=params)
    assert p.parse(p.encode(request)[:-1]) == request
