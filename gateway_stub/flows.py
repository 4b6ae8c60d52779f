"""The flows one client connection carries: its TCP CONNECTs, connect-udp and connect-ip.

Theory of operation: ``GatewayApi`` has decided each CONNECT before it gets
here. A denied one is answered with its status and an RFC 9209
``proxy-status``, and audited. For an allowed TCP CONNECT the gateway opens
its own connection to the intranet target and only then answers 200, piping
bytes between that connection and the stream (reverse NAT: the intranet host
sees the gateway); until then ``stream_handlers.Connecting`` stands in for the
pipe. A refused or unreachable target gets an error status with a
``proxy-status``. connect-udp (RFC 9298) and connect-ip for ICMP echo (RFC
9484) get their relay at once. Every flow ends exactly once, in ``end``: its
slot in the session's count goes back and its line is written to the audit
log. While the client does not read, every flow's target is held back
(``backpressure``), also those opened meanwhile.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
import typing

from client.packet import address_text
from client.wire.pipe import StreamPipe
from gateway_stub.api_types import ConnectDecision, Session
from gateway_stub.audit import AuditRecord
from gateway_stub.backpressure import OutputHold
from gateway_stub.icmp_relay import EchoRelay
from gateway_stub.stream_handlers import Connecting
from gateway_stub.targets import connect_failure, proxy_status_header
from gateway_stub.udp_relay import UdpRelay

if typing.TYPE_CHECKING:
    from gateway_stub.connection import GatewayConnection


class Flows:
    """The open flows of ``connection``, each with the session it belongs to; a CONNECT
    allowed for a session calls ``logged_in(session)`` before it goes ahead."""

    def __init__(self, connection: "GatewayConnection", *,
                 logged_in: typing.Callable[[Session], None]) -> None:
        self._connection = connection
        self._logged_in = logged_in
        self._open: dict = {}      # StreamPipe, UdpRelay, EchoRelay -> its Session
        self._hold: OutputHold | None = None

    # -- backpressure and expiry -----------------------------------------------
    def hold_back(self, tls: asyncio.Transport) -> None:
        """From now on ``pause`` and ``resume`` follow ``tls``, the client's transport."""
        self._hold = OutputHold(tls)

    def pause(self) -> None:
        """The client stopped reading: stop its input and every flow's target."""
        self._hold.pause(self._open)

    def resume(self) -> None:
        """The client reads again: undo what ``pause`` did."""
        self._hold.resume()

    def expire(self, now: float, idle_timeout: float) -> None:
        """Abort the flows idle for more than ``idle_timeout`` and those whose session ended."""
        for flow, session in list(self._open.items()):
            if session.ended or now - flow.last_active > idle_timeout:
                flow.error = "session ended" if session.ended else "idle timeout"
                flow.abort()

    def _opened(self, flow, session: Session | None) -> None:
        self._open[flow] = session
        if self._hold.active:
            self._hold.hold(flow)

    # -- opening ----------------------------------------------------------------
    def connect_tcp(self, stream_id: int, decision: ConnectDecision, *, ended: bool = False) -> None:
        """``ended``: the CONNECT itself ended the client's side (END_STREAM on its
        HEADERS): the target gets its FIN as soon as it is connected."""
        target = f"{address_text(decision.host)}:{decision.port}" if decision.host else "-"
        if not self._allowed(stream_id, "tcp", target, decision):
            return
        connecting = Connecting(self._connection, stream_id, decision.session, target)
        connecting.ended = ended
        self._connection.register(stream_id, connecting)
        connecting.task = asyncio.get_running_loop().create_task(
            self._open_tcp(stream_id, decision, target, connecting))
        connecting.task.add_done_callback(connecting.cancelled)

    def connect_datagrams(self, stream_id: int, protocol: str, decision: ConnectDecision) -> None:
        """connect-udp (RFC 9298) or connect-ip for ICMP echo (RFC 9484)."""
        port = f":{decision.port}" if decision.port else ""
        target = f"{decision.host}{port}" if decision.host else "-"
        if not self._allowed(stream_id, protocol, target, decision):
            return
        session = decision.session
        connection = self._connection
        done = lambda flow: self._flow_done(flow, session, protocol, target)  # noqa: E731
        try:
            if protocol == "udp":
                flow = UdpRelay(connection, stream_id, str(decision.host), decision.port, done)
            else:
                client = session.address.ip if session.address else ipaddress.IPv4Address(0)
                flow = EchoRelay(connection, stream_id, decision.host, client,
                                 connection.gateway.echo_socket(), done)
        except OSError as exc:
            status, error = connect_failure(exc)
            self.end(session, protocol, target, "fail", error, 0, 0, 0.0)
            connection.respond(stream_id, status, [proxy_status_header(error)])
            return
        self._opened(flow, session)
        connection.respond(stream_id, 200, [("capsule-protocol", "?1")])

    def _allowed(self, stream_id: int, protocol: str, target: str, decision: ConnectDecision) -> bool:
        """Answer and audit a denied request; True when it may go ahead."""
        if decision.allowed:
            if decision.session is not None:
                self._logged_in(decision.session)
            return True
        self._audit(decision.session, protocol, target, "deny", decision.reason, 0, 0, 0.0)
        self._connection.respond(stream_id, decision.status,
                                 [proxy_status_header(decision.proxy_status, decision.reason[:200])])
        return False

    async def _open_tcp(self, stream_id: int, decision: ConnectDecision, target: str,
                        connecting: Connecting) -> None:
        loop = asyncio.get_running_loop()
        connection = self._connection

        def done(pipe: StreamPipe) -> None:
            # The pipe counts socket-side bytes: "up" (client to target) is
            # what it wrote to the target socket.
            self._open.pop(pipe, None)
            connecting.end("allow", pipe.error or "closed", pipe.bytes_down, pipe.bytes_up)

        pipe = StreamPipe(connection, stream_id, on_done=done)
        timeout = connection.gateway.config.server.connect_timeout
        try:
            async with asyncio.timeout(timeout):     # no extra task, unlike wait_for
                await loop.create_connection(lambda: pipe, address_text(decision.host), decision.port)
        except (OSError, asyncio.TimeoutError) as exc:
            status, error = connect_failure(exc)
            connecting.end("fail", error, 0, 0)
            connection.unregister(stream_id)
            connection.respond(stream_id, status, [proxy_status_header(error)])
            return
        if not connection.respond(stream_id, 200):
            pipe.abort()
            return
        self._opened(pipe, decision.session)
        pipe.attach_stream(stream_id)
        if connecting.ended:
            pipe.on_end()

    # -- ending -----------------------------------------------------------------
    def _flow_done(self, flow, session: Session | None, protocol: str, target: str) -> None:
        self._open.pop(flow, None)
        self.end(session, protocol, target, "allow", flow.error or "closed",
                 flow.bytes_up, flow.bytes_down, time.monotonic() - flow.started)

    def end(self, session: Session, protocol: str, target: str, verdict: str,
            reason: str, up: int, down: int, duration: float) -> None:
        """Every allowed flow ends here once: its audit line, and its slot back."""
        self._connection.gateway.api.flow_ended(session)
        self._audit(session, protocol, target, verdict, reason, up, down, duration)

    def _audit(self, session: Session | None, protocol: str, target: str, verdict: str,
               reason: str, up: int, down: int, duration: float) -> None:
        self._connection.gateway.audit.write(AuditRecord(
            time=time.time(), session_id=session.id if session else "-",
            user=session.user.name if session else "-", source=self._connection.peer,
            protocol=protocol, target=target, verdict=verdict, reason=reason, bytes_up=up,
            bytes_down=down, duration=round(duration, 3)))
