"""The client's UDP path: one connect-udp stream per flow (RFC 9298).

Theory of operation: UDP packets read from the TUN go to ``UdpFlows``. A new
flow (app port, destination) opens an extended CONNECT stream and sends its
first datagram right behind the request headers, without waiting for the
answer -- DNS must not pay an extra round trip. Datagrams coming back become
IPv4/UDP packets from the server, written to the TUN. A refusal becomes the
ICMP error the app would have got from the server: administratively
prohibited for a denial, network or host unreachable for the gateway's other
refusals (read as for TCP, ``reflector_types.refusal_for``), port unreachable when
the gateway relays one. A stream the gateway ends with its 2xx closes its flow
at once. A stream it refused unprocessed (REFUSED_STREAM, as above a GOAWAY's
last stream id) closes its flow without a word: the datagram is lost, and the
app's next one opens a stream on the session's link of then. Each stream
talks to the link it was opened on, not the session's current one; a flow whose
link is going away (GOAWAY) moves to a new stream on the session's new link with
its next datagram.
"""

from __future__ import annotations

import logging
import time
import typing

from client.reflector_types import Refusal, refusal_for
from client.session import GatewaySession
from client.udp_flows import UdpDatagram, UdpFlowOpened, UdpFlows
from client.wire.capsule import (DATAGRAM, UNREACHABLE, CapsuleError, CapsuleParser,
                                 encode_datagram, parse_datagram)
from client.wire.frames import REFUSED_STREAM

log = logging.getLogger(__name__)

#: Capsule bytes queued on a stream past which new datagrams are dropped.
BACKLOG = 1024 * 1024
#: The ICMP destination unreachable code for each kind of refusal.
_CODES = {Refusal.PROHIBITED: 13, Refusal.NET_UNREACHABLE: 0, Refusal.HOST_UNREACHABLE: 1,
          Refusal.REFUSED: 3}


class _UdpStream:
    """Handler of one connect-udp stream."""

    def __init__(self, path: "UdpPath", flow_id: int) -> None:
        self.path = path
        self.link = path.session.link
        self.flow_id = flow_id
        self.target = ""
        """``address/port`` of the flow's destination, as in the connect-udp path."""
        self.stream_id = 0
        self.answered = False
        self.parser = CapsuleParser()

    def on_response(self, status: int, headers: dict[str, str], ended: bool) -> None:
        self.answered = True
        if not 200 <= status < 300:
            self.path._refused(self, status, headers.get("proxy-status", ""))

    def on_data(self, data: bytes, flow_length: int) -> None:
        self.link.consumed(self.stream_id, flow_length)
        try:
            capsules = self.parser.feed(data)
        except CapsuleError as exc:
            log.info("UDP flow %d: %s", self.flow_id, exc)
            self.path._close(self, reset=True)
            return
        for capsule in capsules:
            if capsule.type == DATAGRAM:
                try:
                    context, payload = parse_datagram(capsule.value)
                except CapsuleError:
                    continue
                if context == 0:
                    self.path._to_app(self, payload)
            elif capsule.type == UNREACHABLE:
                self.path._unreachable(self)

    def on_end(self) -> None:
        # The gateway closed the tunnel: close our half too, or the stream would hold one
        # of the session's stream slots (MAX_CONCURRENT_STREAMS) until the connection ends.
        self.link.end(self.stream_id)
        self.path._close(self, reset=False)

    def on_reset(self, error_code: int) -> None:
        if not self.answered and error_code != REFUSED_STREAM:
            self.answered = True
            self.path._refused(self, 502)
        else:
            self.path._close(self, reset=False)

    def on_writable(self) -> None:
        pass


