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

This module is importable in a worker process: :func:`run_merge` takes only
picklable arguments and returns the new table's metadata.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..sstable.meta import TableOrigin
from .iterators import _chunks, _Source, table_runs

__all__ = ["MergeSpec", "merge_entries", "reclaim", "run_merge", "merged_origin"]

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


def merge_entries(readers: Sequence[Any], spec: MergeSpec) -> Iterator[Entry]:
    """Surviving entries of ``readers`` (newest table first) in internal order."""
    points = spec.reader_points()
    floor, ttl_floor, bottom = spec.floor, spec.ttl_floor, spec.bottom
    sources = [_Source(table_runs(r, None, None, False, fill_cache=False)) for r in readers]
    for chunk in _chunks(sources, False):
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
                 spec: MergeSpec) -> Any:
    from ..sstable.builder import TableBuilder
    builder = TableBuilder(env, output_path, options, spec.origin)
    try:
        builder.add_many(merge_entries(readers, spec))
        if builder.entry_count == 0:
            builder.abandon()
            return None
        return builder.finish()
    except BaseException:
        builder.abandon()
        raise
