"""The status window: what the session is, how much it carries, what it logs.

Everything shown comes from the control API: ``set_status`` takes a Status
object, ``set_state`` a ``state`` notification, ``set_stats`` a ``stats``
notification and ``append_log`` a ``log`` notification. A one-second timer
refreshes the "time connected" figure from ``connected_since``; the log view
keeps at most ``MAX_LOG_LINES`` lines so a long session cannot grow it forever.
"""

from __future__ import annotations

import time
from typing import Callable

from PySide6.QtCore import QTimer, Qt
from PySide6.QtWidgets import (
    QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout, QWidget,
)

from client.control.client import describe_secured
from gui.formatting import human_bytes, human_duration, human_rate
from gui.fonts import monospace_font
from gui.icons import app_icon, state_icon
from gui.throughput_chart import ThroughputChart

MAX_LOG_LINES = 2000
"""The log view forgets older lines beyond this many."""

NONE = "—"


class StatusWindow(QWidget):
    """Gateway, address, networks, resources, time, bytes, chart and log."""

    def __init__(self, parent: QWidget | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(parent)
        self._clock = clock
        self._connected_since: float | None = None
        self.setWindowTitle("Tunnelgate — status")
        self.setWindowIcon(app_icon())
        self.resize(620, 640)

        self.state_icon = QLabel()
        self.state = QLabel("disconnected")
        self.state.setObjectName("state")
        font = self.state.font()
        font.setPointSize(font.pointSize() + 3)
        font.setBold(True)
        self.state.setFont(font)
        self.detail = QLabel("")
        self.detail.setWordWrap(True)
        header = QHBoxLayout()
        header.addWidget(self.state_icon)
        header.addWidget(self.state)
        header.addWidget(self.detail, 1)

        self.profile = self._value("profile")
        self.gateway = self._value("gateway")
        self.username = self._value("username")
        self.address = self._value("address")
        self.networks = self._value("networks")
        self.resources = self._value("resources")
        self.dns = self._value("dns")
        self.duration = self._value("duration")
        self.bytes_in = self._value("bytes_in")
        self.bytes_out = self._value("bytes_out")
        self.flows = self._value("flows")

        session = QFormLayout()
        session.addRow("Profile:", self.profile)
        session.addRow("Gateway:", self.gateway)
        session.addRow("User:", self.username)
        session.addRow("Assigned address:", self.address)
        session.addRow("Secured networks:", self.networks)
        session.addRow("Resources:", self.resources)
        session.addRow("DNS:", self.dns)
        session.addRow("Time connected:", self.duration)
        traffic = QFormLayout()
        traffic.addRow("Received:", self.bytes_in)
        traffic.addRow("Sent:", self.bytes_out)
        traffic.addRow("Open flows:", self.flows)
        self.chart = ThroughputChart()
        traffic_box = QGroupBox("Traffic")
        traffic_layout = QVBoxLayout(traffic_box)
        traffic_layout.addLayout(traffic)
        traffic_layout.addWidget(self.chart, 1)
        session_box = QGroupBox("Session")
        session_box.setLayout(session)

        self.log = QPlainTextEdit()
        self.log.setObjectName("log")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(MAX_LOG_LINES)
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log.setFont(monospace_font())
        log_box = QGroupBox("Log")
        log_layout = QVBoxLayout(log_box)
        log_layout.addWidget(self.log)

        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(session_box)
        layout.addWidget(traffic_box, 2)
        layout.addWidget(log_box, 2)

        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.refresh_duration)
        self.timer.start()
        self.set_state("disconnected", "")
        self.clear_session()

    # -- fed by the controller -------------------------------------------------

    def set_status(self, status: dict) -> None:
        """Show a whole Status object of the control API."""
        self.set_state(status.get("state", "disconnected"),
                       status.get("error") or status.get("detail") or "")
        if status.get("state") in ("disconnected", None):
            self.clear_session()
        else:
            self.profile.setText(status.get("profile") or NONE)
            self.gateway.setText(status.get("gateway") or NONE)
            self.username.setText(status.get("username") or NONE)
            self.address.setText(status.get("address") or NONE)
            self.networks.setText(describe_secured(status) or NONE)
            self.resources.setText(", ".join(status.get("resources") or []) or NONE)
            dns = status.get("dns") or {}
            servers = ", ".join(dns.get("servers") or [])
            search = ", ".join(dns.get("search") or [])
            self.dns.setText(f"{servers} (search {search})" if search else servers or NONE)
            self._connected_since = status.get("connected_since")
        self.set_stats(status.get("stats") or {}, chart=False)
        self.refresh_duration()

    def set_state(self, state: str, detail: str) -> None:
        """Show a state change (``state`` notification)."""
        self.state.setText(state)
        self.detail.setText(detail)
        self.state_icon.setPixmap(state_icon(state).pixmap(32, 32))
        if state in ("disconnected", "failed"):
            self._connected_since = None
            self.refresh_duration()

    def set_stats(self, stats: dict, chart: bool = True) -> None:
        """Show traffic figures (``stats`` notification); add a chart sample."""
        rate_in = float(stats.get("rate_in", 0.0))
        rate_out = float(stats.get("rate_out", 0.0))
        self.bytes_in.setText(f"{human_bytes(stats.get('bytes_in', 0))}  ({human_rate(rate_in)})")
        self.bytes_out.setText(f"{human_bytes(stats.get('bytes_out', 0))}  ({human_rate(rate_out)})")
        self.flows.setText(str(stats.get("flows", 0)))
        if chart:
            self.chart.add_sample(self._clock(), rate_in, rate_out)

    def append_log(self, entry: dict) -> None:
        """Add one ``log`` notification as a line of the log view."""
        stamp = time.strftime("%H:%M:%S", time.localtime(entry.get("time", self._clock())))
        self.log.appendPlainText(f"{stamp} {entry.get('level', 'INFO'):<7} {entry.get('message', '')}")

    def clear_session(self) -> None:
        """Blank the session fields (not the log: it tells what happened)."""
        for label in (self.profile, self.gateway, self.username, self.address,
                      self.networks, self.resources, self.dns):
            label.setText(NONE)
        self._connected_since = None
        self.chart.clear()
        self.refresh_duration()

    def refresh_duration(self) -> None:
        """Recompute "time connected" (the timer calls this every second)."""
        if self._connected_since is None:
            self.duration.setText(NONE)
        else:
            self.duration.setText(human_duration(self._clock() - self._connected_since))

    def _value(self, name: str) -> QLabel:
        label = QLabel(NONE)
        label.setObjectName(name)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        return label
