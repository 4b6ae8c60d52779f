"""Test helpers: the reference ``h2`` stack as the other end of our Mux, and raw frames."""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import h2.settings

from client.wire import mux as m

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class H2Peer:
    """An ``h2`` connection that records its events and credits what it receives."""

    def __init__(self, *, client_side: bool, settings: dict | None = None,
                 auto_credit: bool = True) -> None:
        config = h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.events: list = []
        self.data: dict[int, bytearray] = {}
        self.auto_credit = auto_credit

    def receive(self, data: bytes) -> list:
        events = self.conn.receive_data(data)
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                if self.auto_credit and ev.flow_controlled_length:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        self.events += events
        return events

    def data_to_send(self) -> bytes:
        return self.conn.data_to_send()

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def shuttle(ours: m.Mux, peer, *, credit: bool = True, rounds: int = 500) -> list:
    """Move bytes both ways until both ends are quiet; returns the events our Mux saw.

    With ``credit``, our side hands every received payload back (consumed)."""
    seen: list = []
    for _ in range(rounds):
        out_ours, out_peer = ours.data_to_send(), peer.data_to_send()
        if not out_ours and not out_peer:
            break
        if out_ours:
            peer.receive(out_ours)
        if out_peer:
            events = ours.receive(out_peer)
            seen += events
            if credit:
                for ev in events:
                    if isinstance(ev, m.DataReceived):
                        ours.consumed(ev.stream_id, ev.flow_length)
    return seen


def of(kind, events) -> list:
    return [e for e in events if isinstance(e, kind)]


def received(events, stream_id: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, m.DataReceived) and e.stream_id == stream_id)


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One raw HTTP/2 frame."""
    return struct.pack(">L", len(payload))[1:] + bytes((frame_type, flags)) + \
        struct.pack(">L", stream_id) + payload


def settings_frame(**values: int) -> bytes:
    """A SETTINGS frame from keyword names of ``h2.settings.SettingCodes``."""
    body = b"".join(struct.pack(">HL", int(h2.settings.SettingCodes[k]), v) for k, v in values.items())
    return frame(0x4, 0, 0, body)


def client_start() -> bytes:
    """What a raw client sends first: the preface and empty SETTINGS."""
    return PREFACE + frame(0x4, 0, 0)
