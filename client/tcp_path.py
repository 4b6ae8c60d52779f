"""The client's TCP path: reflector, local listener, one CONNECT stream per flow.

Theory of operation: TCP packets read from the TUN go through the
``Reflector``. The first SYN of a flow is held and becomes a CONNECT stream to
the gateway. A 2xx answer releases the SYN into the kernel's own TCP stack
(reflected to our listener); an error answer becomes the RST or ICMP error
that the app would have got from the private server. When the kernel hands
the reflected connection to one of our listeners, the listener and the peer
port name the flow (its NAT slot), and a ``StreamPipe`` moves bytes between
that socket and the stream. There are several listeners only to multiply the
local four-tuples (see ``Reflector``); they are interchangeable.

Each flow is a ``TcpFlow`` (``client.tcp_flow``): how it reads the gateway's
answer and drains at its end is told there. A SYN retransmission after a
stream refused unprocessed (REFUSED_STREAM, as for requests above a GOAWAY's
last stream id) comes back as a new flow, on whatever link the session has
then, and is refused there only if that link takes no streams.

With the in-kernel fast path (the reflector's ``FlowOffload``), an accepted
flow's packets no longer come through here at all, so nothing idles it out:
its end is the pipe's end (``release``). A flow whose SYN was released but
whose connection never reached the listener is therefore aborted after
``ATTACH_TIMEOUT`` instead of lingering until an idle timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import typing

from client.reflector import Reflector
from client.reflector_types import FlowRequested, Refusal, refusal_for
from client.session import GatewaySession
from client.tcp_flow import TcpFlow
from client.tcp_sockets import LISTEN_BACKLOG
from client.wire.pipe import StreamPipe, reset_socket

log = logging.getLogger(__name__)

#: How long the client waits for the gateway's answer to a CONNECT.
ANSWER_TIMEOUT = 20.0
#: How long an accepted flow may take to reach the listener (longer than an app's SYN retries).
ATTACH_TIMEOUT = 150.0
#: How long a draining flow (``client.tcp_flow``) may go without delivering a byte before it is reset.
DRAIN_STALL = 300.0


class _Arrival(asyncio.Protocol):
    """A connection the listener just accepted, until its flow takes it over."""

    def __init__(self, path: "TcpPath", listener_index: int) -> None:
        self._path = path
        self._slot_base = listener_index << 16

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._path._arrived(typing.cast(asyncio.Transport, transport), self._slot_base)


class TcpPath:
    """Carries the TCP flows of one session."""

    def __init__(self, session: GatewaySession, reflector: Reflector,
                 listeners: typing.Sequence[socket.socket],
                 tun_write: typing.Callable[[bytes], None], *, fake_address: str) -> None:
        self.session = session
        self.reflector = reflector
        self._fake = fake_address             # N: reflected connections come from there
        self._listeners = tuple(listeners)    # in the reflector's listener-port order
        self._tun_write = tun_write
        self._loop = asyncio.get_running_loop()
        self._flows: dict[int, TcpFlow] = {}
        self._draining: dict[int, TcpFlow] = {}     # ended both ways, last bytes not yet delivered
        self._just_drained: list[TcpFlow] = []      # of those, the ones that began since the last batch
        self.flows_refused = 0
        self._servers: list[asyncio.AbstractServer] = []
        for listener in self._listeners:
            listener.setblocking(False)
        # The event loop accepts (in C, with uvloop); connections queue in the
        # kernel's backlog until the server task has started.
        self._starting = self._loop.create_task(self._serve())

    async def _serve(self) -> None:
        for index, listener in enumerate(self._listeners):
            self._servers.append(await self._loop.create_server(
                lambda index=index: _Arrival(self, index), sock=listener, backlog=LISTEN_BACKLOG))

    @property
    def open_flows(self) -> int:
        """Flows with a stream to the gateway."""
        return len(self._flows)

    @property
    def draining_flows(self) -> int:
        """Flows ended both ways whose last bytes the app has not yet taken."""
        return len(self._draining)

    # -- packets from the TUN ----------------------------------------------------
    def on_packet(self, packet: bytes, now: float) -> None:
        """One TCP packet read from the TUN."""
        out = self.reflector.from_tun(packet, now)
        if out is not None:
            self._tun_write(out)

    def after_batch(self) -> None:
        """Open streams for the SYNs seen in the last batch of packets; release the flows
        whose last bytes (usually just our FIN) the batch carried to the app."""
        for event in self.reflector.pop_events():
            if isinstance(event, FlowRequested):
                self._open(event)
        if self._just_drained:
            # Without the fast path the app's ACK comes back through the TUN: looked for
            # once here, not on every batch (a stalled app would cost a syscall each time).
            flows, self._just_drained = self._just_drained, []
            for flow in flows:
                if flow.draining is not None and flow.delivered():
                    self._finish_draining(flow)

    def _open(self, event: FlowRequested) -> None:
        flow = TcpFlow(self, event.nat_port)
        link = flow.link
        if not link.can_open:
            # Reconnecting: the app hears of it. Going away (still open): the engine is
            # moving the session to a new link, where the app's next SYN will land.
            self.refuse(flow, Refusal.HOST_UNREACHABLE, tell_app=not link.is_open)
            return
        stream_id = link.open(self.session.connect_headers(str(event.target)), flow)
        flow.stream_id = stream_id
        self._flows[event.nat_port] = flow
        flow.timer = self._loop.call_later(ANSWER_TIMEOUT, self._answer_timeout, flow)

    def _answer_timeout(self, flow: TcpFlow) -> None:
        if not flow.answered:
            flow.answered = True
            flow.link.reset(flow.stream_id)
            self.refuse(flow, Refusal.HOST_UNREACHABLE)

    def flow_answered(self, flow: TcpFlow, status: int, proxy_status: str) -> None:
        """The gateway answered ``flow``'s CONNECT: a 2xx releases the held SYN, any other
        status refuses the flow. Called by the flow."""
        flow.disarm()
        if 200 <= status < 300:
            syn = self.reflector.accept_flow(flow.nat_port, self._loop.time())
            if syn is None:       # the app gave up meanwhile
                flow.abort()
                return
            self._tun_write(syn)
            flow.timer = self._loop.call_later(ATTACH_TIMEOUT, self._attach_timeout, flow)
            return
        self.refuse(flow, refusal_for(status, proxy_status))
        log.info("flow to %s refused by the gateway: %d %s", flow.nat_port, status, proxy_status)

    def _attach_timeout(self, flow: TcpFlow) -> None:
        if flow.transport is None and self._flows.get(flow.nat_port) is flow:
            log.info("flow %d never reached the listener; aborted", flow.nat_port)
            flow.abort()

    def refuse(self, flow: TcpFlow, refusal: Refusal, *, tell_app: bool = True) -> None:
        """Forget a flow the gateway did not take; unless ``tell_app`` is False (the app's
        SYN retransmission is to retry it), the app gets ``refusal``. Called by the flow too
        (its stream reset before an answer)."""
        flow.disarm()
        self._flows.pop(flow.nat_port, None)
        if flow.stream_id is not None:
            flow.link.unregister(flow.stream_id)
        packet = self.reflector.refuse_flow(flow.nat_port, refusal)
        if not tell_app:
            return
        self.flows_refused += 1
        if packet is not None:
            self._tun_write(packet)

    # -- the local listener --------------------------------------------------------
    def _arrived(self, transport: asyncio.Transport, slot_base: int) -> None:
        """A listener accepted a reflected connection: with the peer port it names the flow."""
        peer = transport.get_extra_info("peername")
        # Any local process may connect to a listener (L is a local address), even from the
        # NAT port of a flow still waiting for its connection; only the reflector's come from N.
        flow = self._flows.get(slot_base + peer[1]) if peer and peer[0] == self._fake else None
        if flow is None or flow.transport is not None:
            transport.abort()
            return
        flow.disarm()
        transport.set_protocol(flow)
        flow.connection_made(transport)

    def flow_done(self, pipe: StreamPipe) -> None:
        """A flow's pipe is over (its ``on_done``): release it, or hold it while it drains."""
        flow = typing.cast(TcpFlow, pipe)
        flow.disarm()
        if self._flows.get(flow.nat_port) is flow:
            del self._flows[flow.nat_port]
        if flow.draining is not None:
            self._draining[flow.nat_port] = flow
            self._just_drained.append(flow)
        else:
            self.reflector.release(flow.nat_port, self._loop.time())

    def _finish_draining(self, flow: TcpFlow) -> None:
        """A draining flow's last bytes are acknowledged: close its socket and release it."""
        flow.transport.close()
        self.flow_drained(flow)

    def flow_drained(self, flow: TcpFlow) -> None:
        """A draining flow delivered everything, or its socket is gone: release it. Called
        by the flow too (its socket lost)."""
        flow.draining = None
        if self._draining.get(flow.nat_port) is flow:
            del self._draining[flow.nat_port]
            self.reflector.release(flow.nat_port, self._loop.time())

    # -- housekeeping ---------------------------------------------------------------
    def expire(self, now: float) -> None:
        """Release draining flows that delivered their last bytes (reset those stalled for
        ``DRAIN_STALL``); forget idle flows (and reset their streams)."""
        for flow in list(self._draining.values()):
            left = flow.undelivered()
            if flow.delivered():
                self._finish_draining(flow)
            elif left != flow.draining[0]:
                flow.draining = (left, now)
            elif now - flow.draining[1] >= DRAIN_STALL:
                log.info("flow %d delivered nothing for %.0f s; reset", flow.nat_port, DRAIN_STALL)
                reset_socket(flow.transport)
                self.flow_drained(flow)
        self._just_drained.clear()      # looked at just now (without TUN traffic, no batch does)
        for nat_port in self.reflector.expire(now):
            flow = self._flows.pop(nat_port, None)
            if flow is not None:
                flow.abort()
            elif nat_port in self._draining:
                self._abandon(self._draining[nat_port])

    def _abandon(self, flow: TcpFlow) -> None:
        """Reset a draining flow without releasing it (its slot is already gone, or all are)."""
        flow.draining = None
        del self._draining[flow.nat_port]
        reset_socket(flow.transport)

    def close(self) -> None:
        """Stop accepting and reset every flow."""
        self._starting.cancel()
        for server in self._servers:
            server.close()
        for flow in list(self._flows.values()):
            if flow.transport is not None:
                reset_socket(flow.transport)
            flow.abort()
        self._flows.clear()
        for flow in list(self._draining.values()):
            self._abandon(flow)
        self._just_drained.clear()
        for listener in self._listeners:
            listener.close()
