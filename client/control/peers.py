"""Peers of the control service: who is at the other end, and one connection.

A peer is one accepted connection. Its credentials come from SO_PEERCRED
(``peer_uid``); ``check_peer`` decides whether that user may use the service
at all (root, or a member of the service group). Everything sent to a peer
goes through one bounded queue drained by its writer task (``write_loop``):
a peer that does not read its messages fills the queue and is dropped, never
buffered without bound.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import socket
import struct
import typing

from client.control import protocol as p

if typing.TYPE_CHECKING:
    from client.control.server import ControlServer

log = logging.getLogger(__name__)

QUEUE_LIMIT = 256
"""Messages waiting for one peer before it counts as too slow and is dropped."""
CALLS_IN_FLIGHT = 8
"""Requests of one peer being worked on at once (more wait: backpressure)."""


def peer_uid(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", data)


def check_peer(uid: int, gid: int, group: str) -> str | None:
    """None when the peer may use the service, else the reason it may not."""
    if uid == 0:
        return None
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return f"not allowed: uid {uid} has no user entry"
    try:
        group_gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return f"not allowed: user {user.pw_name} is not in group {group} (the group does not exist)"
    if gid == group_gid or group_gid in os.getgrouplist(user.pw_name, user.pw_gid):
        return None
    return f"not allowed: user {user.pw_name} is not in group {group}"


class Peer:
    """One accepted connection."""

    def __init__(self, server: "ControlServer", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, name: str) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.name = name
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_LIMIT)
        self.greeted = False
        self.subscribed = False
        self.stats_task: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()
        self.calls = asyncio.Semaphore(CALLS_IN_FLIGHT)
        self.dropped = False
        self.writer_task: asyncio.Task | None = None
        self.uid: int | None = None

    def send(self, message: p.Message) -> bool:
        """Queue one message; a peer whose queue is full is dropped. False if dropped."""
        if self.dropped:
            return False
        try:
            data = p.encode(message)
        except p.ProtocolError as exc:
            data = p.encode(p.ErrorResponse(id=getattr(message, "id", None), code=p.SERVICE_ERROR,
                                            message=exc.message))
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            log.warning("dropping control client %s: it does not read its messages", self.name)
            self.drop()
            return False
        return True

    def drop(self) -> None:
        """Close at once, without flushing."""
        self.dropped = True
        self.writer.transport.abort()
        for task in [self.stats_task, self.writer_task, *self.tasks]:
            if task is not None:
                task.cancel()

    async def write_loop(self) -> None:
        try:
            while True:
                data = await self.queue.get()
                if data is None:
                    break
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.writer.close()
