"""Recovery on open: validate every segment header, scan the last segment, cut a torn tail.

What a crash can leave, and what recovery does with it:

* a last segment whose header never became durable (shorter than the header, or
  all zeros): it held nothing acknowledged; it is removed;
* a torn tail in the last segment -- a partial record, a bad CRC, zero-filled
  space -- with no intact record after it: the file is cut back to the end of
  the last intact record; the byte count is logged and reported in
  ``stats()["torn_tail_bytes"]``;
* damage *followed* by intact records (in a later block) cannot be a torn
  write of the tail: :class:`~banyanstore.errors.CorruptionError` naming the
  segment and the offset, unless ``skip_damaged_records=True``, which counts,
  logs and skips the damaged records (their seqs are then missing);
* a file named like a segment without our magic (another program's file):
  :class:`~banyanstore.errors.CorruptionError` naming it.

Segments before the last are only header-checked here; their records are
CRC-checked when first read (the Log syncs a segment before starting the next,
so a crash cannot tear them).

REQUIRES: the caller holds the directory's lock (or is read-only and changes nothing).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..errors import CorruptionError
from ..io.base import Env
from .format import HEADER_SIZE
from .segment import Segment, SparseIndex, parse_segment_name, read_header

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
    names = sorted((seq, name) for name in env.listdir(directory)
                   if (seq := parse_segment_name(name)) is not None)
    while names:  # drop last segments whose creation a crash interrupted
        path = os.path.join(directory, names[-1][1])
        f = env.open_readable(path)
        try:
            size, head = f.size, f.read(0, HEADER_SIZE)
        finally:
            f.close()
        if len(head) == HEADER_SIZE and any(head):
            break
        _log.warning("log %s: removing segment %s whose creation was interrupted (%d bytes)",
                     directory, path, size)
        if not read_only:
            env.remove(path)
            env.sync_dir(directory)
        out.torn_tail_repairs += 1
        out.torn_tail_bytes += size
        names.pop()
    for name_seq, name in names:
        path = os.path.join(directory, name)
        first_seq, size = read_header(env, path)
        if first_seq != name_seq:
            raise CorruptionError(f"segment header says first seq {first_seq}, its name {name_seq}",
                                  path=path, offset=0)
        out.segments.append(Segment(env, path, first_seq, size))
    if out.segments:
        _scan_last(env, out, read_only=read_only, skip_damaged=skip_damaged, interval=index_interval)
    return out


def _scan_last(env: Env, out: Recovered, *, read_only: bool, skip_damaged: bool, interval: int) -> None:
    seg = out.segments[-1]
    damages: list[tuple[int, str]] = []
    index = SparseIndex()
    last_seq, last_end, next_index = seg.first_seq - 1, HEADER_SIZE, 0
    for seq, _data, start, end in seg.records(lambda off, why: damages.append((off, why))):
        if seq >= next_index:
            index.add(seq, start)
            next_index = seq + interval
        last_seq, last_end = seq, end
    seg.close()
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
        _log.warning("log segment %s: cutting a torn tail of %d bytes at offset %d (%s)%s",
                     seg.path, torn, last_end, why, " [read-only: not repaired on disk]" if read_only else "")
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
