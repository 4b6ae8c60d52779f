"""LogForwarder: the ``client`` logger's records, as ``log`` notifications.

The server adds one ``LogForwarder`` to the ``client`` logger while it runs.
Each record at INFO and above becomes the params of a ``log`` notification
(time, level, message) handed to ``ControlServer.broadcast`` on the server's
loop: directly when logged on the loop's thread, through
``call_soon_threadsafe`` from any other. The server blanks the secrets.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import typing

if typing.TYPE_CHECKING:
    from client.control.server import ControlServer


class LogForwarder(logging.Handler):
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
