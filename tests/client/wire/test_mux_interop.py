"""Our Mux against the reference ``h2`` stack, in memory, in both roles."""

from __future__ import annotations

import h2.events
import h2.settings
import hpack
import hyperframe.frame as hf

from client.wire import frames as f
from client.wire import mux as m
from tests.client.wire.h2peer import H2Peer, of, received, shuttle

S = h2.settings.SettingCodes
CONNECT = [(":method", "CONNECT"), (":authority", "10.77.0.10:80"), ("authorization", "Bearer t")]


def _codes(settings: dict[str, int]) -> dict | None:
    return {S[name]: value for name, value in settings.items()} or None


def ours_client(**settings) -> tuple[m.Mux, H2Peer]:
    client, gateway = m.Mux(client_side=True), H2Peer(client_side=False, settings=_codes(settings))
    shuttle(client, gateway)
    return client, gateway


def ours_gateway(**settings) -> tuple[m.Mux, H2Peer]:
    gateway, client = m.Mux(client_side=False), H2Peer(client_side=True, settings=_codes(settings))
    shuttle(gateway, client)
    return gateway, client


def test_connect_to_an_h2_gateway_with_data_both_ways_and_half_close():
    """Our client's CONNECT reaches h2, the 200 comes back, payload flows both ways, each FIN once."""
    client, gateway = ours_client()
    sid = client.request(CONNECT)
    shuttle(client, gateway)
    (req,) = gateway.of(h2.events.RequestReceived)
    assert dict(req.headers)[":authority"] == "10.77.0.10:80"
    gateway.conn.send_headers(sid, [(":status", "200"), ("proxy-status", "x")])
    seen = shuttle(client, gateway)
    (resp,) = of(m.ResponseReceived, seen)
    assert resp.status == 200 and resp.headers == {"proxy-status": "x"} and not resp.ended
    client.send(sid, b"hello ")
    client.send(sid, b"gateway")
    client.end(sid)
    shuttle(client, gateway)
    assert bytes(gateway.data[sid]) == b"hello gateway"
    assert len(gateway.of(h2.events.StreamEnded)) == 1
    gateway.conn.send_data(sid, b"reply", end_stream=True)
    seen = shuttle(client, gateway)
    assert received(seen, sid) == b"reply" and len(of(m.StreamEnded, seen)) == 1
    assert client.open_streams == 0


def test_h2_client_reaches_our_gateway():
    """An h2 client's CONNECT arrives as RequestReceived with pseudo-headers; our answer and data reach it."""
    gateway, client = ours_gateway()
    assert client.conn.remote_settings.enable_connect_protocol == 1
    client.conn.send_headers(1, CONNECT)
    client.conn.send_data(1, b"up", end_stream=True)
    seen = shuttle(gateway, client)
    (req,) = of(m.RequestReceived, seen)
    assert req.headers == {":method": "CONNECT", ":authority": "10.77.0.10:80", "authorization": "Bearer t"}
    assert received(seen, 1) == b"up" and of(m.StreamEnded, seen)
    gateway.respond(1, 200)
    gateway.send(1, b"down")
    gateway.end(1)
    shuttle(gateway, client)
    (resp,) = client.of(h2.events.ResponseReceived)
    assert dict(resp.headers)[":status"] == "200"
    assert bytes(client.data[1]) == b"down" and client.of(h2.events.StreamEnded)
    assert gateway.open_streams == 0


def test_extended_connect_both_ways():
    """:protocol connect-udp (RFC 8441) is accepted by h2 from us and by us from h2."""
    udp = [(":method", "CONNECT"), (":protocol", "connect-udp"), (":scheme", "https"),
           (":authority", "gw:443"), (":path", "/.well-known/masque/udp/10.0.0.1/53/"),
           ("capsule-protocol", "?1")]
    client, h2_gateway = ours_client(ENABLE_CONNECT_PROTOCOL=1)
    assert client.peer_allows_extended_connect
    sid = client.request(udp)
    shuttle(client, h2_gateway)
    (req,) = h2_gateway.of(h2.events.RequestReceived)
    assert dict(req.headers)[":protocol"] == "connect-udp"
    gateway, h2_client = ours_gateway()
    h2_client.conn.send_headers(1, udp)
    (req,) = of(m.RequestReceived, shuttle(gateway, h2_client))
    assert req.headers[":protocol"] == "connect-udp" and req.headers[":path"].endswith("/53/")
    assert sid == 1


