"""Reads at a version a live snapshot pins answer through the store itself
(``store.get(k, version=snap.version)``), however the store moved on; and
``oldest_version`` counts live snapshots."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import StoreClosedError, VersionUnavailableError

OPTS: dict[str, Any] = dict(io_mode="sync", memtable_size=64 * 1024, compaction=False, wal_sync="never")


def _write_round(s: Any, idx: Any, tag: bytes) -> None:
    for i in range(50):
        s.put(b"k%02d" % i, tag + b"%02d" % i)
        idx.put(b"k%02d" % i, tag)


def test_versioned_reads_at_a_pinned_version_answer_after_flush_and_compact(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        idx = s.keyspace("index")
        _write_round(s, idx, b"a")
        with s.snapshot() as snap:
            pinned = snap.version
            want = {"get": s.get(b"k07"), "scan": list(s.scan()), "multi": s.multi_get([b"k01", b"k49"]),
                    "idx": list(idx.scan())}
            for tag in (b"b", b"c"):
                _write_round(s, idx, tag)
                s.flush()
            s.compact()
            assert s.history_floor > pinned  # compaction moved the floor past the snapshot
            assert s.oldest_version == pinned
            got = {"get": s.get(b"k07", version=pinned), "scan": list(s.scan(version=pinned)),
                   "multi": s.multi_get([b"k01", b"k49"], version=pinned),
                   "idx": list(idx.scan(version=pinned))}
            assert got == want and snap.get(b"k07") == want["get"]
            # versions between the snapshot and the floor that nothing pins stay refused
            with pytest.raises(VersionUnavailableError, match="no live snapshot pins it"):
                s.get(b"k07", version=pinned + 1)
            with pytest.raises(VersionUnavailableError):
                s.get(b"k07", version=pinned - 1)
        assert s.oldest_version == s.history_floor
        with pytest.raises(VersionUnavailableError):
            s.get(b"k07", version=pinned)


def test_oldest_version_is_the_oldest_live_snapshot(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        s.put(b"a", b"1")
        first = s.snapshot()
        s.put(b"a", b"2")
        second = s.snapshot()
        s.put(b"a", b"3")
        s.set_history_floor(s.version)
        assert s.oldest_version == first.version
        assert [s.get(b"a", version=v) for v in (first.version, second.version)] == [b"1", b"2"]
        first.close()
        assert s.oldest_version == second.version
        with pytest.raises(VersionUnavailableError):
            s.get(b"a", version=first.version)
        second.close()
        assert s.oldest_version == s.history_floor == s.version


def test_compact_reclaims_what_a_closed_snapshot_kept(tmp_path: Path) -> None:
    """Once the snapshot that kept old versions in a lone table is closed, compact()
    rewrites the table without them (with no write in between: the history floor is at
    the latest version already) -- and a second compact() has nothing left to do."""
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        s.put(b"k", b"first")
        with s.snapshot():
            for i in range(500):
                s.put(b"k", b"v%d" % i)
            s.delete(b"gone")
            s.flush()
            assert s.compact()["merges"] == 1
            assert len(list(s.history(b"k"))) == 2  # the pinned version is kept
        assert s.compact()["merges"] == 1
        assert list(s.history(b"k")) == [(s.version - 1, b"v499")]
        assert s.compact()["merges"] == 0


def test_compact_drops_the_expired_entries_of_a_lone_table(tmp_path: Path) -> None:
    now = [1_000_000.0]
    with banyanstore.open(tmp_path / "db", clock=lambda: now[0], **OPTS) as s:
        ttl = s.keyspace("ttl", ttl=10)
        ttl.put(b"old", b"x")
        now[0] += 8
        ttl.put(b"new", b"y")
        s.flush()
        s.compact()
        now[0] += 5  # "old" has expired, "new" has not
        assert s.compact(keyspace="ttl")["merges"] == 1
        assert s.approximate_count() == 0 and ttl.approximate_count() == 1
        assert list(ttl.scan()) == [(b"new", b"y")]


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_a_copied_snapshot_holds_its_own_pin(tmp_path: Path, copier: Any) -> None:
    """A copy shared the original's one pin, so closing both released it twice -- also
    another live snapshot's pin of that version, whose reads merges then broke."""
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        s.put(b"k", b"old")
        original, other = s.snapshot(), s.snapshot()
        twin = copier(original)
        assert twin is not original and twin.version == original.version
        original.close()
        assert twin.get(b"k") == b"old"
        twin.close()
        s.put(b"k", b"new")
        s.flush()
        s.compact()
        assert s.oldest_version == other.version
        assert other.get(b"k") == b"old"
        other.close()
        with pytest.raises(StoreClosedError):
            copier(other)


def test_a_copy_racing_the_originals_close_is_refused(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """copy.copy(snap) checked the original open, then pinned its version: a close() on
    another thread between the two let a merge cut that version, and the copy then read
    at a version nothing had kept (here: ``k`` gone).  The copy now pins first and checks
    the original after: closed meanwhile, the copy is refused and holds no pin."""
    from banyanstore.lsm.tree import Tree

    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        s.put(b"k", b"old")
        original = s.snapshot()
        s.put(b"k", b"new")
        real_pin = Tree.pin

        def close_then_merge_then_pin(tree: Tree, version: int | None = None) -> int:
            if version == original.version and not original.closed:  # the other thread's turn
                original.close()
                s.flush()
                s.compact()
            return real_pin(tree, version)

        monkeypatch.setattr(Tree, "pin", close_then_merge_then_pin)
        with pytest.raises(StoreClosedError):
            twin = copy.copy(original)
            twin.get(b"k")  # old code: None, a version nothing had kept
        monkeypatch.undo()
        assert s.oldest_version == s.version  # no pin left behind
        assert s.get(b"k") == b"new"
