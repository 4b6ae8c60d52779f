"""An in-memory stand-in for ``client.wire.link.Link``, for sans-IO tests of stream handlers.

It keeps, per stream, the request headers, the bytes queued, and how our side
of the stream ended (``ended``: END_STREAM sent; ``reset``: RST_STREAM sent).
``deliver_*`` play the peer's side into the registered handler, as the real
link dispatches events.
"""

from __future__ import annotations

import collections

from client.wire.capsule import DATAGRAM, CapsuleParser, parse_datagram


class FakeLink:
    """What a packet path or relay sees of its HTTP/2 session."""

    def __init__(self) -> None:
        self.is_open = True
        self.handlers: dict[int, object] = {}
        self.requests: dict[int, list[tuple[str, str]]] = {}
        self.sent: dict[int, bytearray] = collections.defaultdict(bytearray)
        self.ended: set[int] = set()
        self.reset_ids: set[int] = set()
        self.backlog = 0
        """What ``buffered`` reports for every stream (payload waiting for window)."""
        self.goaway_received = False
        """The peer sent GOAWAY: open streams go on, ``can_open`` is False."""
        self._next_id = 1

    @property
    def can_open(self) -> bool:
        return self.is_open and not self.goaway_received

    # -- the Link API the handlers use ------------------------------------------------
    def open(self, headers, handler, *, end: bool = False) -> int:
        stream_id, self._next_id = self._next_id, self._next_id + 2
        self.requests[stream_id] = list(headers)
        self.handlers[stream_id] = handler
        if end:
            self.ended.add(stream_id)
        return stream_id

    def register(self, stream_id: int, handler) -> None:
        self.handlers[stream_id] = handler

    def unregister(self, stream_id: int) -> None:
        self.handlers.pop(stream_id, None)

    def send(self, stream_id: int, data, *, end: bool = False) -> None:
        if stream_id not in self.ended and stream_id not in self.reset_ids:
            self.sent[stream_id] += data
        if end:
            self.ended.add(stream_id)

    def end(self, stream_id: int) -> None:
        self.ended.add(stream_id)

    def reset(self, stream_id: int) -> None:
        self.handlers.pop(stream_id, None)
        self.reset_ids.add(stream_id)

    def consumed(self, stream_id: int, flow_length: int) -> None:
        pass

    def buffered(self, stream_id: int) -> int:
        return self.backlog

    # -- the peer ---------------------------------------------------------------------
    def datagrams(self, stream_id: int) -> list[bytes]:
        """The payloads of the DATAGRAM capsules sent on a stream (context 0)."""
        capsules = CapsuleParser().feed(bytes(self.sent[stream_id]))
        return [parse_datagram(c.value)[1] for c in capsules if c.type == DATAGRAM]

    def closed(self, stream_id: int) -> bool:
        """Our side of the stream is done (ended or reset): it holds no stream slot once the peer's is."""
        return stream_id in self.ended or stream_id in self.reset_ids

    def deliver_response(self, stream_id: int, status: int, *, ended: bool = False) -> None:
        self.handlers[stream_id].on_response(status, {}, ended)

    def deliver_data(self, stream_id: int, data: bytes) -> None:
        self.handlers[stream_id].on_data(data, len(data))

    def deliver_end(self, stream_id: int) -> None:
        self.handlers[stream_id].on_end()

    def deliver_reset(self, stream_id: int) -> None:
        self.handlers.pop(stream_id).on_reset(8)

    def lose(self) -> None:
        """The connection is gone: every handler hears a reset, as ``Link._finish`` does."""
        self.is_open = False
        handlers, self.handlers = self.handlers, {}
        for handler in handlers.values():
            handler.on_reset(-1)


class FakeSession:
    """What the packet paths use of ``GatewaySession``: its link (replaced on resume) and headers."""

    def __init__(self) -> None:
        self.link = FakeLink()

    def extended_connect_headers(self, protocol: str, path: str) -> list[tuple[str, str]]:
        return [(":method", "CONNECT"), (":protocol", protocol), (":path", path)]