def test_large_payloads_obey_small_windows_both_ways():
    """Payloads far larger than the windows arrive intact: ours waits for h2's credit,
    h2 waits for ours, and small peer frames are respected."""
    client, gateway = ours_client(INITIAL_WINDOW_SIZE=20000)
    sid = client.request(CONNECT)
    shuttle(client, gateway)
    gateway.conn.send_headers(sid, [(":status", "200")])
    shuttle(client, gateway)
    up = bytes(range(256)) * 4000                        # 1 MB against a 20 kB window
    client.send(sid, up)
    assert client.buffered(sid) > 0
    client.end(sid)
    shuttle(client, gateway)
    assert bytes(gateway.data[sid]) == up and client.buffered(sid) == 0
    down = bytes(range(255, -1, -1)) * 40000             # 10 MB against our 4 MB stream window
    gateway.conn.increment_flow_control_window(2**24)
    sent = 0
    seen: list = []
    for _ in range(200):
        window = min(gateway.conn.local_flow_control_window(sid), len(down) - sent)
        for start in range(sent, sent + window, 16384):
            end = min(start + 16384, sent + window)
            gateway.conn.send_data(sid, down[start:end], end_stream=end == len(down))
        sent += window
        seen += shuttle(client, gateway)
        if sent == len(down):
            break
    assert received(seen, sid) == down and of(m.StreamEnded, seen)


def test_settings_change_mid_stream_unblocks_the_sender():
    """A larger INITIAL_WINDOW_SIZE from h2 releases payload queued behind the old window."""
    client, gateway = ours_client(INITIAL_WINDOW_SIZE=1000)
    gateway.auto_credit = False
    sid = client.request(CONNECT)
    shuttle(client, gateway)
    client.send(sid, b"x" * 5000)
    shuttle(client, gateway)
    assert len(gateway.data[sid]) == 1000 and client.buffered(sid) == 4000
    gateway.conn.update_settings({S.INITIAL_WINDOW_SIZE: 100000, S.MAX_FRAME_SIZE: 32768})
    shuttle(client, gateway)
    assert len(gateway.data[sid]) == 5000 and client.buffered(sid) == 0


def test_resets_both_ways_carry_their_codes():
    """Our reset reaches h2 with CONNECT_ERROR; h2's reset reaches us with its code."""
    client, gateway = ours_client()
    a, b = client.request(CONNECT), client.request(CONNECT)
    shuttle(client, gateway)
    client.reset(a)
    shuttle(client, gateway)
    (reset,) = gateway.of(h2.events.StreamReset)
    assert reset.stream_id == a and reset.error_code == 0xA
    gateway.conn.reset_stream(b, 0x8)
    (reset,) = of(m.StreamReset, shuttle(client, gateway))
    assert reset.stream_id == b and reset.error_code == 0x8
    assert client.open_streams == 0


def test_ping_both_ways():
    """Our PING is answered by h2, and we answer h2's."""
    client, gateway = ours_client()
    client.ping(b"ours1234")
    assert of(m.PingAnswered, shuttle(client, gateway))[0].payload == b"ours1234"
    gateway.conn.ping(b"theirs12")
    shuttle(client, gateway)
    assert gateway.of(h2.events.PingAckReceived)[0].ping_data == b"theirs12"


def test_an_h2_gateways_200_that_ends_the_stream_is_an_end_too():
    """h2's 200 with END_STREAM reaches our client as the answer and the end of the stream;
    our end then closes the stream on both sides."""
    client, gateway = ours_client()
    sid = client.request(CONNECT)
    shuttle(client, gateway)
    gateway.conn.send_headers(sid, [(":status", "200")], end_stream=True)
    seen = shuttle(client, gateway)
    assert [type(e) for e in seen] == [m.ResponseReceived, m.StreamEnded]
    client.end(sid)
    shuttle(client, gateway)
    assert client.open_streams == 0 and not gateway.conn.open_inbound_streams


