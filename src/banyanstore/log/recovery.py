"""Recovery on open: validate every segment header, scan the last segment, cut a torn tail.

What a crash can leave, and what recovery does with it:

* a last segment whose header never became durable (shorter than the header, or
  all zeros, and nothing but zeros after it): it held nothing acknowledged; it is
  removed.  A missing header with records after it is damage (the header is stored
  before any record): :class:`~banyanstore.errors.CorruptionError`, the segment kept;
* zero bytes from the end of the last record to the end of the last segment
  (format version 2): space the writer had reserved -- the normal state of a
  segment whose writer died or is still writing -- and the end of the data,
  not damage.  It is neither counted nor cut (a writer stores over it);
* a torn tail in the last segment -- a partial record, a bad CRC, anything
  non-zero, or (version 1) zero-filled space -- with no intact record after
  it: the file is cut back to the end of the last intact record; the byte
  count is logged and reported in ``stats()["torn_tail_bytes"]``;
* damage *followed* by intact records (in a later block) cannot be a torn
  write of the tail: :class:`~banyanstore.errors.CorruptionError` naming the
  segment and the offset, unless ``skip_damaged_records=True``, which counts,
  logs and skips the damaged records (their seqs are then missing);
* a file named like a segment without our magic (another program's file):
  :class:`~banyanstore.errors.CorruptionError` naming it.

Segments before the last are only header-checked here; their records are
CRC-checked when first read (the Log syncs a segment before starting the next,
so a crash cannot tear them).

Read-only opens change nothing on disk and may run beside a live writer: they keep
every segment open (pinned), take a segment removed since the listing for the
writer's ``truncate_before`` (the log starts later), leave a newest segment whose
header is not written yet for :meth:`Log.refresh`, and read the last segment up to
its last complete record (the rest may be a write in progress).

REQUIRES: the caller holds the directory's lock (or is read-only and changes nothing).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from ..errors import CorruptionError
from ..io.base import Env
from .format import HEADER_SIZE
from .segment import (
    HeaderNotWritten,
    Segment,
    SparseIndex,
    list_segments,
    list_segments_after,
    parse_staged_name,
    read_header,
    read_missing_header,
    scan_bounds,
)

__all__ = ["Recovered", "recover"]

_log = logging.getLogger("banyanstore.log")


@dataclass
class Recovered:
    segments: list[Segment] = field(default_factory=list)
    next_seq: int = 1
    torn_tail_repairs: int = 0
    torn_tail_bytes: int = 0
    damaged_records: int = 0


def recover(env: Env, directory: str, *, read_only: bool, skip_damaged: bool,
            index_interval: int) -> Recovered:
    out = Recovered()
    names = list_segments(env, directory)
    if read_only:
        out.segments = _pin_segments(env, directory, names)
    else:
        _drop_staged(env, directory)
        _drop_unfinished_last(env, directory, names, out)
        for name_seq, name in names:
            path = os.path.join(directory, name)
            first_seq, version, size = read_header(env, path)
            if first_seq != name_seq:
                raise CorruptionError(f"segment header says first seq {first_seq}, its name {name_seq}",
                                      path=path, offset=0)
            out.segments.append(Segment(env, path, first_seq, size, version=version))
    if out.segments:
        _scan_last(env, out, read_only=read_only, skip_damaged=skip_damaged, interval=index_interval)
    return out


def _drop_staged(env: Env, directory: str) -> None:
    """Remove staged segments a crash left before their rename (Log._leave_old_format):
    each holds only a header -- the segment it was to replace is still there."""
    staged = [n for n in env.listdir(directory) if parse_staged_name(n) is not None]
    for name in staged:
        _log.warning("log %s: removing staged segment %s left by an interrupted open", directory, name)
        env.remove(os.path.join(directory, name))
    if staged:
        env.sync_dir(directory)


def _drop_unfinished_last(env: Env, directory: str, names: list[tuple[int, str]],
                          out: Recovered) -> None:
    """Remove the last segment if a crash interrupted its creation (header not written,
    nothing stored after it); CorruptionError for a missing header with records after
    it (read_missing_header): that segment is kept.

    Only the last one: a segment is created after its predecessor was sealed and
    synced, so a segment before it without a header is damage (read_header reports
    it), never a second interrupted creation -- removing it would shorten the log
    silently and give its seqs out again."""
    if not names:
        return
    path = os.path.join(directory, names[-1][1])
    f = env.open_readable(path)
    try:
        size, head = f.size, f.read(0, HEADER_SIZE)
        if len(head) == HEADER_SIZE and any(head):
            return
        try:
            read_missing_header(f.read, size, path)
            return  # found on a second read: read_header below parses it
        except HeaderNotWritten:
            pass
    finally:
        f.close()
    _log.warning("log %s: removing segment %s whose creation was interrupted (%d bytes)",
                 directory, path, size)
    env.remove(path)
    env.sync_dir(directory)
    out.torn_tail_repairs += 1
    out.torn_tail_bytes += size
    names.pop()


def _pin_segments(env: Env, directory: str, names: list[tuple[int, str]]) -> list[Segment]:
    """Read-only: open every listed segment and keep it open (see Segment.open_pinned).

    A writer may work in the directory meanwhile.  It removes segments only from
    the front, oldest first (truncate_before), so a listed segment that is gone
    took every older one with it: the log now starts after it.  It never removes
    its last segment, so if the newest listed one is gone, a newer one exists that
    the listing missed: the directory is listed again.  It creates a segment by
    writing its header first, so a last segment without one is still being
    created; it is left for :meth:`Log.refresh` to pick up.
    """
    segments: list[Segment] = []
    relists = 0
    while (gone := _pin_listed(env, directory, names, segments)) is not None:
        relists += 1
        names = list_segments_after(env, directory, gone, relists)
    return segments


def _pin_listed(env: Env, directory: str, names: list[tuple[int, str]],
                segments: list[Segment]) -> int | None:
    """Open the listed segments ``names`` into ``segments``; the first seq of the newest
    of them if it was gone (the listing is stale), else None."""
    for i, (name_seq, name) in enumerate(names):
        path = os.path.join(directory, name)
        try:
            seg = Segment.open_pinned(env, path, name_seq)
        except FileNotFoundError:
            segments.clear()  # the records before the gone one are gone too
            if i == len(names) - 1:
                return name_seq
            continue
        except HeaderNotWritten:
            if i == len(names) - 1:
                _log.debug("log %s: segment %s is still being created; not read", directory, path)
                break
            raise CorruptionError("segment header missing (all zeros or cut short) while newer "
                                  "segments exist", path=path, offset=0) from None
        segments.append(seg)
    return None


#: A read-only open reads the last segment again this many times while it shows damage
#: followed by intact records (see _scan_last).
LIVE_RESCANS = 5


@dataclass
class _Scan:
    """One pass over a segment's records: what parsed and what did not."""
    damages: list[tuple[int, str]]
    index: SparseIndex
    last_seq: int
    last_end: int
    zeros_from: int

    def middle(self) -> list[tuple[int, str]]:
        """Damage with intact records after it (not a torn tail)."""
        return [(off, why) for off, why in self.damages if off < self.last_end]


