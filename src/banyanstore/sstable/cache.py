"""A bounded, thread-safe cache of decoded blocks shared by every table reader.

Replacement is CLOCK (second chance), the classic LRU approximation: a hit
only sets ``block.ref = True``; when the cache is over capacity the oldest
entry is examined, and if its ``ref`` is set it is cleared and the entry moves
to the young end instead of being evicted.  New blocks enter with ``ref``
clear, so blocks a long scan reads once are the first to go.

Why not a strict LRU: with random point lookups the hit path is memory-bound
(each touch of a cold Python object costs ~100-200 ns on the build box).  An
``OrderedDict`` hit (``get`` + ``move_to_end``) touches the hash table, the
entry, the list node and both its neighbours; measured on a warm 1M-entry
table it cost ~780 ns of a ~4.5 us lookup.  Here a reader keeps a per-table
list of *slots* (block number -> decoded block) that the cache fills and
clears, so a hit is one list index plus a store into the block object the
lookup touches anyway.

Admission: once the cache is full (less than a ROOM_PART-th free), a block a scan reads
ahead enters only on its second miss within a while (:meth:`PyBlockCache.admit`, the
doorkeeper of TinyLFU: a Bloom filter of the keys that missed once, cleared after about
twice as many keys as the cache holds blocks).  A block a scan reads once -- most blocks
of a long or a one-off range scan -- then costs no insert, no eviction of a block in use
and no free of that block later; a range read again gets in on its second read.  Only
its head does, though: past ``limit // SCAN_PART`` bytes of a table's blocks (as stored)
from where a scan began, its read-ahead is not admitted at all.  A scan longer than the
cache would otherwise, from its second pass on, evict the blocks it cached a moment
earlier (CLOCK, like LRU, floods on a loop larger than itself) -- and everyone else's:
every block read then costs an insert, an eviction and a free, and the next pass hits
nothing.  Stopping at the head keeps that much of the range cached for the next pass and
the rest of the cache for other reads.  (The share is per table: a scan over k tables
may admit k shares.)  The first block of each table a scan (or seek) reads, and every
block a point read misses, are cached as before.  (LevelDB leaves this to the caller,
``ReadOptions.fill_cache``; here it needs no option.)

Entries are keyed by ``cache_key(table_id, block_no)`` (one int) and charged
``block.nbytes``.  Capacity 0 disables caching.  Inserts, evictions and slot
updates hold the lock; hits take no lock (a slot read and an attribute store
are each atomic under the GIL; a block evicted concurrently stays valid for
whoever holds it).  The hit counter is statistics and may under-count under
contention.

With the compiled core (see accel.py) ``BlockCache`` is :class:`NativeBlockCache`, the
same cache with its bookkeeping in C (``native/blockcache.c``): a cache miss read by the
core inserts its block without a Python call.  :class:`PyBlockCache` is the pure-Python
one; both give the same results operation for operation (tests/sstable/test_cache.py).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .. import accel

if TYPE_CHECKING:
    from .block import Block

__all__ = ["BlockCache", "PyBlockCache", "NativeBlockCache", "cache_key", "new_table_id",
           "TABLE_ID_SHIFT", "Slots", "SCAN_PART"]

TABLE_ID_SHIFT = 32
"""Block numbers are below 2**32 (a table has far fewer blocks than that)."""

Slots = list["Block | None"]
_table_ids = itertools.count(1)


def new_table_id() -> int:
    """A process-unique id for one opened table (never reused, unlike paths)."""
    return next(_table_ids)


def cache_key(table_id: int, block_no: int) -> int:
    return (table_id << TABLE_ID_SHIFT) | block_no


ROOM_PART = 16
"""The cache "has room" (admits every block) while this part of its capacity is free;
once full, evictions keep it within a block of full."""
SCAN_PART = 2
"""A scan's read-ahead is admitted within the first ``limit // SCAN_PART`` stored bytes of
each table's range only (stored blocks are compressed: about the whole cache decoded at
lz4's usual 2x, half of it for incompressible data)."""
DOOR_BYTES_PER_BIT = 256
DOOR_MIN_BITS = 8192
_U64 = (1 << 64) - 1


def door_bits(capacity: int) -> int:
    """The doorkeeper's bits for a cache of ``capacity`` bytes: one per
    DOOR_BYTES_PER_BIT, a power of two, at least DOOR_MIN_BITS (as native/blockcache.c)."""
    want, n = max(capacity, 0) // DOOR_BYTES_PER_BIT, DOOR_MIN_BITS
    while n < want and n < 1 << 31:
        n <<= 1
    return n


