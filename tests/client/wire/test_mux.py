"""The sans-IO multiplexer: two ends joined in memory, no sockets, no clock."""

from __future__ import annotations

from client.wire import mux as m
from client.wire import frames as f
from client.wire.errors import UsageError


def pair() -> tuple[m.Mux, m.Mux]:
    """A client and a gateway Mux that have exchanged their prefaces and settings."""
    client, gateway = m.Mux(client_side=True), m.Mux(client_side=False)
    shuttle(client, gateway)
    return client, gateway


def shuttle(a: m.Mux, b: m.Mux) -> tuple[list, list]:
    """Move bytes both ways until both are quiet; returns the events each side saw."""
    seen_a, seen_b = [], []
    for _ in range(50):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            break
        if out_a:
            seen_b += b.receive(out_a)
        if out_b:
            seen_a += a.receive(out_b)
    return seen_a, seen_b


def of(kind, events):
    return [e for e in events if isinstance(e, kind)]


def connect(client: m.Mux, gateway: m.Mux, authority="10.77.0.10:80") -> int:
    sid = client.request([(":method", "CONNECT"), (":authority", authority)])
    _, at_gateway = shuttle(client, gateway)
    (request,) = of(m.RequestReceived, at_gateway)
    assert request.headers[":authority"] == authority and not request.ended
    gateway.respond(sid, 200)
    at_client, _ = shuttle(client, gateway)
    assert of(m.ResponseReceived, at_client)[0].status == 200
    return sid


def test_gateway_advertises_extended_connect():
    """The gateway's SETTINGS allow extended CONNECT (RFC 8441); the client's do not need to."""
    client, gateway = pair()
    assert client.peer_allows_extended_connect
    assert not gateway.peer_allows_extended_connect


def test_payload_flows_both_ways_and_end_is_a_half_close():
    """Data goes both ways; END_STREAM from one side is reported once, the other side can still send."""
    client, gateway = pair()
    sid = connect(client, gateway)
    client.send(sid, b"request")
    client.end(sid)
    _, at_gateway = shuttle(client, gateway)
    assert b"".join(e.data for e in of(m.DataReceived, at_gateway)) == b"request"
    assert len(of(m.StreamEnded, at_gateway)) == 1
    gateway.send(sid, b"reply after the FIN")
    gateway.end(sid)
    at_client, _ = shuttle(client, gateway)
    assert b"".join(e.data for e in of(m.DataReceived, at_client)) == b"reply after the FIN"
    assert of(m.StreamEnded, at_client)


def test_payload_with_end_leaves_as_one_frame_that_ends_the_stream():
    """send(end=True) is a FIN that came with the data: one DATA frame carries END_STREAM."""
    client, gateway = pair()
    sid = connect(client, gateway)
    gateway.send(sid, b"last words", end=True)
    wire = gateway.data_to_send()
    assert len(wire) == 9 + len(b"last words")               # one frame header, no empty frame
    assert wire[3] == 0 and wire[4] & 0x1                     # DATA with END_STREAM
    events = client.receive(wire)
    assert [type(e) for e in events] == [m.DataReceived, m.StreamEnded]
    assert events[0].data == b"last words"
    gateway.send(sid, b"more")                                # ended: nothing more leaves
    assert gateway.data_to_send() == b""
    gateway.send(sid, b"", end=True)
    assert gateway.data_to_send() == b""


def test_window_closes_until_the_receiver_credits_what_it_handed_on():
    """Without consumed(), the sender stops at the stream window and buffers the rest;
    crediting what arrived reopens the window until all is through, and the
    sender hears that the stream is writable again."""
    client, gateway = pair()
    sid = connect(client, gateway)
    total = m.STREAM_WINDOW + 3 * 1024 * 1024
    client.send(sid, bytes(total))
    _, at_gateway = shuttle(client, gateway)
    got = sum(len(e.data) for e in of(m.DataReceived, at_gateway))
    assert got == m.STREAM_WINDOW
    assert client.buffered(sid) == total - got
    shuttle(client, gateway)                       # nothing credited: nothing moves
    assert client.buffered(sid) == total - got
    writable = False
    for _ in range(20):
        for e in of(m.DataReceived, at_gateway):
            gateway.consumed(sid, e.flow_length)
        at_client, at_gateway = shuttle(client, gateway)
        writable = writable or bool(of(m.StreamWritable, at_client))
        got += sum(len(e.data) for e in of(m.DataReceived, at_gateway))
        if got == total:
            break
    assert got == total and client.buffered(sid) == 0 and writable


