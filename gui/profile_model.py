"""The profiles as a Qt list model, read from and written through a ProfileStore.

The store is the truth: every change is saved first and the model then
reloads, so what the list shows is what the file holds.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt

ProfileRole = Qt.ItemDataRole.UserRole + 1
"""The role under which each row's Profile object is returned."""


class ProfileListModel(QAbstractListModel):
    """One row per profile: display "name — gateway", ProfileRole the Profile."""

    def __init__(self, store, parent=None) -> None:
        super().__init__(parent)
        self.store = store
        self._profiles = list(store.load())

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(self._profiles)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._profiles):
            return None
        profile = self._profiles[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            suffix = "  (connect at start)" if profile.connect_at_start else ""
            return f"{profile.name} — {profile.username} @ {profile.gateway}{suffix}"
        if role == Qt.ItemDataRole.ToolTipRole:
            trust = (f"pinned {profile.pin}" if profile.pin else
                     f"CA file {profile.ca}" if profile.ca else "system CA store")
            return f"{profile.gateway}\nuser {profile.username}\ntrust: {trust}"
        if role == ProfileRole:
            return profile
        return None

    def profile(self, row: int):
        """The Profile shown in a row."""
        return self._profiles[row]

    def row_of(self, name: str) -> int:
        """The row of the profile called ``name``, or -1."""
        return next((i for i, p in enumerate(self._profiles) if p.name == name), -1)

    def save(self, profile, replacing: str | None = None) -> None:
        """Save a new or edited profile (``replacing``: its old name, when renamed)."""
        self.store.save(profile, replacing=replacing)  # one write; a rename keeps its place
        self.reload()

    def remove(self, name: str) -> bool:
        """Remove a profile; False if there was none."""
        removed = self.store.remove(name)
        self.reload()
        return removed

    def reload(self) -> None:
        """Read the store again."""
        self.beginResetModel()
        self._profiles = list(self.store.load())
        self.endResetModel()
