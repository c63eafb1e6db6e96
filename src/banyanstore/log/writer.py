"""The block-fragmenting record writer of one segment, storing into a shared mapping.

Records are framed (see :mod:`banyanstore.log.format`) straight into a window
of the segment file mapped ``MAP_SHARED`` (:class:`~banyanstore.io.base.MappedFile`):
a stored record *is* in the kernel's page cache, so a process killed right
after ``append()`` returned loses nothing, and no system call is made per
record.  Measured on the 2-core VM (``benchmarks/bench_log.py``, docs/facts.md):
one ``os.write`` per record costs about a microsecond, more than the rest of
the append; a store into a mapped window costs what the old user-space buffer
did.

The window is space reserved ahead of the records (``window`` bytes, zero
filled); a record that does not fit is stored after mapping the next window
from its offset.  A segment file therefore ends with zeros while it is being
written (format version 2 and on); :meth:`SegmentWriter.seal` cuts them off when
the segment is sealed (after a SEAL fragment naming its successor, format 3) or the
log closed.

``offset`` is the logical end of the segment (every record stored);
``flushed`` is how far readers may read (``segment.end``), moved up by
:meth:`SegmentWriter.flush` -- which makes no system call, since stored bytes
are readable through any descriptor of the file at once.  Readers never see a
partial record because ``segment.end`` only moves to record boundaries.

The writer is not thread-safe; the :class:`~banyanstore.log.log.Log`
serialises it under its append lock.  While writing, it also maintains the
segment's sparse index (the offset of every ``index_interval``-th record), so
reads of fresh segments never have to scan.

Two implementations write the same bytes: :class:`PySegmentWriter` (the reference)
and, when the compiled core is in use (``banyanstore.accel``),
:class:`NativeSegmentWriter`, whose ``add`` is one C call (frame, CRC-32C, store,
sparse index; ``src/banyanstore/native/logframe.c``).  ``SegmentWriter`` is the one
in use.

REQUIRES: ``crc32c``; the file's bytes from ``start`` on are zero or absent
(recovery cut any torn tail).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import accel
from ..crc import crc32c
from ..errors import DiskFullError
from ..io.base import MappedFile
from .format import BLOCK_SIZE, FRAG_HEADER_SIZE, FULL, FULL_HEADER, SEQ, fragment, seal_bytes
from .segment import Segment

__all__ = ["SegmentWriter", "AnySegmentWriter", "PySegmentWriter", "NativeSegmentWriter", "LogTail",
           "new_tail", "WINDOW"]

#: bytes reserved and mapped ahead of the records (capped at the segment size)
WINDOW = 1 << 20
_SMALL = FULL_HEADER.size  # framing bytes of a one-fragment record: header + seq
_ZEROS = bytes(FRAG_HEADER_SIZE)
_CRC_FULL = crc32c(bytes((FULL,)))  # the CRC covers the type byte first
_pack_full_into = FULL_HEADER.pack_into
_pack_seq = SEQ.pack
# The compiled core whatever BANYANSTORE_PURE_PYTHON says: NativeSegmentWriter needs it
# (tests compare both writers in one process); SegmentWriter below follows accel.native.
# An in-place build older than the C framing (a stale ``_native``) lacks it: Python framing.
_core = accel.load_native()
if _core is not None and not hasattr(_core, "LogTail"):
    _core = None


def _framed_bound(n: int) -> int:
    """At most how many bytes a record of ``n`` data bytes takes, from any position
    with at least a fragment header of room in its block: seq and data, a header per
    fragment (one per block it touches, plus a short first one), a block trailer."""
    payload = SEQ.size + n
    return payload + FRAG_HEADER_SIZE * (payload // (BLOCK_SIZE - FRAG_HEADER_SIZE) + 3)


def _cut(file: MappedFile, offset: int, next_seq: int | None) -> int:
    """Cut ``file`` after its last record (at ``offset``), behind a SEAL naming
    ``next_seq`` if one is given; returns the new end.  The caller syncs the file."""
    end = offset
    if next_seq is not None:
        seal = seal_bytes(offset, next_seq)
        view, base = file.map(offset, len(seal))
        view[offset - base:offset - base + len(seal)] = seal
        end += len(seal)
    file.truncate(end)
    return end


def _reserve(file: MappedFile, base: int, window: int, need: int) -> tuple[Any, int]:
    """Map ``file`` from ``base`` (a block boundary): ``window`` bytes, or more whole
    blocks if ``need`` (bytes from ``base``) takes more.  The window is only a way to
    reserve space ahead in few calls: if the disk has less free space than that
    (``DiskFullError``), the whole blocks ``need`` takes -- at least one -- are tried
    alone.  Without that a writer could not open, nor go on, with less than a window
    free though its records fit.  (Native writers do the same: ``fw_map``, logframe.c.)"""
    blocks = max(1, -(-need // BLOCK_SIZE)) * BLOCK_SIZE
    if blocks >= window:
        return file.map(base, blocks)
    try:
        return file.map(base, window)
    except DiskFullError:
        return file.map(base, blocks)


def _window_size(window: int, segment_size: int) -> int:
    """Bytes mapped at a time: whole blocks, at most the segment size, at least a block."""
    return max(1, min(window, segment_size) // BLOCK_SIZE) * BLOCK_SIZE


class PySegmentWriter:
    """Stores framed records into ``file`` from offset ``start`` (a record boundary).

    Windows start and end on block boundaries, so a record that fits in its block
    fits in the window: the hot path checks only the room left in the block, as a
    plain buffer would, and works in window coordinates (``_pos``).
    """

    frames = None
    """No C framing (see :class:`NativeSegmentWriter`)."""

    def __init__(self, file: MappedFile, segment: Segment, *, start: int, last_seq: int,
                 index_interval: int, segment_size: int, window: int = WINDOW) -> None:
        assert segment.index is not None
        self.file = file
        self.segment = segment
        self.index = index = segment.index
        self.flushed = start
        self.flushed_seq = last_seq
        self._interval = index_interval
        self._limit = segment_size
        self._window = _window_size(window, segment_size)
        self._next_index = index.seqs[-1] + index_interval if index.seqs else 0
        self._map(start)
        if self._left < FRAG_HEADER_SIZE:  # a fragment header never straddles a block
            self._pad()

    def _map(self, offset: int, need: int = 0) -> None:
        """Map the window holding ``offset`` and at least ``need`` bytes after it: from
        the start of ``offset``'s block, whole blocks."""
        base = offset - offset % BLOCK_SIZE
        view, got = _reserve(self.file, base, self._window, offset - base + need)
        assert got == base  # block boundaries are page boundaries
        self._view, self._base = view, base
        self._pos = offset - base  # where the next byte goes, in the window
        self._full_at = self._limit - base  # _pos from which the segment is full
        # Room in the current block; 0 (see _pad) only when the window ends right here.
        self._left = BLOCK_SIZE - offset % BLOCK_SIZE

    @property
    def offset(self) -> int:
        """The logical end of the segment: every record stored so far."""
        return self._base + self._pos

    @property
    def full(self) -> bool:
        """The segment has reached ``segment_size``: time to seal it."""
        return self._pos >= self._full_at

    def add(self, seq: int, data: bytes) -> bool:
        """Store record ``seq`` (``data`` must be ``bytes``); False, storing nothing,
        when the segment is already full (seal it and add to the next one)."""
        pos = self._pos
        if pos >= self._full_at:
            return False
        if seq >= self._next_index:
            self.index.add(seq, self._base + pos)
            self._next_index = seq + self._interval
        size = len(data) + _SMALL
        left = self._left - size
        if left >= FRAG_HEADER_SIZE:
            # The hot path: one FULL fragment, header first (a process killed between
            # the two stores leaves a checksum mismatch: a torn tail, cut on open).
            # One crc32c call over seq || data (the record fits in its block: a copy of at
            # most BLOCK_SIZE bytes), not one for the seq continued by one for the data:
            # the package's call parses keyword arguments (~1,350 instructions a call of a
            # 140-byte record under cachegrind, the copy ~300).  The same CRC either way.
            view = self._view
            _pack_full_into(view, pos, crc32c(_pack_seq(seq) + data, _CRC_FULL),
                            size - FRAG_HEADER_SIZE, FULL, seq)
            view[pos + _SMALL:pos + size] = data
            self._left = left
            self._pos = pos + size
        else:
            self._add_slow(seq, data)
        return True

    def add_many(self, first_seq: int, records: list[bytes]) -> int:
        """:meth:`add` for consecutive seqs; returns how many were stored (fewer than
        ``len(records)`` only when the segment filled up)."""
        # add()'s body with the lookups hoisted out of the loop.
        seq, interval = first_seq, self._interval
        for data in records:
            pos = self._pos
            if pos >= self._full_at:
                break
            if seq >= self._next_index:
                self.index.add(seq, self._base + pos)
                self._next_index = seq + interval
            size = len(data) + _SMALL
            left = self._left - size
            if left >= FRAG_HEADER_SIZE:
                view = self._view
                _pack_full_into(view, pos, crc32c(_pack_seq(seq) + data, _CRC_FULL),
                                size - FRAG_HEADER_SIZE, FULL, seq)
                view[pos + _SMALL:pos + size] = data
                self._left = left
                self._pos = pos + size
            else:
                self._add_slow(seq, data)
            seq += 1
        return seq - first_seq

    def _add_slow(self, seq: int, data: bytes) -> None:
        """A record that does not fit in the rest of its block (or of the window)."""
        # Map room for the whole record first, so a failure to reserve it (a full disk)
        # comes before any of its bytes are stored.
        need = _framed_bound(len(data))
        if self._pos + need > len(self._view):
            self._map(self.offset, need)
        for _kind, framed in fragment(seq, data, self._left):
            pos = self._pos
            self._view[pos:pos + len(framed)] = framed
            self._pos = pos + len(framed)
            self._left -= len(framed)
            if self._left == 0:
                self._left = BLOCK_SIZE
        if self._left < FRAG_HEADER_SIZE:
            self._pad()
        elif self._pos == len(self._view):
            self._left = 0  # the record ended the window (see _pad)

    def _pad(self) -> None:
        """Fill the rest of the block with a zero trailer.  The reserved space is zero
        already; storing it keeps that an optimisation, not an assumption."""
        pos = self._pos
        self._view[pos:pos + self._left] = _ZEROS[:self._left]
        self._pos = pos + self._left
        # The hot path checks only the room in the block: at the end of the window
        # there is none, so the next record takes the slow path, which maps more.
        self._left = BLOCK_SIZE if self._pos < len(self._view) else 0

    def flush(self, upto_seq: int) -> None:
        """Let readers read every record stored (up to ``upto_seq``).  No system call."""
        self.flushed = self.segment.end = self._base + self._pos
        self.flushed_seq = upto_seq

    def seal(self, next_seq: int | None = None) -> int:
        """Cut the reserved space off and release the window: the file ends at its last
        record, or -- given ``next_seq``, the successor's first seq -- at a SEAL naming
        it (format version 3).  Returns the new end; the caller syncs the file."""
        return _cut(self.file, self._base + self._pos, next_seq)

    def pending(self) -> int:
        """Bytes stored but not yet published to readers."""
        return self._base + self._pos - self.flushed


