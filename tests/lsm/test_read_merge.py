"""Reads make merges due (lsm/compaction.py, "Reads make merges due too"): scans, seeks, gets.

Before, only sizes made a merge due: two tables (fewer than ``compaction_min_width``), or a
big table beside smaller ones that do not add up to ``compaction_size_ratio`` x it, stayed
as they were for ever, and every scan and seek positioned each of them, however many
reads came -- LevelDB compacts a file that costs reads (its "seek compaction").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import banyanstore
from banyanstore.lsm.compaction import READ_CHARGE_MIN, read_allowance
from banyanstore.lsm.view import GET_CHARGE_STEP

OPTS: dict[str, Any] = dict(memtable_size=1 << 20, block_size=1024, wal_sync="never",
                            compaction_min_width=4)


def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def read_merges(store: Any) -> int:
    return int(store.stats()["compaction"]["read_merges"])


def fill_table(store: Any, t: int, data: dict[bytes, bytes], per_table: int = 300) -> None:
    """One flushed table of keys interleaved with the other tables' (they all overlap)."""
    for i in range(per_table):
        k, v = b"k%06d" % (i * 4 + t), b"v%d-" % t * 10
        store.put(k, v)
        data[k] = v
    store.flush()


def two_tables(store: Any) -> dict[bytes, bytes]:
    """Two flushed tables of interleaved keys: never merged by the size rules
    (``compaction_min_width`` is 4); what they hold."""
    data: dict[bytes, bytes] = {}
    fill_table(store, 0, data)
    fill_table(store, 1, data)
    return data


def tables(store: Any) -> int:
    return int(store.stats()["keyspaces"]["default"]["tables"])


def seeks(store: Any, n: int) -> None:
    for i in range(n):
        assert len(list(store.scan(start=b"k%06d" % (i % 1000), limit=3))) == 3


def settle() -> None:
    """Long enough for the idle compactor to look at least twice (it wakes every second)."""
    time.sleep(2.2)


def test_allowance_grows_with_the_tables_bytes() -> None:
    assert read_allowance([100, 100]) == READ_CHARGE_MIN
    assert read_allowance([600 << 20, 200 << 20]) == (800 << 20) // (16 << 10)


def test_seeks_make_a_merge_of_two_tables_due(tmp_path: Any) -> None:
    with banyanstore.open(tmp_path / "db", **OPTS) as store:
        data = two_tables(store)
        settle()
        assert tables(store) == 2  # the size rules never merge two tables
        seeks(store, READ_CHARGE_MIN - 1)
        settle()
        assert tables(store) == 2 and store.stats()["compaction"]["read_merges"] == 0
        seeks(store, 1)  # each seek positioned one table beyond the first: the allowance
        # the counter goes up just after the merged view is published: wait for both
        wait_for(lambda: tables(store) == 1 and read_merges(store) >= 1)
        assert store.stats()["compaction"]["read_merges"] == 1
        assert dict(store.scan()) == data


