"""One segment file: its name, its header, its sparse index, reads from it.

A segment is named after the seq of its first record, zero-padded so names
sort like seqs: ``00000000000000000001.log``.  Its header (see
:mod:`banyanstore.log.format`) repeats that seq under a checksum.

A segment of format version 2 may end with zero-filled space its writer
reserved (see :mod:`banyanstore.log.format`); :func:`zero_tail_start` finds
where that space begins, so recovery can tell it from a torn write.

The sparse index holds the offset of every ``log_index_interval``-th record.
The writer fills it for segments written by this process; older segments get
theirs on first use, by one sequential scan that also verifies every CRC.  Damage
does not stop that scan, and its index is kept: the intact records before the damage
(and after it, as the reader's resync finds them) stay readable by ``get`` and
``read``, and reads that reach the damage report it.
A lookup then reads forward from the nearest entry: at most
``log_index_interval`` records, usually inside one 32 KiB block.

>>> segment_name(1), parse_segment_name("00000000000000000042.log"), parse_segment_name("LOCK")
('00000000000000000001.log', 42, None)
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import re
import threading
from array import array
from collections.abc import Callable, Iterator

from ..errors import CorruptionError, StorageIOError
from ..io.base import Env, MappedFile, RandomAccessFile
from .format import (
    BLOCK_SIZE,
    FRAG_HEADER,
    FRAG_HEADER_SIZE,
    HEADER_SIZE,
    SEAL_SIZE,
    SEAL_VERSION,
    SEQ_SIZE,
    VERSION,
    ZERO_TAIL_VERSION,
    encode_header,
    parse_header,
    parse_seal,
)
from .reader import OnDamage, Record, full_record_at, iter_records, seek_record

__all__ = ["SparseIndex", "Segment", "segment_name", "parse_segment_name", "staged_name",
           "parse_staged_name", "create_segment",
           "read_header", "HeaderNotWritten", "read_missing_header", "zero_tail_start",
           "scan_bounds", "list_segments", "list_segments_after", "MAX_RELISTS", "read_seal",
           "starts_fragment",
           "Seal"]

_NAME = re.compile(r"(\d{20})\.log")
_STAGED = re.compile(r"(\d{20})\.log\.new")
_TAIL_CHUNK = 1 << 20  # zero_tail_start reads backwards this much at a time

MAX_RELISTS = 100
"""Listings one read-only open or refresh takes while the writer keeps removing the
newest segment listed before the reader can open it (:func:`list_segments_after`).
Each one means the writer rotated and cut its log in the meantime; the bound turns a
pathological race into an error instead of a hang."""


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.log"


def parse_segment_name(name: str) -> int | None:
    """The first seq encoded in a segment file name, or ``None`` for other files."""
    m = _NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def staged_name(first_seq: int) -> str:
    """The name a new segment is written under before it replaces one (by rename)."""
    return segment_name(first_seq) + ".new"


def parse_staged_name(name: str) -> int | None:
    """The first seq of a staged segment's file name (:func:`staged_name`), or ``None``."""
    m = _STAGED.fullmatch(name)
    return int(m.group(1)) if m else None


def list_segments(env: Env, directory: str) -> list[tuple[int, str]]:
    """``(first seq, file name)`` of every segment file in ``directory``, oldest first."""
    return sorted((seq, name) for name in env.listdir(directory)
                  if (seq := parse_segment_name(name)) is not None)


def list_segments_after(env: Env, directory: str, gone_seq: int, relists: int) -> list[tuple[int, str]]:
    """The segments newer than ``gone_seq``: the newest segment of a listing, which the
    writer removed before a read-only reader could open it.

    A writer never removes its last segment (``truncate_before``), so it had made a
    newer one that the listing missed -- a reader that stopped at the listing would
    report the log ending before records written before the listing.  ``relists``
    counts the listings taken so far (StorageIOError beyond :data:`MAX_RELISTS`).
    """
    if relists >= MAX_RELISTS:
        raise StorageIOError(f"log {directory} kept removing its newest segment under this reader: "
                             f"gave up after {MAX_RELISTS} listings", path=directory, op="listdir")
    return [(seq, name) for seq, name in list_segments(env, directory) if seq > gone_seq]


