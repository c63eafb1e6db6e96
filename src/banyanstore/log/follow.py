"""Catching up with a writer: what a read-only Log does on :meth:`Log.refresh`.

A read-only Log sees the segments as they were when it opened.  ``refresh()``
brings it up to date with the log's writer (another process, or another handle)
by relying on the rules that writer follows (log/log.py):

* it only appends: to the last segment, or to a new segment whose predecessor is
  *sealed* before any record is stored in it (``Log._rotate_locked``).  So a
  segment with a successor holding records is complete: damage in it is
  corruption.  Its records end right before the successor's first seq: a gap is
  corruption too.  Format 3: it creates the successor first and then stores the
  SEAL (log/chain.py), so an unsealed segment whose successor holds no record yet
  is a rotation in progress, read like the live tail; one whose successor holds
  records is a cut segment; a sealed newest segment means the listing missed its
  successor (listed again) -- or, if none is there, that the newest is missing;
* the end of the last segment may hold a record still being written (or
  space written ahead of the records): reading stops before the first thing
  that does not parse, and resumes there at the next refresh -- unless intact
  records follow it on two reads in a row: that is damage, reported as in a
  sealed segment (a record being stored reads whole the second time);
* it creates a segment by writing (and syncing) its header before any record,
  so a newest segment without a header is still being created: not read yet;
* it removes whole segments, oldest first, and never the last one
  (``truncate_before``).  Segments gone from the directory leave this log's
  catalog from the front; ``first_seq`` moves up.  If the newest segment listed
  is gone by the time the reader opens it, the writer has a newer one that the
  listing missed (it rotated and cut its log meanwhile): the reader lists again,
  or it would report the log ending before records written before it looked.

Every segment is opened as soon as it is seen and kept open (pinned), so a
later removal by the writer never takes records from this reader, and the tail
of a segment the writer has since removed is still read to its end.

Only complete, checksummed records are ever made readable: the same parser as
every read (log/reader.py), with the damage callback deciding between "not
written yet" (the live tail) and corruption (a sealed segment).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import CorruptionError
from ..io.base import Env
from .chain import SEALED, check_link, check_newest, missing_successor, tail_seal
from .format import (
    BLOCK_SIZE,
    FRAG_HEADER,
    FRAG_HEADER_SIZE,
    HEADER_SIZE,
    SEAL_VERSION,
    ZERO_TAIL_VERSION,
)
from .reader import OnDamage
from .recovery import LIVE_RESCANS
from .segment import (
    HeaderNotWritten,
    Segment,
    SparseIndex,
    list_segments,
    list_segments_after,
    read_header,
    read_seal,
    scan_bounds,
)

__all__ = ["Caught", "catch_up"]

_PROBE = 1 << 20  # bytes per read when sizing a removed (but pinned) segment
_ZERO_CHUNK = 1 << 16  # bytes per read when checking for zeros (small: no fresh pages each time)
_ZEROS = bytes(_ZERO_CHUNK)
FRAG_TYPE_OFFSET = 6  # in a fragment header: crc u32, length u16, then the type u8
assert FRAG_HEADER.format == "<IHB" and FRAG_HEADER_SIZE == FRAG_TYPE_OFFSET + 1


@dataclass
class Growth:
    """Complete records found after a segment's known end: where they end, their
    sparse-index entries ``(seq, offset)``, and the seq after the last of them."""

    end: int
    entries: list[tuple[int, int]]
    next_seq: int

    def apply(self, seg: Segment) -> None:
        """Make the records readable through ``seg`` (index entries before the end)."""
        index = seg.index
        if index is not None:
            for seq, offset in self.entries:
                index.add(seq, offset)
        seg.end = self.end


@dataclass
class Caught:
    """The outcome of one catch-up, applied by :meth:`Log.refresh` under its lock:
    the segments to publish, the growth of the last one already published, and
    the next seq.  Nothing published changes before then, so a failed catch-up
    leaves the log as it was."""

    segments: list[Segment]
    next_seq: int
    grown: tuple[Segment, Growth] | None = None
    dropped: list[Segment] = field(default_factory=list)
    added: bool = False  # new segments at the end

    @property
    def changed(self) -> bool:
        return self.grown is not None or bool(self.dropped) or self.added

    def apply_growth(self) -> None:
        if self.grown is not None:
            seg, growth = self.grown
            growth.apply(seg)


#: Catch-up attempts that each found the newest segment sealed (the writer rotating
#: meanwhile) before the last one's result stands (see :func:`catch_up`).  Starting over
#: each time, a reader beside a writer that rotates faster than it reads never finished.
SEALED_ATTEMPTS = 4


class _TailIncomplete(Exception):
    """Raised by the damage callback of the live tail: stop reading here."""


def catch_up(env: Env, directory: str, segments: Sequence[Segment], next_seq: int, *,
             interval: int, policy: Callable[[Segment], OnDamage]) -> Caught:
    """Find what the writer appended after ``segments`` (whose records end at
    ``next_seq - 1``).  ``policy(segment)`` is the Log's damage callback for a complete
    segment (CorruptionError, or count-and-skip with ``skip_damaged_records``).
    Changes nothing that is published: see :class:`Caught`.

    If the newest segment found is sealed (format 3), the writer rotated after the
    listing: its successor exists (created before the SEAL), so the catch-up starts
    over; if no newer segment is there, the newest one is missing (MissingSegmentError).
    A writer that rotates again during every one of SEALED_ATTEMPTS attempts (small
    segments, a busy writer) is not chased further: the last attempt's catch-up stands,
    ending at a sealed segment, and the next one goes on from there."""
    sealed_before: int | None = None  # the newest segment of the last attempt, sealed
    for attempt in range(1, SEALED_ATTEMPTS + 1):
        out = _catch_up_once(env, directory, segments, next_seq, interval=interval, policy=policy)
        newest = out.segments[-1] if out.segments else None
        seal = check_newest(env, newest) if newest is not None else None
        if seal is None:
            _check_links(env, out, policy)
            return out
        assert newest is not None
        newer = list_segments_after(env, directory, newest.first_seq, attempt)
        if not newer:
            raise missing_successor(newest, seal, "no newer segment exists")
        if sealed_before == newest.first_seq:  # listed twice, never with a header
            raise CorruptionError("segment header missing (all zeros or cut short) although the "
                                  "segment before it is sealed naming it: the header was damaged",
                                  path=os.path.join(directory, newer[0][1]), offset=0)
        if attempt == SEALED_ATTEMPTS:  # its successor exists: nothing is missing
            _check_links(env, out, policy)
            return out
        for seg in out.segments:
            if seg not in segments:
                seg.retire()  # opened by this attempt only
        sealed_before = newest.first_seq
    raise AssertionError("unreachable")  # pragma: no cover


def _catch_up_once(env: Env, directory: str, segments: Sequence[Segment], next_seq: int, *,
                   interval: int, policy: Callable[[Segment], OnDamage]) -> Caught:
    """One listing's catch-up (see :func:`catch_up`)."""
    names = _list(env, directory)
    listed = {seq for seq, _ in names}
    known = list(segments)
    cut = 0  # removed by the writer, oldest first: leave from the front (never the last)
    while cut < len(known) - 1 and known[cut].first_seq not in listed:
        cut += 1
    out = Caught(known[cut:], next_seq, dropped=known[:cut])
    if out.segments and _replaced(env, out.segments[-1], out.next_seq):
        out.dropped.append(out.segments.pop())  # read from the listing below, as a new one
    newer = [(seq, name) for seq, name in names
             if not out.segments or seq > out.segments[-1].first_seq]
    if out.segments:
        last = out.segments[-1]
        last_indexed = last.index.seqs[-1] if last.index is not None and last.index.seqs else None
        growth = _scan(env, last, out.next_seq, sealed=bool(newer), interval=interval,
                       last_indexed=last_indexed, policy=policy)
        if growth is not None:
            out.grown, out.next_seq = (last, growth), growth.next_seq
    relists = 0
    while (gone := _add_newer(env, directory, out, newer, interval, policy)) is not None:
        relists += 1
        newer = list_segments_after(env, directory, gone, relists)
    return out


