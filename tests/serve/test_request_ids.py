"""Request ids the server makes, and the ring of recent ones that remembers them by serial."""

from __future__ import annotations

import threading

from keel.monitor.feedback import RecentIds
from keel.serve.request_ids import RequestIds


def test_ids_are_unique_32_characters_whose_serial_reads_back() -> None:
    ids = RequestIds()
    made = [ids.new() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(len(i) == 32 and i.isalnum() and i.isascii() for i in made)
    first = ids.serial(made[0])
    assert first is not None
    assert [ids.serial(i) for i in made] == list(range(first, first + 1000))
    assert RequestIds().prefix != ids.prefix


def test_only_ids_this_process_made_have_a_serial() -> None:
    ids = RequestIds()
    made = ids.new()
    prefix, digits = made[:17], made[17:]
    assert prefix == ids.prefix and len(digits) == 15
    assert ids.serial(RequestIds().new()) is None  # another process's prefix
    assert ids.serial(prefix + str(int(digits) + 1)) is None  # not made yet
    assert ids.serial(prefix + "0" * 15) is None and ids.serial(prefix + "0" + digits[1:]) is None
    arabic = "".join(chr(0x660 + int(d)) for d in digits)  # digits int() reads as the same
    for forged in (" " + digits[1:], "+" + digits[1:], digits[:7] + "_" + digits[8:], arabic):
        assert int(forged.replace("_", "")) >= 0  # int() would take each one
        assert ids.serial(prefix + forged) is None, forged
    assert ids.serial(made + "0") is None and ids.serial("x") is None


def test_the_ring_remembers_own_ids_by_serial_per_model() -> None:
    ids = RequestIds()
    recent = RecentIds(capacity=4, serial=ids.serial)
    first = [ids.new() for _ in range(3)]
    recent.add_many("adult", [(first[0], [{}]), (first[1], [{}, {}]), (first[2], [{}] * 3)])
    assert [recent.instances("adult", i) for i in first] == [1, 2, 3]
    assert recent.instances("bikes", first[0]) is None  # served by another model's route
    later = [ids.new() for _ in range(4)]
    recent.add_many("bikes", [(i, [{}]) for i in later])  # four more: the ring turned over
    assert [recent.instances("adult", i) for i in first] == [None, None, None]
    assert [recent.instances("bikes", i) for i in later] == [1, 1, 1, 1]
    assert recent._ids == ({}, {})  # nothing spilled into the dicts


def test_a_clients_own_ids_go_to_two_bounded_generations() -> None:
    ids = RequestIds()
    recent = RecentIds(capacity=4, serial=ids.serial)
    for n in range(10):
        recent.add("adult", f"client-{n}", [{}] * (n + 1))
    remembered = [n for n in range(10) if recent.instances("adult", f"client-{n}") is not None]
    assert remembered[-2:] == [8, 9] and len(remembered) <= 4  # the last half at least
    assert recent.instances("adult", "client-9") == 10
    newer, older = recent._ids
    assert len(newer) + len(older) <= 4


def test_an_id_replayed_by_a_client_keeps_the_latest_count() -> None:
    ids = RequestIds()
    recent = RecentIds(capacity=8, serial=ids.serial)
    issued = ids.new()
    recent.add("adult", issued, [{}])
    recent.add("adult", issued, [{}, {}])  # a client sent the same id back as its own
    assert recent.instances("adult", issued) == 2


def test_threads_adding_at_once_lose_nothing() -> None:
    ids = RequestIds()
    recent = RecentIds(capacity=40_000, serial=ids.serial)
    made = [ids.new() for _ in range(40_000)]
    parts = [made[k::4] for k in range(4)]

    def add(part: list[str]) -> None:
        for start in range(0, len(part), 64):
            recent.add_many("adult", [(i, [{}] * 2) for i in part[start : start + 64]])

    threads = [threading.Thread(target=add, args=(p,)) for p in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(recent.instances("adult", i) == 2 for i in made)
