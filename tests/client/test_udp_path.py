"""Tests of client.udp_path over a fake link: streams opened, ended and lost."""

from __future__ import annotations

from client.udp_flows import UdpFlows
from client.udp_path import UdpPath
from client.wire.capsule import encode_datagram
from tests.client.packets import udp_packet
from tests.client.wire.fake_link import FakeSession

A, D = "10.77.0.1", "192.168.5.9"


def app(payload: bytes, sport: int = 40000) -> bytes:
    """A datagram from the app to D:7007."""
    return udp_packet(src=A, dst=D, sport=sport, dport=7007, payload=payload)


def path() -> tuple[UdpPath, FakeSession, list[bytes]]:
    session, written = FakeSession(), []
    return UdpPath(session, UdpFlows(), written.append), session, written


def test_first_datagram_rides_behind_the_request():
    """A new flow opens a connect-udp stream to its target and sends its first datagram at once."""
    udp, session, _ = path()
    udp.on_packet(app(b"query"), 0.0)
    udp.after_batch()
    (stream_id, headers), = session.link.requests.items()
    assert (":path", f"/.well-known/masque/udp/{D}/7007/") in headers
    assert session.link.datagrams(stream_id) == [b"query"]


def test_a_flow_that_began_while_reconnecting_gets_a_stream_after_the_resume():
    """A datagram read while the session is lost is dropped; once resumed, the app's next
    datagram of that same flow opens a stream and goes out (it used to be swallowed for as
    long as the app kept sending)."""
    udp, session, _ = path()
    session.link.is_open = False
    udp.on_packet(app(b"lost"), 0.0)
    udp.after_batch()
    session.link = resumed = type(session.link)()
    udp.on_packet(app(b"after the resume"), 1.0)
    udp.after_batch()
    (stream_id,) = resumed.requests
    assert resumed.datagrams(stream_id) == [b"after the resume"]
    assert udp.open_flows == 1


def test_streams_lost_with_the_connection_are_reopened_on_demand():
    """When the connection drops, the flows go with their streams; the next datagram opens anew."""
    udp, session, _ = path()
    udp.on_packet(app(b"one"), 0.0)
    udp.after_batch()
    session.link.deliver_response(1, 200)
    session.link.lose()
    assert udp.open_flows == 0 and udp.flows.stats.flows_active == 0
    session.link = resumed = type(session.link)()
    udp.on_packet(app(b"two"), 1.0)
    udp.after_batch()
    assert resumed.datagrams(1) == [b"two"]


def test_a_flow_moves_to_the_new_link_when_its_link_goes_away():
    """After a GOAWAY, once the session has a new link, the flow's next datagram goes out on
    a new stream there and the old stream is reset; replies on the new stream reach the app,
    and the flow stays one flow."""
    udp, session, written = path()
    udp.on_packet(app(b"one"), 0.0)
    udp.after_batch()
    old = session.link
    old.deliver_response(1, 200)
    old.goaway_received = True
    udp.on_packet(app(b"two"), 1.0)            # no new link yet: still the old stream
    udp.after_batch()
    assert old.datagrams(1) == [b"one", b"two"]
    session.link = new = type(old)()
    udp.on_packet(app(b"three"), 2.0)
    udp.after_batch()
    assert 1 in old.reset_ids and new.datagrams(1) == [b"three"]
    assert (":path", f"/.well-known/masque/udp/{D}/7007/") in new.requests[1]
    new.deliver_response(1, 200)
    new.deliver_data(1, encode_datagram(b"reply"))
    assert written and written[-1].endswith(b"reply")
    assert udp.open_flows == 1 and udp.flows.stats.flows_active == 1


def test_a_stream_the_gateway_ends_is_closed_on_our_side_too():
    """When the gateway ends a flow's stream, the client ends its half as well (so the stream
    frees its slot) and forgets the flow; the app's next datagram opens a new stream."""
    udp, session, _ = path()
    link = session.link
    udp.on_packet(app(b"one"), 0.0)
    udp.after_batch()
    link.deliver_response(1, 200)
    link.deliver_end(1)
    assert link.closed(1) and udp.open_flows == 0
    udp.on_packet(app(b"two"), 1.0)
    udp.after_batch()
    assert link.datagrams(3) == [b"two"]


def test_replies_skip_unknown_capsules_and_other_contexts():
    """From the gateway: unknown capsule types and non-zero contexts are skipped, the reply
    reaches the app as a packet from the target."""
    from client.wire.capsule import encode_capsule

    udp, session, written = path()
    udp.on_packet(app(b"q"), 0.0)
    udp.after_batch()
    session.link.deliver_response(1, 200)
    session.link.deliver_data(1, encode_capsule(0x2A, b"x" * 100) + encode_datagram(b"no", context_id=2)
                              + encode_datagram(b"answer"))
    (reply,) = written
    assert reply.endswith(b"answer") and reply[12:16] == bytes([192, 168, 5, 9])


def test_refusals_become_the_matching_icmp_error():
    """403 gives ICMP 3/13 (prohibited); the flow limit (503) or a stream reset before any
    answer 3/1 (host unreachable); an unroutable target 3/0; never a false port unreachable.
    The flow is forgotten, so the next datagram asks again."""
    cases = [(403, "tunnelgate; error=destination_ip_prohibited", 13),
             (503, "tunnelgate; error=connection_limit_reached", 1),
             (502, "tunnelgate; error=destination_ip_unroutable", 0), (None, "", 1)]
    for status, proxy_status, code in cases:
        udp, session, written = path()
        udp.on_packet(app(b"q"), 0.0)
        udp.after_batch()
        if status is None:
            session.link.deliver_reset(1)
        else:
            session.link.handlers[1].on_response(status, {"proxy-status": proxy_status}, True)
        (error,) = written
        assert (error[20], error[21]) == (3, code), status
        assert udp.flows.stats.flows_active == 0 and udp.open_flows == 0