def _replaced(env: Env, last: Segment, next_seq: int) -> bool:
    """Whether the writer replaced ``last``, an empty version-1 segment, by a newer-format
    one of the same name (``Log._leave_old_format``: it never appends to version 1).  The
    pinned handle still reads the replaced file, which never grows: without this the
    writer's records in the new file were never seen, and a later segment looked like a
    gap after it."""
    if last.version >= ZERO_TAIL_VERSION or last.first_seq != next_seq:
        return False  # appended to in place; or it holds records, so it is never replaced
    try:
        return read_header(env, last.path)[1] >= ZERO_TAIL_VERSION
    except FileNotFoundError:
        return False  # removed: the listing decides, as for any segment


def _check_links(env: Env, out: Caught, policy: Callable[[Segment], OnDamage]) -> None:
    """Every format-3 segment with a successor that holds records ends with a SEAL
    naming it (log/chain.py).  Newest first: the successor's records were read before
    the older segment's end, so a SEAL stored before them is seen.  Segments checked
    before are skipped (their ``seal`` is known)."""
    segs = out.segments
    for i in range(len(segs) - 2, -1, -1):
        if segs[i].seal is not None:
            continue  # a SEAL naming a missing segment is a seq gap: _add_newer reports it
        nxt_end = out.next_seq if i + 2 == len(segs) else segs[i + 2].first_seq
        try:
            link = check_link(env, segs[i], segs[i + 1].first_seq, nxt_end > segs[i + 1].first_seq)
        except CorruptionError as exc:
            policy(segs[i])(exc.offset or 0, exc.message)
            continue
        if link == SEALED:
            _check_same_file(segs[i])


