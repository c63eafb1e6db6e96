"""Memory the store gives back: a flushed memtable is freed once its table is in, not
held until the next flush begins (the flusher thread kept its last job, so an idle store
held a whole extra memtable -- up to ``memtable_size`` bytes -- after every flush)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import banyanstore
from banyanstore import accel
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


def heap_rss_bytes() -> int:
    """Resident bytes of the process's malloc heap (``[heap]``)."""
    total, in_heap = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            fields = line.split()
            if not fields[0].endswith(":"):
                in_heap = fields[-1] == "[heap]"
            elif in_heap and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(accel.load_native() is None, reason="the compiled core is not built")
def test_native_memtable_index_arrays_stay_out_of_the_heap() -> None:
    """A big memtable's index arrays (hash slots, arrival order, sorted keys) are mapped
    apart, so a dropped memtable gives them back to the OS at once.  From malloc they came
    from the heap once glibc had freed one such mapped block (it then raises its mmap
    threshold to that size), where freed arrays left holes that other allocations pinned:
    at 1M puts the heap held 62 MB at the peak of fillrandom (21 MB with the arrays apart)."""
    from banyanstore.lsm.memtable import NativeMemtable

    def build(n: int) -> NativeMemtable:
        m = NativeMemtable()
        for i in range(n):
            m.add(b"%016d" % i, i + 1, b"x" * 100)
        assert len(m.sorted_keys()) == n
        return m

    build(300_000)  # dropped at once: frees mapped blocks of up to 8 MiB, glibc's threshold rises
    start = heap_rss_bytes()
    m = build(300_000)  # 8 MiB of hash slots, 4 MiB of arrival order, 2.4 MiB sorted
    assert heap_rss_bytes() - start < 2 << 20
    assert len(m) == 300_000
