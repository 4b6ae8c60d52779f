"""ControlServer: the control API on a Unix socket, in front of an EngineHost.

Theory of operation. Each accepted connection is checked first: the peer's
uid (SO_PEERCRED) must be root or a member of the service group, else it
gets error -32001 and is closed. Then the peer must say ``hello`` with a
supported API version. Requests are parsed with the sans-IO ``protocol``
module and run as tasks (a few at a time per connection), so a long
``disconnect`` does not block a ``status``. Everything sent to a peer goes
through one bounded queue drained by a writer task: a peer that does not
read its notifications fills the queue and is dropped, never buffered
without bound. After ``subscribe`` a peer receives ``state``, ``challenge``
and ``certificate`` notifications from the host, ``stats`` every
``stats_interval`` seconds while connected, and ``log`` lines from the
``client`` logger at INFO and above (with the attempt's secrets blanked).
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pathlib
import pwd
import socket
import stat
import struct
import threading

from client.control import protocol as p
from client.control.errors import Busy, NoSuchQuestion
from client.control.host import SERVICE_VERSION, EngineHost
from client.control.params import ConnectParams, decision, stats_interval, string
from client.errors import ClientError, UsageError
from client.states import State

log = logging.getLogger(__name__)

MAX_CLIENTS = 32
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


class _LogForwarder(logging.Handler):
    """Hands log records of the ``client`` logger to the server, on its loop."""

    def __init__(self, server: "ControlServer", loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.INFO)
        self._server = server
        self._loop = loop
        self._thread = threading.get_ident()
        self._busy = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break the engine
            return
        params = {"time": record.created, "level": record.levelname, "message": message}
        if threading.get_ident() == self._thread:
            self._forward(params)
        else:
            try:
                self._loop.call_soon_threadsafe(self._forward, params)
            except RuntimeError:  # loop closed
                pass

    def _forward(self, params: dict) -> None:
        if self._busy:  # a log line written while forwarding one: do not loop
            return
        self._busy = True
        try:
            self._server.broadcast("log", params)
        finally:
            self._busy = False


class _Peer:
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


class ControlServer:
    """Serves the control API for one EngineHost on a Unix socket."""

    def __init__(self, socket_path: str | os.PathLike, host: EngineHost, *, group: str = "tunnelgate",
                 max_clients: int = MAX_CLIENTS) -> None:
        self.socket_path = pathlib.Path(socket_path)
        self.host = host
        self.group = group
        self.max_clients = max_clients
        self._peers: set[_Peer] = set()
        self._handlers: set[asyncio.Task] = set()
        self._server: asyncio.AbstractServer | None = None
        self._handler: _LogForwarder | None = None
        self._logger_level: int | None = None
        host.set_notifier(self.broadcast)

    async def start(self) -> None:
        """Listen (mode 0660, group ``group`` when it exists) and forward the log."""
        path = self.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        await self._remove_stale(path)
        self._server = await asyncio.start_unix_server(self._on_client, path=str(path))
        os.chmod(path, 0o660)
        try:
            os.chown(path, -1, grp.getgrnam(self.group).gr_gid)
        except KeyError:
            log.warning("group %s does not exist: only root can use the control socket %s",
                        self.group, path)
        self._handler = _LogForwarder(self, asyncio.get_running_loop())
        client_logger = logging.getLogger("client")
        if client_logger.getEffectiveLevel() > logging.INFO:
            self._logger_level = client_logger.level
            client_logger.setLevel(logging.INFO)
        client_logger.addHandler(self._handler)
        log.info("control API listening on %s", path)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then disconnect the engine and close."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening, restore the host, and close every connection."""
        if self._server is not None:
            self._server.close()
        await self.host.shutdown()
        for peer in list(self._peers):
            peer.drop()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5.0)
        if self._handler is not None:
            client_logger = logging.getLogger("client")
            client_logger.removeHandler(self._handler)
            if self._logger_level is not None:
                client_logger.setLevel(self._logger_level)
            self._handler = None
        if self._server is not None:
            self._server = None
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass

    def broadcast(self, method: str, params: dict) -> int:
        """Send a notification to every subscriber; returns how many got it."""
        peers = [peer for peer in self._peers if peer.subscribed]
        if method == "log":
            message = params["message"]
            for secret in self.host.secrets:
                if secret:
                    message = message.replace(secret, "***")
            if message != params["message"]:   # where the stars stand tells the secret
                peers = [peer for peer in peers if self.host.privy(peer.uid)]
            params = {**params, "message": message}
        note = p.Notification(method=method, params=params)
        return sum(peer.send(note) for peer in peers)

    # -- connections ---------------------------------------------------------

    @staticmethod
    async def _remove_stale(path: pathlib.Path) -> None:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise UsageError(f"{path} exists and is not a socket; remove it or choose another --socket")
        try:
            _, writer = await asyncio.open_unix_connection(str(path))
        except OSError:
            path.unlink()
            return
        writer.close()
        raise UsageError(f"another Tunnelgate service is already listening on {path}")

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            await self._serve_peer(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve_peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, gid = peer_uid(sock)
        except OSError as exc:
            log.warning("cannot read the credentials of a control client: %s", exc)
            writer.close()
            return
        peer = _Peer(self, reader, writer, f"pid {pid} uid {uid}")
        peer.uid = uid
        refusal = check_peer(uid, gid, self.group)
        if refusal is None and len(self._peers) >= self.max_clients:
            refusal = f"too many control clients (at most {self.max_clients})"
            code = p.TOO_MANY_CLIENTS
        else:
            code = p.NOT_ALLOWED
        writer_task = peer.writer_task = asyncio.ensure_future(peer.write_loop())
        if refusal is not None:
            log.warning("refused control client %s: %s", peer.name, refusal)
            peer.send(p.ErrorResponse(id=None, code=code, message=refusal))
            peer.queue.put_nowait(None)
            await writer_task
            return
        self._peers.add(peer)
        try:
            await self._read_loop(peer)
        finally:
            self._peers.discard(peer)
            for task in [peer.stats_task, *peer.tasks]:
                if task is not None:
                    task.cancel()
            if not peer.dropped:
                try:
                    peer.queue.put_nowait(None)
                except asyncio.QueueFull:
                    peer.drop()
            await asyncio.wait({writer_task})

    async def _read_loop(self, peer: _Peer) -> None:
        buffer = p.LineBuffer()
        while not peer.dropped:
            try:
                data = await peer.reader.read(65536)
            except (ConnectionError, OSError):
                return
            if not data:
                return
            try:
                lines = buffer.feed(data)
            except p.ProtocolError as exc:  # an over-long line: answer, then close
                peer.send(p.ErrorResponse(id=None, code=exc.code, message=exc.message))
                return
            for line in lines:
                if not line.strip():
                    continue
                try:
                    message = p.parse(line)
                except p.ProtocolError as exc:
                    peer.send(p.ErrorResponse(id=exc.id, code=exc.code, message=exc.message))
                    continue
                if not isinstance(message, p.Request):
                    continue  # notifications and answers from a client mean nothing here
                await peer.calls.acquire()
                task = asyncio.ensure_future(self._call(peer, message))
                peer.tasks.add(task)
                task.add_done_callback(peer.tasks.discard)

    async def _call(self, peer: _Peer, request: p.Request) -> None:
        try:
            result = await self._dispatch(peer, request)
        except p.ProtocolError as exc:
            peer.send(p.ErrorResponse(id=request.id, code=exc.code, message=exc.message))
        except Busy as exc:
            peer.send(p.ErrorResponse(id=request.id, code=p.BUSY, message=str(exc)))
        except NoSuchQuestion as exc:
            peer.send(p.ErrorResponse(id=request.id, code=p.NO_SUCH_QUESTION, message=str(exc)))
        except UsageError as exc:
            peer.send(p.ErrorResponse(id=request.id, code=p.INVALID_PARAMS, message=str(exc)))
        except ClientError as exc:
            peer.send(p.ErrorResponse(id=request.id, code=p.SERVICE_ERROR, message=str(exc)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("control call %s failed", request.method)
            peer.send(p.ErrorResponse(id=request.id, code=p.SERVICE_ERROR,
                                      message=f"internal error in {request.method} (see the service log)"))
        else:
            peer.send(p.Response(id=request.id, result=result))
        finally:
            peer.calls.release()

    async def _dispatch(self, peer: _Peer, request: p.Request) -> object:
        method, params = request.method, request.params
        if method == "hello":
            api = params.get("api")
            if api != p.API_VERSION or isinstance(api, bool):
                raise p.ProtocolError(p.UNSUPPORTED_VERSION,
                                      f"unsupported API version {api!r}; this service supports: "
                                      f"{p.API_VERSION}")
            peer.greeted = True
            log.debug("control client %s: %s", peer.name, str(params.get("client", ""))[:100])
            return {"api": p.API_VERSION, "service": SERVICE_VERSION}
        if not peer.greeted:
            raise p.ProtocolError(p.INVALID_REQUEST, "the first call must be hello")
        if method == "status":
            return self.host.status()
        if method == "connect":
            call = ConnectParams.read(params)
            await self.host.connect(call.gateway, call.username, call.password, ca_pem=call.ca_pem,
                                    pin=call.pin, profile=call.profile, owner=peer.uid)
            return {}
        if method == "disconnect":
            await self.host.disconnect()
            return {}
        if method == "subscribe":
            interval = stats_interval(params)
            peer.subscribed = True
            if peer.stats_task is not None:
                peer.stats_task.cancel()
            peer.stats_task = asyncio.ensure_future(self._send_stats(peer, interval))
            return {}
        if method == "answer_challenge":
            self.host.answer("challenge", string(params, "id"), string(params, "response"), uid=peer.uid)
            return {}
        if method == "answer_certificate":
            self.host.answer("certificate", string(params, "id"), decision(params), uid=peer.uid)
            return {}
        raise p.ProtocolError(p.METHOD_NOT_FOUND, f"no method {method!r}")

    async def _send_stats(self, peer: _Peer, interval: float) -> None:
        while not peer.dropped:
            await asyncio.sleep(interval)
            if self.host.state is State.CONNECTED:
                peer.send(p.Notification(method="stats", params=self.host.stats()))
