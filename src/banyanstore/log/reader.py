"""Parse the records of one segment, reporting damage instead of guessing.

:func:`iter_records` walks the block stream of :mod:`banyanstore.log.format`
between two offsets and yields every intact record.  Whatever does not parse
(bad CRC, zero-filled space, a length running past its block, a fragment out
of order, a record whose seq is not the next one, a record cut off by the end
of the data) is passed to ``on_damage(offset, reason)``: the callback either
raises (the default policy of the Log: :class:`~banyanstore.errors.CorruptionError`)
or returns, and the reader re-synchronises at the next intact fragment of the
block (:func:`intact_fragment_after`) or else at the next block boundary, as
LevelDB does, dropping the leftover fragments of the damaged record.

The caller decides what damage means: recovery uses the offsets to tell a
torn tail (nothing intact after it) from corruption in the middle.

>>> from banyanstore.log.format import encode_header, fragment, BLOCK_SIZE, HEADER_SIZE
>>> seg = encode_header(5) + b"".join(f for _, f in fragment(5, b"hi", BLOCK_SIZE - HEADER_SIZE))
>>> [(s, d) for s, d, _, _ in iter_records(lambda o, n: seg[o:o + n], HEADER_SIZE, len(seg), 5)]
[(5, b'hi')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..crc import crc32c
from .format import (
    BLOCK_SIZE,
    FIRST,
    FRAG_HEADER,
    FRAG_HEADER_SIZE,
    FULL,
    LAST,
    MIDDLE,
    SEAL,
    SEAL_SIZE,
    SEQ,
    SEQ_SIZE,
)

__all__ = ["iter_records", "seek_record", "full_record_at", "intact_fragment_after", "Record",
           "OnDamage"]

Record = tuple[int, bytes, int, int]
"""``(seq, data, start offset, end offset)`` of one record."""
OnDamage = Callable[[int, str], None]
OnSeal = Callable[[int, int], None]
"""``on_seal(next_seq, offset)``: the segment's SEAL fragment, at ``offset``."""

_CRC_OF_TYPE = {kind: crc32c(bytes((kind,))) for kind in (FULL, FIRST, MIDDLE, LAST, SEAL)}
#: the fewest bytes a record takes in a segment: one fragment header and the seq
MIN_RECORD_BYTES = FRAG_HEADER_SIZE + SEQ_SIZE


def _raise(offset: int, reason: str) -> None:
    raise ValueError(f"{reason} at offset {offset}")


