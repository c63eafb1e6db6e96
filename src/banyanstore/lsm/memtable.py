"""The memtable: recent writes of one keyspace, in memory, with every version.

Two implementations behind one interface; :data:`Memtable` names the one in use:

* :class:`NativeMemtable` (the compiled core, ``native/memtable.c``): keys and values
  copied into an arena of chunks, a hash index for point lookups, a sorted array of
  the keys built lazily (the new keys sorted with the GIL released) for scans and
  flushes, and the flush hand-off as one bytes buffer (lsm/flushbuf.py).  It charges
  the bytes it really uses (an arena entry plus the indexes' share: ~100 B less than
  the Python objects for a 16 B key), so ``memtable_size`` bounds real memory.
* :class:`PyMemtable` (pure Python, chosen by ``BANYANSTORE_PURE_PYTHON=1`` or when the
  extension is missing), described below.

PyMemtable's layout: ``dict[user_key, tuple | list]`` where a key's entries are *flat*
and ascending by version: ``(v1, value1)`` while the key has one version, then a list
``[v1, value1, v2, value2, ...]`` (``None`` is a tombstone).  A put is one dict lookup
plus one store of a new tuple or one ``list.extend`` (atomic under the GIL, so a
concurrent reader never sees half an entry).  The tuple is for the collector: a tuple
of an int and bytes is untracked at the first collection it meets, where a list stays
tracked, and every full collection walked every entry's list (at 1M puts the writer
spent about a fifth of its CPU in collections).  Sorted order is only needed by
scans and flushes, so keys are sorted lazily: new keys are remembered in
arrival order and merged into the sorted list on demand (Timsort merges the
two runs in C).

Range tombstones (``delete_range``) are kept beside the entries, in arrival order, as
``(start, end, version)`` in :attr:`Memtable.range_dels`; readers see them through
:meth:`Memtable.range_fragments` (lsm/rangedel.py), rebuilt only when one was added.

Readers take no lock: a reader at version ``v`` ignores every entry newer than
``v``, and the store publishes a version only after its entries are in the
memtable.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final

from .. import accel
from . import flushbuf
from .flushbuf import Columns, FlushEntries
from .rangedel import EMPTY_FRAGMENTS, Fragments, RangeDel

__all__ = ["Memtable", "PyMemtable", "NativeMemtable", "MISSING", "ENTRY_OVERHEAD", "SIZE_OVERHEAD"]

_first, _second = itemgetter(0), itemgetter(1)
_native = accel.native
_compiled = accel.load_native()  # NativeMemtable exists whenever the core is built

MISSING: Final = object()
"""Returned by :meth:`Memtable.get` when the memtable has no visible entry."""

ENTRY_OVERHEAD: Final = 230
"""Bytes PyMemtable charges per entry on top of key and value lengths: the measured CPython
3.11 cost of the key and value objects' headers, the version list, its int and the dict
slot (346 B for a 16 B key and 100 B value), so ``memtable_size`` bounds real memory.
A key's first version is held in a tuple now, ~30 B less than the list: the charge is
kept, so memtables switch where they did and hold the same entries.
Range tombstones are charged this way in both implementations."""

SIZE_OVERHEAD: Final = 16
"""Bytes ``approximate_range`` counts per entry (and range tombstone) on top of its key and
value (its two bounds): the version and the two lengths, as the flush hand-off encodes an
entry (lsm/flushbuf.py).  So ``approximate_size`` over memtables is a figure of what was
written, the same in both implementations -- not ``approx_bytes``, the memory each one
charges (an arena entry in C, Python objects in PyMemtable)."""


class _RangeTombstones:
    """The range tombstones beside a memtable's entries (both implementations): in
    arrival order as ``(start, end, version)``; charged to ``approx_bytes``."""

    if not TYPE_CHECKING:  # the slots are the subclasses'; mypy would take () as all of them
        __slots__ = ()
    range_dels: list[RangeDel]
    _fragments: tuple[int, Fragments]
    approx_bytes: int
    entries: int

    def add_range(self, start: bytes, end: bytes, version: int) -> int:
        """Record a range tombstone ``[start, end)`` at ``version``; returns the bytes
        charged.  REQUIRES: ``start < end``."""
        self.range_dels.append((start, end, version))
        charge = len(start) + len(end) + ENTRY_OVERHEAD
        self.approx_bytes += charge
        self.entries += 1
        return charge

    def range_fragments(self) -> Fragments:
        """The range tombstones as :class:`Fragments`, rebuilt after each new one (a
        reader racing a writer may rebuild too: the result is the same)."""
        n = len(self.range_dels)
        cached = self._fragments
        if cached[0] == n:
            return cached[1]
        frags = Fragments(self.range_dels[:n])
        self._fragments = (n, frags)
        return frags

    def sorted_range_dels(self) -> list[RangeDel]:
        """The range tombstones in table order: start ascending, version descending."""
        return sorted(self.range_dels, key=lambda r: (r[0], -r[2], r[1]))


class PyMemtable(_RangeTombstones):
    """Versioned entries of one keyspace, in Python objects.  Writers are serialised by
    the store."""

    __slots__ = ("_data", "_sorted", "_new_keys", "_sort_lock", "approx_bytes", "entries",
                 "range_dels", "_fragments")

    def __init__(self) -> None:
        self._data: dict[bytes, tuple[Any, ...] | list[Any]] = {}
        self._sorted: list[bytes] = []
        self._new_keys: list[bytes] = []
        self._sort_lock = threading.Lock()
        self.approx_bytes = 0
        self.entries = 0  # entries and range tombstones
        self.range_dels: list[RangeDel] = []
        self._fragments: tuple[int, Fragments] = (0, EMPTY_FRAGMENTS)

    def __len__(self) -> int:
        return self.entries

    # -- writes (REQUIRES: the store's write lock; versions strictly increase) --
    def add(self, key: bytes, version: int, value: bytes | None) -> int:
        """Record ``key`` at ``version``; returns the bytes charged."""
        data = self._data
        entry = data.get(key)
        if entry is None:
            data[key] = (version, value)
            self._new_keys.append(key)
        elif type(entry) is list:
            if entry[-2] == version:  # the same key twice in one batch: the last op wins
                entry[-1] = value
            else:
                entry += (version, value)
        elif entry[0] == version:
            data[key] = (version, value)
        else:  # a second version: the key's entries go to a list, extended in place
            data[key] = [*entry, version, value]
        charge = len(key) + ENTRY_OVERHEAD if value is None else len(key) + len(value) + ENTRY_OVERHEAD
        self.approx_bytes += charge
        self.entries += 1
        return charge

    # -- reads -------------------------------------------------------------------
    def get(self, key: bytes, version: int) -> object:
        """The newest value of ``key`` at or below ``version``; ``None`` for a
        tombstone; :data:`MISSING` if there is no such entry here."""
        lst = self._data.get(key)
        if lst is None:
            return MISSING
        i = len(lst) - 2
        while i >= 0:
            if lst[i] <= version:
                return lst[i + 1]
            i -= 2
        return MISSING

    def get_entry(self, key: bytes, version: int) -> tuple[int, bytes | None] | None:
        """Like :meth:`get` but returns ``(entry_version, value)`` or ``None``."""
        lst = self._data.get(key)
        if lst is None:
            return None
        i = len(lst) - 2
        while i >= 0:
            if lst[i] <= version:
                return lst[i], lst[i + 1]
            i -= 2
        return None

    def history(self, key: bytes, version: int) -> list[tuple[int, bytes | None]]:
        """Every entry of ``key`` at or below ``version``, newest first."""
        lst = self._data.get(key)
        if lst is None:
            return []
        pairs = list(zip(lst[0::2], lst[1::2], strict=True))
        pairs.reverse()
        return [p for p in pairs if p[0] <= version]

    def sorted_keys(self) -> list[bytes]:
        """All keys in ascending order (a list the caller must not modify)."""
        with self._sort_lock:
            n = len(self._new_keys)
            if n:
                fresh = self._new_keys[:n]
                del self._new_keys[:n]
                if _native is not None:  # sorts with the GIL released: writers keep going
                    fresh = _native.sort_keys(fresh)
                else:
                    fresh.sort()
                merged = self._sorted + fresh
                merged.sort()  # two sorted runs: Timsort merges them in linear time
                self._sorted = merged
            return self._sorted

    @property
    def data_bytes(self) -> int:
        """Bytes of the keys and values added, and of the range tombstones' bounds: what
        ``add`` and ``add_range`` charged, less ENTRY_OVERHEAD each (derived, so that
        ``add`` does no more work for it)."""
        return self.approx_bytes - ENTRY_OVERHEAD * self.entries

    def approximate_range(self, start: bytes | None, end: bytes | None) -> tuple[int, int]:
        """``(keys, bytes)`` in ``[start, end)``: the keys exactly; the bytes the range's
        share, by keys, of ``data_bytes + SIZE_OVERHEAD * entries`` -- every entry's key
        and value plus SIZE_OVERHEAD, every range tombstone's bounds plus SIZE_OVERHEAD --
        the same figure as NativeMemtable's (tests/lsm/test_memtable_native.py)."""
        keys = self.sorted_keys()
        if not keys:
            return 0, 0
        lo = 0 if start is None else bisect_left(keys, start)
        hi = len(keys) if end is None else bisect_left(keys, end)
        n = max(0, hi - lo)
        return n, (self.data_bytes + SIZE_OVERHEAD * self.entries) * n // len(keys)

    def visible_entries(self, keys: list[bytes], version: int) -> list[tuple[bytes, int, bytes | None]]:
        """``(key, entry_version, value)`` of the newest entry <= ``version`` for each
        of ``keys`` that has one, in the order of ``keys``."""
        data = self._data
        out: list[tuple[bytes, int, bytes | None]] = []
        append = out.append
        for k in keys:
            lst = data[k]
            if lst[-2] <= version:
                append((k, lst[-2], lst[-1]))
                continue
            i = len(lst) - 4
            while i >= 0:
                if lst[i] <= version:
                    append((k, lst[i], lst[i + 1]))
                    break
                i -= 2
        return out

    def flush_entries(self) -> FlushEntries:
        """What a flush hands the table builder: here the columns (lsm/flushbuf.py)."""
        return self.flush_columns()

    def flush_columns(self) -> Columns:
        """Every entry in table order as three parallel lists (keys, versions,
        values), built with C-level passes when no key has several versions.
        REQUIRES: the memtable is immutable (no more writes)."""
        keys = self.sorted_keys()
        if _native is not None:  # one pass in C instead of several map() passes
            return _native.flush_columns(self._data, keys)
        lists = list(map(self._data.__getitem__, keys))
        if max(map(len, lists), default=2) == 2:
            return keys, list(map(_first, lists)), list(map(_second, lists))
        out_k: list[bytes] = []
        out_v: list[int] = []
        out_x: list[bytes | None] = []
        for k, lst in zip(keys, lists, strict=True):
            if len(lst) == 2:
                out_k.append(k)
                out_v.append(lst[0])
                out_x.append(lst[1])
            else:
                out_k += [k] * (len(lst) // 2)
                out_v += lst[-2::-2]
                out_x += lst[-1::-2]
        return out_k, out_v, out_x


if _compiled is not None:
    _compiled.memtable_bind(MISSING)

    class NativeMemtable(_RangeTombstones, _compiled.Memtable):  # type: ignore[name-defined]
        """Versioned entries of one keyspace in the compiled core's arena (see the module
        docstring); the range tombstones stay in Python.  ``add``, ``get``,
        ``get_entry``, ``history``, ``sorted_keys`` (an immutable sequence of the keys,
        bytes, with a ``bisect_left`` method), ``visible_entries`` (fast when given a
        slice of ``sorted_keys()``), ``flush_piece``, ``flush_to_fd`` and ``freeze`` (after
        which adds raise RuntimeError) and ``len`` are C.  Writers are serialised by the store.

        >>> m = NativeMemtable()
        >>> m.add(b"k", 1, b"a") > 0, m.add(b"k", 2, None) > 0, m.add(b"j", 2, b"b") > 0
        (True, True, True)
        >>> m.get(b"k", 1), m.get(b"k", 2), m.get(b"k", 0) is MISSING, len(m)
        (b'a', None, True, 3)
        >>> list(m.sorted_keys()), m.visible_entries(m.sorted_keys(), 1)
        ([b'j', b'k'], [(b'k', 1, b'a')])
        >>> flushbuf.columns(m.flush_entries())
        ([b'j', b'k', b'k'], [2, 2, 1], [b'b', None, b'a'])
        """

        __slots__ = ("range_dels", "_fragments")

        def __init__(self) -> None:
            self.range_dels: list[RangeDel] = []
            self._fragments: tuple[int, Fragments] = (0, EMPTY_FRAGMENTS)

        def add_range(self, start: bytes, end: bytes, version: int) -> int:
            """As PyMemtable's, and ``data_bytes`` counts the bounds (C counts the entries')."""
            charge = super().add_range(start, end, version)
            self.data_bytes += len(start) + len(end)
            return charge

        def approximate_range(self, start: bytes | None, end: bytes | None) -> tuple[int, int]:
            """``(keys, bytes)`` in ``[start, end)``, as PyMemtable's: the keys exactly; the
            bytes the range's share, by keys, of ``data_bytes + SIZE_OVERHEAD * entries``
            (not of ``approx_bytes``: the two charge different memory)."""
            keys = self.sorted_keys()
            if not keys:
                return 0, 0
            lo = 0 if start is None else keys.bisect_left(start)
            hi = len(keys) if end is None else keys.bisect_left(end)
            n = max(0, hi - lo)
            return n, (self.data_bytes + SIZE_OVERHEAD * self.entries) * n // len(keys)

        def flush_entries(self) -> FlushEntries:
            """What a flush hands the table builder: one buffer, made piece by piece on
            demand (lsm/flushbuf.py).  Freezes the memtable."""
            self.freeze()  # now: the pieces are made later
            return flushbuf.Pieces(self.live_entries, self.flush_piece, self.flush_to_fd)

        def flush_buffer(self) -> bytes:
            """The flush buffer in one piece.  Freezes the memtable."""
            return flushbuf.Pieces(0, self.flush_piece).join()

        def flush_columns(self) -> Columns:
            """Every entry in table order as three parallel lists (keys, versions,
            values).  Freezes the memtable."""
            return flushbuf.columns(self.flush_buffer())
else:
    NativeMemtable = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    Memtable = PyMemtable
else:
    Memtable: Any = NativeMemtable if _native is not None else PyMemtable