class SparseIndex:
    """``(seq, offset)`` of every n-th record, in increasing order.

    Two ``array('Q')`` columns: 16 bytes an entry, where lists of ints take ~80.
    ``damaged``: the offsets where the scan that built it found damage (a lookup must
    not hop over them unchecked).
    """

    __slots__ = ("seqs", "offsets", "damaged")

    def __init__(self) -> None:
        self.seqs = array("Q")
        self.offsets = array("Q")
        self.damaged = array("Q")

    def add(self, seq: int, offset: int) -> None:
        self.seqs.append(seq)
        self.offsets.append(offset)

    def floor(self, seq: int) -> tuple[int, int] | None:
        """The last entry at or before ``seq``."""
        i = bisect.bisect_right(self.seqs, seq) - 1
        return (self.seqs[i], self.offsets[i]) if i >= 0 else None

    def damage_between(self, start: int, stop: int) -> bool:
        """Whether the scan found damage at an offset in ``[start, stop)``."""
        i = bisect.bisect_left(self.damaged, start)
        return i < len(self.damaged) and self.damaged[i] < stop


def create_segment(env: Env, path: str, first_seq: int) -> MappedFile:
    """Create ``path`` with its header, synced.  The caller syncs the directory."""
    f = env.open_mapped(path, create=True)
    try:
        view, _base = f.map(0, HEADER_SIZE)  # a window at offset 0 starts at 0
        view[:HEADER_SIZE] = encode_header(first_seq)
        f.sync()
    except BaseException:
        f.close()
        raise
    return f


def read_header(env: Env, path: str) -> tuple[int, int, int]:
    """``(first_seq, format version, file size)`` of an existing segment;
    CorruptionError if the header is bad."""
    f = env.open_readable(path)
    try:
        size = f.size
        first_seq, version = parse_header(f.read(0, HEADER_SIZE), path)
        return first_seq, version, size
    finally:
        f.close()


class HeaderNotWritten(Exception):
    """A segment file too short to hold its header, or whose header is all zeros, with
    nothing stored after it: its creation is in progress (another process is writing it)
    or was cut by a crash."""


def read_missing_header(read: Callable[[int, int], bytes], size: int, path: str) -> bytes:
    """The header of a segment whose first read of it came back short or all zeros.

    A writer stores a segment's header before any record (create_segment), so records
    after a missing header mean damage, not a creation in progress or cut by a crash.
    Raises :class:`HeaderNotWritten` when nothing but zeros follows the header (the
    reserved space of a new segment), CorruptionError naming offset 0 when records
    follow it; returns the header if a second read finds it (a reader racing the
    writer that stored the header meanwhile).
    """
    if size <= HEADER_SIZE or zero_tail_start(read, size, HEADER_SIZE) == HEADER_SIZE:
        raise HeaderNotWritten(path)
    head = read(0, HEADER_SIZE)
    if len(head) == HEADER_SIZE and any(head):
        return head
    raise CorruptionError("segment header is missing (all zeros) but records follow it: the "
                          "header was damaged (a segment's header is stored before its "
                          "records); the segment is kept (banyanstore repair stores the header "
                          "again from the segment's name)", path=path, offset=0)


def zero_tail_start(read: Callable[[int, int], bytes], size: int, floor: int) -> int:
    """Where the run of zero bytes that ends the file begins (``size``: none), not
    below ``floor``.  Every fragment header holds a non-zero type byte, so no
    fragment starts at or after this offset."""
    pos = size
    while pos > floor:
        n = min(_TAIL_CHUNK, pos - floor)
        kept = len(read(pos - n, n).rstrip(b"\0"))
        if kept:
            return pos - n + kept
        pos -= n
    return floor


Seal = tuple[int, int]
"""``(next_seq, offset)`` of a segment's SEAL fragment."""


