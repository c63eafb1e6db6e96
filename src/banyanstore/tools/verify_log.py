"""Verifying a log directory (a Log, or a store's ``wal/``): every segment header and
every record's CRC, seq continuity across segments, torn tails.

Classification follows :mod:`banyanstore.log.recovery`, so verify says what an
open would do: damage with intact records after it is an *error* (an open
refuses it); damage after the last intact record of the last segment is a
torn tail, a *warning* (an open for writing cuts it); a last segment without
a durable header and nothing after it is a *warning* (an open removes it); a
missing header with records after it is an *error* (``repair`` stores it again
from the segment's name, see tools/repair.py).  A sealed segment is
synced before its successor holds records, so any damage in one is an error.  Zeros
after the last record of a format-2 (or later) last segment are the space its writer
reserved (a writer that is running, or died): counted, not a problem.

Format 3 (log/chain.py): a SEAL in the newest segment means the newest segment is
missing, an *error* naming it; an unsealed segment whose successor holds records was
cut, an *error* naming it and where its records end; an unsealed segment whose
successor (the last) holds none is an interrupted rotation, a *warning* (an open for
writing seals it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CorruptionError
from ..log.format import (
    HEADER_SIZE,
    SEAL_VERSION,
    parse_header,
)
from ..log.reader import intact_fragment_after, iter_records
from ..log.segment import HeaderNotWritten, Seal, read_missing_header, scan_bounds, segment_name
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
    links = _Links(directory, report)
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
                if last and not links.names(int(SEGMENT_NAME.match(name).group(1))):  # type: ignore[union-attr]
                    report.warning(path, f"last segment has no durable header ({size} bytes): "
                                   "its creation was interrupted; an open removes it", 0)
                    break
                report.error(path, "segment header missing (all zeros or cut short) " + (
                    "although the segment before it is sealed naming it" if last
                    else "while newer segments exist"), 0)
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
            scanned = _scan_segment(f.read, path, first_seq, version, size, last, report,
                                    on_record, out)
            links.add(scanned, last)
            last_seq = scanned.last_seq
            expect = last_seq + 1
            out.last_seq = last_seq
            report.count("log_bytes", size)
        finally:
            f.close()
            report.advance(size)  # (by the handle's size: the writer may remove the file)
    links.finish()
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


@dataclass
class _Scanned:
    """One segment's scan: where its records end and its SEAL (format 3), if any."""
    path: str
    version: int
    first_seq: int
    last_seq: int
    last_end: int
    seal: Seal | None


class _Links:
    """The checks between segments of log/chain.py, as verify reports them: a format-3
    segment with a successor ends with a SEAL naming it; the newest has none."""

    def __init__(self, directory: str, report: Report) -> None:
        self.directory, self.report = directory, report
        self.prev: _Scanned | None = None

    def add(self, seg: _Scanned, last: bool) -> None:
        prev, self.prev = self.prev, seg
        if prev is None or prev.version < SEAL_VERSION:
            return
        if prev.seal is not None:
            if prev.seal[0] != seg.first_seq:
                self._missing(prev, f"the next segment present begins at seq {seg.first_seq}")
        elif seg.last_seq >= seg.first_seq or not last:
            self.report.error(prev.path, f"segment has no seal although the next segment "
                              f"({os.path.basename(seg.path)}) holds records: its end was cut, "
                              "and the records there with it", prev.last_end)
        else:
            self.report.warning(prev.path, "segment has no seal and its successor holds no "
                                "record: a rotation was interrupted before sealing it; an open "
                                "for writing (or repair) stores the seal", prev.last_end)

    def names(self, first_seq: int) -> bool:
        """Whether the segment before is sealed naming ``first_seq``: then that segment's
        header was durable before the SEAL (a missing one is damage, not a creation)."""
        return self.prev is not None and self.prev.seal is not None and self.prev.seal[0] == first_seq

    def finish(self) -> None:
        prev = self.prev
        if prev is None or prev.seal is None:
            return
        # A writer that rotated after the listing created the successor before sealing.
        if not os.path.exists(os.path.join(self.directory, segment_name(prev.seal[0]))):
            self._missing(prev, "no newer segment exists")

    def _missing(self, seg: _Scanned, context: str) -> None:
        assert seg.seal is not None
        missing = os.path.join(self.directory, segment_name(seg.seal[0]))
        self.report.error(missing, f"segment is missing: {seg.path} is sealed at offset "
                          f"{seg.seal[1]} naming it as its successor ({context}); the records "
                          f"from seq {seg.seal[0]} on are lost (repair --accept-lost-segment "
                          "accepts the loss)")


def _scan_segment(read: Callable[[int, int], bytes], path: str, first_seq: int, version: int,
                  size: int, last: bool, report: Report, on_record: OnRecord | None,
                  out: LogSummary) -> _Scanned:
    """Scan one segment: where its records end (last seq first_seq - 1: none), its SEAL."""
    damages: list[tuple[int, str]] = []
    seals: list[Seal] = []
    last_seq, last_end = first_seq - 1, HEADER_SIZE
    zeros_from, scan_end = scan_bounds(read, size, version)
    for seq, data, start, end in iter_records(read, HEADER_SIZE, scan_end, first_seq,
                                              lambda off, why: damages.append((off, why)),
                                              on_seal=lambda nxt, off: seals.append((nxt, off))):
        out.records += 1
        last_seq, last_end = seq, end
        if on_record is not None:
            on_record(seq, data, path, start)
    # An unsealed format-3 segment may be one whose rotation was interrupted: its end is
    # open like the last one's (_Links says whether it was cut instead).
    last = last or (version >= SEAL_VERSION and not seals)
    if last and zeros_from <= last_end:  # only the writer's reserved space follows
        damages = [(off, why) for off, why in damages if off < last_end]
        report.count("log_reserved_bytes", size - last_end)
    # A Log's open recovers its last segment only: damage in an older one is met by the
    # reads that reach it.  (A store's open replays its WAL: that refuses it.)
    effect = ("an open refuses this" if last or report.kind != "log" else
              "the log opens, but reads that reach this record raise CorruptionError")
    for off, why in damages:
        if off < last_end:
            report.error(path, f"damaged record before intact ones: {why} ({effect} "
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
    return _Scanned(path, version, first_seq, last_seq, last_end, seals[0] if seals else None)
