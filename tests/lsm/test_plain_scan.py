"""Scans of a store that is one *plain* table (TableReader.plain: one entry a key, no
tombstones -- what compaction leaves) take a short path on the pure-Python engine
(view._plain_scan: the blocks' pairs with no merge and no visibility pass).  Compare it
with a model, check it is taken, and check every case it must not take: a read below the
table's versions, a TTL that hides some entries, a memtable with entries, tombstones,
several versions of a key."""

from __future__ import annotations

import random
from typing import Any

import pytest

import banyanstore
from banyanstore.lsm.view import View
from banyanstore.sstable.reader import TableReader

OPTS: dict[str, Any] = dict(block_size=1024, memtable_size=64 * 1024, wal_sync="never",
                            block_cache_size=16 << 10)


def _model_scan(model: dict[bytes, bytes], start: bytes | None, end: bytes | None,
                reverse: bool, limit: int | None) -> list[tuple[bytes, bytes]]:
    out = [(k, model[k]) for k in sorted(model)
           if (start is None or k >= start) and (end is None or k < end)]
    if reverse:
        out.reverse()
    return out if limit is None else out[:limit]


def _python_view(store: Any) -> View:
    """The store's view with the compiled core taken out: the pure-Python read path."""
    view = store._ks.view
    pure = View(view.mem, view.imms, view.tables)
    pure.cores = None
    return pure


def _compacted(tmp_path: Any, rng: random.Random) -> tuple[Any, dict[bytes, bytes]]:
    store = banyanstore.open(tmp_path / "s", **OPTS)
    model: dict[bytes, bytes] = {}
    for _ in range(3000):
        k = b"k%05d" % rng.randrange(1500)
        if rng.random() < 0.1:
            store.delete(k)
            model.pop(k, None)
        else:
            model[k] = v = rng.randbytes(rng.randrange(0, 40))
            store.put(k, v)
    store.compact()
    return store, model


def test_plain_table_scans_match_model_and_skip_the_merge(tmp_path, monkeypatch) -> None:
    rng = random.Random(7)
    store, model = _compacted(tmp_path, rng)
    with store:
        view = _python_view(store)
        assert len(view.tables) == 1 and view.tables[0].plain
        assert not view.mem.entries and not view.imms

        def no_merge(*_a: Any, **_k: Any) -> Any:
            raise AssertionError("a plain table's scan went through the merge")
        monkeypatch.setattr(TableReader, "scan_runs", no_merge)
        monkeypatch.setattr(TableReader, "seek_head", no_merge)
        keys = sorted(model)
        bounds = [None, b"", b"k", b"z"] + keys[:3] + keys[-3:] + [k + b"\0" for k in keys[::97]]
        for _ in range(400):
            start, end = rng.choice(bounds), rng.choice(bounds)
            if rng.random() < 0.5:
                start = b"k%05d" % rng.randrange(1600)
            reverse = rng.random() < 0.3
            limit = rng.choice([None, None, 0, 1, 10, 127, 128, 129, 600])
            got = list(view.scan(start, end, store.version, 0, reverse, limit, lambda: None))
            assert got == _model_scan(model, start, end, reverse, limit), (start, end, reverse, limit)


def test_plain_path_not_taken_below_the_tables_versions_or_under_a_ttl(tmp_path) -> None:
    store = banyanstore.open(tmp_path / "s", **OPTS)
    with store:
        first = {b"a%04d" % i: b"old" for i in range(400)}
        for k, v in first.items():
            store.put(k, v)
        middle = store.version
        second = {b"b%04d" % i: b"new" for i in range(400)}
        for k, v in second.items():
            store.put(k, v)
        store.compact()
        view = _python_view(store)
        assert len(view.tables) == 1 and view.tables[0].plain
        # a read at a version between the two batches sees only the first
        got = list(view.scan(None, None, middle, 0, False, None, lambda: None))
        assert got == sorted(first.items())
        assert list(view.scan(None, None, middle, 0, False, 10, lambda: None)) == sorted(first.items())[:10]
        # a TTL floor above the first batch hides it
        got = list(view.scan(None, None, store.version, middle + 1, True, None, lambda: None))
        assert got == sorted(second.items(), reverse=True)
        assert list(view.scan(b"a", None, store.version, middle + 1, False, 5, lambda: None)) \
            == sorted(second.items())[:5]


def test_plain_path_not_taken_with_memtable_entries_or_tombstones(tmp_path) -> None:
    store = banyanstore.open(tmp_path / "s", **OPTS)
    with store:
        model = {b"k%04d" % i: b"v%d" % i for i in range(500)}
        for k, v in model.items():
            store.put(k, v)
        store.compact()
        store.put(b"k0003x", b"mem")  # the memtable now holds an entry the table does not
        store.delete(b"k0004")
        model[b"k0003x"] = b"mem"
        del model[b"k0004"]
        view = _python_view(store)
        assert view.mem.entries and len(view.tables) == 1
        everything = view.scan(None, None, store.version, 0, False, None, lambda: None)
        assert list(everything) == sorted(model.items())
        assert list(view.scan(b"k0003", None, store.version, 0, False, 3, lambda: None)) \
            == [(b"k0003", b"v3"), (b"k0003x", b"mem"), (b"k0005", b"v5")]
        store.flush()  # the tombstone and the new key go to a table of their own
        view = _python_view(store)
        assert any(not t.plain for t in view.tables)  # the flushed table holds a tombstone
        assert list(view.scan(None, None, store.version, 0, True, None, lambda: None)) \
            == sorted(model.items(), reverse=True)