class UdpPath:
    """Carries the UDP flows of one session."""

    def __init__(self, session: GatewaySession, flows: UdpFlows,
                 tun_write: typing.Callable[[bytes], None]) -> None:
        self.session = session
        self.flows = flows
        self._tun_write = tun_write
        self._streams: dict[int, _UdpStream] = {}
        self._batch: dict[_UdpStream, list[bytes]] = {}     # capsules read this batch
        self.dropped = 0

    @property
    def open_flows(self) -> int:
        """Flows with a stream."""
        return len(self._streams)

    def on_packet(self, packet: bytes, now: float) -> None:
        """One UDP packet read from the TUN."""
        event = self.flows.from_tun(packet, now)
        if event is None:
            return
        if isinstance(event, UdpFlowOpened):
            stream = _UdpStream(self, event.flow_id)
            link = stream.link
            if not link.can_open:
                # Reconnecting (or the gateway going away): this datagram is lost, as on a
                # network that is down. The flow must go with it: kept without a stream, it
                # would swallow every later datagram of the app's (each one keeps it from
                # idling out) after the resume.
                self.flows.close(event.flow_id)
                return
            stream.target = f"{event.key.target.address}/{event.key.target.port}"
            self._open(stream)
            self._batch[stream] = [encode_datagram(event.first_payload)]
        elif isinstance(event, UdpDatagram):
            stream = self._streams.get(event.flow_id)
            if stream is not None and not stream.link.can_open and self.session.link.can_open:
                stream = self._move(stream)
            if stream is None or not stream.link.is_open:
                return
            if stream.link.buffered(stream.stream_id) > BACKLOG:
                self.dropped += 1
                return
            self._batch.setdefault(stream, []).append(encode_datagram(event.payload))

    def _open(self, stream: _UdpStream) -> None:
        stream.stream_id = stream.link.open(self.session.extended_connect_headers(
            "connect-udp", f"/.well-known/masque/udp/{stream.target}/"), stream)
        self._streams[stream.flow_id] = stream

    def _move(self, old: _UdpStream) -> _UdpStream:
        """The flow of ``old``, whose link is going away (GOAWAY), on a new stream on the
        session's link of now: a call or a game goes on there instead of holding the old
        connection open until it idles out. The old stream is reset."""
        if old.link.is_open:
            old.link.reset(old.stream_id)
        stream = _UdpStream(self, old.flow_id)
        stream.target = old.target
        self._open(stream)
        pending = self._batch.pop(old, None)
        if pending:
            self._batch[stream] = pending
        return stream

    def after_batch(self) -> None:
        """Send the datagrams of the last batch of packets, one DATA frame per flow."""
        if not self._batch:
            return
        batch, self._batch = self._batch, {}
        for stream, capsules in batch.items():
            if stream.link.is_open:
                stream.link.send(stream.stream_id,
                                 capsules[0] if len(capsules) == 1 else b"".join(capsules))

    def _to_app(self, stream: _UdpStream, payload: bytes) -> None:
        packet = self.flows.to_app(stream.flow_id, payload, now=time.monotonic())
        if packet is not None:
            self._tun_write(packet)

    def _unreachable(self, stream: _UdpStream) -> None:
        packet = self.flows.port_unreachable(stream.flow_id)
        if packet is not None:
            self._tun_write(packet)

    def _refused(self, stream: _UdpStream, status: int, proxy_status: str = "") -> None:
        if self._streams.get(stream.flow_id) is not stream:
            return      # a stream the flow has left (moved to a new link)
        self._streams.pop(stream.flow_id)
        stream.link.unregister(stream.stream_id)
        packet = self.flows.refused(stream.flow_id, _CODES[refusal_for(status, proxy_status)])
        if packet is not None:
            self._tun_write(packet)

    def _close(self, stream: _UdpStream, *, reset: bool) -> None:
        if self._streams.get(stream.flow_id) is not stream:
            return      # closed already, or a stream the flow has left (moved to a new link)
        self._streams.pop(stream.flow_id)
        if reset:
            stream.link.reset(stream.stream_id)
        else:
            stream.link.unregister(stream.stream_id)
        self.flows.close(stream.flow_id)

    def expire(self, now: float) -> None:
        """End idle flows and their streams."""
        for flow_id in self.flows.expire(now):
            stream = self._streams.pop(flow_id, None)
            if stream is not None:
                stream.link.reset(stream.stream_id)

    def close(self) -> None:
        """Reset every stream."""
        for stream in list(self._streams.values()):
            if stream.link.is_open:
                stream.link.reset(stream.stream_id)
        self._streams.clear()
