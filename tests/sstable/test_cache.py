"""BlockCache: byte accounting, LRU order, per-table eviction, capacity 0, threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from banyanstore.sstable.cache import BlockCache, cache_key


@dataclass
class Blk:
    nbytes: int
    ref: bool = False


def test_accounting_and_lru_order() -> None:
    c = BlockCache(100)
    for i in range(4):
        c.put(cache_key(1, i), Blk(25))
    assert c.usage == 100 and len(c) == 4
    assert c.get(cache_key(1, 0)) is not None  # 0 becomes most recently used
    c.put(cache_key(1, 9), Blk(30))            # evicts 1 and 2 (LRU), not 0
    assert c.peek(cache_key(1, 1)) is None and c.peek(cache_key(1, 2)) is None
    assert c.peek(cache_key(1, 0)) is not None and c.peek(cache_key(1, 3)) is not None
    assert c.usage == 25 + 25 + 30 <= c.capacity
    assert c.stats()["evictions"] == 2
    assert (c.hits, c.misses) == (1, 0)
    assert c.get(cache_key(1, 1)) is None and c.misses == 1


def test_replacing_a_key_recharges() -> None:
    c = BlockCache(100)
    c.put(7, Blk(40))
    c.put(7, Blk(10))
    assert c.usage == 10 and len(c) == 1


def test_oversized_block_and_zero_capacity_are_not_cached() -> None:
    c = BlockCache(100)
    c.put(1, Blk(50))
    c.put(2, Blk(101))
    assert c.peek(2) is None and c.usage == 50
    z = BlockCache(0)
    z.put(1, Blk(1))
    assert len(z) == 0 and z.usage == 0
    with pytest.raises(ValueError):
        BlockCache(-1)


def test_evict_table_drops_only_that_table() -> None:
    c = BlockCache(10_000)
    for t in (1, 2, 3):
        for b in range(5):
            c.put(cache_key(t, b), Blk(10))
    assert c.evict_table(2) == 5
    assert c.usage == 100 and len(c) == 10
    assert all(c.peek(cache_key(2, b)) is None for b in range(5))
    assert c.peek(cache_key(3, 4)) is not None
    c.clear()
    assert c.usage == 0 and len(c) == 0


def test_concurrent_use_keeps_usage_exact() -> None:
    c = BlockCache(5_000)

    def worker(seed: int) -> None:
        for i in range(3_000):
            k = cache_key(seed % 3, (i * 7 + seed) % 200)
            if c.get(k) is None:
                c.put(k, Blk(10 + i % 17))
            if i % 500 == 0:
                c.evict_table(seed % 3)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.usage == sum(e[0].nbytes for e in c._entries.values())
    assert c.usage <= c.capacity


def test_clock_gives_referenced_blocks_a_second_chance_and_clears_slots() -> None:
    c = BlockCache(100)
    slots: list = [None] * 5
    for i in range(4):
        assert c.put(cache_key(1, i), Blk(25), slots, i)  # type: ignore[arg-type]
    assert all(s is not None for s in slots[:4])
    slots[2].ref = True  # a reader's hit
    c.put(cache_key(1, 4), Blk(25), slots, 4)  # type: ignore[arg-type]
    # block 0 (unreferenced, oldest) goes; 2 survives though older than 3
    assert slots[0] is None and slots[2] is not None and slots[4] is not None
    c.put(cache_key(1, 0), Blk(50), slots, 0)  # type: ignore[arg-type]
    assert slots[1] is None and slots[3] is None and slots[2] is not None
    assert c.usage == sum(e[0].nbytes for e in c._entries.values()) == 100
    c.evict_table(1)
    assert slots == [None] * 5 and c.usage == 0
    assert not c.put(cache_key(1, 0), Blk(101), slots, 0)  # type: ignore[arg-type]
    assert slots[0] is None
