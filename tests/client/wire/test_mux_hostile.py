"""Hostile and broken input: every case ends in a clean event, with bounded memory."""

from __future__ import annotations

import struct
import tracemalloc

import hpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.wire import mux as m
from tests.client.wire.h2peer import PREFACE, client_start, frame, of, settings_frame
from tests.client.wire.test_mux import connect, pair, shuttle

CONNECT = [(":method", "CONNECT"), (":authority", "10.0.0.1:80")]
DATA, HEADERS, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = 0, 1, 3, 4, 5, 6, 7, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4


def gateway(**kwargs) -> m.Mux:
    """A gateway Mux that has seen a raw client's preface and SETTINGS."""
    mux = m.Mux(client_side=False, **kwargs)
    assert mux.receive(client_start()) == []
    mux.data_to_send()
    return mux


def headers(sid: int, fields=CONNECT, *, encoder=None, flags=END_HEADERS) -> bytes:
    return frame(HEADERS, flags, sid, (encoder or hpack.Encoder()).encode(fields))


def ended(events) -> m.ConnectionEnded:
    (end,) = of(m.ConnectionEnded, events)
    return end


def frames_in(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame in ``data``."""
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        ftype, flags, sid = data[pos + 3], data[pos + 4], struct.unpack(">L", data[pos + 5:pos + 9])[0]
        out.append((ftype, flags, sid, data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return out


def resets(mux: m.Mux) -> dict[int, int]:
    return {sid: struct.unpack(">L", p)[0] for t, _, sid, p in frames_in(mux.data_to_send()) if t == RST}


def test_bad_preface_ends_with_protocol_error_and_goaway():
    """Anything but the client preface ends the session with PROTOCOL_ERROR and a GOAWAY."""
    mux = m.Mux(client_side=False)
    mux.data_to_send()
    assert ended(mux.receive(b"PRI * HTTP/1.1\r\n")).error_code == 0x1
    assert [t for t, *_ in frames_in(mux.data_to_send())] == [GOAWAY]
    assert mux.receive(client_start()) == []           # nothing after the end


def test_oversized_frame_is_a_frame_size_error():
    """A frame longer than our MAX_FRAME is refused as soon as its header is seen."""
    mux = gateway()
    assert ended(mux.receive(frame(DATA, 0, 1, b"")[:0] + struct.pack(">L", m.MAX_FRAME + 1)[1:]
                             + b"\x00\x00\x00\x00\x00\x01")).error_code == 0x6


def test_header_list_too_large_ends_the_session():
    """A header list beyond MAX_HEADER_LIST_SIZE ends the session (its HPACK state is unusable)."""
    mux = gateway(max_header_list_size=4096)
    events = mux.receive(headers(1, CONNECT + [("x-junk", "a" * 5000)]))
    assert ended(events).error_code == 0xB and not of(m.RequestReceived, events)


def test_a_lowered_header_limit_refuses_large_blocks_before_decoding_and_can_be_raised():
    """With limit_header_lists(4096) a larger block ends the session with ENHANCE_YOUR_CALM on
    its encoded size alone (it is not valid HPACK: decoding would have found COMPRESSION_ERROR);
    raised again, the new limit is advertised and a large block is decoded."""
    low = gateway(max_header_list_size=16384)
    low.limit_header_lists(4096)
    ((kind, _, _, body),) = frames_in(low.data_to_send())
    assert kind == SETTINGS and struct.unpack(">HL", body) == (0x6, 4096)
    assert ended(low.receive(frame(HEADERS, END_HEADERS, 1, b"\xff" * 6000))).error_code == 0xB
    raised = gateway(max_header_list_size=4096)
    raised.limit_header_lists(16384)
    ((kind, _, _, body),) = frames_in(raised.data_to_send())
    assert kind == SETTINGS and struct.unpack(">HL", body) == (0x6, 16384)
    (request,) = raised.receive(headers(1, CONNECT + [("x-junk", "a" * 8000)]))
    assert request.headers["x-junk"] == "a" * 8000


def test_endless_continuation_is_cut_off_early():
    """A header block continued without end is refused once it exceeds the bound, not buffered."""
    mux = gateway(max_header_list_size=4096)
    events = mux.receive(frame(HEADERS, 0, 1, b"\x00"))
    chunk = frame(CONT, 0, 1, b"\x00" * 1000)
    for i in range(1000):
        events += mux.receive(chunk)
        if events:
            break
    assert ended(events).error_code == 0xB and i < 10
    empty = gateway()
    empty.receive(frame(HEADERS, 0, 1, b""))
    events = [e for _ in range(200) for e in empty.receive(frame(CONT, 0, 1, b""))]
    assert ended(events).error_code == 0xB


def test_data_on_idle_and_closed_streams():
    """DATA on a never-opened stream ends the session; on a closed one it only draws RST_STREAM."""
    mux = gateway()
    assert ended(mux.receive(frame(DATA, 0, 1, b"x"))).error_code == 0x1
    mux = gateway()
    mux.receive(headers(1, flags=END_HEADERS | END_STREAM))
    mux.respond(1, 200, end=True)
    mux.data_to_send()
    assert mux.open_streams == 0
    assert mux.receive(frame(DATA, 0, 1, b"late")) == []
    assert resets(mux) == {1: 0x5}                      # STREAM_CLOSED


def test_window_overflow_and_overrun_are_flow_control_errors():
    """A WINDOW_UPDATE past 2^31-1, or DATA beyond the window we gave, is FLOW_CONTROL_ERROR."""
    mux = gateway()
    assert ended(mux.receive(frame(WINDOW, 0, 0, struct.pack(">L", 2**31 - 1)))).error_code == 0x3
    mux = gateway()
    assert ended(mux.receive(frame(WINDOW, 0, 0, struct.pack(">L", 0)))).error_code == 0x1
    mux = gateway()
    mux.receive(headers(1))
    big = frame(DATA, 0, 1, bytes(m.MAX_FRAME))
    events = [e for _ in range(m.STREAM_WINDOW // m.MAX_FRAME + 1) for e in mux.receive(big)]
    assert ended(events).error_code == 0x3


def test_bad_settings_values():
    """INITIAL_WINDOW_SIZE above 2^31-1 and MAX_FRAME_SIZE out of range end the session."""
    mux = m.Mux(client_side=False)
    assert ended(mux.receive(PREFACE + settings_frame(INITIAL_WINDOW_SIZE=2**31))).error_code == 0x3
    mux = m.Mux(client_side=False)
    assert ended(mux.receive(PREFACE + settings_frame(MAX_FRAME_SIZE=100))).error_code == 0x1
    mux = m.Mux(client_side=False)
    assert ended(mux.receive(PREFACE + frame(PING, 0, 0, bytes(8)))).error_code == 0x1   # no SETTINGS first


def test_a_flood_of_window_changes_is_cut_off():
    """SETTINGS that keep changing the initial window while many streams are open (each
    change walks them all) end the session with ENHANCE_YOUR_CALM; a few changes are fine."""
    mux, enc = gateway(max_concurrent_streams=1000), hpack.Encoder()
    assert len(of(m.RequestReceived, mux.receive(
        b"".join(headers(sid, encoder=enc) for sid in range(1, 2001, 2))))) == 1000
    events = mux.receive(settings_frame(INITIAL_WINDOW_SIZE=1000) + settings_frame(INITIAL_WINDOW_SIZE=2000))
    assert not of(m.ConnectionEnded, events)
    flood = b"".join(settings_frame(INITIAL_WINDOW_SIZE=1000 + (i & 1)) for i in range(2000))
    assert ended(mux.receive(flood)).error_code == 0xB


def test_stream_ids_must_be_new_odd_and_increasing():
    """Even, decreasing or reused stream ids from a client end the session."""
    for sids in ([2], [5, 3]):
        mux, enc = gateway(), hpack.Encoder()
        events = [e for sid in sids for e in mux.receive(headers(sid, encoder=enc))]
        assert ended(events).error_code == 0x1
    mux, enc = gateway(), hpack.Encoder()
    mux.receive(headers(1, encoder=enc, flags=END_HEADERS | END_STREAM))
    mux.respond(1, 200, end=True)                      # stream 1 is now closed
    assert ended(mux.receive(headers(1, encoder=enc))).error_code == 0x1


def test_malformed_requests_reset_only_their_stream():
    """Uppercase names, unknown or late pseudo-headers, connection headers, CR/LF in values,
    bad UTF-8 or a CONNECT without :authority: RST_STREAM PROTOCOL_ERROR, no request event."""
    bad = [
        CONNECT + [("X-Upper", "1")],
        CONNECT + [(":weird", "1")],
        [(":method", "CONNECT"), ("x", "1"), (":authority", "a:1")],
        CONNECT + [("connection", "close")],
        CONNECT + [("x", "a\r\nb")],
        CONNECT + [(b"x", b"\xff\xfe")],
        [(":method", "CONNECT")],
        [(":method", "GET"), (":path", "/")],
    ]
    mux, enc = gateway(), hpack.Encoder()
    for i, fields in enumerate(bad):
        assert mux.receive(headers(2 * i + 1, fields, encoder=enc)) == []
    assert resets(mux) == {2 * i + 1: 0x1 for i in range(len(bad))}
    (req,) = of(m.RequestReceived, mux.receive(headers(99, encoder=enc)))
    assert req.headers == dict(CONNECT)


def test_push_promise_to_a_client_is_a_protocol_error():
    """A server may not push to us: PUSH_PROMISE ends the session."""
    client = m.Mux(client_side=True)
    sid = client.request(CONNECT)
    events = client.receive(settings_frame() + frame(PUSH, END_HEADERS, sid, struct.pack(">L", 2)))
    assert ended(events).error_code == 0x1


def test_a_stream_flood_is_refused_beyond_the_limit_and_the_session_survives():
    """3000 streams against a limit of 100: 100 requests, 2900 REFUSED_STREAM, no session end,
    and the memory of refused ids stays bounded."""
    mux, enc = gateway(max_concurrent_streams=100), hpack.Encoder()
    tracemalloc.start()
    events = []
    for sid in range(1, 6001, 2):
        events += mux.receive(headers(sid, encoder=enc) + frame(DATA, 0, sid, b"x" * 100))
        if sid == 1001:
            base = tracemalloc.get_traced_memory()[0]
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(of(m.RequestReceived, events)) == 100 and not of(m.ConnectionEnded, events)
    refused = resets(mux)
    assert len(refused) == 2900 and set(refused.values()) == {0x7}
    assert mux.open_streams == 100 and grown < 300_000


def test_thousands_of_stream_lives_leave_nothing_behind():
    """Complete stream lives (request, response, data and FIN each way) leave no per-stream memory."""
    client, gw = pair()

    def lives(n: int) -> None:
        for _ in range(n):
            sid = connect(client, gw)
            for a, b in ((client, gw), (gw, client)):
                a.send(sid, b"payload")
                a.end(sid)
                for ev in of(m.DataReceived, shuttle(client, gw)[0 if b is client else 1]):
                    b.consumed(ev.stream_id, ev.flow_length)
            assert client.open_streams == gw.open_streams == 0

    lives(500)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    lives(3000)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 100_000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_side=st.booleans(), prefix=st.booleans(), data=st.binary(max_size=600),
       cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8))
def test_arbitrary_bytes_never_raise(client_side, prefix, data, cuts):
    """Any bytes, split anywhere, give events (maybe ConnectionEnded), never an exception or internal error."""
    mux = m.Mux(client_side=client_side)
    if prefix:
        data = (b"" if client_side else PREFACE) + settings_frame() + data
    pieces, last = [], 0
    for cut in sorted(c for c in cuts if c <= len(data)) + [len(data)]:
        pieces.append(data[last:cut])
        last = cut
    for piece in pieces:
        for ev in mux.receive(piece):
            assert not (isinstance(ev, m.ConnectionEnded) and ev.error_code == 0x2), ev
    mux.data_to_send()


_frames = st.builds(frame, st.integers(0, 11), st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 5, 7]),
                    st.binary(max_size=40))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_side=st.booleans(), frames=st.lists(_frames, max_size=12), size=st.integers(1, 50))
def test_random_frames_never_raise(client_side, frames, size):
    """Well-framed random frames after a valid start exercise every handler without an exception."""
    mux = m.Mux(client_side=client_side)
    if client_side:
        for _ in range(3):
            mux.request(CONNECT)
    data = (b"" if client_side else PREFACE) + settings_frame() + b"".join(frames)
    for i in range(0, len(data), size):
        for ev in mux.receive(data[i:i + size]):
            assert not (isinstance(ev, m.ConnectionEnded) and ev.error_code == 0x2), ev
    mux.data_to_send()


def _blocked_gateway(streams: int) -> m.Mux:
    """A gateway whose ``streams`` answered streams all wait for connection window."""
    mux, enc = gateway(max_concurrent_streams=streams), hpack.Encoder()
    mux.receive(b"".join(headers(sid, encoder=enc) for sid in range(1, 2 * streams, 2)))
    for sid in range(1, 2 * streams, 2):
        mux.respond(sid, 200)
        mux.send(sid, bytes(70000))          # together far beyond the 65535 connection window
    mux.data_to_send()
    return mux


def test_connection_window_updates_do_not_walk_every_blocked_stream():
    """Tiny connection WINDOW_UPDATEs cost about as much with 1000 streams waiting for window
    as with 10 (each used to walk all of them: a 13-byte frame bought ~1000 stream visits);
    the window they open is still used."""
    import time
    tiny = frame(WINDOW, 0, 0, struct.pack(">L", 1)) * 2000
    cost = {}
    for streams in (10, 1000):
        best = float("inf")
        for _ in range(3):
            mux = _blocked_gateway(streams)
            start = time.perf_counter()
            assert not of(m.ConnectionEnded, mux.receive(tiny))
            best = min(best, time.perf_counter() - start)
        cost[streams] = best
        assert sum(len(p) for t, _, _, p in frames_in(mux.data_to_send()) if t == DATA) == 2000
    assert cost[1000] < 5 * cost[10], cost


def test_memoized_header_blocks_stay_small():
    """Remembered request blocks are bounded in size: hundreds of distinct large blocks (each
    one a refused request) leave no megabytes behind on the connection."""
    mux, enc = gateway(max_header_list_size=16384), hpack.Encoder()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(500):
        block = enc.encode([(":method", "CONNECT", True), ("x-pad", "%05d" % i * 3000, True)],
                           huffman=False)            # context-free: what the memo keeps
        assert mux.receive(frame(HEADERS, END_HEADERS, 2 * i + 1, block)) == []
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(resets(mux)) == 500 and grown < 1_000_000, grown


def test_a_flood_of_header_table_sizes_is_signalled_as_two_updates():
    """SETTINGS_HEADER_TABLE_SIZE changed 200 000 times between two of our header blocks
    holds no memory per change, and the next block signals only the smallest and the final
    size (RFC 7541 4.2), which a decoder held to the final size accepts."""
    for final in (0, 4096):
        mux = gateway()
        body = b"".join(struct.pack(">HL", 0x1, size) for size in (4096, 0) * 20000 + (final,))
        tracemalloc.start()
        mux.receive(frame(SETTINGS, 0, 0, body))        # warms CPython's tuple free list
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            assert not of(m.ConnectionEnded, mux.receive(frame(SETTINGS, 0, 0, body)))
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        mux.receive(headers(1))
        mux.data_to_send()
        mux.respond(1, 200)
        ((ftype, _, _, block),) = frames_in(mux.data_to_send())
        assert ftype == HEADERS and grown < 100_000 and len(block) < 32, (grown, len(block))
        peer = hpack.Decoder()
        peer.max_allowed_table_size = final
        assert peer.decode(block) == [(":status", "200")] and peer.header_table_size == final