def test_a_table_is_plain_only_with_one_entry_a_key_and_no_tombstones(tmp_path) -> None:
    """key_count, which ``plain`` rests on, counts distinct keys on both table builders
    (the flush of whichever engine runs, and a merge)."""
    opts = dict(OPTS, memtable_size=4 << 20)  # one flush: one table
    with banyanstore.open(tmp_path / "s", history_retention=1e9, compaction=False, **opts) as store:
        for r in range(3):  # every key three versions: history keeps them all
            for i in range(300):
                store.put(b"k%04d" % i, b"%d" % r)
        store.flush()
        (table,) = store._ks.view.tables
        assert (table.meta.entry_count, table.meta.key_count) == (900, 300)
        assert not table.plain
    with banyanstore.open(tmp_path / "t", compaction=False, **opts) as store:
        for i in range(300):
            store.put(b"k%04d" % i, b"x")
        store.flush()
        (table,) = store._ks.view.tables
        assert (table.meta.entry_count, table.meta.key_count, table.plain) == (300, 300, True)
        store.delete(b"k0001")
        store.flush()
        assert [t.plain for t in store._ks.view.tables] == [False, True]


@pytest.mark.parametrize("reverse", [False, True])
def test_plain_scan_raises_once_the_store_closes(tmp_path, reverse: bool) -> None:
    rng = random.Random(3)
    store, model = _compacted(tmp_path, rng)
    it = store.scan(reverse=reverse)
    first = next(it)
    assert first == _model_scan(model, None, None, reverse, 1)[0]
    store.close()
    with pytest.raises(banyanstore.StoreClosedError):
        list(it)


def _plain_tables(tmp_path: Any, rng: random.Random) -> tuple[Any, list[tuple[int, dict[bytes, bytes]]]]:
    """A store of four plain tables sharing some keys (a key overwritten in a later
    table), and the model after each flush: ``(version, model)``."""
    store = banyanstore.open(tmp_path / "s", compaction=False, **dict(OPTS, memtable_size=4 << 20))
    model: dict[bytes, bytes] = {}
    states = []
    for batch in range(4):
        for i in sorted(rng.sample(range(2000), 600)):
            model[b"k%05d" % i] = v = b"%d-" % batch + rng.randbytes(rng.randrange(0, 60))
            store.put(b"k%05d" % i, v)
        store.flush()
        states.append((store.version, dict(model)))
    return store, states


def test_short_scans_over_plain_tables_match_the_merge(tmp_path, monkeypatch) -> None:
    """A short range over several plain tables takes view._short_plain_scan (pairs put in
    order by one sort, the newest table's where tables share a key): it gives what the
    merge gives and what the model says, forward and in reverse, with limits and at an
    older version (fewer tables in reach)."""
    from banyanstore.lsm import view as view_module

    rng = random.Random(11)
    store, states = _plain_tables(tmp_path, rng)
    with store:
        view = _python_view(store)
        assert len(view.tables) == 4 and all(t.plain for t in view.tables)
        short = view_module._short_plain_scan
        taken = [0]

        def counted(*args: Any) -> Any:
            out = short(*args)
            taken[0] += out is not None
            return out
        for _ in range(300):
            lo = rng.randrange(2100)
            start = rng.choice([None, b"k%05d" % lo, b"k%05d\0" % lo])
            end = rng.choice([b"k%05d" % (lo + rng.choice([0, 1, 5, 20, 60, 400])), None])
            reverse = rng.random() < 0.3
            limit = rng.choice([None, None, 0, 3, 200]) if reverse else rng.choice([None, 200])
            version, model = rng.choice(states)
            args = (start, end, version, 0, reverse, limit, lambda: None)
            monkeypatch.setattr(view_module, "_short_plain_scan", counted)
            got = list(view.scan(*args))
            monkeypatch.setattr(view_module, "_short_plain_scan", lambda *_a: None)
            assert got == list(view.scan(*args)) == _model_scan(model, start, end, reverse, limit), args
        assert taken[0] >= 50  # the short path ran (the rest: ranges over more blocks)


def test_short_plain_scan_raises_once_the_store_closes(tmp_path) -> None:
    store, states = _plain_tables(tmp_path, random.Random(5))
    assert len(store._ks.view.tables) == 4
    it = store.scan(b"k00100", b"k00110")
    store.close()
    with pytest.raises(banyanstore.StoreClosedError):
        next(it)