def iter_records(read: Callable[[int, int], bytes], start: int, end: int, expect_seq: int | None,
                 on_damage: OnDamage = _raise, *, chunk_bytes: int = 1 << 20,
                 on_seal: OnSeal | None = None) -> Iterator[Record]:
    """Yield the intact records in ``[start, end)``; ``start`` must be a record boundary.

    A SEAL fragment (format version 3) ends the records: it is passed to
    ``on_seal``; it must name the seq after the last record, and only zeros may
    follow it (damage otherwise).

    ``read(offset, length)`` returns the bytes of the segment file.
    ``expect_seq`` is the seq of the record at ``start`` (``None``: unknown);
    after that, each record must carry the next seq -- or, after damage, a
    larger one that the bytes skipped could hold (``MIN_RECORD_BYTES`` a record):
    framed bytes inside a damaged record's payload are not records of this log.
    """
    chunk, chunk_off = b"", start
    pos = start
    parts: list[bytes] | None = None  # payloads of the record being assembled
    rec_start = start
    resyncing = False  # after damage: drop orphan MIDDLE/LAST fragments quietly
    gap_ok = False  # after damage the next record may skip seqs (they were lost)
    expect = expect_seq
    good_end = start  # where the last intact record ended: lost records lie after it

    def damage(offset: int, reason: str) -> int:
        nonlocal parts, resyncing, gap_ok
        on_damage(offset, reason)
        parts, resyncing, gap_ok = None, True, True
        # Continue at an intact fragment later in this block if there is one (a
        # flipped bit must not take the block's other records with it), else at
        # the next block, as LevelDB does.
        follower = intact_fragment_after(read, pos, end)
        return follower if follower is not None else (pos // BLOCK_SIZE + 1) * BLOCK_SIZE

    while pos < end:
        block_end = min((pos // BLOCK_SIZE + 1) * BLOCK_SIZE, end)
        if block_end - pos < FRAG_HEADER_SIZE:
            if block_end == end and end % BLOCK_SIZE and pos < end:
                # Not a trailer: the data stops inside a fragment header.
                damage(rec_start if parts is not None else pos, "truncated fragment header")
            pos = block_end
            continue
        if pos + FRAG_HEADER_SIZE > chunk_off + len(chunk) or block_end > chunk_off + len(chunk):
            # Fragments never cross blocks: load at least to the end of this block.
            want = max(block_end, min(end, pos - pos % BLOCK_SIZE + chunk_bytes)) - pos
            chunk, chunk_off = read(pos, want), pos
            if len(chunk) < block_end - pos:  # the file shrank under us (or was cut)
                end = block_end = pos + len(chunk)
                continue
        i = pos - chunk_off
        crc, length, kind = FRAG_HEADER.unpack_from(chunk, i)
        frag_end = pos + FRAG_HEADER_SIZE + length
        bad = None
        if block_end - pos < SEAL_SIZE and parts is None and _seal_trailer(chunk, i, block_end - pos, pos):
            pos = block_end
            continue
        if kind not in _CRC_OF_TYPE:
            bad = "zero-filled space" if crc == length == kind == 0 else f"bad fragment type {kind}"
        elif frag_end > block_end:
            bad = ("fragment runs past the end of the data" if block_end == end
                   else "fragment length runs past its block")
        else:
            payload = memoryview(chunk)[i + FRAG_HEADER_SIZE:i + FRAG_HEADER_SIZE + length]
            if crc32c(payload, _CRC_OF_TYPE[kind]) != crc:
                bad = "fragment checksum mismatch"
        if bad is not None:
            pos = damage(rec_start if parts is not None else pos, bad)
            continue
        if kind == SEAL:
            if parts is not None:
                pos = damage(rec_start, "record without its LAST fragment")
                continue
            why = _seal_problem(payload, expect, gap_ok)
            if why is not None:
                pos = damage(pos, why)
                continue
            if on_seal is not None:
                on_seal(SEQ.unpack_from(payload)[0], pos)
            after = _nonzero_after(read, frag_end, end)
            if after is not None:
                on_damage(after, "bytes after the segment's seal")
            return
        if kind == FULL or kind == FIRST:
            if parts is not None:
                pos = damage(rec_start, "record without its LAST fragment")
                continue
            rec_start, resyncing = pos, False
            if kind == FIRST:
                parts = [bytes(payload)]
                pos = frag_end
                continue
            whole = payload
        else:
            if parts is None:
                if resyncing:  # the rest of a record already reported as damaged
                    pos = frag_end
                    continue
                pos = damage(pos, "fragment without its FIRST fragment")
                continue
            parts.append(bytes(payload))
            pos = frag_end
            if kind == MIDDLE:
                continue
            whole, parts = memoryview(b"".join(parts)), None
        if len(whole) < SEQ_SIZE:
            pos = damage(rec_start, "record shorter than its seq")
            continue
        (seq,) = SEQ.unpack_from(whole)
        if expect is not None and seq != expect and not (gap_ok and seq > expect):
            pos = damage(rec_start, f"record seq {seq} where {expect} was expected")
            continue
        if expect is not None and (seq - expect) * MIN_RECORD_BYTES > rec_start - good_end:
            # More records lost than the damaged bytes could hold: not one of ours but
            # framed bytes inside a damaged (torn) record's payload, found by the resync.
            pos = damage(rec_start, f"record seq {seq} cannot follow seq {expect - 1}: "
                         f"{rec_start - good_end} bytes cannot hold {seq - expect} records")
            continue
        expect, gap_ok = seq + 1, False
        pos = good_end = frag_end
        yield seq, bytes(whole[SEQ_SIZE:]), rec_start, frag_end
    if parts is not None:
        damage(rec_start, "record cut off by the end of the data")


def _seal_trailer(chunk: bytes, i: int, room: int, pos: int) -> bool:
    """Whether the ``room`` bytes left in the block at ``chunk[i:]`` (a fragment
    boundary) are the zeros a writer leaves before a seal that does not fit there:
    fewer than SEAL_SIZE, all zero, reaching the block's end."""
    return (FRAG_HEADER_SIZE <= room < SEAL_SIZE and (pos + room) % BLOCK_SIZE == 0
            and len(chunk) >= i + room and not any(chunk[i:i + room]))


def _seal_problem(payload: memoryview, expect: int | None, gap_ok: bool) -> str | None:
    """Why a SEAL fragment cannot end these records, or None."""
    if len(payload) != SEQ_SIZE:
        return f"seal fragment of {len(payload)} bytes (not {SEQ_SIZE})"
    (next_seq,) = SEQ.unpack_from(payload)
    if expect is not None and next_seq != expect and not (gap_ok and next_seq > expect):
        return f"the seal names seq {next_seq} where the records end before seq {expect}"
    return None


def _nonzero_after(read: Callable[[int, int], bytes], start: int, end: int) -> int | None:
    """Offset of the first non-zero byte in ``[start, end)``, or None."""
    pos = start
    while pos < end:
        data = read(pos, min(BLOCK_SIZE, end - pos))
        if not data:
            return None
        kept = len(data) - len(data.lstrip(b"\0"))
        if kept < len(data):
            return pos + kept
        pos += len(data)
    return None


def seek_record(read: Callable[[int, int], bytes], start: int, end: int,
                skip: int) -> tuple[int, bytes, int] | None:
    """Find the record ``skip`` records after the one at ``start`` by hopping over
    fragment headers without checking CRCs (about 0.3 us per record skipped).

    Returns ``(offset, block, i)``: the record's offset and the bytes read from its
    block, in which the record starts at index ``i`` (for :func:`full_record_at`);
    ``None`` if the data ends first or looks odd.  The caller verifies the record
    found (and falls back to :func:`iter_records`, which reports damage).
    """
    pos = start
    while pos < end:
        bstart = pos - pos % BLOCK_SIZE
        block_end = min(bstart + BLOCK_SIZE, end)
        block = read(pos, block_end - pos)
        if len(block) < block_end - pos:
            return None
        i, limit = 0, len(block) - FRAG_HEADER_SIZE
        while i <= limit:
            if skip == 0:
                return pos + i, block, i
            kind = block[i + 6]
            i += FRAG_HEADER_SIZE + (block[i + 4] | block[i + 5] << 8)
            if kind == FULL or kind == LAST:
                skip -= 1
            elif kind != FIRST and kind != MIDDLE:
                return None
        if i > len(block):
            return None  # a length running past its block: damage
        pos = block_end
    return None


def full_record_at(block: bytes, i: int) -> tuple[int, bytes] | None:
    """``(seq, data)`` of the record at ``block[i:]`` if it is one intact FULL fragment;
    ``None`` otherwise (another kind, cut off, or a bad CRC: the careful path decides)."""
    if i + FRAG_HEADER_SIZE + SEQ_SIZE > len(block):
        return None
    crc, length, kind = FRAG_HEADER.unpack_from(block, i)
    stop = i + FRAG_HEADER_SIZE + length
    if kind != FULL or stop > len(block) or length < SEQ_SIZE:
        return None
    payload = memoryview(block)[i + FRAG_HEADER_SIZE:stop]
    if crc32c(payload, _CRC_OF_TYPE[FULL]) != crc:
        return None
    return SEQ.unpack_from(payload)[0], bytes(payload[SEQ_SIZE:])


def intact_fragment_after(read: Callable[[int, int], bytes], off: int, end: int) -> int | None:
    """Offset of an intact fragment after the damaged one at ``off`` in the same block,
    or None.  Tells corruption (good data follows) from a torn write (nothing does).

    First the damaged fragment's own length field is trusted (a flipped payload bit
    leaves it intact); then every later offset of the block is tried.  A random
    7-byte header passing the type, length and CRC-32C checks is a ~2**-34 event,
    and a false find only makes recovery refuse (never lose) data.
    """
    block_end = min((off // BLOCK_SIZE + 1) * BLOCK_SIZE, end)
    data = read(off, block_end - off)

    def intact(i: int) -> bool:
        if i + FRAG_HEADER_SIZE > len(data):
            return False
        crc, length, kind = FRAG_HEADER.unpack_from(data, i)
        stop = i + FRAG_HEADER_SIZE + length
        return (kind in _CRC_OF_TYPE and 0 < length and stop <= len(data)
                and crc32c(memoryview(data)[i + FRAG_HEADER_SIZE:stop], _CRC_OF_TYPE[kind]) == crc)

    if len(data) >= FRAG_HEADER_SIZE:
        claimed = FRAG_HEADER_SIZE + FRAG_HEADER.unpack_from(data, 0)[1]
        if intact(claimed):
            return off + claimed
    # A fragment's type byte (its header's last) is never zero: none starts where it
    # would fall in the zeros ending the block -- a killed writer's reserved space, which
    # this search walked byte by byte on every open after a crash.
    last = len(data.rstrip(b"\0")) - FRAG_HEADER_SIZE
    for i in range(1, last + 1):
        if intact(i):
            return off + i
    return None