def test_reset_reaches_the_peer_and_drops_queued_payload():
    """A reset is reported to the peer with its code; anything still queued is forgotten."""
    client, gateway = pair()
    sid = connect(client, gateway)
    client.send(sid, bytes(m.STREAM_WINDOW + 10))
    client.reset(sid)
    assert client.buffered(sid) == 0
    _, at_gateway = shuttle(client, gateway)
    (reset,) = of(m.StreamReset, at_gateway)
    assert reset.stream_id == sid and reset.error_code == 0x0A   # CONNECT_ERROR


def test_ping_is_answered_with_its_payload():
    """PING comes back as PingAnswered with the same eight bytes."""
    client, gateway = pair()
    client.ping(b"12345678")
    at_client, _ = shuttle(client, gateway)
    assert of(m.PingAnswered, at_client)[0].payload == b"12345678"


def test_garbage_ends_the_connection_with_a_reason():
    """Bytes that are not HTTP/2 end the session cleanly (an event, not an exception)."""
    gateway = m.Mux(client_side=False)
    events = gateway.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    (ended,) = of(m.ConnectionEnded, events)
    assert ended.error_code != 0 and "protocol error" in ended.reason


def test_goaway_is_reported_to_the_peer():
    """close() sends GOAWAY; the peer sees GoawayReceived with error code 0, and no
    ConnectionEnded: a graceful GOAWAY lets the open streams finish."""
    client, gateway = pair()
    gateway.close()
    at_client, _ = shuttle(client, gateway)
    (goaway,) = of(m.GoawayReceived, at_client)
    assert goaway.error_code == 0 and "gateway closed" in goaway.reason
    assert not of(m.ConnectionEnded, at_client)


def test_goaway_debug_text_stays_on_one_printable_line():
    """The peer's GOAWAY text goes into one-line messages and logs: newlines, escapes and
    bidi controls are replaced, and the text is cut short."""
    client, gateway = pair()
    shuttle(client, gateway)
    debug = "bye\nconnected: all fine\x1b[2J\u202e".encode() + b"\xff" + b"x" * 5000
    (goaway,) = of(m.GoawayReceived, client.receive(f.goaway(0, 0, debug)))
    assert goaway.reason.startswith("gateway closed the session: bye?connected: all fine?[2J?\ufffdx")
    assert goaway.reason.isprintable() and len(goaway.reason) < 250


def test_respond_on_a_reset_stream_raises_stream_gone():
    """Answering a stream the client already reset raises StreamGone for the caller to handle."""
    client, gateway = pair()
    sid = client.request([(":method", "CONNECT"), (":authority", "10.0.0.1:1")])
    shuttle(client, gateway)
    client.reset(sid)
    shuttle(client, gateway)
    try:
        gateway.respond(sid, 200)
    except m.StreamGone:
        pass
    else:
        raise AssertionError("respond() on a reset stream did not raise StreamGone")


def test_an_error_answer_closes_the_stream_on_both_ends():
    """A refusal that ends the stream (502 with END_STREAM) is followed by RST_STREAM NO_ERROR
    (RFC 9113 8.1), so neither end keeps a half-open stream the client would never end."""
    client, gateway = pair()
    sid = client.request([(":method", "CONNECT"), (":authority", "10.0.0.1:1")])
    shuttle(client, gateway)
    gateway.respond(sid, 502, [("proxy-status", "x; error=connection_refused")], end=True)
    at_client, _ = shuttle(client, gateway)
    (response,) = of(m.ResponseReceived, at_client)
    assert response.status == 502 and response.ended
    assert [(e.stream_id, e.error_code) for e in of(m.StreamReset, at_client)] == [(sid, 0)]
    assert client.open_streams == gateway.open_streams == 0


def test_refused_flows_do_not_use_up_the_stream_limit():
    """More refused CONNECTs than the gateway's stream limit: each is still answered at once
    (none waits for a stream slot that a refused stream keeps)."""
    client, gateway = m.Mux(client_side=True), m.Mux(client_side=False, max_concurrent_streams=2)
    shuttle(client, gateway)
    for _ in range(5):
        sid = client.request([(":method", "CONNECT"), (":authority", "10.0.0.1:1")])
        _, at_gateway = shuttle(client, gateway)
        assert of(m.RequestReceived, at_gateway), "the request never left the client"
        gateway.respond(sid, 502, end=True)
        at_client, _ = shuttle(client, gateway)
        assert of(m.ResponseReceived, at_client)[0].status == 502