def _series_tables(tmp_path: Any, rng: random.Random) -> tuple[Any, dict[bytes, bytes]]:
    """bench_store.py's time series at a small scale: 8-byte series id + 8-byte timestamp
    keys, points in time order across series, a table per stretch of time -- and, now and
    then, a late point or a rewrite of the stretch before's last point, so that some
    series' windows overlap across tables (a shared key, or a key inside another table's
    run) where most lie one after another."""
    store = banyanstore.open(tmp_path / "ts", compaction=False, **dict(OPTS, memtable_size=4 << 20))
    model: dict[bytes, bytes] = {}

    def put(s: int, t: int, tag: int) -> None:
        k = s.to_bytes(8, "big") + t.to_bytes(8, "big")
        model[k] = v = b"%d-" % tag + rng.randbytes(rng.randrange(0, 30))
        store.put(k, v)
    for stretch in range(5):
        for t in range(stretch * 12, stretch * 12 + 12):
            for s in range(40):
                put(s, t, stretch)
        for s in rng.sample(range(40), 6 if stretch else 0):  # late points, rewrites of an
            put(s, rng.randrange(stretch * 12), stretch)          # earlier stretch's time
        store.flush()
    return store, model


def test_short_scans_over_time_series_tables_match_the_merge(tmp_path, monkeypatch) -> None:
    """A series' window over tables that each hold a later stretch of time: the runs lie one
    after another, and view._union concatenates them instead of sorting every pair; where
    they overlap (a late point, a rewritten key: the newest table's pair is the one seen) it
    sorts.  Both give what the merge gives and what the model says, forward, in reverse,
    with limits."""
    from banyanstore.lsm import view as view_module

    rng = random.Random(3)
    store, model = _series_tables(tmp_path, rng)
    with store:
        view = _python_view(store)
        assert len(view.tables) == 5 and all(t.plain for t in view.tables)
        union = view_module._union
        kinds = {"apart": 0, "overlapping": 0}

        def recorded(runs: Any) -> Any:
            ordered = sorted(runs, key=lambda r: r[0][0])
            apart = all(a[-1][0] < b[0][0] for a, b in zip(ordered, ordered[1:], strict=False))
            kinds["apart" if apart else "overlapping"] += 1
            return union(runs)
        for _ in range(400):
            s = rng.randrange(40)
            t0, t1 = sorted(rng.randrange(62) for _ in range(2))
            start = s.to_bytes(8, "big") + t0.to_bytes(8, "big")
            end = rng.choice([s.to_bytes(8, "big") + t1.to_bytes(8, "big"), (s + 1).to_bytes(8, "big")])
            reverse = rng.random() < 0.3
            limit = rng.choice([None, None, 0, 1, 7, 30])
            args = (start, end, store.version, 0, reverse, limit, lambda: None)
            monkeypatch.setattr(view_module, "_union", recorded)
            got = list(view.scan(*args))
            monkeypatch.setattr(view_module, "_short_plain_scan", lambda *_a: None)
            merged = list(view.scan(*args))
            monkeypatch.undo()
            assert got == merged == _model_scan(model, start, end, reverse, limit), args
        # both ways ran, on real windows (not just single-table ones)
        assert kinds["apart"] >= 50 and kinds["overlapping"] >= 20, kinds


@pytest.mark.parametrize("blocks", [3, 4, 5])
def test_a_window_over_a_few_blocks_of_each_table_takes_the_short_path(tmp_path, monkeypatch,
                                                                       blocks: int) -> None:
    """A series' window that lies in 3 or 4 blocks of a table (a table holding more than a
    block's worth of the series) is read by TableReader.short_pairs too -- it fell back to
    the merge, at twice a window's instructions -- and gives what the merge gives; 5 blocks
    is past SHORT_PAIRS_BLOCKS: the merge."""
    from banyanstore.lsm import view as view_module
    from banyanstore.sstable.reader import SHORT_PAIRS_BLOCKS

    store = banyanstore.open(tmp_path / "ts", compaction=False, **dict(OPTS, block_cache_size=1 << 20))
    model: dict[bytes, bytes] = {}
    for stretch in range(2):
        for t in range(stretch * 40, stretch * 40 + 40):
            for s in range(3):
                k = s.to_bytes(8, "big") + t.to_bytes(8, "big")
                model[k] = v = bytes([65 + stretch]) * 100
                store.put(k, v)
        store.flush()
    with store:
        view = _python_view(store)
        assert len(view.tables) == 2 and all(t.plain for t in view.tables)
        table = view.tables[0]
        lk = table._last_keys  # [block 1's last key, block j's last key): blocks 1 .. j
        start, end = lk[1], lk[blocks]
        assert len(lk) > blocks + 1
        taken: list[bool] = []
        short = view_module._short_plain_scan

        def recorded(*args: Any) -> Any:
            out = short(*args)
            taken.append(out is not None)
            return out
        args = (start, end, store.version, 0, False, None, lambda: None)
        monkeypatch.setattr(view_module, "_short_plain_scan", recorded)
        got = list(view.scan(*args))
        monkeypatch.setattr(view_module, "_short_plain_scan", lambda *_a: None)
        assert got == list(view.scan(*args)) == _model_scan(model, start, end, False, None)
        assert taken == [blocks <= SHORT_PAIRS_BLOCKS]
