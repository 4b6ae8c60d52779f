"""The write-ahead journal: ownership, atomic replacement, and undo that always finishes."""

from __future__ import annotations

import json
import logging

import pytest

from client.errors import HostSetupError
from client.journal import Journal, process_start


def _left_by(path, pid, start, items):
    path.write_text(json.dumps({"version": 1, "owner": {"pid": pid, "start": start}, "items": items}))


def test_write_refuses_a_journal_owned_by_another_running_process(tmp_path):
    """A second client must not overwrite the journal of a live first one: write raises, the file stays."""
    path = tmp_path / "host-changes.json"
    _left_by(path, 1, process_start(1), [{"kind": "route", "dst": "10.77.0.0/24"}])
    before = path.read_text()
    with pytest.raises(HostSetupError, match="in use by running process 1"):
        Journal(path).write([{"kind": "route", "dst": "192.0.2.0/24"}])
    assert path.read_text() == before
    assert Journal(path).orphaned() is None  # and it is still left alone


def test_write_takes_over_a_journal_of_a_dead_process(tmp_path):
    """A journal whose owner is gone may be rewritten; we become its owner."""
    path = tmp_path / "host-changes.json"
    _left_by(path, 999999999, 0, [{"kind": "route"}])
    journal = Journal(path)
    journal.write([])
    assert journal.owned_by_us() and journal.read()["items"] == []
    assert not list(tmp_path.glob("*.tmp"))


def test_undo_goes_on_when_progress_cannot_be_written(tmp_path, caplog):
    """If the journal cannot be rewritten (full disk...), every item is still undone and the
    failure is logged at WARNING."""
    path = tmp_path / "host-changes.json"
    items = [{"n": 1}, {"n": 2}, {"n": 3}]
    _left_by(path, 999999999, 0, items)
    (tmp_path / "host-changes.json.lock").mkdir()  # every write now fails with an OSError
    undone = []
    with caplog.at_level(logging.WARNING, logger="client.journal"):
        Journal(path).undo(Journal(path).orphaned(), lambda item: undone.append(item["n"]))
    assert undone == [3, 2, 1]
    assert any(r.levelno == logging.WARNING and "could not record" in r.getMessage() for r in caplog.records)
    assert not path.exists()


def test_recover_survives_a_malformed_item(tmp_path, caplog):
    """A DNS journal item missing its fields is logged at WARNING; recovery finishes and
    removes the journal instead of crashing (the service runs it at every start)."""
    from client.dns import DnsManager
    path = tmp_path / "dns-changes.json"
    _left_by(path, 999999999, 0, [{"kind": "file"}, "junk"])
    with caplog.at_level(logging.WARNING, logger="client.journal"):
        assert DnsManager.recover(path, run=lambda argv: None) is True
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2
    assert not path.exists()