def test_a_2xx_that_ends_the_stream_is_also_reported_as_its_end():
    """A 200 with END_STREAM (the target closed at once) is ResponseReceived then StreamEnded,
    as END_STREAM on DATA would be; once the client ends its half, the stream is gone."""
    client, gateway = pair()
    sid = client.request([(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
    shuttle(client, gateway)
    status_200 = b"\x88"                           # HPACK: static entry 8, ":status: 200"
    at_client = client.receive(f.head(1, f.HEADERS, f.END_STREAM | f.END_HEADERS, sid) + status_200)
    assert [type(e) for e in at_client] == [m.ResponseReceived, m.StreamEnded]
    assert at_client[0].status == 200 and at_client[0].ended and at_client[1].stream_id == sid
    assert client.open_streams == 1                  # our half is still open
    client.end(sid)
    assert client.open_streams == 0


def goaway_after(client: m.Mux, gateway: m.Mux) -> list:
    """The gateway sends GOAWAY before it has seen what the client sent last; returns the
    client's events on it, then hands the gateway what the client had sent."""
    in_flight = client.data_to_send()
    gateway.close()
    events = client.receive(gateway.data_to_send())
    gateway.receive(in_flight)
    return events


def test_a_graceful_goaway_refuses_only_the_streams_above_its_last_id():
    """Streams the gateway had seen before its GOAWAY go on both ways to their end; one
    opened after it is reset at once with REFUSED_STREAM, and what the gateway still says
    about it (its own refusal) is dropped quietly, with no reset back."""
    client, gateway = pair()
    first = connect(client, gateway)
    late = client.request([(":method", "CONNECT"), (":authority", "10.0.0.1:2")])
    events = goaway_after(client, gateway)
    (goaway,) = of(m.GoawayReceived, events)
    assert (goaway.last_stream_id, goaway.error_code) == (first, 0)
    assert [(e.stream_id, e.error_code) for e in of(m.StreamReset, events)] == [(late, 0x7)]
    assert client.receive(gateway.data_to_send()) == []     # its RST_STREAM REFUSED_STREAM
    assert client.data_to_send() == b""
    client.send(first, b"still", end=True)
    gateway.send(first, b"going", end=True)
    at_client, at_gateway = shuttle(client, gateway)
    assert b"".join(e.data for e in of(m.DataReceived, at_client)) == b"going"
    assert b"".join(e.data for e in of(m.DataReceived, at_gateway)) == b"still"
    assert not of(m.RequestReceived, at_gateway) and not of(m.StreamReset, at_client)
    assert not of(m.ConnectionEnded, at_client) and not of(m.ConnectionEnded, at_gateway)
    assert client.open_streams == gateway.open_streams == 0


def test_requests_waiting_for_a_stream_slot_are_refused_by_a_goaway():
    """A request queued behind the gateway's stream limit never goes out once GOAWAY came:
    it is reported refused at once."""
    client = m.Mux(client_side=True)
    gateway = m.Mux(client_side=False, max_concurrent_streams=1)
    shuttle(client, gateway)
    first = connect(client, gateway)
    waiting = client.request([(":method", "CONNECT"), (":authority", "10.0.0.1:2")])
    events = goaway_after(client, gateway)
    assert [(e.stream_id, e.error_code) for e in of(m.StreamReset, events)] == [(waiting, 0x7)]
    client.reset(first)
    _, at_gateway = shuttle(client, gateway)
    assert not of(m.RequestReceived, at_gateway)


def test_no_stream_opens_after_a_goaway():
    """After GOAWAY, request() raises UsageError instead of sending what the peer would ignore."""
    client, gateway = pair()
    gateway.close()
    shuttle(client, gateway)
    assert client.goaway_last_stream_id == 0
    try:
        client.request([(":method", "CONNECT"), (":authority", "10.0.0.1:1")])
    except UsageError:
        pass
    else:
        raise AssertionError("request() after GOAWAY did not raise")
    assert client.data_to_send() == b""


def test_a_goaway_with_an_error_ends_every_stream():
    """GOAWAY with an error code (not NO_ERROR) still ends the session at once, streams
    below its last id included."""
    client, gateway = pair()
    sid = connect(client, gateway)
    events = client.receive(f.goaway(sid, f.ENHANCE_YOUR_CALM, b"calm"))
    assert [type(e) for e in events] == [m.GoawayReceived, m.ConnectionEnded]
    assert events[1].error_code == f.ENHANCE_YOUR_CALM and "calm" in events[1].reason
    assert client.receive(f.head(1, f.DATA, 0, sid) + b"x") == []