def _check_not_replaced(env: Env, last: Segment, seg: Segment) -> None:
    """``seg``, newer than ``last``, does not start where ``last``'s records end: the
    writer truncated the log past them, or records are missing.  A writer seals a format-3
    segment (in the file this reader pinned) before its successor takes a record, and
    never removes an unsealed one (the active segment).  So if ``last``'s own file has no
    SEAL while its name is gone or ends with one, it is not the writer's segment of that
    name: the log was deleted and re-created -- reading on from ``seg`` took the new log
    for a truncation of the old one (or reported records missing)."""
    if last.version < SEAL_VERSION:
        return
    try:
        size = _pinned_size(last)
    except FileNotFoundError:
        return
    if read_seal(last.read_at, size, last.version) is not None:
        return
    found = tail_seal(env, last)
    if found is None or found[1] is not None:
        raise _replaced_error(last, size, f"{os.path.basename(seg.path)} follows it, but its "
                              "own file has no SEAL and that name is gone or ends with one")


def _replaced_error(seg: Segment, offset: int, why: str) -> CorruptionError:
    return CorruptionError(
        f"segment {os.path.basename(seg.path)} is no longer the file this reader opened "
        f"({why}): the log was deleted and re-created (or its segments replaced) since the "
        "reader opened it; reopen the reader to read the new log", path=seg.path, offset=offset)


def _check_same_file(seg: Segment) -> None:
    """``check_link`` took ``seg`` for sealed through its *name*: a SEAL at the end of the
    file of that name, or no file of that name (truncated away).  This reader reads the
    file it pinned, and the writer stores the SEAL into that same file before its
    successor takes a record (and before it could remove it), so the pinned file must end
    with that SEAL.  If it does not, the name is not this reader's segment any more: the
    log was deleted and re-created (or the segment replaced) since the reader opened it,
    and the new log's later segments are not the continuation of this one -- taking them
    for it mixed two logs by seq.  (Formats before seals cannot tell: no SEAL.)"""
    claimed = seg.seal  # None: the name is gone
    try:
        size = _pinned_size(seg)
    except FileNotFoundError:
        return  # retired by the reader's own truncation meanwhile: nothing to compare
    own = read_seal(seg.read_at, size, seg.version)
    if own is not None and (claimed is None or own == claimed):
        return
    seg.seal = None  # not this file's
    raise _replaced_error(seg, size, "its own file has no SEAL although "
                          + ("its name is gone" if claimed is None else "its name ends with one")
                          + " and a newer segment follows")


