"""A Qt-free asyncio client of the control API, for the tray app and the CLI.

``await ControlClient.open()`` connects and says hello; each method is one
call. Notifications (after ``subscribe``) are handed to the callback in
the order they arrive. Errors: ``ServiceUnavailable`` when the service is
not there (or goes away), ``NotAllowed`` when it refuses this user,
``ControlError`` for any other error answer, and ``UsageError`` when the CA
file given to ``connect`` cannot be read (the client reads it as the user
and sends its text: the service never opens paths that users give).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import pathlib
import typing

from client.control import protocol as p
from client.control.errors import ControlError, NotAllowed, ServiceUnavailable
from client.errors import UsageError
from client.trust import MAX_CA_PEM, Trust

log = logging.getLogger(__name__)

DEFAULT_SOCKET = pathlib.Path("/run/tunnelgate/control.sock")
"""Where the service listens unless TUNNELGATE_SOCKET says otherwise."""

NotificationCallback = typing.Callable[[str, dict], object]
"""Called as ``callback(method, params)``; may return an awaitable."""

_START_HINT = "sudo systemctl start tunnelgate"
_GROUP_HINT = "sudo usermod -aG tunnelgate $USER, then log in again"


def socket_path(path: str | os.PathLike | None = None) -> pathlib.Path:
    """The socket to use: ``path``, else $TUNNELGATE_SOCKET, else the default."""
    if path is not None:
        return pathlib.Path(path)
    env = os.environ.get("TUNNELGATE_SOCKET")
    return pathlib.Path(env) if env else DEFAULT_SOCKET


def _read_ca_file(path: str | os.PathLike) -> str:
    """The PEM text of a CA file, read by the caller; raises UsageError naming the file."""
    path = pathlib.Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CA_PEM + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the CA file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CA_PEM:
        raise UsageError(f"CA file {path} is larger than {MAX_CA_PEM} bytes")
    text = data.decode("utf-8", errors="replace")
    try:
        Trust(ca_pem=text)  # the service checks it too; this names the file
    except UsageError as exc:
        raise UsageError(f"CA file {path}: {exc}") from None
    return text


def _error(code: int, message: str) -> ControlError:
    return (NotAllowed if code == p.NOT_ALLOWED else ControlError)(code, message)


class ControlClient:
    """One connection to the service."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 path: pathlib.Path) -> None:
        """Use ``ControlClient.open``."""
        self.path = path
        self.service_version: str | None = None
        """The service's version, from hello."""
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[p.Id, asyncio.Future] = {}
        self._refusal: ControlError | None = None   # an error the service sent before any call
        self._callback: NotificationCallback | None = None
        self._closed = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task] = set()
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def open(cls, path: str | os.PathLike | None = None, *,
                   client: str = "tunnelgate-client 0.1", timeout: float = 5.0) -> "ControlClient":
        """Connect to the service and say hello.

        Raises ServiceUnavailable (with the command that fixes it) when nobody
        listens, NotAllowed when the service refuses this user.
        """
        where = socket_path(path)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(where), limit=p.MAX_LINE + 1), timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ServiceUnavailable(f"the Tunnelgate service is not running (no service at {where}; "
                                     f"start it with: {_START_HINT})") from None
        except PermissionError:
            raise NotAllowed(p.NOT_ALLOWED, f"not allowed to use the Tunnelgate service at {where} "
                                            f"({_GROUP_HINT})") from None
        except asyncio.TimeoutError:
            raise ServiceUnavailable(f"the Tunnelgate service at {where} does not answer") from None
        except OSError as exc:
            raise ServiceUnavailable(f"cannot reach the Tunnelgate service at {where}: "
                                     f"{exc.strerror or exc}") from None
        self = cls(reader, writer, where)
        try:
            result = await asyncio.wait_for(self.call("hello", {"api": p.API_VERSION, "client": client}),
                                            timeout)
        except NotAllowed as exc:
            await self.close()
            raise NotAllowed(exc.code, f"{exc.message} ({_GROUP_HINT})") from None
        except asyncio.TimeoutError:
            await self.close()
            raise ServiceUnavailable(f"the Tunnelgate service at {where} did not answer hello") from None
        except BaseException:
            await self.close()
            raise
        self.service_version = str(result.get("service", "")) if isinstance(result, dict) else None
        return self

    # -- the API -----------------------------------------------------------

    async def status(self) -> dict:
        """The service's Status object (see docs/control-api.md)."""
        return await self.call("status")

    async def connect(self, gateway: str, username: str, password: str, *,
                      ca: str | os.PathLike | None = None, pin: str | None = None,
                      profile: str | None = None, reconnect_for: float | None = None) -> None:
        """Start connecting; progress arrives as notifications. Raises ControlError (-32010 busy).

        ``reconnect_for``: seconds the service keeps trying to get a lost session back
        (0: never; None: its default).

        ``ca`` is a CA file that this process reads (the service opens no paths
        given by users); it sends the text. A file that cannot be read, or holds
        no certificate, raises UsageError naming it before anything is sent.
        """
        ca_pem = None if ca is None else _read_ca_file(ca)
        await self.call("connect", {"gateway": gateway, "username": username, "password": password,
                                    "ca_pem": ca_pem, "pin": pin, "profile": profile,
                                    "reconnect_for": reconnect_for})

    async def disconnect(self) -> None:
        """Disconnect; returns once the host is restored."""
        await self.call("disconnect")

    async def subscribe(self, callback: NotificationCallback, stats_interval: float = 1.0) -> None:
        """Receive notifications from now on: ``callback(method, params)`` for each."""
        self._callback = callback
        await self.call("subscribe", {"stats_interval": stats_interval})

    async def answer_challenge(self, id: str, response: str) -> None:
        """Answer a ``challenge`` notification (e.g. with a one-time code)."""
        await self.call("answer_challenge", {"id": id, "response": response})

    async def answer_certificate(self, id: str, decision: str) -> None:
        """Answer a ``certificate`` notification: "once", "always" or "cancel"."""
        await self.call("answer_certificate", {"id": id, "decision": decision})

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        self._finish("closed by the client")
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass
        if self._read_task is not asyncio.current_task():
            self._read_task.cancel()
            try:
                await self._read_task
            except (asyncio.CancelledError, Exception):
                pass

    async def wait_closed(self) -> str:
        """Wait until the connection ends; returns why."""
        return await asyncio.shield(self._closed)

    @property
    def is_open(self) -> bool:
        """Whether the connection is still up."""
        return not self._closed.done()

    async def call(self, method: str, params: dict | None = None) -> typing.Any:
        """One raw call; returns its result or raises ControlError / ServiceUnavailable."""
        if self._closed.done():
            if self._refusal is not None:
                raise self._refusal
            raise ServiceUnavailable(f"the connection to the Tunnelgate service is closed "
                                     f"({self._closed.result()})")
        request = p.Request(id=next(self._ids), method=method, params=params or {})
        future = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        try:
            self._writer.write(p.encode(request))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._pending.pop(request.id, None)
            self._finish(f"write failed: {exc}")
            raise ServiceUnavailable(f"lost the connection to the Tunnelgate service: {exc}") from None
        try:
            return await future
        finally:
            self._pending.pop(request.id, None)

    # -- internals ---------------------------------------------------------

    async def _read_loop(self) -> None:
        buffer = p.LineBuffer()
        reason = "the service closed the connection"
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                for line in buffer.feed(data):
                    self._dispatch(p.parse(line))
        except p.ProtocolError as exc:
            reason = f"the service sent something unreadable: {exc.message}"
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
        finally:
            self._finish(reason)

    def _dispatch(self, message: p.Message) -> None:
        if isinstance(message, p.Notification):
            if self._callback is not None:
                try:
                    result = self._callback(message.method, message.params)
                except Exception:
                    log.exception("notification callback failed for %s", message.method)
                    return
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            return
        if isinstance(message, p.Request):
            return  # the service never calls us
        if message.id is None and isinstance(message, p.ErrorResponse):
            # Refused before any call was read (e.g. peer credentials): fail them all,
            # and remember it for calls made after the refusal arrived.
            self._refusal = _error(message.code, message.message)
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(_error(message.code, message.message))
            return
        future = self._pending.get(message.id)
        if future is None or future.done():
            return
        if isinstance(message, p.Response):
            future.set_result(message.result)
        else:
            future.set_exception(_error(message.code, message.message))

    def _finish(self, reason: str) -> None:
        if self._closed.done():
            return
        self._closed.set_result(reason)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._refusal or ServiceUnavailable(
                    f"lost the connection to the Tunnelgate service ({reason})"))


def describe_secured(status: dict) -> str:
    """The secured networks of a Status for people: ``0.0.0.0/0 except 192.168.0.0/16;
    IPv6 blocked`` (the parts a Status lacks are left out)."""
    text = ", ".join(status.get("networks") or [])
    if status.get("excluded"):
        text += " except " + ", ".join(status["excluded"])
    if status.get("ipv6_blocked"):
        text += "; IPv6 blocked"
    return text
