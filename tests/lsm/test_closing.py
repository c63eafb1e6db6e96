"""Iterators outliving their store or snapshot: every kind, created before close()
and read after it, raises StoreClosedError -- never an IO error from a closed file,
never a silently shorter result -- over every IO backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import StoreClosedError

ITERATORS: dict[str, Callable[[Any, Any, Any], Iterator[Any]]] = {
    "scan": lambda s, idx, snap: s.scan(),
    "scan-range": lambda s, idx, snap: s.scan(b"k00100", b"k02000"),
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


@pytest.fixture
def filled(env_dir: Any) -> Iterator[tuple[Any, Any]]:
    """A store with data in tables and in the memtable, in two keyspaces."""
    env, root = env_dir
    s = banyanstore.open(root, env=env, memtable_size=64 * 1024, block_size=1024, compaction=False,
                         wal_sync="never", block_cache_size=0)
    idx = s.keyspace("index")
    for rnd in range(2):
        for i in range(3000):
            s.put(b"k%05d" % i, b"v%d-" % rnd * 20)
            idx.put(b"k%05d" % i, b"%d" % rnd)
        s.flush()
    s.put(b"k00001", b"newest")  # and one in the memtable
    yield s, idx
    s.close()


@pytest.mark.parametrize("kind", list(ITERATORS))
@pytest.mark.parametrize("started", [False, True], ids=["unstarted", "started"])
def test_iterator_read_after_store_close_raises_store_closed(filled: tuple[Any, Any], kind: str,
                                                              started: bool) -> None:
    s, idx = filled
    snap = s.snapshot()
    it = ITERATORS[kind](s, idx, snap)
    if started:
        next(it)
    s.close()
    with pytest.raises(StoreClosedError):
        list(it)


@pytest.mark.parametrize("kind", [k for k in ITERATORS if k.startswith("snapshot")])
def test_snapshot_iterator_read_after_snapshot_close_raises(filled: tuple[Any, Any], kind: str) -> None:
    s, idx = filled
    snap = s.snapshot()
    it = ITERATORS[kind](s, idx, snap)
    next(it)
    snap.close()
    with pytest.raises(StoreClosedError, match="snapshot"):
        list(it)
    assert list(s.scan(limit=1)) == [(b"k00000", b"v1-" * 20)]  # the store itself is fine


def test_iterators_read_before_close_are_complete(filled: tuple[Any, Any]) -> None:
    """The guard costs nothing in answers: the same iterators, read while open, give
    every entry."""
    s, idx = filled
    with s.snapshot() as snap:
        counts = {kind: sum(1 for _ in make(s, idx, snap)) for kind, make in ITERATORS.items()}
    assert counts["scan"] == counts["reverse"] == counts["keys"] == 3000
    assert counts["keyspace-scan"] == counts["snapshot-reverse"] == 3000
    assert counts["history"] == 3 and counts["seek"] == 100 and counts["scan-range"] == 1900


@pytest.mark.parametrize("kind", ["scan", "reverse", "history", "keyspace-scan", "keys", "snapshot-scan"])
def test_read_only_store_iterators_raise_store_closed_after_close(tmp_path: Any, kind: str) -> None:
    """The same for a read-only store (it reads through its own published views)."""
    with banyanstore.open(tmp_path / "db", memtable_size=64 * 1024, compaction=False) as w:
        idx = w.keyspace("index")
        for i in range(3000):
            w.put(b"k%05d" % i, b"v" * 20)
            idx.put(b"k%05d" % i, b"i")
    s = banyanstore.open(tmp_path / "db", read_only=True, block_cache_size=0)
    snap = s.snapshot()
    it = ITERATORS[kind](s, s.keyspace("index"), snap)
    next(it)
    s.close()
    with pytest.raises(StoreClosedError):
        list(it)