def read_seal(read: Callable[[int, int], bytes], size: int, version: int, *,
              confirm: bool = False) -> Seal | None:
    """The SEAL that ends a segment file of ``size`` bytes, or None (unsealed, or a
    version before seals).  Reads the file's last bytes -- or, after a crash between
    storing the seal and cutting the reserved space off, the bytes before its zeros.
    A cheap check for opens; a full scan (iter_records) also parses what precedes it.

    Those bytes may be the end of a record's data instead, which is anything.
    ``confirm`` rules that out (see :func:`starts_fragment`): for the newest segment,
    where a false SEAL made every open of a healthy log a MissingSegmentError."""
    if version < SEAL_VERSION or size < HEADER_SIZE + SEAL_SIZE:
        return None
    found = _seal_ending_at(read, size)
    if found is None:
        # The zeros may begin inside the SEAL: its seq's high bytes are zero.
        zeros = zero_tail_start(read, size, HEADER_SIZE)
        for end in range(zeros, min(size, zeros + SEQ_SIZE) + 1):
            if (found := _seal_ending_at(read, end)) is not None:
                break
    if confirm and found is not None and not starts_fragment(read, found[1]):
        return None
    return found


def starts_fragment(read: Callable[[int, int], bytes], offset: int) -> bool:
    """Whether a fragment begins at ``offset`` (and not inside one's payload).  Fragments
    never cross a block, so each block begins with one (block 0 after the header): hop
    over the fragment headers from there -- at most one block's worth of reading."""
    start = max(offset - offset % BLOCK_SIZE, HEADER_SIZE)
    data = read(start, offset - start)
    pos = 0
    while pos < len(data):
        if len(data) - pos < FRAG_HEADER_SIZE:
            return False
        _crc, length, kind = FRAG_HEADER.unpack_from(data, pos)
        if kind == 0:  # zeros: a trailer or a padding, after which nothing starts in this block
            return False
        pos += FRAG_HEADER_SIZE + length
    return pos == offset - start


def _seal_ending_at(read: Callable[[int, int], bytes], end: int) -> Seal | None:
    if end < HEADER_SIZE + SEAL_SIZE:
        return None
    next_seq = parse_seal(read(end - SEAL_SIZE, SEAL_SIZE))
    return None if next_seq is None else (next_seq, end - SEAL_SIZE)