def test_a_graceful_goaway_between_h2_frames_lets_processed_streams_finish():
    """GOAWAY(NO_ERROR, last stream 1) between h2's answer and its payload: our stream 3 is
    refused at once, stream 1 still gets its payload and its end."""
    client, gateway = ours_client()
    first, late = client.request(CONNECT), client.request(CONNECT)
    shuttle(client, gateway)
    gateway.conn.send_headers(first, [(":status", "200")])
    seen = client.receive(gateway.data_to_send() + f.goaway(first, f.NO_ERROR))
    (goaway,) = of(m.GoawayReceived, seen)
    assert (goaway.last_stream_id, goaway.error_code) == (first, 0)
    assert [(e.stream_id, e.error_code) for e in of(m.StreamReset, seen)] == [(late, 0x7)]
    gateway.conn.send_data(first, b"bye", end_stream=True)
    seen = shuttle(client, gateway)
    assert received(seen, first) == b"bye" and of(m.StreamEnded, seen)
    assert not of(m.ConnectionEnded, seen) and not of(m.StreamReset, seen)


def test_goaway_both_ways():
    """h2's GOAWAY ends our side with its code and text; ours ends h2's session."""
    client, gateway = ours_client()
    gateway.conn.close_connection(error_code=0xB, additional_data=b"calm down")
    (ended,) = of(m.ConnectionEnded, shuttle(client, gateway))
    assert ended.error_code == 0xB and "calm down" in ended.reason
    gateway, h2_client = ours_gateway()
    gateway.close()
    shuttle(gateway, h2_client)
    assert h2_client.of(h2.events.ConnectionTerminated)[0].error_code == 0


def test_padded_data_from_h2_counts_padding_as_flow():
    """Padded DATA arrives without its padding; flow_length includes it, so crediting stays exact."""
    client, gateway = ours_client()
    sid = client.request(CONNECT)
    shuttle(client, gateway)
    gateway.conn.send_headers(sid, [(":status", "200")])
    gateway.conn.send_data(sid, b"padded", pad_length=100, end_stream=True)
    seen = shuttle(client, gateway)
    (data,) = of(m.DataReceived, seen)
    assert data.data == b"padded" and data.flow_length == 6 + 100 + 1
    assert of(m.StreamEnded, seen)


def test_padded_headers_with_priority_and_continuation():
    """A request split into padded HEADERS (with priority) and CONTINUATION frames is reassembled."""
    gateway, client = ours_gateway()
    block = hpack.Encoder().encode(CONNECT + [("x-long", "v" * 3000)])
    first = hf.HeadersFrame(1, data=block[:1000], flags={"PADDED", "PRIORITY"}, pad_length=7,
                            depends_on=0, stream_weight=16)
    middle = hf.ContinuationFrame(1, data=block[1000:2000])
    last = hf.ContinuationFrame(1, data=block[2000:], flags={"END_HEADERS"})
    wire = first.serialize() + middle.serialize() + last.serialize()
    events = [ev for i in range(0, len(wire), 333) for ev in gateway.receive(wire[i:i + 333])]
    (req,) = of(m.RequestReceived, events)
    assert req.headers["x-long"] == "v" * 3000 and req.headers[":method"] == "CONNECT"


def test_h2_splits_big_headers_into_continuations_we_accept():
    """When our advertised frame size forces h2 to split a header block, we still decode it."""
    gateway, client = m.Mux(client_side=False, max_header_list_size=400000), H2Peer(client_side=True)
    shuttle(gateway, client)
    client.conn.max_outbound_frame_size = 16384          # as if we had advertised the default
    client.conn.send_headers(1, CONNECT + [("x-big", "y" * 40000)], end_stream=True)
    (req,) = of(m.RequestReceived, shuttle(gateway, client))
    assert len(req.headers["x-big"]) == 40000 and req.ended