class NativeSegmentWriter:
    """:class:`PySegmentWriter` with the framing in C: ``add`` and ``add_many`` are
    the compiled core's ``FrameWriter`` methods (one C call per record, no Python
    frame); sealing and publishing stay here.  Same constructor, same bytes."""

    add: Callable[[int, bytes], bool]
    add_many: Callable[[int, list[bytes]], int]
    frames: Any
    """The compiled core's ``FrameWriter`` (the log hands it to its :class:`LogTail`)."""

    def __init__(self, file: MappedFile, segment: Segment, *, start: int, last_seq: int,
                 index_interval: int, segment_size: int, window: int = WINDOW) -> None:
        assert segment.index is not None and _core is not None
        self.file = file
        self.segment = segment
        self.index = index = segment.index
        self.flushed = start
        self.flushed_seq = last_seq
        next_index = index.seqs[-1] + index_interval if index.seqs else 0
        self.frames = core = _core.FrameWriter(
            file.map, index.add, start, segment_size, _window_size(window, segment_size),
            next_index, index_interval)
        self.add, self.add_many = core.add, core.add_many

    @property
    def offset(self) -> int:
        """The logical end of the segment: every record stored so far."""
        return self.frames.offset

    @property
    def full(self) -> bool:
        """The segment has reached ``segment_size``: time to seal it."""
        return self.frames.full

    def flush(self, upto_seq: int) -> None:
        """Let readers read every record stored (up to ``upto_seq``).  No system call."""
        self.flushed = self.segment.end = self.frames.offset
        self.flushed_seq = upto_seq

    def seal(self, next_seq: int | None = None) -> int:
        """:meth:`PySegmentWriter.seal`: the C framing is done with the window."""
        return _cut(self.file, self.frames.offset, next_seq)

    def pending(self) -> int:
        """Bytes stored but not yet published to readers."""
        return self.frames.offset - self.flushed