def _scan_records(seg: Segment, interval: int) -> _Scan:
    damages: list[tuple[int, str]] = []
    index = SparseIndex()
    last_seq, last_end, next_index = seg.first_seq - 1, HEADER_SIZE, 0
    zeros_from, scan_end = scan_bounds(seg.read_at, seg.end, seg.version)
    for seq, _data, start, end in seg.records(lambda off, why: damages.append((off, why)),
                                              end=scan_end):
        if seq >= next_index:
            index.add(seq, start)
            next_index = seq + interval
        last_seq, last_end = seq, end
    return _Scan(damages, index, last_seq, last_end, zeros_from)


def _scan_live(seg: Segment, interval: int) -> _Scan:
    """Scan the last segment of a read-only log, which a live writer may be appending to.

    A read copies the file a page at a time while the writer stores records into it, so
    one copy can hold zeros where a record was not stored yet followed by records stored
    after it -- damage with intact records after it, though nothing is damaged.  The
    writer only ever fills zeros and never changes a stored byte, so a second read of
    the same place finds the record whole.  Real damage reads the same every time: it
    is reported once two scans in a row put their first damage at the same offset.
    """
    scan = _scan_records(seg, interval)
    for attempt in range(LIVE_RESCANS):
        middle = scan.middle()
        if not middle:
            break
        time.sleep(0.001 * attempt)  # the writer finishes storing what it began
        again = _scan_records(seg, interval)
        lasting = (again.middle() or [(-1, "")])[0][0] == middle[0][0]
        scan = again
        if lasting:
            break
    return scan


def _scan_last(env: Env, out: Recovered, *, read_only: bool, skip_damaged: bool, interval: int) -> None:
    seg = out.segments[-1]
    scan = _scan_live(seg, interval) if read_only else _scan_records(seg, interval)
    damages, index, last_seq, last_end = scan.damages, scan.index, scan.last_seq, scan.last_end
    zeros_from = scan.zeros_from
    if not read_only:  # read-only logs keep their segments' handles (Segment.open_pinned)
        seg.drop_handle()  # the tail may be cut below: reopen afterwards
    if zeros_from <= last_end:  # only reserved zeros follow the last record: the clean end
        damages = [(off, why) for off, why in damages if off < last_end]
        seg.end = last_end
    # The reader resumes at any intact fragment after damage, so damage with intact
    # records after it lands in ``middle``: only damage with nothing intact after it
    # is a torn tail.
    middle = [(off, why) for off, why in damages if off < last_end]
    if middle:
        if not skip_damaged:
            off, why = middle[0]
            raise CorruptionError(f"log record damaged before the tail: {why}; intact records "
                                  "follow, so this is not a torn write (open with "
                                  "skip_damaged_records=True to skip it)", path=seg.path, offset=off)
        for off, why in middle:
            _log.warning("log segment %s: skipping damaged record at offset %d: %s", seg.path, off, why)
        out.damaged_records += len(middle)
    if len(middle) < len(damages):  # damage after the last intact record: a torn tail
        torn = seg.end - last_end
        off, why = damages[len(middle)]
        if read_only:  # or a record a live writer is still writing: nothing to repair
            _log.debug("log segment %s: reading up to offset %d; %d bytes after it do not parse "
                       "(yet): %s", seg.path, last_end, torn, why)
        else:
            _log.warning("log segment %s: cutting a torn tail of %d bytes at offset %d (%s)",
                         seg.path, torn, last_end, why)
        if not read_only:
            f = env.open_writable(seg.path, append=True)
            try:
                f.truncate(last_end)
                f.sync()
            finally:
                f.close()
        seg.end = last_end
        out.torn_tail_repairs += 1
        out.torn_tail_bytes += torn
    seg.index = index
    out.next_seq = last_seq + 1
