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
import weakref
from collections.abc import Generator, Iterator

from ..errors import CorruptionError, LogRangeError, StoreClosedError
from .format import HEADER_SIZE
from .reader import OnDamage
from .segment import Segment

__all__ = ["SegmentCatalog", "Pins"]

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
        self.closed = False

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

    def close(self) -> None:
        """The Log is closing: retire every segment (handles close as readers let go)."""
        self.closed = True
        for seg in self.view[0]:
            seg.retire()

    def _gone(self, seq: int) -> Exception:
        """Why a reader cannot have ``seq`` although its view listed it."""
        if self.closed:
            return StoreClosedError("the log was closed while being read")
        return LogRangeError(f"seq {seq} was truncated away while being read "
                             f"(first seq kept: {self.view[1][0] if self.view[1] else 'none'})")

    def get(self, view: View, seq: int) -> bytes:
        seg = view[0][self.locate(view, seq)]
        if seq < seg.first_seq or not seg.pin():  # a newer view than the caller's range check
            raise self._gone(seq)
        try:
            data = seg.find(seq, self._interval, self.on_damage(seg), skipping=self._skip)
        except FileNotFoundError:  # another process truncated (a read-only Log's view is old)
            raise LogRangeError(f"seq {seq} was truncated away while being read") from None
        finally:
            seg.unpin()
        if data is None:
            raise CorruptionError(f"log record {seq} is missing (damaged and skipped)", path=seg.path)
        return data

    def pin(self, view: View, start: int, last: int) -> Pins:
        """Pin the segments of ``view`` holding seqs ``start..last`` for one reader.

        Raises :class:`LogRangeError` if one was retired (truncated) since ``view``
        was taken (:class:`StoreClosedError` if the Log closed)."""
        if start > last or not view[0]:
            return Pins([])
        segs = view[0][self.locate(view, start):]
        if start < segs[0].first_seq:
            raise self._gone(start)
        pinned: list[Segment] = []
        try:
            for seg in segs:
                if pinned and seg.first_seq > last:
                    break
                if not seg.pin():
                    raise self._gone(max(start, seg.first_seq))
                pinned.append(seg)
        except BaseException:
            Pins(pinned).release()
            raise
        return Pins(pinned)

    def iterate(self, pins: Pins, start: int, last: int, limit: int | None = None, *,
                continuous: bool = True) -> Generator[tuple[int, bytes], None, None]:
        """``(seq, record)`` for ``start <= seq <= last`` from segments pinned by :meth:`pin`,
        at most ``limit`` of them.

        With ``continuous`` (the default) each segment must end where the next one
        begins, and the last one read must reach ``last``: a segment that stops short
        (cut, or records lost at its end) leaves seqs no segment holds, which is damage
        (:meth:`on_damage`), never a silently shorter log.  ``continuous=False`` is for
        a caller that checks the seqs itself (the store's WAL replay, with its own
        ``wal_recovery`` policy).

        Each segment is let go as soon as the iterator has left it, and every one
        when the iterator ends or is closed.  (An iterator never started lets go
        through the finalizer :meth:`Pins.release_when_collected` sets up.)"""
        left = limit
        segments = tuple(pins.segments)
        try:
            for k, seg in enumerate(segments):
                run = _Run(seg.first_seq)
                bound = segments[k + 1].first_seq if k + 1 < len(segments) else None
                try:
                    for item in self._segment_records(seg, start, last, run, bound, seek=k == 0):
                        if left is not None:
                            if not left:
                                return
                            left -= 1
                        yield item
                except FileNotFoundError:  # another process truncated (a read-only Log's view is old)
                    raise LogRangeError(f"segment {seg.path} was truncated away while being read") from None
                if run.next_seq > last:
                    return
                if continuous and k + 1 < len(segments):
                    self._check_joins(seg, run, segments[k + 1].first_seq)
                elif continuous:  # the last segment pinned ends before ``last``
                    self._check_reaches(seg, run, last)
                pins.release_first()
        finally:
            pins.release()

    def _check_joins(self, seg: Segment, run: _Run, next_first: int) -> None:
        """Segment ``seg``, read whole (``run``), must end just before ``next_first``."""
        if run.next_seq < next_first:
            self.on_damage(seg)(run.end_offset, f"the segment ends at seq {run.next_seq - 1} but "
                                f"the next segment begins at {next_first}: records "
                                f"{run.next_seq}..{next_first - 1} are missing")

    def _check_reaches(self, seg: Segment, run: _Run, last: int) -> None:
        """Segment ``seg``, read whole (``run``), is the last holding seqs up to ``last``
        (the next one, if any, begins after it): it must reach ``last``."""
        if run.next_seq <= last:
            self.on_damage(seg)(run.end_offset, f"the segment ends at seq {run.next_seq - 1} but "
                                f"the log goes on to seq {last}: records {run.next_seq}..{last} "
                                "are missing")

    def _segment_records(self, seg: Segment, start: int, last: int, run: _Run, bound: int | None, *,
                         seek: bool) -> Iterator[tuple[int, bytes]]:
        """Records of ``seg`` in ``[start, last]``; ``bound``: the next segment's first seq,
        which no record of ``seg`` may reach (damage: a file of another log, say)."""
        on_damage = self.on_damage(seg)
        index = seg.ensure_index(self._interval, on_damage if self._skip else None) if seek else None
        entry = None if index is None else index.floor(start)
        kwargs = {} if entry is None else {"start": entry[1], "expect": entry[0]}
        if entry is not None:
            run.next_seq = entry[0]
        for seq, data, begin, end in seg.records(on_damage, **kwargs):
            if bound is not None and seq >= bound:  # seqs only grow: the rest is past it too
                on_damage(begin, f"record {seq} lies past the segment's end: the next segment "
                          f"begins at {bound}")
                return
            run.next_seq, run.end_offset = seq + 1, end
            if seq > last:
                return
            if seq >= start:
                yield seq, data


class _Run:
    """How far one segment's records went: the seq after the last one read, and the
    offset where it ended (where damage at the segment's end is reported)."""

    __slots__ = ("next_seq", "end_offset")

    def __init__(self, first_seq: int) -> None:
        self.next_seq = first_seq
        self.end_offset = HEADER_SIZE


class Pins:
    """The segments one reader has pinned, oldest first; each is unpinned exactly once.

    Not thread-safe: one reader (an iterator) owns it; the finalizer runs only when
    nobody can be using the iterator any more."""

    __slots__ = ("segments", "__weakref__")

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments

    def release_first(self) -> None:
        if self.segments:
            self.segments.pop(0).unpin()

    def release(self) -> None:
        segs, self.segments = self.segments, []
        for seg in segs:
            seg.unpin()

    def release_when_collected(self, owner: object) -> None:
        """Release when ``owner`` (a generator that may never be started, so its own
        ``finally`` never runs) is garbage collected."""
        if self.segments:
            weakref.finalize(owner, self.release)
