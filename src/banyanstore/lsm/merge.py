"""Merging tables: one pass over adjacent tables that writes one new table and
reclaims what no reader can still see.

Reclamation rules, per key (entries newest first):

* every entry at or above the *floor* ``F`` is kept (retained history);
* below ``F`` an entry is kept only if some *reader point* sees it: the floor
  itself and every live snapshot below it (``p`` sees entry ``e`` iff
  ``e.version <= p < version of the next newer entry``);
* when the merge includes the keyspace's oldest table (``bottom``), a kept
  tombstone below ``F`` with nothing older kept hides nothing and is dropped;
* entries older than the TTL floor are invisible to every read and dropped.

Range tombstones of the inputs (lsm/rangedel.py) take part as if each were a
point tombstone of every key it covers: for a covered key, the group gets a
stand-in ``(key, tombstone version, <range>)`` at its place among the key's
versions, so the rules above drop exactly the entries it hides from every
reader point; stand-ins are never written (the range tombstone stands for them).
The output keeps every range tombstone of the inputs -- it may hide entries of
older tables -- except, in a ``bottom`` merge, one below ``F`` (or past the TTL)
that hides none of the output's entries: nothing older exists anywhere then.

With the compiled core, a merge of tables without range tombstones runs in C
(native/mergebuild.c: the same rules, checks and table bytes, no Python object per
entry; tests/lsm/test_merge_native.py compares both); :func:`merge_entries` is the
pure-Python merge and the one for range tombstones.

This module is importable in a worker process: :func:`run_merge` takes only
picklable arguments and returns the new table's metadata.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from .. import accel
from ..errors import StoreClosedError
from ..sstable.format import MAX_VERSION
from ..sstable.meta import TableOrigin
from .iterators import merged_chunks, table_runs
from .rangedel import Fragments, RangeDel

__all__ = ["MergeSpec", "MergeRanges", "merge_entries", "reclaim", "run_merge", "merged_origin"]

_first = itemgetter(0)

Entry = tuple[bytes, int, Any]


@dataclass(frozen=True)
class MergeSpec:
    """What a merge needs to know; picklable for worker processes."""

    floor: int
    snapshots: tuple[int, ...] = ()  # live snapshot versions below ``floor``, ascending
    ttl_floor: int = 0
    bottom: bool = False
    origin: TableOrigin | None = None  # recorded in the output (sstable/meta.py)

    def reader_points(self) -> list[int]:
        return sorted(set(self.snapshots) | {self.floor})


def merged_origin(ks_id: int, name: str, inputs: Sequence[Any], floor: int) -> TableOrigin:
    """The origin of a merge's output: the versions its inputs stood for, together."""
    covers = [(o.covers_min, o.covers_max) if (o := t.meta.origin) is not None
              else (t.min_version, t.max_version) for t in inputs]
    return TableOrigin(ks_id, name, min(lo for lo, _ in covers), max(hi for _, hi in covers), floor)


def reclaim(group: Sequence[Entry], spec: MergeSpec, points: list[int]) -> list[Entry]:
    """The entries of one key (newest first) that must survive the merge."""
    floor, ttl_floor = spec.floor, spec.ttl_floor
    kept: list[Entry] = []
    newer = None  # version of the next newer entry
    for e in group:
        v = e[1]
        if v < ttl_floor:
            break  # this and everything older is past its TTL
        if v >= floor:
            kept.append(e)
        else:
            i = bisect_left(points, v)  # first reader point >= v
            if i < len(points) and (newer is None or points[i] < newer):
                kept.append(e)
        newer = v
    if spec.bottom:
        while kept and kept[-1][2] is None and kept[-1][1] < floor:
            kept.pop()
    return kept


_STAND_IN: Any = object()
"""The value of a range tombstone's stand-in entry inside a merge (never written)."""


