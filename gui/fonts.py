"""Fonts the widgets share."""

from __future__ import annotations

from PySide6.QtGui import QFont, QFontDatabase


def monospace_font() -> QFont:
    """A fixed-pitch font, even where the platform names none (offscreen, bare X)."""
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setStyleHint(QFont.StyleHint.Monospace)
    font.setFamilies([font.family(), "DejaVu Sans Mono", "Liberation Mono", "Noto Mono", "monospace"])
    font.setFixedPitch(True)
    return font
