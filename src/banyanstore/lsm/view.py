"""A keyspace's read view and the reads served from it.

A :class:`View` is an immutable triple (active memtable, immutable memtables,
tables), newest first.  Writers replace a keyspace's view as a whole when a
memtable is switched or a table is installed, so a reader that grabbed a view
sees one consistent set of sources for as long as it holds it -- no lock on
the read path.  Objects dropped from a view stay usable by readers still
holding the old view (POSIX keeps unlinked files readable through open
descriptors).

Range tombstones (lsm/rangedel.py): a view whose immutable memtables or tables
hold some keeps them as one :class:`Fragments` (``range_static``); the active
memtable's are read live.  Reads of a view with neither take their usual paths;
otherwise they find each key's newest entry as usual and drop it when a newer
range tombstone covers the key.  Such scans take the Python merge (the compiled
core does not know range tombstones; docs/native.md).
"""

from __future__ import annotations

import sys
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import xxhash

from .. import accel
from ..errors import KeyspaceNotFoundError, StoreClosedError
from .iterators import (
    Entry,
    Guard,
    cut_keys,
    guarded,
    guarded_runs,
    limited,
    memtable_head,
    memtable_runs,
    scan_merged,
    seek_merged,
    sticky,
    table_runs,
)
from .memtable import MISSING, Memtable
from .rangedel import Cover, Fragments, RangeDel

__all__ = ["View", "KeyspaceState", "EMPTY_VIEW", "DroppedView", "ClosedView"]

_hash = xxhash.xxh3_64_intdigest
_first = itemgetter(0)
_native = accel.native
_MergeScan = _native.MergeScan if _native is not None else None
SEEK_LIMIT = 128
"""Forward scans with at most this ``limit`` take the seek path (View._seek): their
cost is the setup.  Longer ones amortise it, and the generic merge keeps them lazy."""
GET_CHARGE_STEP = 64  # gets charged at a time (View.get_tick)
_ASK_EMPTY_MEMTABLE = _native is not None
"""Point reads ask the active memtable even when it is empty: the compiled memtable's get
is one C call, cheaper than reading its ``entries`` (a C member the interpreter does not
specialise: +4% a compiled get); the pure-Python one's is a Python call and a hash."""


