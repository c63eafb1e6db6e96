"""Scans longer than the block cache do not flood it (BlockCache.admit's scan share): from
the second pass on, a full scan of a table many times the cache used to admit every block
it read ahead (the doorkeeper had seen them all), each insert evicting the block cached a
moment before -- so every block cost an insert, an eviction and a free, and the next pass
hit nothing.  Now only the head of each table's range (the first ``limit // SCAN_PART``
stored bytes, sstable/cache.py) is admitted: a third pass evicts nothing with one table
(with two, the two heads displace a few of each other's blocks), finds the heads cached,
and reads the same entries.  On the pure-Python engine (the plain-table path with one
table, the merge with two) and the compiled core's scan (tables_n both)."""

from __future__ import annotations

import random
from typing import Any

import pytest

import banyanstore

CACHE = 256 << 10
OPTS: dict[str, Any] = dict(block_size=4096, memtable_size=8 << 20, wal_sync="never",
                            compression="none", block_cache_size=CACHE, compaction=False)


def _cache(store: Any) -> dict[str, int]:
    cache: dict[str, int] = store.stats()["block_cache"]
    return cache


@pytest.mark.parametrize("tables_n", [1, 2])
def test_repeated_full_scans_keep_their_head_cached_and_evict_nothing(tmp_path, tables_n) -> None:
    rng = random.Random(5)
    store = banyanstore.open(tmp_path / "s", **OPTS)
    with store:
        n = 12_000  # ~1.4 MB of table per table: several times the cache
        for part in range(tables_n):
            for i in range(part, n, tables_n):
                store.put(b"key%08d" % i, rng.randbytes(100))
            store.flush()
        before = _cache(store)
        expect = list(store.scan())
        assert len(expect) == n
        blocks = _cache(store)["misses"] - before["misses"]  # the first pass: every block a miss
        assert list(store.scan()) == expect  # now the doorkeeper has seen every block
        before = _cache(store)
        assert list(store.scan()) == expect  # the third pass
        after = _cache(store)
        evictions = after["evictions"] - before["evictions"]
        misses = after["misses"] - before["misses"]
        # Before: every block of the pass admitted and evicted (~blocks).  Now: nothing with
        # one table; with two, each table's share (half the cache) is admitted, so the two
        # heads displace a few of each other's blocks.
        assert evictions <= blocks // 16, (evictions, blocks)
        # the heads stay cached (the first pass filled the cache with them): a pass finds
        # a few dozen blocks there and streams the rest
        assert misses <= blocks - 32, (misses, blocks)
        assert after["usage"] <= CACHE
