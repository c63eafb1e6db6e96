"""Iterators outliving their store or snapshot: every kind, created before close()
and read after it, raises StoreClosedError -- never an IO error from a closed file,
never a silently shorter result -- over every IO backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import CorruptionError, StoreClosedError

ITERATORS: dict[str, Callable[[Any, Any, Any], Iterator[Any]]] = {
    "scan": lambda s, idx, snap: s.scan(),
    "scan-range": lambda s, idx, snap: s.scan(b"k00100", b"k02000"),  # 900 of the 1000 keys
    "reverse": lambda s, idx, snap: s.scan(reverse=True),
    "seek": lambda s, idx, snap: s.scan(b"k00500", limit=100),
    "at-version": lambda s, idx, snap: s.scan(version=s.version - 1),
    "history": lambda s, idx, snap: s.history(b"k00001"),
    "keys": lambda s, idx, snap: iter(s),
    "keyspace-scan": lambda s, idx, snap: idx.scan(),
    "keyspace-reverse": lambda s, idx, snap: idx.scan(reverse=True),
    "keyspace-history": lambda s, idx, snap: idx.history(b"k00001"),
    "keyspace-keys": lambda s, idx, snap: iter(idx),
    "snapshot-scan": lambda s, idx, snap: snap.scan(),
    "snapshot-reverse": lambda s, idx, snap: snap.scan(reverse=True, keyspace="index"),
    "snapshot-seek": lambda s, idx, snap: snap.scan(limit=10),
    "snapshot-history": lambda s, idx, snap: snap.history(b"k00001"),
}


def _fill(env: Any, root: str, **opts: Any) -> tuple[Any, Any]:
    """A store with data in two tables and in the memtable, in two keyspaces, and no
    block cache (so reads after close would have to go to the files)."""
    s = banyanstore.open(root, env=env, memtable_size=64 * 1024, block_size=1024, compaction=False,
                         wal_sync="never", block_cache_size=0, compaction_mode="thread", **opts)
    idx = s.keyspace("index")
    for rnd in range(2):
        for i in range(1000):
            s.put(b"k%05d" % i, b"v%d-" % rnd * 20)
            idx.put(b"k%05d" % i, b"%d" % rnd)
        s.flush()
    s.put(b"k00001", b"newest")  # and one in the memtable
    return s, idx


def test_every_iterator_read_after_store_close_raises_store_closed(env_dir: Any) -> None:
    """All kinds at once (one store per backend): each created before close() -- half of
    them already started -- raises StoreClosedError when read after it."""
    s, idx = _fill(*env_dir)
    snap = s.snapshot()
    iterators = {}
    for kind, make in ITERATORS.items():
        for started in (False, True):
            it = make(s, idx, snap)
            if started:
                next(it)
            iterators[kind, started] = it
    s.close()
    raised = {}
    for key, it in iterators.items():
        try:
            list(it)
        except StoreClosedError:
            raised[key] = True
        else:
            raised[key] = False
    assert [k for k, ok in raised.items() if not ok] == []


def test_snapshot_iterators_read_after_snapshot_close_raise(tmp_path: Any) -> None:
    s, idx = _fill(None, str(tmp_path / "db"))
    try:
        snap = s.snapshot()
        iterators = {kind: make(s, idx, snap) for kind, make in ITERATORS.items()
                     if kind.startswith("snapshot")}
        for it in iterators.values():
            next(it)
        snap.close()
        for it in iterators.values():
            with pytest.raises(StoreClosedError, match="snapshot"):
                list(it)
        assert list(s.scan(limit=1)) == [(b"k00000", b"v1-" * 20)]  # the store itself is fine
    finally:
        s.close()


def test_iterators_read_before_close_are_complete(tmp_path: Any) -> None:
    """The guard costs nothing in answers: the same iterators, read while open, give
    every entry."""
    s, idx = _fill(None, str(tmp_path / "db"))
    with s, s.snapshot() as snap:
        counts = {kind: sum(1 for _ in make(s, idx, snap)) for kind, make in ITERATORS.items()}
    assert counts["scan"] == counts["reverse"] == counts["keys"] == 1000
    assert counts["keyspace-scan"] == counts["snapshot-reverse"] == 1000
    assert counts["history"] == 3 and counts["seek"] == 100 and counts["scan-range"] == 900


def test_read_only_store_iterators_raise_store_closed_after_close(tmp_path: Any) -> None:
    """The same for a read-only store (it reads through its own published views)."""
    _fill(None, str(tmp_path / "db"))[0].close()
    s = banyanstore.open(tmp_path / "db", read_only=True, block_cache_size=0)
    snap = s.snapshot()
    iterators = {kind: ITERATORS[kind](s, s.keyspace("index"), snap)
                 for kind in ("scan", "reverse", "history", "keyspace-scan", "keys", "snapshot-scan")}
    for it in iterators.values():
        next(it)
    s.close()
    for it in iterators.values():
        with pytest.raises(StoreClosedError):
            list(it)


@pytest.mark.parametrize("kind", ["scan", "reverse", "keys", "snapshot-scan", "keyspace-scan"])
def test_rows_an_iterator_holds_at_close_come_first_and_right(tmp_path: Any, kind: str) -> None:
    """What docs/api.md says of an iterator read after close(): the rows it already holds
    in memory (at most the batch it took last: 1,024 rows) are yielded first, each the
    right row; then StoreClosedError -- never a shorter result presented as complete."""
    s, idx = _fill(None, str(tmp_path / "db"))
    snap = s.snapshot()
    it = ITERATORS[kind](s, idx, snap)
    expected = list(ITERATORS[kind](s, idx, snap))
    got = [next(it) for _ in range(3)]
    s.close()
    with pytest.raises(StoreClosedError):
        for row in it:
            got.append(row)
    # (a scan whose rows fit in one batch may hold them all -- the pure-Python engine
    # does since 305d699 here -- and must still raise after them)
    assert 3 <= len(got) <= min(3 + 1024, len(expected))
    assert got == expected[:len(got)]


def test_an_iterator_that_raised_gives_no_further_rows(tmp_path: Any) -> None:
    """docs/api.md: an iterator that raised gives no further rows -- every further
    ``next()`` raises the error again (so a caller that goes on cannot take the prefix it
    has for the whole range); every kind, both engines.  Before, the pure-Python
    iterators (and every one of the compiled core's but its scans') then ended with
    StopIteration: a silent end."""
    s, idx = _fill(None, str(tmp_path / "s"))
    snap = s.snapshot()
    iterators = {kind: make(s, idx, snap) for kind, make in ITERATORS.items()}
    s.close()
    after: dict[str, str] = {}
    for kind, it in iterators.items():
        with pytest.raises(StoreClosedError):
            list(it)
        try:
            row = next(it)
        except StoreClosedError:
            after[kind] = "raised again"
        except StopIteration:
            after[kind] = "finished"
        else:
            after[kind] = f"a row: {row!r}"
    assert [k for k, what in after.items() if what != "raised again"] == [], after
    for it in iterators.values():  # and again
        with pytest.raises(StoreClosedError):
            next(it)


VIEWS: dict[str, Callable[[Any], Iterator[Any]]] = {
    "scan": lambda s: s.scan(),
    "reverse": lambda s: s.scan(reverse=True),
    "limit": lambda s: s.scan(limit=3000),
    "range": lambda s: s.scan(b"k00100", b"k03900"),
    "keys_only": lambda s: s.scan(keys_only=True),
    "iter": lambda s: iter(s),
    "keys": lambda s: iter(s.keys()),
    "values": lambda s: iter(s.values()),
    "items": lambda s: iter(s.items(reverse=True)),
    "snapshot": lambda s: s.snapshot().scan(),
}


@pytest.mark.parametrize("tables", [1, 2])
@pytest.mark.parametrize("range_tombstone", [False, True])
def test_a_scan_that_met_damage_raises_it_again(tmp_path: Any, tables: int,
                                                range_tombstone: bool) -> None:
    """A scan reaching a damaged block raises CorruptionError; a caller that catches it
    and calls next() again got StopIteration on pure Python (and from the compiled core):
    a silent end, the rows so far taken for the whole range.  Now every later next()
    raises the CorruptionError again -- every kind of iterator, over one table (the
    plain scan) or two (the merge), with a range tombstone (pure Python's merge in both
    engines) or without."""
    path = str(tmp_path / "db")
    with banyanstore.open(path, block_size=1024, compression="none", compaction=False,
                          wal_sync="never") as s:
        for t in range(tables):
            for i in range(t, 4000, tables):
                s.put(b"k%05d" % i, b"v" * 50)
            s.flush()
        if range_tombstone:
            s.delete_range(b"k03990", b"k03995")
            s.flush()
    table = sorted((tmp_path / "db" / "tables").glob("*.sst"))[0]
    data = bytearray(table.read_bytes())
    data[len(data) // 3] ^= 0xFF  # a data block in the middle of the key range
    table.write_bytes(bytes(data))
    with banyanstore.open(path, compaction=False, block_cache_size=0) as s:
        outcome = {}
        for kind, make in VIEWS.items():
            it = make(s)
            rows = 0
            with pytest.raises(CorruptionError):
                for _ in it:
                    rows += 1
            assert 0 < rows < 3900, kind
            after = []
            for _ in range(2):
                try:
                    next(it)
                except CorruptionError:
                    after.append("raised again")
                except StopIteration:
                    after.append("ended")
            outcome[kind] = after
        assert outcome == {kind: ["raised again"] * 2 for kind in VIEWS}