class View:
    """Sources of one keyspace, newest first. Immutable once published, but for
    ``read_charge``: what reads paid for the view's many tables -- a scan or seek one
    for each table it positioned beyond the first, a get that reached the tables one
    when there are several (``GET_CHARGE_STEP`` gets at a time) -- which makes a merge
    due (lsm/compaction.py). A new view (a memtable switch, a flush, a merge) starts at
    0, so the charge is what reads paid since the keyspace last changed. Readers on
    several threads may lose an increment now and then (no lock on the read path): a
    heuristic, not a count anything relies on."""

    __slots__ = ("mem", "imms", "tables", "cores", "range_static", "read_charge",
                 "many_tables", "get_tick")

    def __init__(self, mem: Memtable, imms: tuple[Memtable, ...], tables: tuple[Any, ...]) -> None:
        self.mem = mem
        self.imms = imms
        self.tables = tables
        self.read_charge = 0
        self.many_tables = len(tables) > 1
        # Gets charge GET_CHARGE_STEP at a time, counting down a small int: a charge per
        # get would build an int object each time (a tenth of a microsecond of a get).
        self.get_tick = GET_CHARGE_STEP
        # The compiled core's lookup state of every table (None: the Python path), so
        # one C call answers a point read across all tables (see accel.py).
        cores = tuple(getattr(t, "core", None) for t in tables) if _native is not None else (None,)
        self.cores: tuple[Any, ...] | None = cores if None not in cores else None
        static: list[RangeDel] = [r for m in imms for r in m.range_dels]
        for t in tables:
            static += getattr(t, "range_dels", ())
        self.range_static: Fragments | None = Fragments(static) if static else None

    def cover(self, version: int) -> Cover | None:
        """The range tombstones a read at ``version`` applies (None: there are none)."""
        if self.range_static is None and not self.mem.range_dels:
            return None  # the common case, on every scan: no list, no Cover
        parts = [] if self.range_static is None else [self.range_static]
        if self.mem.range_dels:
            parts.append(self.mem.range_fragments())
        return Cover(parts, version) if parts else None

    def range_dels(self) -> list[RangeDel]:
        """Every range tombstone of the view (any version), unordered."""
        out = list(self.mem.range_dels)
        for m in self.imms:
            out += m.range_dels
        for t in self.tables:
            out += getattr(t, "range_dels", ())
        return out

    # -- point reads --------------------------------------------------------------
    def get(self, key: bytes, version: int, floor: int) -> bytes | None:
        """The value of ``key`` at ``version``; entries older than ``floor`` (TTL)
        count as absent."""
        mem = self.mem
        if self.range_static is not None or mem.range_dels:
            return self._get_covered(key, version, floor)
        if floor:
            entry = self.get_entry(key, version)
            return entry[1] if entry is not None and entry[0] >= floor else None
        # An empty memtable (a store reopened, or one whose writes were all flushed: every
        # read after compact()) is not asked: its lookup is a call and the key's hash.  A
        # write counts itself in ``entries`` before its version is published, so one a
        # read at ``version`` must see is never missed.
        if _ASK_EMPTY_MEMTABLE or mem.entries:
            r = mem.get(key, version)
            if r is not MISSING:
                return r  # type: ignore[return-value]
        for m in self.imms:
            r = m.get(key, version)
            if r is not MISSING:
                return r  # type: ignore[return-value]
        if not self.tables:
            return None
        if self.many_tables:
            tick = self.get_tick - 1
            if tick:
                self.get_tick = tick
            else:
                self.get_tick = GET_CHARGE_STEP
                self.read_charge += GET_CHARGE_STEP
        cores = self.cores
        if cores is not None:
            return _native.tables_get(cores, key, version)  # type: ignore[union-attr]
        h = _hash(key)
        for t in self.tables:
            if t.min_version > version or key < t.smallest_key or key > t.largest_key:
                continue
            found, value, _v = t.probe(key, version, h)
            if found:
                return value
        return None

    def _get_covered(self, key: bytes, version: int, floor: int) -> bytes | None:
        """:meth:`get` where range tombstones exist: the newest entry, unless one covers it."""
        entry = self.get_entry(key, version)
        if entry is None or entry[1] is None or entry[0] < floor:
            return None
        cover = self.cover(version)
        if cover is not None and cover.hides(key, entry[0]):
            return None
        return entry[1]

    def get_entry(self, key: bytes, version: int) -> tuple[int, bytes | None] | None:
        """``(entry_version, value)`` of the newest entry <= ``version``, or None
        (range tombstones not applied: see :meth:`cover`)."""
        mem = self.mem
        if _ASK_EMPTY_MEMTABLE or mem.entries:  # (an empty memtable is not asked, as in get)
            e = mem.get_entry(key, version)
            if e is not None:
                return e
        for m in self.imms:
            e = m.get_entry(key, version)
            if e is not None:
                return e
        cores = self.cores
        if cores is not None:
            found, value, v = _native.tables_entry(cores, key, version)  # type: ignore[union-attr]
            return (v, value) if found else None
        h = _hash(key)
        for t in self.tables:
            if t.min_version > version or key < t.smallest_key or key > t.largest_key:
                continue
            found, value, v = t.probe(key, version, h)
            if found:
                return v, value
        return None

    def multi_get(self, keys: Sequence[bytes], version: int, floor: int, env: Any) -> list[bytes | None]:
        """Values of ``keys``.  Memtables first; then every table block any remaining
        key may need is located (fences, bloom filter, index) and all of them are
        fetched with ONE batched read -- where ``nonblocking``/``io_uring`` serve the
        batch concurrently -- and each key is resolved newest table first."""
        out: list[Any] = [None] * len(keys)
        cover = self.cover(version)
        if self.imms or self.mem.entries:
            pending = self._memtables_get(keys, version, floor, cover, out)
        else:  # no memtable holds an entry: every key goes to the tables (as in get)
            pending = list(range(len(keys)))
        if not pending or not self.tables:
            return out
        if self.many_tables:
            self.read_charge += len(pending)
        cores = self.cores
        if cores is not None:
            # The compiled core: the plan, the cache hits, ONE env.read_batch for every miss,
            # and the lookups -- one call for the whole batch (docs/native.md).
            found = _native.tables_multi_get(cores, [keys[i] for i in pending],  # type: ignore[union-attr]
                                             version, env.read_batch)
            for i, (ok, value, v) in zip(pending, found, strict=True):
                if ok and v >= floor and (cover is None or not cover.hides(keys[i], v)):
                    out[i] = value
            return out
        tables = [t for t in self.tables if t.min_version <= version]
        if not tables:
            return out
        from ..sstable.reader import read_blocks  # the table layer's batched block loader
        # For each key, the first (newest) table whose fences, filter and index say
        # it may hold the key: that table's block decides unless the filter lied.
        where: list[tuple[int, int, Any, int]] = []  # (key index, table index, table, block)
        for i in pending:
            k = keys[i]
            h = _hash(k)
            for ti, t in enumerate(tables):
                if k < t.smallest_key or k > t.largest_key:
                    continue
                b = t.probe_block(k, version, h)
                if b >= 0:
                    where.append((i, ti, t, b))
                    break
        requests = list(dict.fromkeys((t, b) for _, _, t, b in where))
        blocks = dict(zip(requests, read_blocks(env, requests), strict=True))
        for i, ti, t, b in where:
            found, value, v = t.lookup_in_block(blocks[(t, b)], keys[i], version)
            if not found:  # a filter false positive: ask the older tables one by one
                e = _first_entry(tables[ti + 1:], keys[i], version)
                if e is None:
                    continue
                v, value = e
            if v >= floor and (cover is None or not cover.hides(keys[i], v)):
                out[i] = value
        return out

    def _memtables_get(self, keys: Sequence[bytes], version: int, floor: int, cover: Cover | None,
                       out: list[Any]) -> list[int]:
        """:meth:`multi_get`'s first step: each key the memtables answer goes into ``out``;
        returns the indexes of the others."""
        pending: list[int] = []
        mem, imms = self.mem, self.imms
        for i, k in enumerate(keys):
            e = mem.get_entry(k, version)
            if e is None:
                for m in imms:
                    e = m.get_entry(k, version)
                    if e is not None:
                        break
            if e is None:
                pending.append(i)
            elif e[0] >= floor and (cover is None or not cover.hides(k, e[0])):
                out[i] = e[1]
        return pending

    def history(self, key: bytes, version: int, floor: int = 0,
                points: Sequence[int] = ()) -> list[tuple[int, bytes | None]]:
        """Every retained entry of ``key`` at or below ``version``, newest first; a
        range tombstone covering ``key`` shows as ``(its version, None)`` unless the
        key has an entry of that version (written after it in its batch).

        Below the history ``floor``, merges keep of each key only what a read at one of
        the pinned versions ``points``, or just below the floor, sees; the key's own
        entry that hid a range tombstone of its version may be gone while the range
        tombstone stays (other keys need it).  So a range tombstone below the floor
        shows only where such a read sees it -- elsewhere it would be a delete the key
        never had."""
        entries = self.mem.history(key, version)
        for m in self.imms:
            entries += m.history(key, version)
        for t in self.tables:
            if key < t.smallest_key or key > t.largest_key or t.min_version > version:
                continue
            entries += [e for e in t.history(key) if e[0] <= version]
        if self.range_static is not None or self.mem.range_dels:
            own = {e[0] for e in entries}
            covering = [(v, None) for v in {r[2] for r in self.range_dels()
                                            if r[0] <= key < r[1] and r[2] <= version}
                        if v not in own]
            if floor and any(v < floor for v, _ in covering):
                covering = _seen_below_floor(entries, covering, floor, points)
            entries += covering
        entries.sort(key=lambda e: -e[0])
        # One entry per version: a read-only store's memtables may still hold copies of
        # entries a flush has since put in its tables (lsm/catchup.py keeps them while
        # they also hold newer writes); a writer's sources never share a version.
        return [e for i, e in enumerate(entries) if i == 0 or e[0] != entries[i - 1][0]]

    def scan(self, start: bytes | None, end: bytes | None, version: int, floor: int,
             reverse: bool, limit: int | None, guard: Guard, keys_only: bool = False,
             skip: int = 0) -> Iterator[Any]:
        """``(key, value)`` of the live keys of ``[start, end)`` at ``version`` (only the
        keys with ``keys_only``, which saves creating the values on the native path);
        ``guard`` raises once the reader's store or snapshot is closed (iterators.py).
        ``skip`` bytes are cut off every key yielded (REQUIRES: every key of the bounds
        has them, a prefix's)."""
        cores = self.cores
        # (no range tombstones: what ``self.cover(version) is None`` says, without the call)
        native = cores is not None and self.range_static is None and not self.mem.range_dels
        if skip and not native:
            rows = self.scan(start, end, version, floor, reverse, limit, guard, keys_only)
            return cut_keys(rows, skip, keys_only)
        if keys_only and not native:  # the pairs' scan, which charges the view
            # (map, not a generator: it asks a scan that raised again, which raises again)
            return map(_first, self.scan(start, end, version, floor, reverse, limit, guard))
        if self.many_tables:
            self.read_charge += len(self.tables) - 1
        if cores is not None and native:  # (cores narrowed for the type checker)
            # The compiled core merges the tables straight from their blocks (and the
            # memtables' runs) with visibility, and yields pre-built tuples; the guard
            # runs per memtable run, and the core runs it every 16 to 1024 entries (once
            # per entry would cost a fifth of a scan) -- the core is the iterator, no Python layer per entry.
            sources: Sequence[Any] = cores  # no memtable entries (e.g. just opened or flushed)
            if self.mem.entries or self.imms:
                sources = [*(guarded_runs(memtable_runs(m, start, end, version, reverse), guard)
                             for m in (self.mem, *self.imms) if m.entries), *cores]
            if skip:  # (the compiled merge makes each key from the bytes after the prefix)
                return _MergeScan(sources, start, end, version, floor,  # type: ignore[misc]
                                  reverse, limit, keys_only, self.tables, guard, skip)
            return _MergeScan(sources, start, end, version, floor,  # type: ignore[misc]
                              reverse, limit, keys_only, self.tables, guard)
        if limit is not None and limit >= sys.maxsize:
            # No scan reaches it, and itertools.islice takes no larger one: it is no limit
            # (the compiled core reads it so itself).
            limit = None
        cover = self.cover(version)
        tables = self._scan_tables(start, end, version)
        if (len(tables) == 1 and cover is None and not self.mem.entries and not self.imms
                and _visible_whole(tables[0], version, floor)):
            return _plain_scan(tables[0], start, end, reverse, limit, guard)
        if limit is not None and limit <= SEEK_LIMIT and not reverse:
            return self._seek(start, end, version, floor, limit, guard, cover, tables)
        if (len(tables) > 1 and cover is None and not self.mem.entries and not self.imms
                and _all_visible_whole(tables, version, floor)):
            short = _short_plain_scan(tables, start, end, reverse, limit, guard)
            if short is not None:
                return short
        runs: list[Iterable[list[Entry]]] = [memtable_runs(m, start, end, version, reverse)
                                             for m in (self.mem, *self.imms) if m.entries]
        runs += [table_runs(t, start, end, reverse) for t in tables]
        return scan_merged(runs, version, floor, reverse, limit, guard, cover)

    def _seek(self, start: bytes | None, end: bytes | None, version: int, floor: int,
              limit: int, guard: Guard, cover: Cover | None,
              tables: list[Any]) -> Iterator[tuple[bytes, bytes]]:
        """A forward scan of at most ``limit`` keys (a seek) over the memtables and
        ``tables`` (``_scan_tables``): every source hands its first entries over directly,
        with no generator per source unless the first chunk falls short.  REQUIRES:
        ``0 <= limit <= SEEK_LIMIT`` (the heads are read eagerly, at the call)."""
        if limit == 0 or (start is not None and end is not None and start >= end):
            return iter(())
        n = limit + 1 + (limit >> 2)  # per head: limit keys past the edge, room for old versions
        heads = [memtable_head(m, start, end, version, n)
                 for m in (self.mem, *self.imms) if m.entries]
        heads += [t.seek_head(start, end, n) for t in tables]
        if not heads:
            return iter(())
        return seek_merged(heads, version, floor, limit, guard, cover)

    # -- estimates ------------------------------------------------------------------
    def approximate(self, start: bytes | None, end: bytes | None) -> tuple[int, int]:
        """``(keys, bytes)`` of ``[start, end)`` estimated from metadata, no block read:
        see ``Keyspace.approximate_count`` / ``approximate_size`` for the accuracy."""
        keys = size = 0
        for m in (self.mem, *self.imms):
            k, b = m.approximate_range(start, end)
            keys, size = keys + k, size + b
        for t in self.tables:
            k, b = t.approximate_range(start, end)
            keys, size = keys + k, size + b
        return keys, size

    def _scan_tables(self, start: bytes | None, end: bytes | None, version: int) -> list[Any]:
        """The tables that may hold entries of ``[start, end)`` visible at ``version``."""
        return [t for t in self.tables
                if t.min_version <= version
                and (end is None or t.smallest_key < end)
                and (start is None or t.largest_key >= start)]


