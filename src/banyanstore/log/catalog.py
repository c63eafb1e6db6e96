"""The ordered segments of a log, and reads across them.

The catalog maps a seq to its segment (by bisecting the segments' first seqs:
segment *i* holds ``[first_seq(i), first_seq(i+1))``), serves ``get`` through
each segment's sparse index and ``read`` as a sequential scan, and applies the
damage policy: :class:`~banyanstore.errors.CorruptionError` naming the file
and offset, or -- with ``skip_damaged_records=True`` -- count, log and skip.

REQUIRES: mutations (:meth:`add`, :meth:`drop_before`, :meth:`replace`) happen under the Log's
lock; readers work on an immutable :attr:`view`, so they need no lock.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator

from ..errors import CorruptionError, LogRangeError
from .reader import OnDamage
from .segment import Segment

__all__ = ["SegmentCatalog"]

_log = logging.getLogger("banyanstore.log")


View = tuple[tuple[Segment, ...], tuple[int, ...]]
"""Segments and their first seqs: an immutable snapshot, replaced on every change."""


class SegmentCatalog:
    def __init__(self, segments: list[Segment], *, index_interval: int, skip_damaged: bool) -> None:
        self.view: View = ((), ())
        self._set(list(segments))
        self._interval = index_interval
        self._skip = skip_damaged
        self.skipped = 0  # damaged records skipped by reads (recovery counts its own)

    def _set(self, segs: list[Segment]) -> None:
        # One attribute store, so a reader grabbing ``view`` never sees half an update.
        self.view = (tuple(segs), tuple(s.first_seq for s in segs))

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self.view[0]

    def add(self, seg: Segment) -> None:
        self._set([*self.view[0], seg])

    def replace(self, segs: list[Segment]) -> None:
        """Publish a new list of segments (a read-only log catching up, log/follow.py)."""
        self._set(segs)

    def drop_before(self, seq: int) -> list[Segment]:
        """Detach the segments holding only records ``< seq``; never the last (active) one."""
        segs, firsts = self.view
        if not segs:
            return []
        # Segment i holds only seqs < seq iff segment i+1 starts at or before seq.
        n = max(0, bisect.bisect_right(firsts, seq) - 1)
        n = min(n, len(segs) - 1)
        self._set(list(segs[n:]))
        return list(segs[:n])

    def on_damage(self, seg: Segment) -> OnDamage:
        def damaged(offset: int, reason: str) -> None:
            if not self._skip:
                raise CorruptionError(f"damaged log record: {reason}", path=seg.path, offset=offset)
            self.skipped += 1
            _log.warning("log segment %s: skipping damaged record at offset %d: %s",
                         seg.path, offset, reason)
        return damaged

    @staticmethod
    def locate(view: View, seq: int) -> int:
        """Index in ``view`` of the segment that holds (or would hold) ``seq``."""
        return max(0, bisect.bisect_right(view[1], seq) - 1)

    def get(self, view: View, seq: int) -> bytes:
        seg = view[0][self.locate(view, seq)]
        try:
            data = seg.find(seq, self._interval, self.on_damage(seg))
        except FileNotFoundError:
            raise LogRangeError(f"seq {seq} was truncated away while being read") from None
        if data is None:
            raise CorruptionError(f"log record {seq} is missing (damaged and skipped)", path=seg.path)
        return data

    def iterate(self, view: View, start: int, last: int) -> Iterator[tuple[int, bytes]]:
        """``(seq, record)`` for ``start <= seq <= last`` over a snapshot ``view``."""
        if start > last or not view[0]:
            return
        for k, seg in enumerate(view[0][self.locate(view, start):]):
            on_damage = self.on_damage(seg)
            entry = seg.ensure_index(self._interval, on_damage).floor(start) if k == 0 else None
            kwargs = {} if entry is None else {"start": entry[1], "expect": entry[0]}
            try:
                for seq, data, _s, _e in seg.records(on_damage, **kwargs):
                    if seq > last:
                        return
                    if seq >= start:
                        yield seq, data
            except FileNotFoundError:
                raise LogRangeError(f"segment {seg.path} was truncated away while being read") from None
