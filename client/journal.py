"""The write-ahead journal of host changes, shared by routes and DNS.

A journal is one small JSON file:

    {"version": 1, "owner": {"pid": P, "start": T}, "items": [...]}

The owner's pid and process start time (clock ticks since boot) tell a later
process whether the writer is still alive: a pid alone could have been reused.
Every write goes to a temporary file that is fsynced and renamed over the
journal, and the directory is fsynced, so after a crash the journal is either
the old list or the new one, never half of each. Callers write down what they
are about to change *before* changing it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pathlib
import typing

from client.errors import HostSetupError

__all__ = ["Journal", "owner_alive", "process_start"]

JOURNAL_VERSION = 1

log = logging.getLogger(__name__)


def process_start(pid: int) -> int | None:
    """Start time of a live process (clock ticks since boot), None if it is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_alive(owner: dict) -> bool:
    """Whether the process named by a journal's "owner" entry is still running."""
    pid = owner.get("pid")
    return isinstance(pid, int) and process_start(pid) == owner.get("start")


class Journal:
    """The JSON file listing what we changed (or were about to change)."""

    def __init__(self, path: pathlib.Path, *, what: str = "route") -> None:
        self.path = pathlib.Path(path)
        self.what = what
        """What the journal records, for error messages ("route", "DNS")."""

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> dict:
        """The whole document; ValueError if it is not a journal of ours."""
        doc = json.loads(self.path.read_text())
        if not isinstance(doc, dict) or doc.get("version") != JOURNAL_VERSION or not isinstance(doc.get("items"), list):
            raise ValueError(f"{self.path} is not a version-{JOURNAL_VERSION} {self.what} journal")
        return doc

    def owner(self) -> dict:
        """The owner entry of a readable journal, {} otherwise."""
        try:
            owner = self.read().get("owner")
        except (ValueError, OSError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def owned_by_us(self) -> bool:
        return self.owner().get("pid") == os.getpid()

    def write(self, items: list[dict]) -> None:
        """Replace the item list atomically and durably, with us as the owner.

        Raises HostSetupError, changing nothing, when the journal belongs to
        another process that is still running (a second client must never
        overwrite the first one's record). The check and the rename happen
        under a lock, so two processes starting at once cannot both claim it.
        """
        pid = os.getpid()
        doc = {"version": JOURNAL_VERSION, "owner": {"pid": pid, "start": process_start(pid)}, "items": items}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            owner = self.owner()
            if owner.get("pid") != pid and owner_alive(owner):
                raise HostSetupError(f"{self.what} journal {self.path} is in use by running process "
                                     f"{owner['pid']}")
            tmp = self.path.with_name(f"{self.path.name}.{pid}.tmp")  # never shared with another writer
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            os.close(lock)  # releases the lock
        self._sync_dir()

    def orphaned(self) -> list[dict] | None:
        """The items of a journal left by a process that is gone, to be undone.

        None when there is no journal, or its owner still runs (then it is
        left alone). An unreadable journal is removed and gives no items.
        """
        if not self.exists():
            return None
        try:
            doc = self.read()
        except (ValueError, OSError) as exc:
            log.warning("unreadable %s journal %s, removing it: %s", self.what, self.path, exc)
            self.remove()
            return []
        owner = doc.get("owner") or {}
        if owner.get("pid") != os.getpid() and owner_alive(owner):
            log.warning("%s journal %s belongs to running process %s; leaving it", self.what,
                        self.path, owner["pid"])
            return None
        log.info("recovering %d %s change(s) left by process %s", len(doc["items"]), self.what,
                 owner.get("pid"))
        return doc["items"]

    def undo(self, items: list[dict], undo_one: typing.Callable[[dict], None],
             describe: typing.Callable[[dict], str] = repr) -> None:
        """Undo items newest first, writing down the progress after each; a
        failure is logged at WARNING and the rest is still undone. Removes the
        journal at the end."""
        remaining = list(items)
        while remaining:
            item = remaining.pop()
            try:
                undo_one(item)
            except Exception as exc:  # each failure is reported; the others still go
                log.warning("could not undo %s change %s: %s", self.what, _described(describe, item), exc)
            try:
                self.write(remaining)
            except OSError as exc:  # e.g. a full disk: the host still comes first
                log.warning("could not record undo progress in %s: %s", self.path, exc)
        self.remove()

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self._sync_dir()

    def _sync_dir(self) -> None:
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _described(describe: typing.Callable[[dict], str], item: object) -> str:
    """``describe(item)``, or its repr when the item is too malformed to describe."""
    try:
        return describe(item)
    except Exception:  # a damaged journal must not stop the undo of the other items
        return repr(item)
