"""Range tombstones: what ``delete_range(start, end)`` writes, and how reads find them.

A range tombstone ``(start, end, version)`` of a keyspace hides every entry
``(key, v)`` of that keyspace with ``start <= key < end`` and ``v < version``
from reads at ``version`` or later.  Reads at an older version do not see it, so
they still see the keys; entries written at ``version`` itself or later are not
hidden (a batch's own puts after its ``delete_range``: lsm/batch.py drops the
batch's *earlier* writes that a later range tombstone of it covers).

Where they live: one WAL entry (kind 3, lsm/wal.py), one item of the memtable's
``range_dels`` list, and a table's range-tombstone block (docs/format/sstable.md,
format version 3).  A merge keeps them and drops what they hide only where no
reader can see it (lsm/merge.py).

How reads find them cheaply.  A read first finds a key's newest entry at the
read version the usual way (memtables, tables, the compiled core), then asks
whether a range tombstone newer than that entry covers the key.  To answer in
one ``bisect``, a set of range tombstones is cut into :class:`Fragments`:
disjoint, ascending key intervals, each with the versions of the tombstones
covering all of it, newest first.  A view holds one :class:`Fragments` for its
immutable memtables and tables together (built when the view is made, i.e.
after a flush or merge, never per read) and one per active memtable (rebuilt
when a ``delete_range`` was added).  A view without range tombstones has none:
its reads test one attribute and take their old paths unchanged.

>>> f = Fragments([(b"b", b"d", 5), (b"c", b"f", 7)])
>>> [(f.starts[i], f.ends[i], f.versions[i]) for i in range(len(f.starts))]
[(b'b', b'c', (5,)), (b'c', b'd', (7, 5)), (b'd', b'f', (7,))]
>>> f.newest(b"c", 6), f.newest(b"c", 9), f.newest(b"a", 9), f.newest(b"f", 9)
(5, 7, 0, 0)
>>> Cover([f], 6).hides(b"c", 4), Cover([f], 6).hides(b"c", 5)
(True, False)
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

__all__ = ["RangeDel", "Fragments", "Cover", "EMPTY_FRAGMENTS", "check_range"]

RangeDel = tuple[bytes, bytes, int]
"""``(start, end, version)``: hides keys ``start <= key < end`` older than ``version``."""


class Fragments:
    """A set of range tombstones cut into disjoint key intervals (immutable).

    ``[starts[i], ends[i])`` is covered by the tombstones whose versions are
    ``versions[i]`` (newest first) -- the tombstones themselves are ``covering[i]``,
    newest first; keys outside every interval are covered by none.
    """

    __slots__ = ("starts", "ends", "versions", "covering", "count")

    def __init__(self, dels: Iterable[RangeDel]) -> None:
        ordered = sorted(dels)
        self.count = len(ordered)
        bounds = sorted({b for s, e, _v in ordered for b in (s, e)})
        starts: list[bytes] = []
        ends: list[bytes] = []
        versions: list[tuple[int, ...]] = []
        covering: list[tuple[RangeDel, ...]] = []
        active: list[RangeDel] = []
        nxt = 0
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            while nxt < len(ordered) and ordered[nxt][0] <= lo:
                active.append(ordered[nxt])
                nxt += 1
            # every bound is some tombstone's start or end, so one reaching past lo covers [lo, hi)
            active = [d for d in active if d[1] > lo]
            if not active:
                continue
            cover = tuple(sorted(set(active), key=lambda d: (-d[2], d[0], d[1])))
            if ends and ends[-1] == lo and covering[-1] == cover:
                ends[-1] = hi
            else:
                starts.append(lo)
                ends.append(hi)
                covering.append(cover)
                versions.append(tuple(sorted({d[2] for d in cover}, reverse=True)))
        self.starts, self.ends, self.versions, self.covering = starts, ends, versions, covering

    def __bool__(self) -> bool:
        return self.count > 0

    def covering_key(self, key: bytes) -> tuple[RangeDel, ...]:
        """The tombstones covering ``key`` (any version), newest first."""
        i = bisect_right(self.starts, key) - 1
        if i < 0 or key >= self.ends[i]:
            return ()
        return self.covering[i]

    def newest(self, key: bytes, version: int) -> int:
        """The version of the newest tombstone at or below ``version`` covering
        ``key``; 0 if there is none."""
        i = bisect_right(self.starts, key) - 1
        if i < 0 or key >= self.ends[i]:
            return 0
        for v in self.versions[i]:
            if v <= version:
                return v
        return 0


EMPTY_FRAGMENTS = Fragments(())


class Cover:
    """The range tombstones a read at ``version`` applies, from several sources."""

    __slots__ = ("parts", "version")

    def __init__(self, parts: Sequence[Fragments], version: int) -> None:
        self.parts = parts
        self.version = version

    def newest(self, key: bytes) -> int:
        """The newest tombstone version (<= the read version) covering ``key``; 0: none."""
        best = 0
        for p in self.parts:
            v = p.newest(key, self.version)
            if v > best:
                best = v
        return best

    def hides(self, key: bytes, entry_version: int) -> bool:
        """Whether the entry of ``key`` at ``entry_version`` is deleted by a range."""
        for p in self.parts:
            if p.newest(key, self.version) > entry_version:
                return True
        return False


def check_range(start: bytes, end: bytes) -> None:
    """ValueError unless ``[start, end)`` holds at least one key.

    >>> check_range(b"a", b"a")
    Traceback (most recent call last):
    ...
    ValueError: end (b'a') must be greater than start (b'a'): the range [start, end) is empty
    """
    if not start < end:
        raise ValueError(f"end ({end!r}) must be greater than start ({start!r}): the range "
                         "[start, end) is empty")