def _seen_below_floor(entries: list[tuple[int, bytes | None]],
                      covering: list[tuple[int, None]], floor: int,
                      points: Sequence[int]) -> list[tuple[int, None]]:
    """Of the range tombstones ``covering`` a key, those at or above ``floor`` and those
    below it that a read at one of ``points`` or just below the floor sees (the newest of
    the key's versions at or below that point; ``entries`` are the key's own)."""
    versions = sorted({v for v, _ in entries} | {v for v, _ in covering})
    seen = set()
    for p in (*points, floor - 1):
        i = bisect_right(versions, p)
        if i:
            seen.add(versions[i - 1])
    return [e for e in covering if e[0] >= floor or e[0] in seen]


def _visible_whole(table: Any, version: int, floor: int) -> bool:
    """Whether a read at ``version`` with TTL ``floor`` sees every entry of ``table`` (a
    plain one, TableReader.plain: one entry a key, no tombstones, all versions in reach)."""
    return table.plain and table.max_version <= version and table.min_version >= floor


def _all_visible_whole(tables: Sequence[Any], version: int, floor: int) -> bool:
    """:func:`_visible_whole` of every table, in one loop (a generator and a call a table
    cost a cached ts-query 1%)."""
    for t in tables:
        if not (t.plain and t.max_version <= version and t.min_version >= floor):
            return False
    return True