def scan_bounds(read: Callable[[int, int], bytes], size: int, version: int) -> tuple[int, int]:
    """``(zeros_from, scan_end)`` of a segment file of ``size`` bytes.

    For a version-2 segment ``zeros_from`` is where its closing run of zeros
    begins: if it is at or before the end of the last intact record, only
    reserved space follows the records (the clean end, not a torn tail).  The
    records all lie before ``scan_end``, the end of the block holding
    ``zeros_from`` (fragments never cross blocks), so a scan can stop there
    instead of walking megabytes of reserved zeros.  Version 1: ``(size, size)``.
    """
    if version < ZERO_TAIL_VERSION:
        return size, size
    zeros_from = zero_tail_start(read, size, HEADER_SIZE)
    return zeros_from, min(size, -(-zeros_from // BLOCK_SIZE) * BLOCK_SIZE)


def _ignore(offset: int, reason: str) -> None:
    """Damage seen on the fast path: the careful path that follows reports it."""


class Segment:
    """A segment's metadata and a shared read handle.

    ``end`` is how far readers may read: the file size for sealed segments;
    for the active one the Log keeps it at the writer's flushed offset.

    Readers *pin* the segment while they may read it; :meth:`retire` (truncation,
    closing the Log) refuses new pins, opens the handle if a pinned reader has
    none yet, and closes it when the last pin goes.  So a descriptor is never
    closed under a reader -- which would give it EBADF, or, once the number is
    reused, another file's bytes -- and a truncated segment's file can be
    unlinked at once: the open handle keeps its data readable until the last
    reader lets go (POSIX semantics, which the in-memory env shares).

    >>> from banyanstore.io.memory import MemoryEnv
    >>> env = MemoryEnv(); env.mkdir("/l"); create_segment(env, "/l/1.log", 1).close()
    >>> seg = Segment(env, "/l/1.log", 1, HEADER_SIZE)
    >>> seg.pin(), seg.read_at(0, 4) == encode_header(1)[:4]
    (True, True)
    >>> seg.retire(); env.remove(seg.path)   # truncated while pinned: still readable
    >>> seg.read_at(0, 4) == encode_header(1)[:4], seg.pin()
    (True, False)
    >>> seg.unpin()                          # the last reader lets go: the handle closes
    """

    def __init__(self, env: Env, path: str, first_seq: int, end: int,
                 index: SparseIndex | None = None, version: int = VERSION,
                 handle: RandomAccessFile | None = None) -> None:
        """``handle``: a read handle already open on ``path`` (the segment keeps it)."""
        self.env = env
        self.path = path
        self.first_seq = first_seq
        self.end = end
        self.index = index
        self.version = version  # format version of its header (see format.py)
        self._raf = handle
        self.seal: Seal | None = None  # its SEAL, once a scan or the writer saw one
        # Re-entrant: the garbage collector may run a dropped reader's finalizer (unpin) at
        # any allocation, also one this thread makes while holding it (retire, read_at).
        self._mu = threading.RLock()
        self._pins = 0  # readers inside the segment
        self._retired = False  # no new pins; the handle closes with the last pin

    @classmethod
    def open_pinned(cls, env: Env, path: str, name_seq: int) -> Segment:
        """Open an existing segment and keep its read handle (the segment is *pinned*:
        a later removal of the file by a writer cannot take it from this reader, POSIX
        keeps unlinked files readable).  ``end`` is the file size at the open.

        Raises FileNotFoundError if the file is gone, :class:`HeaderNotWritten` if its
        header is not there yet, CorruptionError if the header is bad (also: missing
        with records after it, see :func:`read_missing_header`) or disagrees with the
        name's ``name_seq``.
        """
        raf = env.open_readable(path)
        try:
            size = raf.size
            head = raf.read(0, HEADER_SIZE)
            if len(head) < HEADER_SIZE or not any(head):
                head = read_missing_header(raf.read, size, path)
            first_seq, version = parse_header(head, path)
            if first_seq != name_seq:
                raise CorruptionError(f"segment header says first seq {first_seq}, its name {name_seq}",
                                      path=path, offset=0)
        except BaseException:
            raf.close()
            raise
        return cls(env, path, first_seq, size, version=version, handle=raf)

    def __repr__(self) -> str:
        return f"Segment({self.path!r}, first_seq={self.first_seq}, end={self.end})"

    def pin(self) -> bool:
        """Hold the segment for a reader; False if it was retired (truncated, closed).
        Every True must be matched by one :meth:`unpin`."""
        with self._mu:
            if self._retired:
                return False
            self._pins += 1
            return True

    def unpin(self) -> None:
        with self._mu:
            self._pins -= 1
            last = self._retired and not self._pins
        if last:
            self._close_if_unpinned()

    def _close_if_unpinned(self) -> None:
        with self._mu:
            raf = None if self._pins else self._take_handle_locked()
        if raf is not None:
            raf.close()

    def retire(self) -> None:
        """Refuse new pins; close the handle now, or when the last reader unpins.  Idempotent.

        Call it before the file is unlinked: a pinned segment gets its handle opened
        here if it had none, so its readers can still read it after the unlink."""
        with self._mu:
            self._retired = True
            if self._pins and self._raf is None:
                with contextlib.suppress(FileNotFoundError):  # gone already: readers hear LogRangeError
                    self._raf = self.env.open_readable(self.path)
        self._close_if_unpinned()

    def _take_handle_locked(self) -> RandomAccessFile | None:
        raf, self._raf = self._raf, None
        return raf

    def read_at(self, offset: int, length: int) -> bytes:
        raf = self._raf
        if raf is None:  # unpinned use: recovery, single-threaded before any reader exists
            with self._mu:
                if self._retired:  # never reopen what truncation may have unlinked
                    raise FileNotFoundError(errno.ENOENT, "segment was retired", self.path)
                if self._raf is None:
                    self._raf = self.env.open_readable(self.path)
                raf = self._raf
        return raf.read(offset, length)

    def records(self, on_damage: OnDamage, *, start: int = HEADER_SIZE, expect: int | None = None,
                end: int | None = None, chunk_bytes: int = 1 << 20) -> Iterator[Record]:
        if expect is None and start == HEADER_SIZE:
            expect = self.first_seq
        return iter_records(self.read_at, start, self.end if end is None else end, expect,
                            on_damage, chunk_bytes=chunk_bytes, on_seal=self._saw_seal)

    def _saw_seal(self, next_seq: int, offset: int) -> None:
        self.seal = (next_seq, offset)

    def ensure_index(self, interval: int, skipping: OnDamage | None = None) -> SparseIndex:
        """The sparse index, built by one verifying scan on first use and kept, damage
        or not: a segment damaged in its middle is not scanned again at every read.

        The scan reports no damage (the reads that reach it do); it indexes the intact
        records before the first damage, and those after it as the reader's resync finds
        them (seqs checked) -- if nothing else is damaged: a resync that lands inside a
        damaged record's payload shows as more damage after it, so after a second one
        the records past the first are not trusted.  ``skipping``, the policy that skips
        damaged records, is told of each damage and gets every record the resync finds.
        The first record after a damage is indexed: lookups past it start there."""
        index = self.index
        if index is not None:
            return index
        # Two threads' first uses may both scan: same result, so no lock over the scan.
        self.index = index = _IndexScan(interval, skipping).run(self)
        return index

    def find(self, seq: int, interval: int, on_damage: OnDamage, *,
             skipping: bool = False) -> bytes | None:
        """Record ``seq`` of this segment, or ``None`` if it is not there (skipped damage).
        ``skipping``: ``on_damage`` skips damaged records (see :meth:`ensure_index`)."""
        index = self.ensure_index(interval, on_damage if skipping else None)
        entry = index.floor(seq)
        start, expect = (HEADER_SIZE, self.first_seq) if entry is None else (entry[1], entry[0])
        hit = seek_record(self.read_at, start, self.end, seq - expect)
        if hit is not None and index.damaged and index.damage_between(start, hit[0] + 1):
            hit = None  # it hopped over damage unchecked: the careful path reports it
        if hit is not None:  # verify the record found (CRC, seq); gaps from skipped damage miss
            offset, block, i = hit
            found = full_record_at(block, i)
            if found is not None and found[0] == seq:
                return found[1]
            for rseq, data, _s, _e in self.records(_ignore, start=offset, expect=None,
                                                   chunk_bytes=BLOCK_SIZE):
                if rseq == seq:
                    return data
                break
        for rseq, data, _s, _e in self.records(on_damage, start=start, expect=expect,
                                               chunk_bytes=BLOCK_SIZE):
            if rseq >= seq:
                return data if rseq == seq else None
        return None

    def drop_handle(self) -> None:
        """Close the read handle (reopened on next use).  Only while no reader can use
        the segment: recovery, before the Log serves reads."""
        with self._mu:
            assert not self._pins, "drop_handle under a reader"
            raf = self._take_handle_locked()
        if raf is not None:
            raf.close()


class _IndexScan:
    """One verifying scan of a segment that builds its sparse index (Segment.ensure_index)."""

    def __init__(self, interval: int, skipping: OnDamage | None) -> None:
        self.interval = interval
        self.skipping = skipping
        self.damages = 0
        self.first_after_damage: int | None = None  # entries from here on: past the first damage
        self.index = SparseIndex()

    def note(self, offset: int, reason: str) -> None:
        self.damages += 1
        self.index.damaged.append(offset)
        if self.skipping is not None:
            self.skipping(offset, reason)

    def run(self, seg: Segment) -> SparseIndex:
        index = self.index
        next_seq, seen = 0, 0
        for seq, _data, start, _end in seg.records(self.note):
            if seq >= next_seq or self.damages > seen:  # the writer's rule, so both build the same index
                if self.damages and self.first_after_damage is None:
                    self.first_after_damage = len(index.seqs)
                index.add(seq, start)
                next_seq, seen = seq + self.interval, self.damages
        if self.skipping is None and self.damages > 1 and self.first_after_damage is not None:
            del index.seqs[self.first_after_damage:], index.offsets[self.first_after_damage:]
        index.damaged = array("Q", sorted(index.damaged))  # (a bisect needs them in order)
        return index
