"""Memory the store gives back: a flushed memtable is freed once its table is in, not
held until the next flush begins (the flusher thread kept its last job, so an idle store
held a whole extra memtable -- up to ``memtable_size`` bytes -- after every flush)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

import banyanstore
from banyanstore import accel
from banyanstore.lsm.budget import FLOOR_PART
from banyanstore.lsm.memtable import Memtable
from banyanstore.lsm.writer import MEM_STEP_MAX


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


def test_pure_memtable_entries_leave_the_collectors_lists() -> None:
    """PyMemtable keeps a key's single version as a tuple of an int and bytes (or None),
    which the cyclic collector stops tracking at its first collection: every full
    collection during a fill walked each entry's list before (1M puts: ~320,000 lists
    per walk, ~20% of the writer's CPU).  A key with more versions keeps a list."""
    from banyanstore.lsm.memtable import PyMemtable

    gc.collect()
    before = len(gc.get_objects())
    m = PyMemtable()
    for i in range(20_000):
        m.add(b"%016d" % i, i + 1, b"x" * 100 if i % 3 else None)
    m.add(b"%016d" % 5, 30_000, b"y")  # a second version
    m.add(b"%016d" % 5, 30_000, b"z")  # the same version again: the last one wins
    gc.collect()
    assert len(gc.get_objects()) - before < 1_000
    assert m.history(b"%016d" % 5, 40_000) == [(30_000, b"z"), (6, b"x" * 100)]
    assert m.get(b"%016d" % 6, 7) is None and m.get(b"%016d" % 7, 8) == b"x" * 100
    assert m.flush_columns()[1][5:8] == [30_000, 6, 7]


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


HEAP_AFTER_CLOSE_CHILD = r"""
import gc, sys
import banyanstore
from banyanstore import accel
from tests.lsm.test_memory import heap_rss_bytes

heap_before = heap_rss_bytes()
store = banyanstore.open(sys.argv[1], block_cache_size=256 << 20, compaction=False)
value = bytes(range(200))
for i in range(int(sys.argv[2])):
    store.put(b"%016d" % i, value)
store.flush()
assert sum(1 for _ in store.scan()) == int(sys.argv[2])  # every block read: all are cached
cached = store.stats()["block_cache"]["usage"]
# Allocated after the cache filled, as a program does: objects at the top of the heap,
# above the cached blocks, so malloc cannot give the freed blocks back by shrinking it.
pins = [bytearray(600) for _ in range(2000)]
store.close()
del store
gc.collect()
print(accel.IMPLEMENTATION, cached, heap_rss_bytes() - heap_before)
"""


