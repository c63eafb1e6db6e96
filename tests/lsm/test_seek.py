"""Limit-bounded forward scans (seeks) take a fast path (View._seek -> seek_merged, fed
by TableReader.seek_head and memtable_head): compare it with a plain model across
several tables, a memtable, overwrites, tombstones, versions and bounds."""

from __future__ import annotations

import random
from typing import Any

import pytest

import banyanstore
from banyanstore.lsm.iterators import seek_merged

OPTS: dict[str, Any] = dict(io_mode="sync", memtable_size=64 * 1024, block_size=1024,
                            wal_sync="never", compaction=False, history_retention=3600)


class Model:
    """key -> [(version, value or None)], oldest first."""

    def __init__(self) -> None:
        self.data: dict[bytes, list[tuple[int, bytes | None]]] = {}

    def write(self, key: bytes, version: int, value: bytes | None) -> None:
        self.data.setdefault(key, []).append((version, value))

    def scan(self, start: bytes | None, end: bytes | None, version: int,
             limit: int) -> list[tuple[bytes, bytes]]:
        out = []
        for k in sorted(self.data):
            if (start is not None and k < start) or (end is not None and k >= end):
                continue
            seen = [val for v, val in self.data[k] if v <= version]
            if seen and seen[-1] is not None:
                out.append((k, seen[-1]))
        return out[:limit]


def _key(rng: random.Random, n: int, fixed: bool) -> bytes:
    i = rng.randrange(n)
    return b"k%05d" % i if fixed else b"k%d" % i + b"x" * (i % 3)


def _fill(store: Any, model: Model, rng: random.Random, rounds: int, fixed: bool) -> list[int]:
    """Random puts/deletes; a flush after each round (one table each), the last
    round left in the memtable.  Returns every version written."""
    versions = []
    for r in range(rounds):
        # Dense rounds and sparse ones, so tables differ in key density.
        nkeys = 2000 if r % 2 == 0 else 300
        for _ in range(rng.randrange(200, 900)):
            k = _key(rng, nkeys, fixed)
            if rng.random() < 0.25:
                v, val = store.delete(k), None
            else:
                val = b"v%d-" % r + b"y" * rng.randrange(0, 40 if not fixed else 1)
                v = store.put(k, val)
            model.write(k, v, val)
            versions.append(v)
        if r < rounds - 1:
            store.flush()
    return versions


def _check(store: Any, model: Model, rng: random.Random, versions: list[int], fixed: bool,
           tries: int = 400) -> None:
    for _ in range(tries):
        start = None if rng.random() < 0.1 else _key(rng, 2200, fixed)
        end = None
        if rng.random() < 0.3:
            end = _key(rng, 2200, fixed)
        limit = rng.choice([1, 2, 5, 10, 10, 10, 50, 300])
        v = store.version if rng.random() < 0.6 else rng.choice(versions)
        got = list(store.scan(start, end, version=v, limit=limit))
        assert got == model.scan(start, end, v, limit), (start, end, v, limit)


@pytest.mark.parametrize("fixed", [True, False])
def test_seeks_match_model_over_tables_and_memtable(tmp_path, fixed: bool) -> None:
    rng = random.Random(11 if fixed else 12)
    model = Model()
    with banyanstore.open(str(tmp_path / "db"), **OPTS) as store:
        versions = _fill(store, model, rng, 5, fixed)
        assert len(store._ks.view.tables) >= 3 and store._ks.view.mem.entries
        _check(store, model, rng, versions, fixed)
        store.compact()
        _check(store, model, rng, versions, fixed, tries=200)


def test_seeks_through_many_invisible_entries(tmp_path) -> None:
    """Long stretches of tombstones and newer-than-asked versions exhaust the fast
    path's merge rounds: the generic merge must continue where it stopped."""
    model = Model()
    with banyanstore.open(str(tmp_path / "db"), **OPTS) as store:
        for i in range(0, 3000, 3):
            k = b"k%05d" % i
            model.write(k, store.put(k, b"old"), b"old")
        store.flush()
        mid = store.version
        for i in range(0, 2900, 3):  # nearly everything deleted after ``mid``
            k = b"k%05d" % i
            model.write(k, store.delete(k), None)
        store.flush()
        for i in range(1, 3000, 7):  # then new keys written after the deletes
            k = b"k%05d" % i
            model.write(k, store.put(k, b"new"), b"new")
        for start in (None, b"k00000", b"k01000", b"k02899", b"k02990"):
            for v in (mid, store.version):
                for limit in (1, 10, 100):
                    got = list(store.scan(start, version=v, limit=limit))
                    assert got == model.scan(start, None, v, limit), (start, v, limit)


def test_seek_snapshot_and_prefix(tmp_path) -> None:
    with banyanstore.open(str(tmp_path / "db"), **OPTS) as store:
        for i in range(500):
            store.put(b"a%04d" % i, b"1")
        store.flush()
        snap = store.version
        for i in range(0, 500, 2):
            store.put(b"a%04d" % i, b"2")
        store.delete(b"a0011")
        assert list(store.scan(b"a0010", limit=3)) == [(b"a0010", b"2"), (b"a0012", b"2"),
                                                        (b"a0013", b"1")]
        assert list(store.scan(b"a0010", limit=3, version=snap)) == [
            (b"a0010", b"1"), (b"a0011", b"1"), (b"a0012", b"1")]
        assert list(store.scan(prefix=b"a049", limit=20)) == [
            (b"a%04d" % i, b"2" if i % 2 == 0 else b"1") for i in range(490, 500)]
        assert list(store.scan(b"a0100", b"a0100", limit=5)) == []
        assert list(store.scan(b"b", limit=5)) == [] and list(store.scan(limit=0)) == []


def test_seek_merged_rounds_and_fallback() -> None:
    """Direct: a source whose edge holds the bound back is asked for more; after
    the rounds run out the generic merge finishes the scan."""
    newer = [(b"a", 9, None), (b"b", 9, None)]
    older = [(b"a", 1, b"A"), (b"b", 1, b"B"), (b"c", 1, b"C")]
    more = iter([[(b"c", 9, None)], [(b"d", 9, None)], [(b"e", 9, None)], [(b"f", 9, b"F")]])
    heads: list[Any] = [(newer, b"b", more), (older, None, None)]
    assert list(seek_merged(heads, 10, 0, 2, lambda: None)) == [(b"f", b"F")]
    heads = [(list(newer), b"b", iter([[(b"c", 9, None)]])), (list(older), None, None)]
    assert list(seek_merged(heads, 5, 0, 5, lambda: None)) == [(b"a", b"A"), (b"b", b"B"), (b"c", b"C")]