def test_a_merge_resets_the_charge(tmp_path: Any) -> None:
    with banyanstore.open(tmp_path / "db", **OPTS) as store:
        data = two_tables(store)
        seeks(store, READ_CHARGE_MIN + 200)
        wait_for(lambda: tables(store) == 1)
        seeks(store, 300)  # one table: no charge
        fill_table(store, 2, data)
        seeks(store, READ_CHARGE_MIN // 2)
        settle()
        # had the merge not reset the charge, the first seeks' surplus and these would
        # have made a second merge due
        assert tables(store) == 2 and store.stats()["compaction"]["read_merges"] == 1
        seeks(store, READ_CHARGE_MIN // 2)
        # the counter goes up just after the merged view is published: wait for both
        wait_for(lambda: tables(store) == 1 and read_merges(store) >= 2)
        assert store.stats()["compaction"]["read_merges"] == 2
        assert dict(store.scan()) == data


def test_a_flush_starts_the_charge_again(tmp_path: Any) -> None:
    """The charge counts the reads since the keyspace last changed: under writes, a big
    table is not rewritten for each small table the flushes add."""
    with banyanstore.open(tmp_path / "db", **OPTS) as store:
        data = two_tables(store)
        seeks(store, READ_CHARGE_MIN * 3 // 4)  # two tables: one extra position a seek
        fill_table(store, 2, data)
        seeks(store, READ_CHARGE_MIN * 3 // 8)  # three tables: two a seek
        settle()
        assert tables(store) == 3 and store.stats()["compaction"]["read_merges"] == 0
        seeks(store, READ_CHARGE_MIN // 8 + 1)
        wait_for(lambda: store.stats()["compaction"]["read_merges"] == 1)
        assert dict(store.scan()) == data


def table_files(store: Any) -> list[int]:
    return [t["file"] for t in store.stats()["keyspaces"]["default"]["table_list"]]


def test_seeks_merge_the_cheapest_window_first(tmp_path: Any) -> None:
    """A big table beside three small ones (not 1.7x the big one together): the size
    rules keep all four; seeks merge small ones first, the big one last."""
    data: dict[bytes, bytes] = {}
    with banyanstore.open(tmp_path / "db", **OPTS) as store:
        for t in range(4):
            fill_table(store, t, data)
        wait_for(lambda: tables(store) == 1)  # four tables: the size rules merge them
        big = table_files(store)[0]
        for t in range(3):
            fill_table(store, t, data, per_table=40)
        settle()
        assert tables(store) == 4
        seeks(store, READ_CHARGE_MIN // 3 + 1)  # three extra tables a seek: the allowance
        wait_for(lambda: tables(store) < 4)
        assert big in table_files(store)  # the small tables went first
        deadline = time.monotonic() + 60
        while tables(store) > 1:
            assert time.monotonic() < deadline
            seeks(store, 200)
            time.sleep(0.05)
        assert big not in table_files(store)
        assert store.stats()["compaction"]["read_merges"] >= 2
        assert dict(store.scan()) == data


def test_no_merge_without_compaction(tmp_path: Any) -> None:
    with banyanstore.open(tmp_path / "db", compaction=False, **OPTS) as store:
        data = two_tables(store)
        seeks(store, 2 * READ_CHARGE_MIN)
        settle()
        assert tables(store) == 2
        assert dict(store.scan()) == data


def test_gets_that_reach_several_tables_make_a_merge_due(tmp_path: Any) -> None:
    with banyanstore.open(tmp_path / "db", **OPTS) as store:
        data = two_tables(store)
        store.put(b"in-memtable", b"x")  # a memtable switch here would start a new view
        for _ in range(2 * READ_CHARGE_MIN):
            assert store.get(b"in-memtable") == b"x"  # answered before the tables: no charge
        keys = sorted(data)
        due = -(-READ_CHARGE_MIN // GET_CHARGE_STEP) * GET_CHARGE_STEP  # charged in steps
        for i in range(due - 1):
            k = keys[i % len(keys)]
            assert store.get(k) == data[k]
        settle()
        assert tables(store) == 2 and store.stats()["compaction"]["read_merges"] == 0
        assert store.get(b"absent") is None  # a miss reaches the tables too
        # the counter goes up just after the merged view is published: wait for both
        wait_for(lambda: tables(store) == 1 and read_merges(store) >= 1)
        assert store.stats()["compaction"]["read_merges"] == 1
        assert all(store.get(k) == v for k, v in data.items())


def test_multi_get_charges_each_key_that_reaches_the_tables(tmp_path: Any) -> None:
    with banyanstore.open(tmp_path / "db", **OPTS) as store:
        data = two_tables(store)
        keys = sorted(data) * 2
        keys = keys[:READ_CHARGE_MIN // 2]
        assert store.multi_get(keys) == [data[k] for k in keys]
        settle()
        assert tables(store) == 2
        assert store.multi_get(keys) == [data[k] for k in keys]
        # the counter goes up just after the merged view is published: wait for both
        wait_for(lambda: tables(store) == 1 and read_merges(store) >= 1)
        assert store.stats()["compaction"]["read_merges"] == 1


def test_a_keys_only_scan_charges_once(tmp_path: Any) -> None:
    """On the pure-Python path a keys-only scan is the pairs' scan with the values
    dropped: it charged the view twice, once for itself and once for the scan inside."""
    with banyanstore.open(tmp_path / "db", **OPTS) as store:
        data = two_tables(store)
        for i in range(READ_CHARGE_MIN // 2 + 1):
            assert len(list(store.scan(start=b"k%06d" % i, limit=3, keys_only=True))) == 3
        settle()
        assert tables(store) == 2 and store.stats()["compaction"]["read_merges"] == 0
        for i in range(READ_CHARGE_MIN // 2):
            assert len(list(store.scan(start=b"k%06d" % i, limit=3, keys_only=True))) == 3
        wait_for(lambda: tables(store) == 1)
        assert list(store.scan(keys_only=True)) == sorted(data)


def test_read_merges_count_the_merges_done_not_the_attempts(tmp_path: Any,
                                                            monkeypatch: Any) -> None:
    """A read-made merge that fails and is retried counts once, when it is done (it used
    to count every attempt: read_merges above merges)."""
    from banyanstore.lsm import compaction
    build = compaction.build_merged
    failing = [True]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failing[0]:
            raise OSError(5, "injected merge failure")
        return build(*args, **kwargs)
    monkeypatch.setattr(compaction, "build_merged", flaky)
    opts = {**OPTS, "compaction_mode": "thread", "merge_max_failures": 1000}
    with banyanstore.open(tmp_path / "db", **opts) as store:
        data = two_tables(store)
        seeks(store, READ_CHARGE_MIN)
        wait_for(lambda: store.stats()["compaction"]["failed_merges"] >= 3)
        figures = store.stats()["compaction"]
        assert figures["merges"] == 0 and figures["read_merges"] == 0
        failing[0] = False
        # the counter goes up just after the merged view is published: wait for both
        wait_for(lambda: tables(store) == 1 and read_merges(store) >= 1)
        figures = store.stats()["compaction"]
        assert figures["merges"] == 1 and figures["read_merges"] == 1
        assert dict(store.scan()) == data