def _plain_scan(table: Any, start: bytes | None, end: bytes | None, reverse: bool,
                limit: int | None, guard: Guard) -> Iterator[tuple[bytes, bytes]]:
    """A scan of a table :func:`_visible_whole` with no other source (a compacted store):
    its pairs as the blocks hold them, with no merge and no visibility pass (a third of a
    pure-Python scan's time per entry).  REQUIRES: ``table`` from ``_scan_tables``."""
    if limit == 0 or (start is not None and end is not None and start >= end):
        return iter(())
    if limit is not None and limit <= SEEK_LIMIT and not reverse:
        return guarded(table.seek_pairs(start, end, limit), guard)
    return sticky(limited(guarded_runs(table.scan_pairs(start, end, reverse), guard), limit))


def _short_plain_scan(tables: Sequence[Any], start: bytes | None, end: bytes | None,
                      reverse: bool, limit: int | None,
                      guard: Guard) -> Iterator[tuple[bytes, bytes]] | None:
    """A scan of several tables :func:`_visible_whole` with no other source, when each
    table's range lies in a block or two (a time series' window over every table): each
    table's pairs as its blocks hold them, put in order by :func:`_union`, with no merge
    rounds and no visibility pass per entry.  None when a table's range is longer (the blocks
    read so far stay cached for the merge that follows).  REQUIRES: ``tables`` from
    ``_scan_tables``, newest first."""
    if limit == 0:
        return iter(())
    runs: list[list[tuple[bytes, bytes]]] = []
    for t in tables:
        got = t.short_pairs(start, end)  # (a new list, ascending, one pair a key)
        if got is None:
            return None
        if got:
            runs.append(got)
    pairs = runs[0] if len(runs) == 1 else _union(runs)
    if reverse:
        pairs.reverse()
    if limit is not None:
        del pairs[limit:]
    return sticky(guarded_runs((pairs,), guard))


