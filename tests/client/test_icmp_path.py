"""Tests of client.icmp_path over a fake link: requests out, replies and errors back."""

from __future__ import annotations

from client.icmp_echo import IcmpEcho
from client.icmp_path import BACKLOG, IcmpPath
from client.wire.capsule import encode_datagram
from tests.client.fragments import fragment
from tests.client.test_icmp_echo import icmp_ok, icmp_packet
from tests.client.wire.fake_link import FakeSession

A, D, OTHER = "10.77.0.1", "192.168.5.9", "192.168.5.10"


def path() -> tuple[IcmpPath, FakeSession, list[bytes]]:
    session, written = FakeSession(), []
    return IcmpPath(session, IcmpEcho(), written.append), session, written


def test_echo_request_goes_whole_on_a_stream_for_its_target():
    """A ping opens connect-ip scoped to its target and protocol 1 and carries the packet."""
    icmp, session, _ = path()
    request = icmp_packet(src=A, dst=D, seq=1)
    icmp.on_packet(request, 0.0)
    assert (":path", f"/.well-known/masque/ip/{D}/1/") in session.link.requests[1]
    assert session.link.datagrams(1) == [request]


def test_a_fragmented_ping_is_sent_whole():
    """ping -s 3000 at MTU 1500: the reassembled request, not a fragment, crosses the tunnel."""
    icmp, session, _ = path()
    request = icmp_packet(src=A, dst=D, payload=bytes(3000))
    for piece in fragment(request, 1500):
        icmp.on_packet(piece, 0.0)
    assert session.link.datagrams(1) == [request]


def test_reply_from_the_target_reaches_the_app_and_others_are_dropped():
    """An echo reply from the stream's target is written to the TUN; one claiming another
    source (a confused or hostile gateway) is dropped and counted."""
    icmp, session, written = path()
    icmp.on_packet(icmp_packet(src=A, dst=D, ident=9, seq=4), 0.0)
    session.link.deliver_response(1, 200)
    stray = icmp_packet(src=OTHER, dst=A, icmp_type=0, ident=9, seq=4)
    good = icmp_packet(src=D, dst=A, icmp_type=0, ident=9, seq=4)
    session.link.deliver_data(1, encode_datagram(stray) + encode_datagram(good))
    (reply,) = written
    assert reply[12:20] == good[12:20] and reply[20:] == good[20:] and icmp.dropped == 1


def test_refusals_say_prohibited_only_for_a_denial():
    """403 (policy) gives ICMP 3/13 quoting the request; 503 (the session's flow limit) or
    502 (the gateway cannot ping) give 3/1 host unreachable, not a false 'prohibited'."""
    cases = [(403, "tunnelgate; error=destination_ip_prohibited", 13),
             (407, "tunnelgate; error=http_request_denied", 13),
             (503, "tunnelgate; error=connection_limit_reached", 1),
             (502, "tunnelgate; error=destination_unavailable", 1)]
    for status, proxy_status, code in cases:
        icmp, session, written = path()
        request = icmp_packet(src=A, dst=D)
        icmp.on_packet(request, 0.0)
        session.link.handlers[1].on_response(status, {"proxy-status": proxy_status}, True)
        (error,) = written
        assert (error[20], error[21]) == (3, code) and icmp_ok(error)
        assert error[12:16] == request[16:20] and error[28:] == request[:28]


def test_requests_are_dropped_while_the_stream_is_backed_up():
    """While more than BACKLOG bytes wait on the stream, new requests are dropped, not queued."""
    icmp, session, _ = path()
    icmp.on_packet(icmp_packet(src=A, dst=D, seq=1), 0.0)
    session.link.backlog = BACKLOG + 1
    icmp.on_packet(icmp_packet(src=A, dst=D, seq=2), 0.1)
    assert len(session.link.datagrams(1)) == 1 and icmp.dropped == 1


def test_a_target_moves_to_the_new_link_when_its_link_goes_away():
    """After a GOAWAY the pings keep to the old stream until the session has a new link;
    then the next one opens a stream there (the old one is reset) and its reply arrives."""
    icmp, session, written = path()
    icmp.on_packet(icmp_packet(src=A, dst=D, seq=1), 0.0)
    old = session.link
    old.deliver_response(1, 200)
    old.goaway_received = True
    icmp.on_packet(icmp_packet(src=A, dst=D, seq=2), 1.0)
    assert len(old.datagrams(1)) == 2
    session.link = new = type(old)()
    request = icmp_packet(src=A, dst=D, seq=3)
    icmp.on_packet(request, 2.0)
    assert 1 in old.reset_ids and new.datagrams(1) == [request]
    new.deliver_response(1, 200)
    new.deliver_data(1, encode_datagram(icmp_packet(src=D, dst=A, icmp_type=0, seq=3)))
    assert len(written) == 1


def test_a_stream_the_gateway_ends_is_closed_on_our_side_too():
    """When the gateway ends the stream, the client ends its half and opens a new one on the next ping."""
    icmp, session, _ = path()
    icmp.on_packet(icmp_packet(src=A, dst=D, seq=1), 0.0)
    session.link.deliver_response(1, 200)
    session.link.deliver_end(1)
    assert session.link.closed(1)
    icmp.on_packet(icmp_packet(src=A, dst=D, seq=2), 1.0)
    assert len(session.link.datagrams(3)) == 1
