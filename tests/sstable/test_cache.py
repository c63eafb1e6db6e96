"""BlockCache: byte accounting, LRU order, per-table eviction, capacity 0, threads -- for the
pure-Python cache and the one with its bookkeeping in C (``native/blockcache.c``), which
must give the same results operation for operation (a differential test below)."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from banyanstore import accel
from banyanstore.sstable import reader as reader_mod
from banyanstore.sstable.block import Block
from banyanstore.sstable.cache import SCAN_PART, PyBlockCache, cache_key, door_bits, native_cache_class

_native = accel.load_native()
if _native is not None:
    reader_mod.bind_native(_native)  # the Block type's slots (a no-op if accel bound it)
NATIVE_CACHE = native_cache_class(_native) if _native is not None else None
needs_native = pytest.mark.skipif(_native is None, reason="the compiled core is not built")
CACHES = [pytest.param(PyBlockCache, id="python"),
          pytest.param(NATIVE_CACHE, marks=needs_native, id="native")]


@pytest.fixture(params=CACHES)
def BlockCache(request: pytest.FixtureRequest) -> Any:  # noqa: N802 (a class, as the tests use it)
    return request.param


def _usage_of(c: Any) -> int:
    """The charge of the blocks ``c`` holds, summed from the blocks themselves."""
    if isinstance(c, PyBlockCache):
        return sum(e[0].nbytes for e in c._entries.values())
    return c.usage  # the C cache keeps no Python-visible entries: checked by the differential test


@dataclass
class Blk:
    nbytes: int
    ref: bool = False


def test_accounting_and_lru_order(BlockCache: Any) -> None:
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


def test_replacing_a_key_recharges(BlockCache: Any) -> None:
    c = BlockCache(100)
    c.put(7, Blk(40))
    c.put(7, Blk(10))
    assert c.usage == 10 and len(c) == 1


def test_oversized_block_and_zero_capacity_are_not_cached(BlockCache: Any) -> None:
    c = BlockCache(100)
    c.put(1, Blk(50))
    c.put(2, Blk(101))
    assert c.peek(2) is None and c.usage == 50
    z = BlockCache(0)
    z.put(1, Blk(1))
    assert len(z) == 0 and z.usage == 0
    with pytest.raises(ValueError):
        BlockCache(-1)


def test_evict_table_drops_only_that_table(BlockCache: Any) -> None:
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


def test_concurrent_use_keeps_usage_exact(BlockCache: Any) -> None:
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
    assert c.usage == _usage_of(c)
    assert c.usage <= c.capacity


def test_clock_gives_referenced_blocks_a_second_chance_and_clears_slots(BlockCache: Any) -> None:
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
    assert c.usage == _usage_of(c) == 100
    c.evict_table(1)
    assert slots == [None] * 5 and c.usage == 0
    assert not c.put(cache_key(1, 0), Blk(101), slots, 0)  # type: ignore[arg-type]
    assert slots[0] is None


def _block_payload(n: int) -> bytes:
    """A data block payload of ``n`` entries (fixed 8-byte keys and values)."""
    from banyanstore.sstable.block import BlockBuilder
    b = BlockBuilder()
    for i in range(n):
        b.add(b"k%07d" % i, i + 1, b"v%07d" % i)
    return b.finish()


@needs_native
@pytest.mark.parametrize("kind", ["objects", "blocks"])
@pytest.mark.parametrize("seed", range(6))
def test_native_cache_matches_python_operation_for_operation(kind: str, seed: int) -> None:
    """Random puts (new keys, replaced keys, oversized blocks, with and without slots), hits
    marking blocks referenced, gets, peeks, table evictions and clears, on both caches:
    every return value, counter, slot and cached key agrees after every operation.  With
    ``kind="blocks"`` the blocks are real Blocks (the C cache reads their slots directly)."""
    rng = random.Random(seed)
    capacity = rng.choice([0, 60, 200, 1000, 5000]) * (10 if kind == "blocks" else 1)  # Blocks: ~300-700 B
    caches = [PyBlockCache(capacity), NATIVE_CACHE(capacity)]  # type: ignore[misc]
    payloads = [_block_payload(n) for n in (1, 3, 8, 20)]
    tables = {t: [[None] * 16 for _ in caches] for t in (1, 2, 3)}
    keys = [cache_key(t, no) for t in tables for no in range(16)]

    def make(tag: int) -> list[Any]:
        if kind == "blocks":
            payload = payloads[tag % len(payloads)]
            return [Block(payload) for _ in caches]
        size = rng.choice([1, 5, 17, 40, 70, 250, 1200])
        return [Blk(size) for _ in caches]

    def state(i: int) -> tuple[Any, ...]:
        c = caches[i]
        slots = tuple(tuple(s is not None and s.nbytes for s in tables[t][i]) for t in tables)
        present = tuple(k for k in keys if c.peek(k) is not None)
        return (c.usage, c.limit, len(c), c.evictions, c.hits, c.misses, slots, present,
                tuple(c.peek(k).nbytes for k in present))

    for step in range(400):
        op = rng.random()
        if op < 0.55:
            t, no = rng.choice(list(tables)), rng.randrange(16)
            blocks = make(step)
            with_slots = rng.random() < 0.8
            got = [c.put(cache_key(t, no), b, tables[t][i] if with_slots else None, no)
                   for i, (c, b) in enumerate(zip(caches, blocks, strict=True))]
        elif op < 0.75:  # a reader's hit: the slot's block marked referenced
            t, no = rng.choice(list(tables)), rng.randrange(16)
            for i in range(len(caches)):
                b = tables[t][i][no]
                if b is not None:
                    b.ref = True
            got = []
        elif op < 0.80:
            k = rng.choice(keys)
            got = [c.get(k) is not None for c in caches]
        elif op < 0.85:  # a scan's read-ahead asking to cache a block (the doorkeeper)
            k = rng.choice(keys)
            scanned = rng.choice([0, caches[0].limit // SCAN_PART, caches[0].limit // SCAN_PART + 1])
            got = [c.admit(k, scanned) for c in caches]
        elif op < 0.90:  # the memory budget moving the limit (lsm/budget.py)
            limit = rng.choice([0, capacity // 4, capacity // 2, capacity])
            got = [c.set_limit(limit) for c in caches]
        elif op < 0.97:
            t = rng.choice(list(tables))
            got = [c.evict_table(t) for c in caches]
        else:
            got = [c.clear() for c in caches]
        assert all(g == got[0] for g in got), (step, got)
        assert state(0) == state(1), step
        assert caches[1].usage <= caches[1].limit <= capacity
    assert caches[0].stats() == caches[1].stats()


def test_set_limit_evicts_at_once_and_bounds_later_puts(BlockCache: Any) -> None:
    """set_limit(): evicts (CLOCK: referenced blocks get their second chance) down to the
    limit at once and returns the bytes freed; later puts stay within it, a block above
    it is not cached, admission's "room" is the limit's; raising it back lets the cache
    grow again.  Arguments outside 0..capacity raise ValueError naming the limit."""
    c = BlockCache(1000)
    slots: list[Any] = [None] * 10
    blocks = [Blk(100) for _ in range(10)]
    for no, b in enumerate(blocks):
        c.put(cache_key(1, no), b, slots, no)
    assert c.usage == 1000 and c.limit == 1000
    blocks[0].ref = True  # the oldest, used: kept over the next ones
    assert c.set_limit(450) == 600
    assert c.usage == 400 and c.limit == 450 and len(c) == 4
    assert slots[0] is blocks[0] and slots[1:7] == [None] * 6
    assert c.put(cache_key(2, 0), Blk(500)) is False  # larger than the limit
    assert c.put(cache_key(2, 1), Blk(100)) is True and c.usage == 400  # one evicted for it
    assert c.set_limit(410) == 0
    assert not c.admit(cache_key(3, 0))  # full for the limit: a scan's block waits
    assert c.set_limit(1000) == 0 and c.limit == 1000
    assert c.admit(cache_key(3, 0))  # room again
    for no in range(7, 10):
        c.put(cache_key(4, no), Blk(100))
    assert c.usage == 700  # nothing evicted: the limit is the capacity again
    for bad in (-1, 1001):
        with pytest.raises(ValueError, match="limit"):
            c.set_limit(bad)
    assert c.limit == 1000 and c.stats()["limit"] == 1000


def test_admission_on_the_second_miss(BlockCache: Any) -> None:
    """admit(): while the cache has room, every key; when it is full, a key asked about
    once is refused, from the second time on admitted, until the doorkeeper is cleared
    (after a key per 8 of its bits); nothing is cached by it."""
    roomy = BlockCache(1 << 20)
    assert roomy.admit(cache_key(1, 5)) and roomy.admit(cache_key(1, 5))
    c = BlockCache(1000)
    c.put(cache_key(9, 0), Blk(950))  # full: less than a 16th free
    a, b = cache_key(1, 5), cache_key(2, 5)
    assert [c.admit(a), c.admit(b), c.admit(a), c.admit(b), c.admit(a)] == [False, False, True, True, True]
    assert door_bits(0) == door_bits(1 << 20) == 8192 and door_bits(64 << 20) == 262144
    assert len(c) == 1  # admission caches nothing by itself
    refused, no = 2, 0  # a and b
    while refused < 8192 // 8:  # (a few new keys pass: the filter's false positives)
        assert c.admit(a)
        refused += not c.admit(cache_key(3, no))
        no += 1
    assert no < 8192 // 8 + 20
    assert not c.admit(a) and c.admit(a)  # the 1024th refusal cleared the doorkeeper


def test_admission_ends_past_a_scans_share(BlockCache: Any) -> None:
    """admit(key, scanned): a full cache refuses a block that lies more than
    ``limit // SCAN_PART`` stored bytes into a scan's range of its table, even on its
    second miss (else a scan longer than the cache evicts, pass after pass, what it
    cached a moment before); up to there, the doorkeeper decides; while the cache has
    room, every block is admitted wherever it lies."""
    assert SCAN_PART == 2
    roomy = BlockCache(1 << 20)
    assert roomy.admit(cache_key(1, 5), 1 << 40)
    c = BlockCache(1000)
    c.put(cache_key(9, 0), Blk(950))  # full
    a = cache_key(1, 5)
    assert not c.admit(a, 500)  # first miss
    assert c.admit(a, 500) and c.admit(a, 0)  # second: within the share
    assert not c.admit(a, 501) and not c.admit(a, 1 << 40)  # past it: never
    c.set_limit(800)  # the share follows the limit (the block over it evicted)
    c.put(cache_key(9, 1), Blk(780))  # full again
    assert c.admit(a, 400) and not c.admit(a, 401)


@needs_native
def test_native_and_python_admission_agree_on_random_keys() -> None:
    rng = random.Random(7)
    for capacity in (0, 5000, 1 << 22):
        caches = [PyBlockCache(capacity), NATIVE_CACHE(capacity)]  # type: ignore[misc]
        for _ in range(20_000):
            k = cache_key(rng.randrange(1, 40), rng.randrange(3000))
            scanned = rng.randrange(capacity + 2)
            got = [c.admit(k, scanned) for c in caches]
            assert got[0] == got[1], (capacity, k)


@needs_native
def test_native_cache_rejects_bad_arguments() -> None:
    c = NATIVE_CACHE(100)  # type: ignore[misc]
    with pytest.raises(ValueError, match="capacity_bytes"):
        NATIVE_CACHE(-1)  # type: ignore[misc]
    with pytest.raises(IndexError):
        c.put(1, Blk(10), [None], 5)
    with pytest.raises(TypeError):
        c.put(1, Blk(10), (None,), 0)
    with pytest.raises(TypeError, match="admit"):
        c.admit()
    with pytest.raises(TypeError, match="scanned"):
        c.admit(1, "5")
    with pytest.raises(ValueError, match="scanned"):
        c.admit(1, -1)
    with pytest.raises(AttributeError):
        c.put(1, object())
    assert len(c) == 0 and c.usage == 0


@needs_native
def test_native_cache_frees_what_it_drops() -> None:
    """Evicted, replaced and cleared blocks are released (no reference kept), and the cache
    itself is collected with the blocks and slot lists it holds."""
    import gc
    import weakref

    class Ref(Blk):
        pass

    c = NATIVE_CACHE(50)  # type: ignore[misc]
    slots: list[Any] = [None] * 4
    first = Ref(30)
    w = weakref.ref(first)
    c.put(1, first, slots, 0)
    del first
    assert w() is not None
    c.put(2, Ref(30), slots, 1)  # evicts block 1 and resets its slot
    assert slots[0] is None and w() is None
    held = Ref(10)
    wh = weakref.ref(held)
    c.put(3, held, slots, 2)
    slots[2] = None
    del held
    c.put(3, Ref(10), slots, 2)  # a replaced key drops the old block
    assert wh() is None
    ws = weakref.ref(c)
    del c
    gc.collect()
    assert ws() is None
