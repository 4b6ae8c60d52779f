"""The one bridge from the Qt-free ControlClient to Qt signals.

``ControlClient.subscribe`` calls back with ``(method, params)`` on the
asyncio loop (qasync runs it on the Qt thread); ``deliver`` turns each
notification into the matching signal. ``watch`` waits for the client's
connection to end and emits ``serviceLost`` with the reason, so the rest of
the GUI never touches the client's internals.
"""

from __future__ import annotations

import asyncio
import logging

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)


class ServiceBridge(QObject):
    """Qt signals for the control API's notifications."""

    stateChanged = Signal(str, str, str)
    """``state`` notification: state, detail, error kind ("" unless failed)."""
    statsUpdated = Signal(dict)
    """``stats`` notification: the stats object of Status."""
    logLine = Signal(dict)
    """``log`` notification: time, level, message."""
    challengeAsked = Signal(dict)
    """``challenge`` notification: id, kind, prompt."""
    certificateAsked = Signal(dict)
    """``certificate`` notification: id, host, subject, issuer, fingerprint, reason."""
    serviceLost = Signal(str)
    """The connection to the service ended; the argument says why."""

    def deliver(self, method: str, params: dict) -> None:
        """Emit the signal for one notification (the subscribe callback)."""
        if method == "state":
            self.stateChanged.emit(str(params.get("state", "")), str(params.get("detail", "")),
                                   str(params.get("error_kind") or ""))
        elif method == "stats":
            self.statsUpdated.emit(dict(params))
        elif method == "log":
            self.logLine.emit(dict(params))
        elif method == "challenge":
            self.challengeAsked.emit(dict(params))
        elif method == "certificate":
            self.certificateAsked.emit(dict(params))
        else:
            log.debug("ignoring unknown notification %s", method)

    async def watch(self, client) -> None:
        """Wait until ``client``'s connection ends, then emit ``serviceLost``."""
        try:
            reason = await client.wait_closed()
        except asyncio.CancelledError:
            raise
        self.serviceLost.emit(reason)
