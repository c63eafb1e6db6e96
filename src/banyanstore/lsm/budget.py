"""One memory budget for the block cache and the memtables.

A store holds data in memory in two places: decoded blocks in the block cache, and the
memtables -- the active ones filling, and the sealed ones waiting for their flush.  Sized
apart, both can be full at once: a store that served reads (a full 64 MiB cache) and
then takes a burst of writes keeps that cache *and* up to ``max_immutable_memtables +
1`` memtables.  With ``memtables_share_cache`` (the default) the memtables' bytes are
charged to the cache, as RocksDB's write buffer manager can charge them to its block
cache: while memtables grow, the cache gives up its oldest blocks (CLOCK order) so that
both together stay within ``block_cache_size`` -- down to a floor of a
``FLOOR_PART``-th of it, which the cache keeps whatever the memtables hold, so reads
during heavy writes keep a working set.  When a flush retires a memtable the cache may
grow again.  Memtables are never limited by the cache (that is what
``memtable_size`` and ``max_immutable_memtables`` do).

Blocks freed this way are the program's heap, which malloc keeps resident for reuse
(heaptrim.py) while the memtables' arenas are mapped apart: so every ``TRIM_EVERY``
bytes of evicted blocks, the freed heap goes back to the OS.

The writer reports its active memtables' charge at steps of a sixteenth of
``memtable_size``, at most 1 MiB (lsm/writer.py), the flusher the bytes of the memtables it holds
(lsm/flush.py).

>>> from banyanstore.sstable.cache import PyBlockCache
>>> cache = PyBlockCache(64 << 20)
>>> budget = MemoryBudget(cache)
>>> budget.set_active(40 << 20)
>>> cache.limit >> 20
24
>>> budget.set_sealed(64 << 20)
>>> cache.limit >> 20
16
>>> budget.set_active(0); budget.set_sealed(0)
>>> cache.limit >> 20
64
"""

from __future__ import annotations

import threading
from typing import Any

from .. import heaptrim

__all__ = ["MemoryBudget", "FLOOR_PART", "TRIM_EVERY"]

FLOOR_PART = 4
"""The cache keeps at least this part of its capacity whatever the memtables hold."""
TRIM_EVERY = heaptrim.TRIM_EVERY
"""Bytes of blocks given up between two returns of freed heap to the OS."""


class MemoryBudget:
    """Charges memtable bytes to a block cache (see the module docstring).  Thread-safe:
    the writer and the flusher report from their own threads."""

    __slots__ = ("_cache", "_floor", "_active", "_sealed", "_untrimmed", "_lock")

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self._floor = cache.capacity // FLOOR_PART
        self._active = 0
        self._sealed = 0
        self._untrimmed = 0
        self._lock = threading.Lock()

    @property
    def memtable_bytes(self) -> int:
        """The memtable bytes charged now (active and sealed)."""
        return self._active + self._sealed

    def set_active(self, nbytes: int) -> None:
        """The active memtables hold ``nbytes`` now."""
        with self._lock:
            self._active = nbytes
            self._apply_locked()

    def set_sealed(self, nbytes: int) -> None:
        """The sealed memtables (awaiting or in a flush) hold ``nbytes`` now."""
        with self._lock:
            self._sealed = nbytes
            self._apply_locked()

    def _apply_locked(self) -> None:
        """The cache's limit for the current charge.  REQUIRES: ``_lock`` held."""
        capacity = self._cache.capacity
        limit = max(capacity - self._active - self._sealed, self._floor)
        if limit == self._cache.limit:
            return
        self._untrimmed += self._cache.set_limit(limit)
        if self._untrimmed >= TRIM_EVERY:
            self._untrimmed = 0
            heaptrim.return_free_memory()