def door_hash(key: int) -> int:
    """The 64-bit hash whose two halves pick a key's doorkeeper bits (native/blockcache.c's)."""
    key ^= key >> 33
    key = (key * 0xFF51AFD7ED558CCD) & _U64
    return key ^ (key >> 33)


class _Totals:
    """What both caches add to their counters: the compiled core's hits and misses."""

    native_counters: Any
    hits: int
    misses: int

    @property
    def total_hits(self) -> int:
        """Every cache hit: ``hits`` (counted by Python code) plus the compiled core's."""
        nc = self.native_counters
        return self.hits + (nc.hits if nc is not None else 0)

    @property
    def total_misses(self) -> int:
        """Every block read because it was not cached: ``misses`` (counted by Python code)
        plus the compiled core's."""
        nc = self.native_counters
        return self.misses + (nc.misses if nc is not None else 0)


class PyBlockCache(_Totals):
    """Decoded blocks bounded by ``capacity_bytes`` of estimated memory (CLOCK)."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        self.capacity = capacity_bytes
        self.limit = capacity_bytes  # what the blocks may take now (set_limit lowers it)
        self.usage = 0
        self.hits = 0
        self.misses = 0
        # hits and misses counted by the compiled core's table reads (see accel.py)
        self.native_counters: Any = accel.native.Counters() if accel.native is not None else None
        self.evictions = 0
        # key -> (block, owner's slot list or None, block number); order = clock order
        self._entries: OrderedDict[int, tuple[Block, Slots | None, int]] = OrderedDict()
        self._lock = threading.Lock()
        # admit()'s Bloom filter of keys refused once, one byte a bit (two indexings instead
        # of shifts and masks; 1/256 of the capacity), with its index mask and how many
        # keys it takes before it is cleared (its size in bits / 8, as native/blockcache.c)
        self._door: bytearray | None = None
        self._door_mask = 0
        self._door_limit = 0
        self._door_keys = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: int) -> Block | None:
        """The cached block for ``key`` (marking it referenced), or None.

        Table readers do not call this on their hot path; they read their slots.
        """
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        block = entry[0]
        block.ref = True
        self.hits += 1
        return block

    def peek(self, key: int) -> Block | None:
        """Like :meth:`get` but neither counts nor marks the block."""
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def admit(self, key: int, scanned: int = 0) -> bool:
        """Whether a block a scan reads ahead (``key`` is not cached) is to be cached:
        while the cache has room, True; else False if ``scanned`` (the stored bytes of the
        table's blocks the scan passed before this one) exceeds ``limit // SCAN_PART``;
        else True on its second miss within a while, not its first (see the module
        docstring).  The doorkeeper is a Bloom filter, two bits a key, cleared once it
        took a key per 8 bits (about twice the blocks the cache holds)."""
        limit = self.limit
        if self.usage <= limit - limit // ROOM_PART:
            return True
        if scanned > limit // SCAN_PART:
            return False
        door = self._door
        if door is None:
            bits = door_bits(self.capacity)
            door = self._door = bytearray(bits)
            self._door_mask = bits - 1
            self._door_limit = bits // 8
        mask = self._door_mask
        h = key ^ (key >> 33)  # door_hash(key), inlined: this runs per block a scan reads
        h = (h * 0xFF51AFD7ED558CCD) & _U64
        h ^= h >> 33
        i, j = h & mask, (h >> 32) & mask
        if door[i] and door[j]:
            return True
        door[i] = door[j] = 1
        self._door_keys += 1
        if self._door_keys >= self._door_limit:
            door[:] = bytes(len(door))
            self._door_keys = 0
        return False

    def put(self, key: int, block: Block, slots: Slots | None = None, no: int = 0) -> bool:
        """Insert ``block`` charged ``block.nbytes``; when ``slots`` is given, also set
        ``slots[no] = block`` now and reset it to None when the block is evicted.

        Returns False (and caches nothing) when the block is larger than the whole
        limit, which includes every block when the capacity is 0.
        """
        nbytes = block.nbytes
        if nbytes > self.limit:
            return False
        entries = self._entries
        with self._lock:  # (locals and the eviction inline: this runs once per cache miss)
            capacity = self.limit  # (read under the lock: set_limit may have lowered it)
            if nbytes > capacity:
                return False
            old = entries.pop(key, None)
            usage = self.usage + nbytes - (old[0].nbytes if old is not None else 0)
            block.ref = False
            entries[key] = (block, slots, no)
            if slots is not None:
                slots[no] = block
            if usage > capacity:  # _evict_to(usage, capacity), inlined
                popitem = entries.popitem
                evicted = 0
                while usage > capacity and entries:
                    k, entry = popitem(last=False)
                    victim = entry[0]
                    if victim.ref:  # second chance
                        victim.ref = False
                        entries[k] = entry
                        continue
                    usage -= victim.nbytes
                    evicted += 1
                    owner = entry[1]
                    if owner is not None and owner[entry[2]] is victim:
                        owner[entry[2]] = None
                self.evictions += evicted
            self.usage = usage
        return True

    def _evict_to(self, usage: int, limit: int) -> int:
        """Evict (CLOCK) until ``usage`` fits ``limit``; returns the new usage.  REQUIRES:
        the lock.  (:meth:`put` runs this loop inline -- once per miss on a full cache --
        so a change here is a change there.)"""
        entries = self._entries
        popitem = entries.popitem
        evicted = 0
        while usage > limit and entries:
            k, entry = popitem(last=False)
            victim = entry[0]
            if victim.ref:  # second chance
                victim.ref = False
                entries[k] = entry
                continue
            usage -= victim.nbytes  # what _drop does
            evicted += 1
            owner = entry[1]
            if owner is not None and owner[entry[2]] is victim:
                owner[entry[2]] = None
        self.evictions += evicted
        return usage

    def set_limit(self, limit: int) -> int:
        """Let the blocks take at most ``limit`` bytes (0 <= limit <= capacity) from now
        on, evicting down to it at once (lsm/budget.py lowers it while memtables grow);
        returns the bytes freed."""
        if not 0 <= limit <= self.capacity:
            raise ValueError(f"limit must be between 0 and the capacity ({self.capacity}), "
                             f"not {limit}")
        with self._lock:
            before = self.usage
            self.limit = limit
            self.usage = self._evict_to(before, limit)
            return before - self.usage

    def _drop(self, entry: tuple[Block, Slots | None, int]) -> None:
        """Account for an entry already removed from ``_entries``.  REQUIRES: the lock."""
        block, slots, no = entry
        self.usage -= block.nbytes
        self.evictions += 1
        if slots is not None and slots[no] is block:
            slots[no] = None

    def evict_table(self, table_id: int) -> int:
        """Drop every block of ``table_id`` (a closed or deleted table); returns the count."""
        lo = table_id << TABLE_ID_SHIFT
        hi = (table_id + 1) << TABLE_ID_SHIFT
        with self._lock:
            doomed = [k for k in self._entries if lo <= k < hi]
            for key in doomed:
                self._drop(self._entries.pop(key))
                self.evictions -= 1  # not a capacity eviction
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            while self._entries:
                self._drop(self._entries.popitem()[1])
                self.evictions -= 1

    def stats(self) -> dict[str, int]:
        return {"capacity": self.capacity, "limit": self.limit, "usage": self.usage,
                "blocks": len(self._entries),
                "hits": self.total_hits, "misses": self.total_misses, "evictions": self.evictions}



def native_cache_class(module: Any) -> type[Any]:
    """The block cache with its bookkeeping in ``module`` (the compiled core): its
    ``ClockCache`` with the counters and ``stats()`` of :class:`PyBlockCache`.  (A function
    so that tests compare both caches whatever ``accel.native`` is.)"""

    class NativeBlockCache(module.ClockCache, _Totals):
        """:class:`PyBlockCache` with its bookkeeping in C: ``put``, ``admit``, ``get``, ``peek``,
        ``evict_table``, ``clear``, ``set_limit``, ``len()``, ``capacity``, ``limit``, ``usage``,
        ``hits``, ``misses``
        and ``evictions`` are the C object's (``native/blockcache.c``)."""

        def __init__(self, capacity_bytes: int) -> None:
            super().__init__(capacity_bytes)
            self.native_counters = module.Counters()

        def stats(self) -> dict[str, int]:
            return {"capacity": self.capacity, "limit": self.limit, "usage": self.usage,
                    "blocks": len(self),
                    "hits": self.total_hits, "misses": self.total_misses,
                    "evictions": self.evictions}

    return NativeBlockCache


NativeBlockCache: type[Any] | None = native_cache_class(accel.native) if accel.native is not None else None
"""The C-backed cache class when the compiled core is in use, else None."""

if TYPE_CHECKING:
    BlockCache = PyBlockCache
else:
    BlockCache = NativeBlockCache if NativeBlockCache is not None else PyBlockCache