def test_requests_beyond_the_peer_limit_wait_for_a_slot():
    """With h2 allowing 2 concurrent streams, further requests queue (with their payload) and
    go out in order as earlier streams close; h2 never sees a third concurrent stream."""
    client, gateway = ours_client(MAX_CONCURRENT_STREAMS=2)
    sids = [client.request(CONNECT) for _ in range(5)]
    for sid in sids:
        client.send(sid, b"payload %d" % sid)
        client.end(sid)
    shuttle(client, gateway)
    assert [e.stream_id for e in gateway.of(h2.events.RequestReceived)] == sids[:2]
    assert client.buffered(sids[4]) == len(b"payload 9")
    for _ in range(3):
        for ev in gateway.of(h2.events.RequestReceived):
            if not gateway.conn.streams.get(ev.stream_id) or gateway.conn.streams[ev.stream_id].closed:
                continue
            gateway.conn.send_headers(ev.stream_id, [(":status", "200")], end_stream=True)
        shuttle(client, gateway)
    assert [e.stream_id for e in gateway.of(h2.events.RequestReceived)] == sids
    assert {sid: bytes(gateway.data[sid]) for sid in sids} == {sid: b"payload %d" % sid for sid in sids}


def test_a_reset_frees_the_slot_for_a_waiting_request():
    """Resetting an open stream lets the next waiting request out, after the RST_STREAM."""
    client, gateway = ours_client(MAX_CONCURRENT_STREAMS=1)
    first, second = client.request(CONNECT), client.request(CONNECT)
    shuttle(client, gateway)
    client.reset(first)
    shuttle(client, gateway)
    assert [e.stream_id for e in gateway.of(h2.events.RequestReceived)] == [first, second]
    assert [e.stream_id for e in gateway.of(h2.events.StreamReset)] == [first]
    assert client.open_streams == 1


def test_payload_queued_before_the_answer_waits_for_it():
    """A target that speaks first (an SSH banner) queues payload before the 200: a stream
    WINDOW_UPDATE or a SETTINGS change from h2 in that time must not send it ahead of the
    response HEADERS (h2 refuses DATA before headers)."""
    for credit in ("window_update", "settings"):
        gateway, client = ours_gateway()
        client.conn.send_headers(1, CONNECT)
        shuttle(gateway, client)
        gateway.send(1, b"SSH-2.0-banner\r\n")
        if credit == "window_update":
            client.conn.increment_flow_control_window(1000, stream_id=1)
        else:
            client.conn.update_settings({S.INITIAL_WINDOW_SIZE: 100000})
        shuttle(gateway, client)
        assert not client.of(h2.events.DataReceived), credit
        gateway.respond(1, 200)
        shuttle(gateway, client)
        (resp,) = client.of(h2.events.ResponseReceived)
        assert dict(resp.headers)[":status"] == "200" and bytes(client.data[1]) == b"SSH-2.0-banner\r\n"


def test_an_error_answer_to_h2_ends_with_a_reset_without_error():
    """Our refusal reaches an h2 client as a complete response and then RST_STREAM NO_ERROR,
    which h2 accepts; both ends then hold no stream."""
    gateway, client = ours_gateway()
    client.conn.send_headers(1, CONNECT)
    shuttle(gateway, client)
    gateway.respond(1, 403, [("proxy-status", "gw; error=destination_ip_prohibited")], end=True)
    shuttle(gateway, client)
    (resp,) = client.of(h2.events.ResponseReceived)
    assert dict(resp.headers)[":status"] == "403" and client.of(h2.events.StreamEnded)
    (reset,) = client.of(h2.events.StreamReset)
    assert reset.error_code == 0
    assert gateway.open_streams == 0 and client.conn.open_outbound_streams == 0


def test_h2_shrinking_its_header_table_gets_valid_size_updates():
    """When h2 lowers SETTINGS_HEADER_TABLE_SIZE (to 0, then 0 and 1024 between two of our
    answers), our next header block signals it and h2's decoder accepts every answer."""
    gateway, client = ours_gateway()
    for sid, sizes in ((1, [0]), (3, [0, 1024])):
        for size in sizes:
            client.conn.update_settings({S.HEADER_TABLE_SIZE: size})
            shuttle(gateway, client)
        client.conn.send_headers(sid, CONNECT)
        shuttle(gateway, client)
        gateway.respond(sid, 200, [("x-answer", str(sid))])
        shuttle(gateway, client)
        assert dict(client.of(h2.events.ResponseReceived)[-1].headers)["x-answer"] == str(sid)
        assert client.conn.decoder.header_table_size == sizes[-1]
