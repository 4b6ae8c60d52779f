"""The client's ICMP echo path: one connect-ip stream per target (RFC 9484).

Theory of operation: echo requests (type 8) read from the TUN are sent, as
whole IPv4 packets in DATAGRAM capsules, on a connect-ip stream scoped to
their target and IP protocol 1; the stream is opened on the first request
and kept while pings keep coming. The gateway pings the target from its own
address and returns each echo reply, which is written to the TUN as a packet
from the target to the app. A denied target gets ICMP "administratively
prohibited" back (other refusals: network or host unreachable), so ping
reports an error instead of hanging. Every other ICMP type is dropped
(counted by ``IcmpEcho``), and so is a reply that does not come from the
stream's target. While the gateway does not take what a stream queues,
further requests are dropped (as a congested network would). A stream that
ends or is reset (a 2xx that ended it, a refusal above a GOAWAY's last stream
id) is forgotten, and the next request opens a new one on the session's link of
then; each stream talks to the link it was opened on. Once the session has a new
link, a target whose stream's link is going away (GOAWAY) gets a new stream there
with its next request, and the old one is reset (a reply still on its way is lost).
"""

from __future__ import annotations

import ipaddress
import typing

from client.icmp_echo import IcmpEcho, validate_echo_packet
from client.packet import build_icmp_unreachable, build_ipv4_header
from client.reflector_types import Refusal, refusal_for
from client.session import GatewaySession
from client.wire.capsule import DATAGRAM, CapsuleError, CapsuleParser, encode_datagram, parse_datagram

#: A target's stream closes after this long without an echo request.
IDLE = 30.0
#: Capsule bytes queued on a stream past which new echo requests are dropped.
BACKLOG = 1024 * 1024
#: The ICMP destination unreachable code for each kind of refusal (read as for TCP).
_CODES = {Refusal.PROHIBITED: 13, Refusal.NET_UNREACHABLE: 0, Refusal.HOST_UNREACHABLE: 1,
          Refusal.REFUSED: 1}


class _EchoStream:
    """Handler of one connect-ip stream (one target)."""

    def __init__(self, path: "IcmpPath", target: ipaddress.IPv4Address) -> None:
        self.path = path
        self.link = path.session.link
        self.target = target
        self.stream_id = 0
        self.client = target
        self.last_request = b""
        self.last_used = 0.0
        self.parser = CapsuleParser()

    def on_response(self, status: int, headers: dict[str, str], ended: bool) -> None:
        if not 200 <= status < 300:
            self.path._refused(self, status, headers.get("proxy-status", ""))

    def on_data(self, data: bytes, flow_length: int) -> None:
        self.link.consumed(self.stream_id, flow_length)
        try:
            capsules = self.parser.feed(data)
        except CapsuleError:
            self.path._forget(self, reset=True)
            return
        for capsule in capsules:
            if capsule.type != DATAGRAM:
                continue
            try:
                context, packet = parse_datagram(capsule.value)
                if context != 0:
                    continue
                message = validate_echo_packet(packet, expect_type=0, target=self.target)
            except (CapsuleError, ValueError):
                self.path.dropped += 1
                continue
            header = build_ipv4_header(source=self.target.packed, destination=self.client.packed,
                                       protocol=1, payload_length=len(message))
            self.path._tun_write(header + bytes(message))

    def on_end(self) -> None:
        self.link.end(self.stream_id)     # close our half too (see UdpPath)
        self.path._forget(self, reset=False)

    def on_reset(self, error_code: int) -> None:
        self.path._forget(self, reset=False)

    def on_writable(self) -> None:
        pass


class IcmpPath:
    """Carries the ICMP echo of one session."""

    def __init__(self, session: GatewaySession, echo: IcmpEcho,
                 tun_write: typing.Callable[[bytes], None]) -> None:
        self.session = session
        self.echo = echo
        self._tun_write = tun_write
        self._streams: dict[ipaddress.IPv4Address, _EchoStream] = {}
        self.dropped = 0

    def on_packet(self, packet: bytes, now: float) -> None:
        """One ICMP packet read from the TUN."""
        request = self.echo.from_tun(packet, now)
        if request is None:
            return
        stream = self._streams.get(request.target)
        if stream is not None and not stream.link.can_open and self.session.link.can_open:
            self._forget(stream, reset=stream.link.is_open)   # its link goes away: move on
            stream = None
        if stream is None:
            stream = _EchoStream(self, request.target)
            if not stream.link.can_open:
                return                            # reconnecting, or the gateway going away
            stream.stream_id = stream.link.open(self.session.extended_connect_headers(
                "connect-ip", f"/.well-known/masque/ip/{request.target}/1/"), stream)
            self._streams[request.target] = stream
        link = stream.link
        stream.client = request.client
        stream.last_request = request.packet
        stream.last_used = now
        if link.buffered(stream.stream_id) > BACKLOG:
            self.dropped += 1                 # the gateway is not taking them: ping's loss
            return
        link.send(stream.stream_id, encode_datagram(request.packet))

    def _refused(self, stream: _EchoStream, status: int, proxy_status: str) -> None:
        self._forget(stream, reset=False)
        if stream.last_request:
            # Only a denial is "administratively prohibited"; the gateway's own trouble
            # (no raw socket, its flow limit) is "host unreachable".
            code = _CODES[refusal_for(status, proxy_status)]
            self._tun_write(build_icmp_unreachable(stream.last_request, code))

    def _forget(self, stream: _EchoStream, *, reset: bool) -> None:
        if self._streams.get(stream.target) is stream:
            del self._streams[stream.target]
        if reset:
            stream.link.reset(stream.stream_id)
        else:
            stream.link.unregister(stream.stream_id)

    def expire(self, now: float) -> None:
        """Close the streams of targets nobody pinged lately."""
        self.echo.expire(now)
        for stream in [s for s in self._streams.values() if now - s.last_used > IDLE]:
            self._forget(stream, reset=True)

    def close(self) -> None:
        """Reset every stream."""
        for stream in list(self._streams.values()):
            self._forget(stream, reset=stream.link.is_open)