def _union(runs: list[list[tuple[bytes, bytes]]]) -> list[tuple[bytes, bytes]]:
    """The pairs of several tables' ``runs`` (ascending, one pair a key; newest table
    first) in key order, each key's newest pair only.

    A time series' window over tables flushed one after another: each table holds a later
    stretch of time, so the runs lie one after another in key order.  Then ordering the
    runs by their first key and checking that each ends before the next begins replaces
    sorting every pair and hashing every key for duplicates (cachegrind: 6.4% of a cached
    ts-query's instructions over four tables).  Overlapping runs take the full sort."""
    # (sorted by the runs themselves: lists of pairs compare by their first pair, a key of
    # its own in each unless two runs overlap -- which the check below then finds -- and a
    # loop, not all() of a generator: no Python call a run)
    if not runs:
        return []
    ordered = sorted(runs)
    last = ordered[0][-1][0]
    for run in ordered[1:]:
        if not last < run[0][0]:
            break
        last = run[-1][0]
    else:
        return list(chain.from_iterable(ordered))
    pairs = list(chain.from_iterable(runs))
    pairs.sort(key=_first)  # stable: a newer table's pair first within a key
    if len(set(map(_first, pairs))) < len(pairs):
        # Tables sharing a key: each key's first pair (the newest) is the one seen.  A
        # dict keeps the last value given for a key, hence built from the end.
        pairs = list(dict(reversed(pairs)).items())
        pairs.reverse()
    return pairs


