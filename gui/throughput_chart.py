"""A small live chart of throughput, both directions, over the last minute.

QtCharts is not part of PySide6-Essentials, so this draws with QPainter:
two polylines (received and sent) over a time axis that ends at the newest
sample, scaled to the largest rate in view. Samples older than the window
are dropped as new ones arrive, so memory stays bounded.
"""

from __future__ import annotations

import collections
import dataclasses

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from gui.formatting import human_rate

IN_COLOR = QColor("#2e7dd7")
OUT_COLOR = QColor("#e07b24")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One throughput reading."""

    time: float
    """When it was taken (seconds, any monotonic origin)."""
    rate_in: float
    """Bytes per second received."""
    rate_out: float
    """Bytes per second sent."""


class ThroughputChart(QWidget):
    """Draws the received and sent rates of the last ``window`` seconds."""

    def __init__(self, parent: QWidget | None = None, window: float = 60.0) -> None:
        super().__init__(parent)
        self.window = window
        self._samples: collections.deque[Sample] = collections.deque()
        self.setMinimumSize(260, 110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAccessibleName("Throughput chart")

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(420, 140)

    def add_sample(self, time: float, rate_in: float, rate_out: float) -> None:
        """Add a reading and forget those older than the window."""
        self._samples.append(Sample(time, max(0.0, float(rate_in)), max(0.0, float(rate_out))))
        while self._samples and self._samples[0].time < time - self.window:
            self._samples.popleft()
        self.update()

    def clear(self) -> None:
        """Forget every sample (a new session starts from an empty chart)."""
        self._samples.clear()
        self.update()

    def samples(self) -> list[Sample]:
        """The readings in view, oldest first."""
        return list(self._samples)

    def peak(self) -> float:
        """The largest rate in view, either direction (0 when empty)."""
        return max((max(s.rate_in, s.rate_out) for s in self._samples), default=0.0)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        plot = QRectF(self.rect()).adjusted(4, 18, -4, -4)
        painter.fillRect(plot, palette.color(QPalette.ColorRole.Base))
        grid = QPen(palette.color(QPalette.ColorRole.Mid), 1, Qt.PenStyle.DotLine)
        painter.setPen(grid)
        for i in range(1, 4):
            y = plot.top() + plot.height() * i / 4
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        painter.setPen(palette.color(QPalette.ColorRole.Mid))
        painter.drawRect(plot)

        peak = self.peak()
        scale = peak * 1.15 if peak > 0 else 1.0
        self._draw_legend(painter, peak)
        if len(self._samples) < 2:
            return
        end = self._samples[-1].time
        for color, pick in ((IN_COLOR, lambda s: s.rate_in), (OUT_COLOR, lambda s: s.rate_out)):
            path = QPainterPath()
            for i, sample in enumerate(self._samples):
                x = plot.right() - (end - sample.time) / self.window * plot.width()
                y = plot.bottom() - pick(sample) / scale * plot.height()
                if i == 0:
                    path.moveTo(x, y)
                else:
                    path.lineTo(x, y)
            painter.setPen(QPen(color, 2))
            painter.drawPath(path)

    def _draw_legend(self, painter: QPainter, peak: float) -> None:
        text = self.palette().color(QPalette.ColorRole.WindowText)
        metrics = painter.fontMetrics()
        x = 6
        for color, label in ((IN_COLOR, "received"), (OUT_COLOR, "sent")):
            painter.fillRect(QRectF(x, 6, 10, 4), color)
            painter.setPen(text)
            painter.drawText(QPointF(x + 14, 13), label)
            x += 14 + metrics.horizontalAdvance(label) + 14
        caption = f"peak {human_rate(peak)} · last {int(self.window)} s"
        painter.drawText(QPointF(self.width() - metrics.horizontalAdvance(caption) - 6, 13), caption)