class MergeRanges:
    """The range tombstones of a merge's inputs: stand-ins for :func:`reclaim`, and
    which of them the output must keep (known once every entry went through
    :meth:`note_kept`)."""

    def __init__(self, dels: Sequence[RangeDel], spec: MergeSpec) -> None:
        self.all = sorted(set(dels))
        self.fragments = Fragments(self.all)
        # Candidates to drop: in a bottom merge, below the floor, or past the TTL.
        droppable = [r for r in self.all
                     if r[2] < spec.ttl_floor or (spec.bottom and r[2] < spec.floor)]
        self._droppable = Fragments(droppable) if droppable else None
        self._needed: set[RangeDel] = set()

    def stand_ins(self, key: bytes, group: Sequence[Entry]) -> list[Entry]:
        """``group`` (one key, newest first) with the stand-ins of the tombstones
        covering ``key`` in place -- none where the key has an entry of that version
        (a write after the range tombstone in its batch)."""
        covering = self.fragments.covering_key(key)
        if not covering:
            return list(group)
        own = {e[1] for e in group}
        extra = [(key, v, _STAND_IN) for v in {r[2] for r in covering} if v not in own]
        return sorted([*group, *extra], key=lambda e: -e[1])

    def note_kept(self, key: bytes, version: int) -> None:
        """An entry the output keeps: droppable tombstones hiding it must stay."""
        if self._droppable is not None:
            for r in self._droppable.covering_key(key):
                if r[2] <= version:
                    break
                self._needed.add(r)

    def kept(self, spec: MergeSpec) -> list[RangeDel]:
        """The range tombstones the output keeps."""
        if self._droppable is None:
            return self.all
        drop = {r for cover in self._droppable.covering for r in cover} - self._needed
        return [r for r in self.all if r not in drop]


Cancelled = Callable[[], bool]
"""Asked before each chunk of a merge: True stops it with StoreClosedError (the store is
closing; see Compactor.stop)."""


def _check(cancelled: Cancelled | None) -> Callable[[], None] | None:
    """What both merges run between chunks or blocks: :data:`Cancelled` as a raise."""
    if cancelled is None:
        return None

    def check() -> None:
        if cancelled():
            raise StoreClosedError("merge cancelled: the store is closing")
    return check


def _chunks_until_cancelled(readers: Sequence[Any], cancelled: Cancelled | None) -> Iterator[list[Entry]]:
    """The merged chunks of ``readers``' entries, ``cancelled()`` asked before each one
    (a chunk is about a block's worth of entries per table: a check per entry would
    cost the merge's inner loop)."""
    check = _check(cancelled)
    sources = [_ordered_runs(r) for r in readers]
    for chunk in merged_chunks(sources, False):
        if check is not None:
            check()
        yield chunk


def _ordered_runs(reader: Any) -> Iterator[list[Entry]]:
    """``reader``'s runs for a merge, each checked to hold its keys in order after the
    run before it: a table out of order behind a good checksum (damage only the order
    tells) raises the CorruptionError of :meth:`TableReader.check_entries`, naming the file
    and block, as the compiled merge does (native/mergebuild.c).  Unchecked, the merge's
    sort of each chunk put the entries back in order and wrote the damage into a
    well-formed table, keys paired with other keys' values.  (Keys only, at C speed: a
    key's versions out of order reach the builder's check while both are kept.)"""
    last = None
    for run in table_runs(reader, None, None, False, fill_cache=False):
        keys = list(map(_first, run))
        if keys and ((last is not None and keys[0] < last) or keys != sorted(keys)):
            reader.check_entries()  # raises, naming the first entry out of order
        if keys:
            last = keys[-1]
        yield run


def _fits_u64(spec: MergeSpec) -> bool:
    """Whether the compiled merge takes ``spec``: its floors are u64 there, and at version
    exhaustion a floor is one past the last version (2**64)."""
    return spec.floor <= MAX_VERSION and spec.ttl_floor <= MAX_VERSION


