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
  :class:`~banyanstore.errors.CorruptionError` naming it;
* format 3 (log/chain.py): a rotation interrupted after creating the successor and
  before sealing its predecessor (the successor holds no record): the predecessor
  is cut after its last record and sealed -- nothing acknowledged is lost; a
  sealed segment whose successor holds no record: its SEAL is stored again and
  synced (it may be in the page cache only: the rotation failed or died before its
  sync) before records go to the successor; a
  sealed newest segment: the newest was deleted, MissingSegmentError naming it; an
  unsealed segment whose successor holds records: it was cut, CorruptionError.

Segments before the last are only header-checked here; their records are
CRC-checked when first read (the Log syncs a segment before starting the next,
so a crash cannot tear them).

A writer's open makes every check before its first repair: the repairs above (a
removed staged or unfinished segment, a cut torn tail, a seal finished or stored
again) are collected as the checks pass and made only once none refused, so an open
that refuses leaves the directory as it found it.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from ..errors import CorruptionError
from ..io.base import Env
from .chain import PENDING, SEALED, check_link, check_newest, missing_successor, tail_seal
from .format import HEADER_SIZE, SEAL_SIZE, seal_bytes
from .segment import (
    HeaderNotWritten,
    Segment,
    SparseIndex,
    list_segments,
    list_segments_after,
    parse_staged_name,
    read_header,
    read_missing_header,
    read_seal,
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
    #: a writer's repairs, made once every check passed (see the module docstring)
    repairs: list[Callable[[], None]] = field(default_factory=list)


def recover(env: Env, directory: str, *, read_only: bool, skip_damaged: bool,
            index_interval: int) -> Recovered:
    out = Recovered()
    names = list_segments(env, directory)
    try:
        if read_only:
            _pin_segments(env, directory, names, out.segments)
            _reach_past_seal(env, directory, out.segments)
        else:
            _drop_staged(env, directory, out)
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
            _check_links(env, out, read_only=read_only, skip_damaged=skip_damaged, interval=index_interval)
        for repair in out.repairs:  # every check passed: nothing refuses after a change
            repair()
    except BaseException:
        # The segments' read handles (a read-only open keeps every one open) are closed
        # now: left to the exception's traceback, they stayed open as long as the caller
        # kept the error.
        _release(out.segments)
        raise
    return out


def _release(segments: list[Segment]) -> None:
    """Close the read handles of segments no Log will own (no reader has pinned them)."""
    for seg in segments:
        seg.retire()


def _reach_past_seal(env: Env, directory: str, segments: list[Segment]) -> None:
    """Read-only: while the newest segment pinned is sealed, pin the newer ones.

    A writer creates a successor (durably) before it seals, so a listing taken before
    the successor existed can end at a segment sealed since: listing again finds it.
    If none is there, the newest segment is missing: MissingSegmentError."""
    relists = 0
    while segments and (seal := check_newest(env, segments[-1])) is not None:
        relists += 1
        newer = list_segments_after(env, directory, segments[-1].first_seq, relists)
        if not newer:
            raise missing_successor(segments[-1], seal, "no newer segment exists")
        pinned = len(segments)
        while (gone := _pin_listed(env, directory, newer, segments)) is not None:
            relists += 1
            newer = list_segments_after(env, directory, gone, relists)
        if len(segments) == pinned:  # the successor is there, but without its header
            raise _headerless_successor(os.path.join(directory, newer[-1][1]))


def _headerless_successor(path: str) -> CorruptionError:
    """A segment whose header is missing although its predecessor is sealed naming it:
    the header was durable before the SEAL was stored, so this is damage, not a
    creation in progress (nor one a crash interrupted)."""
    return CorruptionError("segment header missing (all zeros or cut short) although the "
                           "segment before it is sealed naming it: the header was damaged",
                           path=path, offset=0)


def _sealed_naming(env: Env, path: str, first_seq: int) -> bool:
    """Whether the segment file ``path`` ends with a SEAL naming ``first_seq``."""
    _first, version, size = read_header(env, path)
    f = env.open_readable(path)
    try:
        seal = read_seal(f.read, size, version, confirm=True)  # not a record's last bytes
    finally:
        f.close()
    return seal is not None and seal[0] == first_seq


def _check_links(env: Env, out: Recovered, *, read_only: bool, skip_damaged: bool,
                 interval: int) -> None:
    """Every format-3 segment with a successor ends with a SEAL naming it; the last
    one has none (log/chain.py).  A rotation interrupted before its SEAL is finished
    here by a writer; a read-only open reads the unsealed segment to its last record.
    A SEAL naming a segment that is missing from the middle is a gap in the seqs, which
    reads across it report (catalog.py), as in logs of older formats."""
    segs = out.segments
    if not read_only and (seal := check_newest(env, segs[-1])) is not None:
        raise missing_successor(segs[-1], seal, "no newer segment exists")
    for i in range(len(segs) - 2, -1, -1):  # newest first: the successor's records are known
        nxt = segs[i + 1]
        has_records = (out.next_seq if i + 2 == len(segs) else segs[i + 2].first_seq) > nxt.first_seq
        try:
            state = check_link(env, segs[i], nxt.first_seq, has_records)
        except CorruptionError as exc:
            if not skip_damaged:
                raise
            _log.warning("log segment %s: %s; skipped (skip_damaged_records=True)", segs[i].path, exc)
            out.damaged_records += 1
            continue
        if state == SEALED and not has_records and not _seal_confirmed(env, segs[i]):
            # The "SEAL" is the end of the last record's data (which is anything): the
            # rotation stopped before its SEAL.  Storing it "again" there left the segment
            # without one, and verify called it cut.
            state = PENDING
        if state == PENDING:
            _end_unsealed(env, segs[i], nxt.first_seq, out, read_only=read_only,
                          skip_damaged=skip_damaged, interval=interval)
        elif state == SEALED and not has_records and not read_only:
            out.repairs.append(partial(_store_seal_again, env, segs[i], nxt.first_seq))


def _seal_confirmed(env: Env, seg: Segment) -> bool:
    """Whether the SEAL check_link found at the end of ``seg`` starts a fragment (one
    block read; only for a segment whose successor holds no record, so at most one)."""
    found = tail_seal(env, seg, confirm=True)
    return found is None or found[1] is not None


def _end_unsealed(env: Env, seg: Segment, next_first: int, out: Recovered, *, read_only: bool,
                  skip_damaged: bool, interval: int) -> None:
    """A segment left unsealed by a rotation interrupted before its SEAL (its successor
    holds no record).  Its records must reach ``next_first - 1``.  A writer cuts what
    follows them (reserved zeros, a torn SEAL) and stores the SEAL; a read-only open
    reads up to its last record (the writer may be sealing it right now)."""
    scan = _scan_live(seg, interval) if read_only else _scan_records(seg, interval)
    middle = scan.middle()
    if middle and not skip_damaged:
        off, why = middle[0]
        raise CorruptionError(f"log record damaged in a segment whose rotation was interrupted: {why}",
                              path=seg.path, offset=off)
    if scan.last_seq + 1 != next_first:
        raise CorruptionError(f"segment ends at seq {scan.last_seq} but the next segment begins at "
                              f"{next_first}: records {scan.last_seq + 1}..{next_first - 1} are missing",
                              path=seg.path, offset=scan.last_end)
    seg.index = scan.index
    if read_only:
        seg.end = scan.last_end
        return
    _log.warning("log segment %s: finishing the seal a rotation left undone (its records end at "
                 "offset %d, seq %d)", seg.path, scan.last_end, scan.last_seq)
    seal = seal_bytes(scan.last_end, next_first)
    seg.drop_handle()  # the file changes size: reopen afterwards
    out.repairs.append(partial(_cut_and_write, env, seg.path, scan.last_end, seal))
    seg.end = scan.last_end + len(seal)
    seg.seal = (next_first, seg.end - SEAL_SIZE)


def _cut_and_write(env: Env, path: str, at: int, data: bytes) -> None:
    """Cut the file at ``path`` at offset ``at``, store ``data`` there and sync."""
    f = env.open_writable(path, append=True)
    try:
        f.truncate(at)
        if data:
            f.write(data)
        f.sync()
    finally:
        f.close()


def _store_seal_again(env: Env, seg: Segment, next_first: int) -> None:
    """A writer's open, before records go to the (empty) successor of the sealed ``seg``:
    store its SEAL again, cut the file after it and sync.

    A SEAL read here may be in the page cache only: the rotation that stored it failed
    (or its process died) before the sync after it -- the cut after the SEAL or that
    sync failed.  Records acknowledged in the successor and a power loss would then
    leave ``seg`` unsealed with a successor holding records: a cut segment to the next
    open (CorruptionError), though nothing was lost.  Written anew rather than only
    synced: after a failed sync the kernel may have dropped the dirty pages while
    reads still see them."""
    seal = seg.seal
    if seal is None or seal[0] != next_first:  # the file was gone (check_link): nothing to do
        return
    data = seal_bytes(seal[1], next_first)  # fits in its block where it is: no padding
    seg.drop_handle()  # the file may change size below: reopen afterwards
    _cut_and_write(env, seg.path, seal[1], data)
    seg.end = seal[1] + len(data)


def _drop_staged(env: Env, directory: str, out: Recovered) -> None:
    """Remove (a repair: see :func:`recover`) staged segments a crash left before their
    rename (Log._leave_old_format): each holds only a header -- the segment it was to
    replace is still there."""
    staged = [n for n in env.listdir(directory) if parse_staged_name(n) is not None]
    if staged:
        out.repairs.append(partial(_remove_files, env, directory, staged,
                                   "a staged segment left by an interrupted open"))


def _remove_files(env: Env, directory: str, names: list[str], what: str) -> None:
    """Remove ``names`` (each ``what``) from ``directory`` and sync it."""
    for name in names:
        _log.warning("log %s: removing %s, %s", directory, name, what)
        env.remove(os.path.join(directory, name))
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
    if len(names) > 1 and _sealed_naming(env, os.path.join(directory, names[-2][1]), names[-1][0]):
        raise _headerless_successor(path)
    out.repairs.append(partial(_remove_files, env, directory, [names[-1][1]],
                               f"a segment whose creation was interrupted ({size} bytes)"))
    out.torn_tail_repairs += 1
    out.torn_tail_bytes += size
    names.pop()


def _pin_segments(env: Env, directory: str, names: list[tuple[int, str]],
                  segments: list[Segment]) -> None:
    """Read-only: open every listed segment into ``segments`` and keep it open (see
    Segment.open_pinned).

    A writer may work in the directory meanwhile.  It removes segments only from
    the front, oldest first (truncate_before), so a listed segment that is gone
    took every older one with it: the log now starts after it.  It never removes
    its last segment, so if the newest listed one is gone, a newer one exists that
    the listing missed: the directory is listed again.  It creates a segment by
    writing its header first, so a last segment without one is still being
    created; it is left for :meth:`Log.refresh` to pick up.
    """
    relists = 0
    while (gone := _pin_listed(env, directory, names, segments)) is not None:
        relists += 1
        names = list_segments_after(env, directory, gone, relists)


def _pin_listed(env: Env, directory: str, names: list[tuple[int, str]],
                segments: list[Segment]) -> int | None:
    """Open the listed segments ``names`` into ``segments``; the first seq of the newest
    of them if it was gone (the listing is stale), else None."""
    for i, (name_seq, name) in enumerate(names):
        path = os.path.join(directory, name)
        try:
            seg = Segment.open_pinned(env, path, name_seq)
        except FileNotFoundError:
            _release(segments)  # the records before the gone one are gone too
            segments.clear()
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
            out.repairs.append(partial(_cut_and_write, env, seg.path, last_end, b""))
        seg.end = last_end
        out.torn_tail_repairs += 1
        out.torn_tail_bytes += torn
    seg.index = index
    out.next_seq = last_seq + 1
