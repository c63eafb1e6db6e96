"""Reads at a version a live snapshot pins answer through the store itself
(``store.get(k, version=snap.version)``), however the store moved on; and
``oldest_version`` counts live snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import VersionUnavailableError

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
