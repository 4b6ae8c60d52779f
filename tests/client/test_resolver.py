"""resolver.cut_short against a simulation of an interrupted in-place write,
and recovery from a crash part way through writing the resolver file."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import resolver
from client.dns import DnsManager, DnsState

ORIGINAL = b"# the host's own\nnameserver 192.0.2.1\noptions edns0 \xff\nsearch home.lan\n"
FIRST = DnsState(interface="tg0", servers=("10.77.0.53",), search=("corp.example",))
SECOND = DnsState(interface="tg0", servers=("10.77.0.54", "10.77.0.55"), search=("corp.example", "lab.example"))


def _interrupted(old: bytes, new: bytes) -> list[bytes]:
    """Every content an in-place write of `new` over `old` can leave behind."""
    return [new[:k] + old[k:] for k in range(len(new) + 1)] + [new]


small = st.binary(max_size=12).map(lambda b: bytes(x % 3 for x in b))  # few symbols: many near-misses


@given(small, small, small)
def test_cut_short_is_exactly_the_interrupted_states(old, new, other):
    states = set(_interrupted(old, new))
    for current in states:
        assert resolver.cut_short(current, old, new)
    assert resolver.cut_short(other, old, new) == (other in states)


def _applied(tmp_path: pathlib.Path, *states: DnsState) -> tuple[pathlib.Path, pathlib.Path, list[bytes]]:
    """Apply `states` in turn with the file backend; the journal as a crash would leave it."""
    conf, journal = tmp_path / "resolv.conf", tmp_path / "dns.journal"
    tmp_path.mkdir(exist_ok=True)
    conf.write_bytes(ORIGINAL)
    manager, contents = DnsManager(journal, resolv_conf=conf, backend="file"), [ORIGINAL]
    for state in states:
        manager.apply(state)
        contents.append(conf.read_bytes())
    return conf, journal, contents


@pytest.mark.parametrize("direction", ["apply", "apply-again", "restore"])
def test_recover_after_a_crash_part_way_through_a_write_restores_the_original(tmp_path, direction):
    """Whatever a crash leaves mid-write (applying, re-applying, putting back), recovery restores the original."""
    conf, journal, (original, first, second) = _applied(tmp_path, FIRST, SECOND)
    old, new = {"apply": (original, first), "apply-again": (first, second), "restore": (second, original)}[direction]
    if direction == "apply":  # the journal as it stood while the first write was under way
        conf, journal, _ = _applied(tmp_path / "fresh", FIRST)
    doc = journal.read_bytes()
    for leftover in _interrupted(old, new):
        conf.write_bytes(leftover)
        journal.write_bytes(doc)
        assert DnsManager.recover(journal)
        assert conf.read_bytes() == ORIGINAL, leftover
        assert not journal.exists()


def test_recover_removes_a_half_written_file_that_did_not_exist_before(tmp_path):
    conf, journal = tmp_path / "resolv.conf", tmp_path / "dns.journal"
    DnsManager(journal, resolv_conf=conf, backend="file").apply(FIRST)
    written, doc = conf.read_bytes(), journal.read_bytes()
    for k in (0, len(written) // 2):
        conf.write_bytes(written[:k])
        journal.write_bytes(doc)
        assert DnsManager.recover(journal)
        assert not conf.exists()


def test_recover_still_leaves_a_file_someone_else_rewrote(tmp_path, caplog):
    conf, journal, _ = _applied(tmp_path, FIRST)
    theirs = b"# rewritten by a DHCP client\nnameserver 192.0.2.99\n"
    conf.write_bytes(theirs)
    assert DnsManager.recover(journal)
    assert conf.read_bytes() == theirs
    assert "changed by someone else" in caplog.text
