"""The links between segments: each format-3 segment with a successor ends with a SEAL
naming the successor's first seq (see :mod:`banyanstore.log.format`).

What a link can look like on disk, and what it means:

=========================================  ===============================================
the older segment (format 3) ...           means
=========================================  ===============================================
ends with a SEAL naming the next segment   the normal state: nothing lost between them
                                           (next one empty: a writer's open stores the
                                           SEAL again and syncs, recovery.py)
ends with a SEAL naming another seq        the named segment is missing (deleted) from
                                           the middle: the seqs between are missing, which
                                           every read across the gap reports (catalog.py)
has no SEAL, the next segment holds no     a rotation interrupted between creating the
records                                    successor and sealing (no record of it was
                                           acknowledged): a writer's open finishes the seal
has no SEAL, the next segment holds        the older segment was cut (its end, with its
records                                    SEAL, is gone): CorruptionError naming it and
                                           the offset where its data ends
is the last segment and ends with a SEAL   the newest segment is missing:
                                           :class:`MissingSegmentError` naming it
=========================================  ===============================================

The writer stores the SEAL before any record of the successor, so a reader that saw
records in the successor and then reads the older segment's end finds the SEAL: the
checks read the successor first.

REQUIRES: ``seg.end`` of a segment with a successor may be stale (a reader opened it
before the writer cut it): :func:`tail_seal` reads the file's size now.
"""

from __future__ import annotations

import os

from ..errors import CorruptionError
from ..io.base import Env
from .format import HEADER_SIZE, SEAL_VERSION, MissingSegmentError
from .segment import Seal, Segment, read_seal, segment_name

__all__ = ["MISLINKED", "PENDING", "SEALED", "UNSEALED_FORMAT", "check_link", "check_newest", "tail_seal",
           "missing_successor"]

SEALED = "sealed"
MISLINKED = "mislinked"  # sealed naming a segment that is missing: a gap in the seqs
PENDING = "pending"  # no SEAL yet, the successor holds no record: a rotation in progress
UNSEALED_FORMAT = "unsealed format"  # a segment of a format before seals: nothing to check


def tail_seal(env: Env, seg: Segment, *, confirm: bool = False) -> tuple[int, Seal | None] | None:
    """``(size now, SEAL)`` of ``seg``'s file; None if the file is gone (truncated away
    under a reader).  Through a handle of its own, closed at once: an open checks every
    segment, and must not keep a descriptor per segment.  ``confirm``: see read_seal."""
    try:
        f = env.open_readable(seg.path)
    except FileNotFoundError:
        return None
    try:
        size = f.size
        return size, read_seal(f.read, size, seg.version, confirm=confirm)
    finally:
        f.close()


def check_link(env: Env, seg: Segment, next_first: int, next_has_records: bool) -> str:
    """Check that ``seg`` links to a successor starting at ``next_first``.  Returns
    :data:`SEALED`, :data:`MISLINKED`, :data:`PENDING` or :data:`UNSEALED_FORMAT`;
    raises CorruptionError for a cut segment (the table in the module doc)."""
    if seg.version < SEAL_VERSION:
        return UNSEALED_FORMAT
    found = tail_seal(env, seg)
    if found is None:  # truncated away under a reader: nothing left to check
        return SEALED
    size, seal = found
    if seal is not None:
        seg.seal = seal
        if seal[0] != next_first:
            return MISLINKED
        seg.end = min(seg.end, size)  # a reader's end may predate the cut after the SEAL
        return SEALED
    if not next_has_records:
        return PENDING
    end = _records_end(seg, size)
    raise CorruptionError(f"segment has no seal although the next segment ({segment_name(next_first)}) "
                          "holds records: its end was cut, and the records there with it",
                          path=seg.path, offset=end)


def _records_end(seg: Segment, size: int) -> int:
    """Where the last intact record of ``seg`` ends (where its data was cut)."""
    end = HEADER_SIZE
    for _seq, _data, _start, stop in seg.records(_ignore, end=size):
        end = stop
    return end


def _ignore(offset: int, reason: str) -> None:
    """Damage while finding where a cut segment's records end: the end is what counts."""


def check_newest(env: Env, seg: Segment) -> Seal | None:
    """The SEAL at the end of the newest segment present, or None (the normal case).
    Confirmed to start a fragment: the newest segment's last record may end with bytes
    that read as a SEAL naming the next seq, and taking them for one refused every open
    of a healthy log (one block read, once per open or refresh)."""
    if seg.version < SEAL_VERSION:
        return None
    found = tail_seal(env, seg, confirm=True)
    return None if found is None else found[1]


def missing_successor(seg: Segment, seal: Seal, context: str) -> MissingSegmentError:
    """The error for a SEAL naming a segment that is not there."""
    missing = os.path.join(os.path.dirname(seg.path), segment_name(seal[0]))
    return MissingSegmentError(f"segment {missing} is missing: {seg.path} is sealed at offset "
                               f"{seal[1]} naming it as its successor ({context}); the records "
                               f"from seq {seal[0]} on are lost", path=missing)