def merge_entries(readers: Sequence[Any], spec: MergeSpec, ranges: MergeRanges | None = None,
                  cancelled: Cancelled | None = None) -> Iterator[Entry]:
    """Surviving entries of ``readers`` (newest table first) in internal order;
    ``ranges``: their range tombstones (see :class:`MergeRanges`); ``cancelled``: see
    :data:`Cancelled`."""
    if ranges is not None and ranges.all:
        yield from _merge_with_ranges(readers, spec, ranges, cancelled)
        return
    points = spec.reader_points()
    floor, ttl_floor, bottom = spec.floor, spec.ttl_floor, spec.bottom
    for chunk in _chunks_until_cancelled(readers, cancelled):
        n = len(chunk)
        i = 0
        while i < n:
            e = chunk[i]
            k = e[0]
            j = i + 1
            while j < n and chunk[j][0] == k:
                j += 1
            if j == i + 1:  # the common case: one version of the key
                v = e[1]
                if v >= ttl_floor and not (bottom and e[2] is None and v < floor):
                    yield e
            else:
                yield from reclaim(chunk[i:j], spec, points)
            i = j


def _merge_with_ranges(readers: Sequence[Any], spec: MergeSpec, ranges: MergeRanges,
                       cancelled: Cancelled | None) -> Iterator[Entry]:
    """:func:`merge_entries` where the inputs hold range tombstones: every key's group
    goes through :func:`reclaim` with its stand-ins, which are then left out."""
    points = spec.reader_points()
    for chunk in _chunks_until_cancelled(readers, cancelled):
        n = len(chunk)
        i = 0
        while i < n:
            k = chunk[i][0]
            j = i + 1
            while j < n and chunk[j][0] == k:
                j += 1
            for e in reclaim(ranges.stand_ins(k, chunk[i:j]), spec, points):
                if e[2] is not _STAND_IN:
                    ranges.note_kept(k, e[1])
                    yield e
            i = j


def run_merge(input_paths: list[str], output_path: str, options: Any, spec: MergeSpec) -> Any:
    """Merge the tables at ``input_paths`` into ``output_path`` (in this process or
    a worker).  Returns the builder's metadata, or None if nothing survived (no
    file is left behind then)."""
    from ..io.posix import PosixEnv
    from ..sstable.cache import BlockCache
    from ..sstable.reader import TableReader
    env = PosixEnv()
    cache = BlockCache(0)
    readers = [TableReader.open(env, p, cache) for p in input_paths]
    try:
        return build_merged(env, readers, output_path, options, spec)
    finally:
        for r in readers:
            r.close()


def build_merged(env: Any, readers: Sequence[Any], output_path: str, options: Any,
                 spec: MergeSpec, cancelled: Cancelled | None = None) -> Any:
    """:func:`run_merge` on open readers (in this thread); ``cancelled``: see
    :data:`Cancelled` (the partial output is removed then, as on any failure)."""
    from ..sstable.builder import TableBuilder
    builder = TableBuilder(env, output_path, options, spec.origin)
    ranges = MergeRanges([r for t in readers for r in t.range_dels], spec)
    try:
        try:
            if accel.native is not None and not ranges.all and _fits_u64(spec):
                builder.add_merged([r.data_payloads() for r in readers], [r.path for r in readers],
                                   spec.reader_points(), spec.floor, spec.ttl_floor, spec.bottom,
                                   _check(cancelled))
            else:
                builder.add_many(merge_entries(readers, spec, ranges, cancelled))
        except ValueError:
            # Damage behind a good checksum -- an input out of order, a version 0 -- reaches
            # the builder's checks (in both merges), whose ValueError names neither file
            # nor block: find the input that holds it.  No damaged input (the same version
            # of a key in two tables): the ValueError stands.
            for r in readers:
                r.check_entries()
            raise
        builder.add_range_dels(ranges.kept(spec))  # known once every entry went through
        if builder.entry_count == 0 and not builder.range_del_count:
            builder.abandon()
            return None
        return builder.finish()
    except BaseException:
        builder.abandon()
        raise
