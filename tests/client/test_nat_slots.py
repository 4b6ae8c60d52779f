"""NatSlots: the reflector's table of taken, held and free local four-tuples."""

from __future__ import annotations

import tracemalloc

import pytest

from client.nat_slots import NatSlots


def test_slots_are_taken_round_robin_over_ports_then_listeners():
    """Ports first..last of listener 0, then of listener 1, then around again, skipping
    slots still in use; None once every slot is in use."""
    slots = NatSlots(2, 100, 101)
    assert [slots.take() for _ in range(4)] == [100, 101, 65536 + 100, 65536 + 101]
    assert slots.take() is None and len(slots) == slots.capacity == 4
    slots.free(101)
    assert slots.take() == 101
    slots.free(100)
    slots.free(100)                       # freeing twice changes nothing
    assert len(slots) == 3 and slots.take() == 100


def test_a_held_slot_comes_free_only_when_due():
    """A held slot is not taken again before its time (rounded up to the second), then is."""
    slots = NatSlots(1, 100, 100)
    slot = slots.take()
    slots.hold(slot, 60.2)
    assert slots.held == 1 and slots.take() is None
    slots.expire(60.5)
    assert slots.take() is None
    slots.expire(61.0)
    assert slots.held == 0 and slots.take() == slot


def test_holds_come_free_in_order_and_all_of_a_second_at_once():
    """Slots held until the same second are freed together; later ones wait."""
    slots = NatSlots(1, 100, 104)
    taken = [slots.take() for _ in range(5)]
    for slot, until in zip(taken, (10.1, 10.7, 11.0, 12.5, 12.9)):
        slots.hold(slot, until)
    slots.expire(11.0)
    assert slots.held == 2 and len(slots) == 2
    slots.expire(13.0)
    assert slots.held == 0 and len(slots) == 0


def test_a_held_slot_costs_a_few_bytes():
    """Under load most slots are held: 400 000 of them take well under 8 bytes each."""
    slots = NatSlots(8, 10000, 65535)
    taken = [slots.take() for _ in range(400_000)]
    tracemalloc.start()
    for i, slot in enumerate(taken):
        slots.hold(slot, 60.0 + i / 10_000)
    grown = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert slots.held == 400_000 and grown < 8 * 400_000


@pytest.mark.parametrize(("listeners", "first", "last"), [(0, 100, 200), (1, 0, 10), (1, 300, 200),
                                                           (1, 100, 70000)])
def test_an_empty_or_impossible_range_is_a_value_error(listeners, first, last):
    """No listener, port 0, an inverted range or a port above 65535 is refused."""
    with pytest.raises(ValueError):
        NatSlots(listeners, first, last)
