"""bpf(2) element access: the hot-path ``MapElements`` against the plain calls.

Needs root (or CAP_BPF) and a kernel with BPF; skipped otherwise.
"""

from __future__ import annotations

import os

import pytest

from client.bpf import syscall


@pytest.fixture
def hash_map():
    try:
        fd = syscall.map_create(syscall.MAP_TYPE_HASH, 12, 20, 8, syscall.F_NO_PREALLOC, "tg_test")
    except OSError as exc:
        pytest.skip(f"BPF is not available here: {exc}")
    yield fd
    os.close(fd)


def test_elements_are_created_replaced_and_deleted(hash_map):
    elements = syscall.MapElements(hash_map, 12, 20)
    key, other = bytes(range(12)), bytes(range(1, 13))
    elements.update(key, b"a" * 20)
    elements.update(other, b"b" * 20)
    assert syscall.map_lookup(hash_map, key, 20) == b"a" * 20
    elements.update(key, b"c" * 20)                  # replaced, the other one untouched
    assert syscall.map_lookup(hash_map, key, 20) == b"c" * 20
    assert syscall.map_lookup(hash_map, other, 20) == b"b" * 20
    assert elements.delete(key) is True
    assert elements.delete(key) is False             # ENOENT is an answer, not an error
    assert syscall.map_lookup(hash_map, key, 20) is None
    assert syscall.map_lookup(hash_map, other, 20) == b"b" * 20


def test_a_full_map_refuses_with_an_error(hash_map):
    elements = syscall.MapElements(hash_map, 12, 20)
    for i in range(8):
        elements.update(i.to_bytes(12, "big"), bytes(20))
    with pytest.raises(OSError) as info:
        elements.update((99).to_bytes(12, "big"), bytes(20))
    assert info.value.errno == 7                     # E2BIG: max_entries reached