def _pinned_size(seg: Segment) -> int:
    """The size of the file ``seg`` reads (its pinned handle), found by reading from
    ``seg.end`` to the end: the name may belong to another file by now."""
    pos = seg.end
    while True:
        got = len(seg.read_at(pos, _PROBE))
        pos += got
        if got < _PROBE:
            return pos


def _list(env: Env, directory: str) -> list[tuple[int, str]]:
    """The segments in ``directory``; CorruptionError if it is gone (a writer never
    removes it, so this is damage, not the writer moving on)."""
    try:
        return list_segments(env, directory)
    except FileNotFoundError as exc:
        raise CorruptionError("the log directory is missing", path=directory) from exc


def _add_newer(env: Env, directory: str, out: Caught, newer: list[tuple[int, str]], interval: int,
               policy: Callable[[Segment], OnDamage]) -> int | None:
    """Open, scan and add to ``out`` the listed segments ``newer`` than those known.
    Returns the first seq of the newest of them if the writer removed it before it
    could be opened: then the listing is stale (see ``list_segments_after``)."""
    for i, (name_seq, name) in enumerate(newer):
        path = os.path.join(directory, name)
        try:
            seg = Segment.open_pinned(env, path, name_seq)
        except FileNotFoundError:
            # Removed since the listing, and every older segment with it: the log now
            # starts after this one.
            _restart_at(out, name_seq)
            if i == len(newer) - 1:
                return name_seq
            continue
        except HeaderNotWritten:
            if i == len(newer) - 1:
                break  # being created: the next refresh reads it
            raise CorruptionError("segment header missing (all zeros or cut short) while newer "
                                  "segments exist", path=path, offset=0) from None
        if out.segments and seg.first_seq != out.next_seq:
            _check_not_replaced(env, out.segments[-1], seg)
            if env.exists(out.segments[-1].path):  # then nothing between could have been removed
                policy(seg)(0, f"log records {out.next_seq}..{seg.first_seq - 1} are missing: "
                               "the previous segment ends before this one starts")
            _restart_at(out, seg.first_seq)  # truncated by the writer since we read it
        if not out.segments:
            out.next_seq = seg.first_seq
        seg.end, seg.index = HEADER_SIZE, SparseIndex()  # not published yet: scanned below
        growth = _scan(env, seg, seg.first_seq, sealed=i < len(newer) - 1, interval=interval,
                       last_indexed=None, policy=policy)
        if growth is not None:
            growth.apply(seg)
            out.next_seq = growth.next_seq
        out.segments.append(seg)
        out.added = True
    return None


def _restart_at(out: Caught, first_seq: int) -> None:
    """Every segment so far is gone from the directory: the log now starts later."""
    if out.grown is not None and out.grown[0] in out.segments:
        out.grown = None  # its records are before the new start
    out.dropped += out.segments
    out.segments = []
    out.next_seq = first_seq


def _scan(env: Env, seg: Segment, expect: int, *, sealed: bool, interval: int,
          last_indexed: int | None, policy: Callable[[Segment], OnDamage]) -> Growth | None:
    """The complete records after ``seg.end`` (the first has seq ``expect``) up to the
    current end of the file, or None if there are none."""
    if not _fragment_may_start(seg):
        return None
    size = _current_size(env, seg)
    if size <= seg.end:
        return None
    if sealed and seg.version < SEAL_VERSION:  # cut and synced before its successor existed
        return _grow(seg, expect, size, interval, last_indexed, policy(seg))
    # Format 3 with a successor: the writer may not have sealed and cut it yet, so its
    # end is read as a live one; the SEAL (log/chain.py) proves it whole.
    damage: list[int] = []
    growth = _grow(seg, expect, size, interval, last_indexed, _stop_at(damage))
    if not damage or _zeros_only(seg, damage[0], size):
        return growth  # the records end in the space the writer reserved: the live end
    middle_end = _lasting_damage(seg, expect, size)
    if middle_end is None:  # a record the writer was storing: whole by now
        return _grow(seg, expect, size, interval, last_indexed, _stop_at([]))
    on_damage = policy(seg)

    def damaged(offset: int, reason: str) -> None:
        if offset >= middle_end:  # after the last intact record: the live tail
            raise _TailIncomplete
        on_damage(offset, reason)  # CorruptionError, or counted and skipped

    return _grow(seg, expect, size, interval, last_indexed, damaged)


