"""ControlServer: the control API on a Unix socket, in front of an EngineHost.

Theory of operation. Each accepted connection becomes a ``Peer`` (peers.py)
and is checked first: the peer's uid (SO_PEERCRED) must be root or a member
of the service group, else it gets error -32001 and is closed (a connection
beyond ``max_clients`` gets -32003). The requests of an admitted peer are
read and run by the ``Dispatcher`` (dispatch.py); everything sent to it goes
through its bounded queue, so a peer that does not read is dropped. After
``subscribe`` a peer receives ``state``, ``challenge`` and ``certificate``
notifications from the host, ``stats`` every ``stats_interval`` seconds while
connected, and ``log`` lines from the ``client`` logger at INFO and above
(with the attempt's secrets blanked).
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pathlib
import stat

from client.control import protocol as p
from client.control.dispatch import Dispatcher
from client.control.host import EngineHost
from client.control.logfeed import LogForwarder
from client.control.peers import Peer, check_peer, peer_uid
from client.errors import UsageError

log = logging.getLogger(__name__)

MAX_CLIENTS = 32


class ControlServer:
    """Serves the control API for one EngineHost on a Unix socket."""

    def __init__(self, socket_path: str | os.PathLike, host: EngineHost, *, group: str = "tunnelgate",
                 max_clients: int = MAX_CLIENTS) -> None:
        self.socket_path = pathlib.Path(socket_path)
        self.host = host
        self.group = group
        self.max_clients = max_clients
        self._peers: set[Peer] = set()
        self._handlers: set[asyncio.Task] = set()
        self._server: asyncio.AbstractServer | None = None
        self._handler: LogForwarder | None = None
        self._logger_level: int | None = None
        self._dispatcher = Dispatcher(host)
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
        self._handler = LogForwarder(self, asyncio.get_running_loop())
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
        peer = Peer(self, reader, writer, f"pid {pid} uid {uid}")
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
            await self._dispatcher.read_loop(peer)
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
