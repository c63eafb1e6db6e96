"""Verifying a log directory (a Log, or a store's ``wal/``): every segment header and
every record's CRC, seq continuity across segments, torn tails.

Classification follows :mod:`banyanstore.log.recovery`, so verify says what an
open would do: damage with intact records after it is an *error* (an open
refuses it); damage after the last intact record of the last segment is a
torn tail, a *warning* (an open for writing cuts it); a last segment without
a durable header and nothing after it is a *warning* (an open removes it); a
missing header with records after it is an *error* (``repair`` stores it again
from the segment's name, see tools/repair.py).  A sealed segment is
synced before its successor exists, so any damage in one is an error.  Zeros
after the last record of a format-2 last segment are the space its writer
reserved (a writer that is running, or died): counted, not a problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CorruptionError
from ..log.format import (
    HEADER_SIZE,
    parse_header,
)
from ..log.reader import intact_fragment_after, iter_records
from ..log.segment import HeaderNotWritten, read_missing_header, scan_bounds
from .common import NOT_A_FILE, SEGMENT_NAME, Report, make_env

__all__ = ["LogSummary", "verify_log_dir", "segment_names", "reads_under_header"]

OnRecord = Callable[[int, bytes, str, int], None]
"""``on_record(seq, data, segment path, offset)`` for every intact record."""


@dataclass
class LogSummary:
    segments: int = 0
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    torn_tail_bytes: int = 0


def segment_names(directory: str) -> list[str]:
    """The segment files of ``directory`` in seq order."""
    return sorted(n for n in os.listdir(directory) if SEGMENT_NAME.match(n))


def verify_log_dir(directory: str, report: Report, on_record: OnRecord | None = None) -> LogSummary:
    """Check every segment of ``directory``, adding problems to ``report``."""
    env = make_env()
    names = segment_names(directory)
    out = LogSummary(segments=len(names))
    expect: int | None = None  # first seq the next segment must start at
    for i, name in enumerate(names):
        path = os.path.join(directory, name)
        last = i == len(names) - 1
        if os.path.exists(path) and not os.path.isfile(path):
            report.error(path, NOT_A_FILE)
            expect = None  # what follows cannot be checked against it
            continue
        try:
            f = env.open_readable(path)
        except FileNotFoundError:
            out.segments -= 1
            if not any(os.path.exists(os.path.join(directory, n)) for n in names[:i]):
                # its writer cut the log's front since the listing: the log starts later
                out.first_seq = out.last_seq = expect = None
            elif not last:  # (a last one: an open removed its interrupted creation)
                report.error(path, "segment removed while older segments remain: records are "
                             "missing from the middle of the log")
            continue
        size = 0
        try:
            size = f.size
            head = f.read(0, HEADER_SIZE)
            try:
                if len(head) < HEADER_SIZE or not any(head):
                    head = read_missing_header(f.read, size, path)
                first_seq, version = parse_header(head, path)
            except HeaderNotWritten:
                if last:
                    report.warning(path, f"last segment has no durable header ({size} bytes): "
                                   "its creation was interrupted; an open removes it", 0)
                    break
                report.error(path, "segment header missing (all zeros or cut short) while newer "
                             "segments exist", 0)
                expect = None
                continue
            except CorruptionError as exc:
                report.from_corruption(exc, path)
                expect = None
                continue
            name_seq = int(SEGMENT_NAME.match(name).group(1))  # type: ignore[union-attr]
            if first_seq != name_seq:
                report.error(path, f"segment header says first seq {first_seq}, its name {name_seq}", 0)
            if expect is not None and first_seq != expect:
                report.error(path, f"segment starts at seq {first_seq}, but the previous segment "
                             f"ends before seq {expect}: seqs are missing or repeated", 0)
            if out.first_seq is None:
                out.first_seq = first_seq
            last_seq = _scan_segment(f.read, path, first_seq, version, size, last, report,
                                     on_record, out)
            expect = last_seq + 1
            out.last_seq = last_seq
            report.count("log_bytes", size)
        finally:
            f.close()
            report.advance(size)  # (by the handle's size: the writer may remove the file)
    report.count("log_segments", out.segments)
    report.count("log_records", out.records)
    return out


def reads_under_header(read: Callable[[int, int], bytes], path: str, size: int, header: bytes,
                       last: bool) -> bool:
    """Whether the records of a segment whose own header is gone (``read`` reads it,
    ``size`` bytes) read whole under ``header``: at least one record, the first at the
    header's first seq, and no damage before an intact record (a torn tail is allowed
    in the last segment).  What repair checks before storing a header again."""
    first_seq, version = parse_header(header, path)

    def patched(off: int, n: int) -> bytes:
        data = read(off, n)
        if off >= HEADER_SIZE:
            return data
        head = header[off:off + n]
        return head + data[len(head):]
    trial = Report(path, "log")
    out = LogSummary()
    _scan_segment(patched, path, first_seq, version, size, last, trial, None, out)
    return out.records > 0 and not any(p.severity == "error" for p in trial.problems)


def _scan_segment(read: Callable[[int, int], bytes], path: str, first_seq: int, version: int,
                  size: int, last: bool, report: Report, on_record: OnRecord | None,
                  out: LogSummary) -> int:
    """Scan one segment; returns the seq of its last intact record (first_seq - 1: none)."""
    damages: list[tuple[int, str]] = []
    last_seq, last_end = first_seq - 1, HEADER_SIZE
    zeros_from, scan_end = scan_bounds(read, size, version)
    for seq, data, start, end in iter_records(read, HEADER_SIZE, scan_end, first_seq,
                                              lambda off, why: damages.append((off, why))):
        out.records += 1
        last_seq, last_end = seq, end
        if on_record is not None:
            on_record(seq, data, path, start)
    if last and zeros_from <= last_end:  # only the writer's reserved space follows
        damages = [(off, why) for off, why in damages if off < last_end]
        report.count("log_reserved_bytes", size - last_end)
    for off, why in damages:
        if off < last_end:
            report.error(path, f"damaged record before intact ones: {why} (an open refuses this "
                         "unless skip_damaged_records=True, which loses the record)", off)
    tail = [(off, why) for off, why in damages if off >= last_end]
    if tail:
        off, why = tail[0]
        torn = size - last_end
        follower = intact_fragment_after(read, off, size)
        if follower is not None:
            report.error(path, f"damaged record ({why}) followed by an intact fragment at offset "
                         f"{follower} in the same block: not a torn write, yet an open treats it "
                         f"as a torn tail and cuts the {torn} bytes from offset {last_end}", off)
        elif last:
            out.torn_tail_bytes += torn
            report.warning(path, f"torn tail: {torn} bytes after the last intact record (seq "
                           f"{last_seq}) do not parse ({why}); an open for writing, or repair, "
                           f"cuts them", last_end)
        else:
            report.error(path, f"sealed segment damaged after seq {last_seq}: {why}", off)
    return last_seq