def _stop_at(damage: list[int]) -> OnDamage:
    """The live tail's damage callback: note where parsing stopped, and stop."""
    def stop(offset: int, reason: str) -> None:
        damage.append(offset)
        raise _TailIncomplete
    return stop


def _zeros_only(seg: Segment, start: int, end: int) -> bool:
    """Whether ``seg`` holds only zero bytes in ``[start, end)`` (compared a chunk at a
    time against zeros: this runs on every refresh that reaches the live end)."""
    pos = start
    while pos < end:
        n = min(_ZERO_CHUNK, end - pos)
        chunk = seg.read_at(pos, n)
        if chunk != (_ZEROS if len(chunk) == _ZERO_CHUNK else bytes(len(chunk))):
            return False
        if len(chunk) < n:
            return True
        pos += n
    return True


def _grow(seg: Segment, expect: int, end: int, interval: int, last_indexed: int | None,
          on_damage: OnDamage) -> Growth | None:
    """The records from ``seg.end`` to ``end`` until ``on_damage`` raises _TailIncomplete."""
    growth = Growth(seg.end, [], expect)
    try:
        for seq, _data, start, stop in seg.records(on_damage, start=seg.end, expect=expect,
                                                   end=end):
            if last_indexed is None or seq >= last_indexed + interval:
                growth.entries.append((seq, start))
                last_indexed = seq
            growth.end, growth.next_seq = stop, seq + 1
    except _TailIncomplete:
        pass
    return growth if growth.end > seg.end else None


def _lasting_damage(seg: Segment, expect: int, size: int) -> int | None:
    """The live segment stopped parsing somewhere after ``seg.end``.  If intact records
    follow the damage on two reads in a row, it is damage, not a record the writer is
    still storing: then the end of the last intact record, else None.

    A read copies the file a page at a time while the writer stores records into it,
    so one copy can hold zeros where a record was not stored yet and records stored
    after it; the writer only fills zeros, so a second read finds that record whole
    (log/recovery.py reads the last segment of a read-only open the same way)."""
    _zeros_from, scan_end = scan_bounds(seg.read_at, size, seg.version)
    seen = None
    for attempt in range(LIVE_RESCANS):
        middle = _first_middle_damage(seg, expect, scan_end)
        if middle is None:
            return None
        if seen is not None and middle[0] == seen[0]:
            return middle[1]
        seen = middle
        time.sleep(0.001 * attempt)  # the writer finishes storing what it began
    return seen[1] if seen is not None else None


def _first_middle_damage(seg: Segment, expect: int, end: int) -> tuple[int, int] | None:
    """``(offset of the first damage, end of the last intact record)`` if intact records
    follow damage between ``seg.end`` and ``end``, else None."""
    damages: list[int] = []
    last_end = seg.end
    for _seq, _data, _start, stop in seg.records(lambda off, why: damages.append(off),
                                                 start=seg.end, expect=expect, end=end):
        last_end = stop
    middle = [off for off in damages if off < last_end]
    return (middle[0], last_end) if middle else None


def _fragment_may_start(seg: Segment) -> bool:
    """Whether anything follows ``seg.end`` (a record boundary): the type byte of the
    next fragment header, which is never 0.  One small read, so that a refresh that
    finds nothing new costs no scan -- also where the writer keeps zero-filled space
    reserved after its records."""
    pos = seg.end
    room = BLOCK_SIZE - pos % BLOCK_SIZE
    if room < FRAG_HEADER_SIZE:  # a block trailer: the next fragment starts the next block
        pos += room
    head = seg.read_at(pos, FRAG_HEADER_SIZE)
    return len(head) == FRAG_HEADER_SIZE and head[FRAG_TYPE_OFFSET] != 0


def _current_size(env: Env, seg: Segment) -> int:
    """The size of ``seg``'s file now.  A pinned segment the writer has removed has no
    name to ask about: its size is found by reading to the end through the handle."""
    try:
        return env.file_size(seg.path)
    except FileNotFoundError:
        return _pinned_size(seg)
