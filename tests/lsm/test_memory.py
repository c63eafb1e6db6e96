"""Memory the store gives back: a flushed memtable is freed once its table is in, not
held until the next flush begins (the flusher thread kept its last job, so an idle store
held a whole extra memtable -- up to ``memtable_size`` bytes -- after every flush)."""

from __future__ import annotations

import gc
from pathlib import Path

import banyanstore
from banyanstore.lsm.memtable import Memtable


def entries_in_live_memtables() -> int:
    gc.collect()
    return sum(len(o) for o in gc.get_objects() if isinstance(o, Memtable))


def test_flushed_memtables_are_freed(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "db", memtable_size=64 * 1024, compaction=False) as store:
        for i in range(3000):  # ~0.4 MB: several switches and flushes
            store.put(b"k%06d" % i, b"v" * 100)
        store.flush()
        assert store.stats()["keyspaces"]["default"]["tables"] >= 3
        # Every entry is in a table now: no flushed memtable lives on (the active
        # one, empty, is all that is left).
        assert entries_in_live_memtables() == 0
        for i in range(0, 3000, 7):
            assert store.get(b"k%06d" % i) == b"v" * 100
