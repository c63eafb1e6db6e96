"""Giving freed heap memory back to the operating system when a store closes.

A store's block cache, table indexes and read buffers are many small and mid-sized
allocations (a cached block is one object of about ``block_size`` bytes), which glibc's
malloc serves from its heap and its per-thread arenas.  When the store closes they are
freed, but malloc keeps freed memory for reuse: it shrinks the main heap only from its
top, and only when nothing live sits above the free space, and it never returns holes
inside an arena.  One small object allocated after the cache filled -- by the program,
not the store -- pins everything below it.  So a program that closed a store kept its
whole block cache resident: in ``benchmarks/bench_store.py`` at 1M keys about 80 MB of
freed heap stayed resident after the read store closed, and the next store's memtables
grew on top of it (the run's peak RSS).

``malloc_trim(0)`` walks every arena and returns the pages of every free chunk
(``madvise(MADV_DONTNEED)``), wherever they are.  It costs a few milliseconds for a
heap of that size, so it runs at the store's few big releases, never on the hot paths:
when a store closes; when a merge's inputs leave (lsm/tree.py: their cached blocks are
evicted, up to the whole cache); and on the flusher thread as each flush begins, when
the process holds the most (lsm/flush.py).  In ``bench_store.py`` at 1M keys the calls
took 0.1-10 ms.  It exists in glibc
only; elsewhere (musl, other systems) :func:`return_free_memory` does nothing.  The
call goes through :mod:`ctypes`, which releases the interpreter lock meanwhile, so the
pure-Python engine and the compiled core share it.

>>> isinstance(return_free_memory(), bool)
True
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

__all__ = ["return_free_memory", "TRIM_EVERY"]

TRIM_EVERY = 16 << 20
"""Bytes freed (flushed memtables, evicted blocks) between two calls, for callers that
free memory in many small steps."""

_lookup_lock = threading.Lock()
_malloc_trim: Callable[[int], int] | None = None
_looked_up = False


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``int malloc_trim(size_t pad)``, or None where the C library has none."""
    try:
        # The process's own symbols, the C library's among them: no ctypes.util lookup,
        # which runs ldconfig and costs 1.6 MiB of imports.
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    found: Callable[[int], int] = trim
    return found


def return_free_memory() -> bool:
    """Return the free pages of every malloc arena to the operating system.  True if
    the C library has ``malloc_trim`` (glibc), False where this does nothing.  Safe
    from any thread (malloc takes its arenas' locks)."""
    global _malloc_trim, _looked_up
    if not _looked_up:
        with _lookup_lock:
            if not _looked_up:
                _malloc_trim = _find_malloc_trim()
                _looked_up = True
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