def _first_entry(tables: Sequence[Any], key: bytes, version: int) -> tuple[int, bytes | None] | None:
    h = _hash(key)
    for t in tables:
        if key < t.smallest_key or key > t.largest_key:
            continue
        found, value, v = t.probe(key, version, h)
        if found:
            return v, value
    return None


EMPTY_VIEW = View(Memtable(), (), ())
"""The view of a keyspace that holds nothing (never written to)."""


class DroppedView(View):
    """The view of a dropped keyspace: every read through a handle kept from before the
    drop raises KeyspaceNotFoundError (the live read path pays nothing for the check).
    Its memtable only takes writes that raced with the drop; nobody reads them."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        super().__init__(Memtable(), (), ())
        self.message = message

    def _gone(self) -> Any:
        raise KeyspaceNotFoundError(self.message)

    def get(self, *args: Any) -> Any:
        return self._gone()

    def get_entry(self, *args: Any) -> Any:
        return self._gone()

    def multi_get(self, *args: Any) -> Any:
        return self._gone()

    def history(self, *args: Any) -> Any:
        return self._gone()

    def scan(self, *args: Any) -> Any:
        return self._gone()

    def approximate(self, *args: Any) -> Any:
        return self._gone()


class ClosedView(DroppedView):
    """The view of every keyspace of a closed store (``Tree.close_tables``): reads that
    pick it up raise StoreClosedError, and the closed store holds no table or memtable
    (a retired table's descriptor goes once no reader holds it, io/pread.py)."""

    __slots__ = ()

    def _gone(self) -> Any:
        raise StoreClosedError(self.message)


class KeyspaceState:
    """A keyspace inside the store: its id, name, TTL and current view.  Once
    ``Store.drop_keyspace`` removed it, ``dropped`` is the message of the error its
    handles raise (and its view a DroppedView); None while it lives."""

    __slots__ = ("id", "name", "view", "ttl", "dropped")

    def __init__(self, ks_id: int, name: str, view: View, ttl: float | None = None) -> None:
        self.id = ks_id
        self.name = name
        self.view = view
        self.ttl = ttl
        self.dropped: str | None = None

    def drop(self, message: str) -> View:
        """Mark the keyspace dropped; returns the view it had (for reclaiming its tables)."""
        old = self.view
        self.dropped = message
        self.view = DroppedView(message)
        return old