def run_heap_child(script: str, tmp_path: Path, pure: str, *args: str) -> list[str]:
    """``script`` run in a child process (whose heap holds nothing else) on a store in
    ``tmp_path`` with 150,000 keys (and ``args``), pure Python or not; the words it printed."""
    if pure == "0" and accel.load_native() is None:
        pytest.skip("the compiled core is not built")
    root = Path(__file__).resolve().parent.parent.parent
    env = {**os.environ, "BANYANSTORE_PURE_PYTHON": pure,
           "PYTHONPATH": os.pathsep.join([str(root), str(root / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "db"), "150000", *args],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("pure", ["1", "0"], ids=["pure", "native"])
def test_closed_store_returns_its_block_cache_to_the_os(tmp_path: Path, pure: str) -> None:
    """A closed store gives its memory back: its cached blocks (here 30+ MB) do not stay
    resident in the process.  malloc kept them -- freed, but below objects the program
    allocated later -- so a program that closed a store held its whole block cache (about
    80 MB after the read store of bench_store.py at 1M keys), and each store it opened
    next grew on top of it.  Run in a child process, whose heap holds nothing else."""
    implementation, cached, heap_growth = run_heap_child(HEAP_AFTER_CLOSE_CHILD, tmp_path, pure)
    assert implementation == ("python" if pure == "1" else "native")
    assert int(cached) > 30 << 20
    # Before the fix the heap grew by about all the cached bytes (37.0-37.7 MB for 38.6 MB
    # cached); after it, by 3.0-3.3 MB (the pins, malloc's own bookkeeping).
    assert int(heap_growth) < int(cached) // 4, (int(cached), int(heap_growth))


HEAP_AFTER_MERGE_CHILD = r"""
import gc, sys
import banyanstore
from banyanstore import accel
from tests.lsm.test_memory import heap_rss_bytes

store = banyanstore.open(sys.argv[1], block_cache_size=256 << 20, memtable_size=4 << 20,
                         compaction=False)
value = bytes(range(200))
for i in range(int(sys.argv[2])):
    store.put(b"%016d" % i, value)
store.flush()
tables = store.stats()["keyspaces"]["default"]["tables"]
assert sum(1 for _ in store.scan()) == int(sys.argv[2])  # every block read: all are cached
cached = store.stats()["block_cache"]["usage"]
pins = [bytearray(600) for _ in range(2000)]  # above the cached blocks in the heap
gc.collect()
before = heap_rss_bytes()
store.compact()  # one table replaces the others: their cached blocks are evicted
assert store.stats()["keyspaces"]["default"]["tables"] == 1
gc.collect()
print(accel.IMPLEMENTATION, tables, cached, store.stats()["block_cache"]["usage"],
      before - heap_rss_bytes())
store.close()
"""


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("pure", ["1", "0"], ids=["pure", "native"])
def test_a_merge_returns_its_inputs_cached_blocks_to_the_os(tmp_path: Path, pure: str) -> None:
    """A merge evicts its input tables' cached blocks -- up to the whole block cache --
    and the store gives that memory back at once, not when it closes: malloc kept the
    freed blocks resident below later allocations, a second copy of the cache until the
    reads refilled it (58 MB at the first read phase after compact() in bench_store.py at
    1M keys).  Run in a child process, whose heap holds nothing else."""
    implementation, tables, cached, cached_after, heap_drop = run_heap_child(
        HEAP_AFTER_MERGE_CHILD, tmp_path, pure)
    assert implementation == ("python" if pure == "1" else "native")
    assert int(tables) >= 3 and int(cached) > 30 << 20 and int(cached_after) == 0
    assert int(heap_drop) > int(cached) // 2, (int(cached), int(heap_drop))


HEAP_AFTER_WRITES_CHILD = r"""
import gc, sys
import banyanstore
from banyanstore import accel
from tests.lsm.test_memory import heap_rss_bytes

store = banyanstore.open(sys.argv[1], block_cache_size=48 << 20, memtable_size=256 << 20,
                         compaction=False, memtables_share_cache=sys.argv[3] == "1")
value = bytes(range(200))
n = int(sys.argv[2])
for i in range(n):
    store.put(b"%016d" % i, value)
store.flush()
assert sum(1 for _ in store.scan()) == n  # every block read: all are cached
cached = store.stats()["block_cache"]["usage"]
pins = [bytearray(600) for _ in range(2000)]  # above the cached blocks in the heap
gc.collect()
before = heap_rss_bytes()
for i in range(n):
    store.put(b"w%015d" % i, value)
gc.collect()
st = store.stats()
print(accel.IMPLEMENTATION, cached, st["block_cache"]["usage"], st["memtable_bytes"],
      before - heap_rss_bytes())
store.close()
"""


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("pure", ["1", "0"], ids=["pure", "native"])
def test_writes_after_reads_take_their_memory_from_the_block_cache(tmp_path: Path,
                                                                   pure: str) -> None:
    """A store whose cache filled with reads then takes writes: the cache gives up what
    the memtable takes (lsm/budget.py) and the freed blocks leave the process -- the
    heap shrinks while the memtable grows (in its own mappings).  Before, the cache
    stayed full beside the memtables: the peak of bench_store.py's deleterandom at 1M
    keys (a full 64 MiB cache beside 64 MiB of tombstones)."""
    implementation, cached, cached_after, mem, heap_drop = run_heap_child(
        HEAP_AFTER_WRITES_CHILD, tmp_path, pure, "1")
    assert int(cached) > 30 << 20 and int(mem) > 30 << 20
    floor = (48 << 20) // FLOOR_PART
    assert int(cached_after) <= max((48 << 20) - int(mem) + MEM_STEP_MAX, floor)
    evicted = int(cached) - int(cached_after)
    if implementation == "native":  # the pure engine's memtable is objects on the heap
        assert int(heap_drop) > evicted // 2, (evicted, int(heap_drop))
    # and without the budget, the cache keeps its blocks
    *_, full, _mem, _drop = run_heap_child(HEAP_AFTER_WRITES_CHILD, tmp_path / "off", pure, "0")
    assert int(full) > 30 << 20


BIG_VALUES_CHILD = r"""
import sys
import banyanstore
from banyanstore import accel

def status(field):
    with open("/proc/self/status") as fh:
        return int(fh.read().split(field + ":")[1].split()[0]) << 10

opts = dict(compression="none", compaction=False, compaction_mode="thread", block_cache_size=0)
with banyanstore.open(sys.argv[1], **opts) as store:
    if sys.argv[3] == "build":  # two tables of 24 values of 2 MiB: a block each
        for table in range(2):
            for i in range(24):
                store.put(b"k%02d-%d" % (i, table), bytes([i]) * (2 << 20))
            store.flush()
    else:
        before = status("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM from here (ru_maxrss would start at the parent's peak)
        if sys.argv[3] == "scan":
            assert sum(len(v) for v in store.values()) == 96 << 20
        else:
            assert store.compact()["tables_after"] == 1
        print(accel.IMPLEMENTATION, status("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("pure", ["1", "0"], ids=["pure", "native"])
@pytest.mark.parametrize("read", ["scan", "merge"])
def test_reads_of_big_values_hold_a_few_blocks_per_table(tmp_path: Path, pure: str,
                                                          read: str) -> None:
    """Scans read ahead up to 16 blocks of a table in one read and merges 64: with
    values of megabytes, each a block of its own, that held 16 (or 64) values per table
    in memory -- 1 GiB (4 GiB) per table at the default max_value_size.  A read-ahead
    spans at most 1 MiB now (or one block, when that is larger).  Run in child
    processes, whose peak memory is this read's alone."""
    run_heap_child(BIG_VALUES_CHILD, tmp_path, pure, "build")
    implementation, growth = run_heap_child(BIG_VALUES_CHILD, tmp_path, pure, read)
    assert implementation == ("python" if pure == "1" else "native")
    # Before the fix the peak grew by 55-72 MB (scans) and 70-109 MB (merges) over the
    # 2 x 24 values of 2 MiB; after it by 5-27 MB (the pure-Python merge the most).
    assert int(growth) < 32 << 20, int(growth)


# What the big-value children share: memory figures of this process, a 32 MiB value.
BIG_VALUE_PRELUDE = r"""
import os, sys
import banyanstore
from banyanstore import accel

def status(field):
    with open("/proc/self/status") as fh:
        return int(fh.read().split(field + ":")[1].split()[0]) << 10

def peak_of(call):
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM from here
    call()
    return (status("VmHWM") - before) / len(value)

value = os.urandom(1 << 20) * 32
"""

BIG_VALUE_COPIES_CHILD = BIG_VALUE_PRELUDE + r"""
with banyanstore.open(sys.argv[1], compression="none", compaction=False,
                      compaction_mode="thread") as store:
    store.put(b"big", value)
    flush = peak_of(store.flush)
    store.put(b"big", value[:-1])
    store.flush()
    merge = peak_of(store.compact)
    assert store.get(b"big") == value[:-1]
print(accel.IMPLEMENTATION, flush, merge)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("pure", ["1", "0"], ids=["pure", "native"])
def test_flushes_and_merges_copy_a_big_value_few_times(tmp_path: Path, pure: str) -> None:
    """A flush or a merge of a table holding a 32 MiB value: the table builder wrote
    each block joined to its trailer, and joined again with the bytes pending before
    it, and a compiled merge held each input's stored block beside its payload -- a
    copy of the value each.  Peak memory over the start, in copies of the value: before
    the fix, flushes 1.0 (pure) and 2.0 (native), merges 4.0 and 6.0; after it 0.0, 1.0,
    3.0 and 4.0.  Run in a child process, whose peak memory is this test's alone."""
    implementation, flush, merge = run_heap_child(BIG_VALUE_COPIES_CHILD, tmp_path, pure)
    assert implementation == ("python" if pure == "1" else "native")
    most = {"python": (0.5, 3.5), "native": (1.5, 4.5)}[implementation]
    assert float(flush) < most[0] and float(merge) < most[1], (flush, merge)


BIG_PUT_CHILD = BIG_VALUE_PRELUDE + r"""
with banyanstore.open(sys.argv[1], compaction=False, memtable_size=256 << 20) as store:
    before = status("RssAnon")
    store.put(b"one", value)
    held = (status("RssAnon") - before) / len(value)

    def batch():
        with store.batch() as b:
            b.put(b"two", value)
    batched = peak_of(batch)
    got = peak_of(lambda: store.get(b"one"))
    assert store.get(b"one") == value and store.get(b"two") == value
print(accel.IMPLEMENTATION, held, batched, got)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("pure", ["1", "0"], ids=["pure", "native"])
def test_a_big_put_is_not_copied_into_the_memtable(tmp_path: Path, pure: str) -> None:
    """A put of a 32 MiB value: the compiled memtable copied it into its arena, so the
    store held a second copy beside the caller's for the memtable's life, a batch
    peaked at three (the WAL record, the mapped WAL pages and the copy) and every get
    from the memtable made another.  The pure-Python memtable holds the caller's bytes;
    the compiled one now does too for values above 256 KiB.  In copies of the value:
    held after the put, peak of a batch, peak of a get -- before the fix (native) 1.0,
    3.0, 1.0; after it 0.0, 2.0, 0.0 in both engines.  Run in a child process, whose
    memory is this test's alone."""
    implementation, held, batched, got = run_heap_child(BIG_PUT_CHILD, tmp_path, pure)
    assert implementation == ("python" if pure == "1" else "native")
    assert float(held) < 0.5 and float(batched) < 2.5 and float(got) < 0.5, (held, batched, got)