AnySegmentWriter = PySegmentWriter | NativeSegmentWriter
"""Either implementation (for annotations)."""

SegmentWriter: type[AnySegmentWriter] = (
    PySegmentWriter if accel.native is None or _core is None else NativeSegmentWriter)
"""The implementation in use: C framing with the compiled core, else Python."""


class LogTail:
    """A writable log's appending state, shared with the compiled core: the seq the
    next record gets, how many followers wait for appends, and the active segment's C
    framing (``frames``, None on pure Python and while the log may not append).  The
    :class:`~banyanstore.log.log.Log` reads and writes it under its lock.  The
    compiled core's ``LogTail`` has the same members and ``append_put``, the store's
    one-call append (see ``Log.put_appender``)."""

    __slots__ = ("next_seq", "followers", "frames")

    def __init__(self, next_seq: int, lock: object) -> None:
        self.next_seq = next_seq
        self.followers = 0
        self.frames: Any = None


def new_tail(next_seq: int, lock: object) -> LogTail:
    """The :class:`LogTail` of a log whose next record gets ``next_seq``: the compiled
    core's when it is in use (its ``append_put`` takes ``lock``)."""
    if accel.native is None or _core is None:
        return LogTail(next_seq, lock)
    return _core.LogTail(next_seq, lock)
