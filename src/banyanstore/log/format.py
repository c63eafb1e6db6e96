"""On-disk format of log segments: constants, the segment header, record framing.

The byte grammar (also in ``docs/format/log.md``; all integers little-endian)::

    segment     := header block-stream seal? zero-tail
    header      := magic[8] = "BANYANLG"
                   version u16 = 3                (1: before zero tails, 2: before seals; read too)
                   flags u16 = 0                  (reserved; readers reject others)
                   block_size u32 = 32768
                   first_seq u64                  (seq of the segment's first record;
                                                   also the file name, 20 digits + ".log")
                   header_crc u32                 (CRC-32C of the 24 bytes above)
                                                  -> 28 bytes, at file offset 0
    block-stream:  the file is cut into 32768-byte blocks counted from offset 0
                   (block 0 starts with the header); the last block may be short.
    block       := fragment* trailer?
    trailer     := 0x00 * (1..6)                  when fewer than 7 bytes remain in a block
                 | 0x00 * (7..14)                 (version 3) before a seal that does not
                                                  fit in the rest of its block
    fragment    := crc u32 length u16 type u8 payload[length]
                   crc = CRC-32C(type byte || payload), not masked
    type        := 1 FULL | 2 FIRST | 3 MIDDLE | 4 LAST | 5 SEAL   (0 is never written,
                   so zero-filled space never parses as a fragment)
    record      := FULL | FIRST MIDDLE* LAST
                   the concatenated payloads are: seq u64 || data
    seal        := fragment of type SEAL, length 8, payload next_seq u64
                   (version 3) the last fragment of a segment that has a successor:
                   next_seq = the successor's first seq = the seq after the last record
    zero-tail   := 0x00*                          (version 2 and 3) space the writer reserved
                                                  ahead of its records; it ends the data

Version 2 segments are written through a shared memory mapping of space
reserved ahead (``MappedFile``), so a record is in the kernel the moment it is
stored and a killed process loses nothing it acknowledged.  The file therefore
may end with zeros after the last record -- while it is written, and after a
crash.  Readers take zero bytes from a record boundary to the end of the file
as the end of the data, not as damage; sealed and closed segments are cut to
their last record.  In a version 1 segment the same zeros are a torn tail.

Version 3 adds the *seal*: at rotation the writer syncs the old segment (unless every
record of it is durable already), creates
the successor (header and directory synced), then stores a SEAL fragment naming the
successor's first seq at the end of the old segment, cuts the file after it and
syncs it, and only then stores records in the successor.  So a non-last version-3 segment without a
seal whose successor holds records was cut, and a sealed last segment lost its
successor -- the two losses versions 1 and 2 cannot see.

A record carries its own sequence number, so a reader that skips a damaged
stretch (``skip_damaged_records=True``) still knows the seq of every record
after it, and a record found at the wrong place is detected.  Inside a
segment seqs are ``first_seq, first_seq + 1, ...`` with no gaps as written.

REQUIRES: ``crc32c`` (C implementation of CRC-32C).

>>> h = encode_header(42)
>>> len(h), decode_header(h, "x.log"), parse_header(h, "x.log")
(28, 42, (42, 3))
>>> frags = list(fragment(7, b"abc", BLOCK_SIZE - HEADER_SIZE))
>>> [t for t, _ in frags]
[1]
>>> s = seal_bytes(HEADER_SIZE, 9)
>>> len(s), parse_seal(s[-SEAL_SIZE:]), len(seal_bytes(BLOCK_SIZE - 10, 9))
(15, 9, 25)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..crc import crc32c
from ..errors import CorruptionError

__all__ = [
    "MAGIC", "VERSION", "ZERO_TAIL_VERSION", "BLOCK_SIZE", "HEADER", "HEADER_SIZE", "FRAG_HEADER",
    "FRAG_HEADER_SIZE", "SEQ", "SEQ_SIZE", "FULL", "FIRST", "MIDDLE", "LAST", "encode_header",
    "decode_header", "parse_header", "fragment", "frame_crc", "ForeignFileError", "SEAL",
    "SEAL_VERSION", "SEAL_SIZE", "seal_bytes", "parse_seal", "MissingSegmentError",
]

MAGIC = b"BANYANLG"
VERSION = 3
#: the first version whose segments may end with reserved zero-filled space
ZERO_TAIL_VERSION = 2
#: the first version whose segments end with a SEAL fragment once a successor exists
SEAL_VERSION = 3
_READABLE = frozenset({1, 2, 3})
BLOCK_SIZE = 32 * 1024

#: magic, version, flags, block_size, first_seq, header_crc
HEADER = struct.Struct("<8sHHIQI")
HEADER_SIZE = HEADER.size
_HEADER_BODY = HEADER_SIZE - 4
#: crc, length, type (the 7-byte LevelDB fragment header)
FRAG_HEADER = struct.Struct("<IHB")
FRAG_HEADER_SIZE = FRAG_HEADER.size
#: crc, length, type, seq: the header of a FULL fragment plus the record's seq, in one pack
FULL_HEADER = struct.Struct("<IHBQ")
#: type, seq: the first bytes the CRC of a FULL/FIRST fragment covers
TYPE_SEQ = struct.Struct("<BQ")
SEQ = struct.Struct("<Q")
SEQ_SIZE = SEQ.size
MAX_FRAGMENT = 0xFFFF
MAX_FIRST_SEQ = (1 << 63) - 1
"""The largest first seq a segment header may give: no log appends 2**63 records, and a
header past it (damage, a hand-made file) would run the seqs into 2**64, which neither
engine can store."""

FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
SEAL = 5
#: a whole SEAL fragment: its header and the successor's first seq
SEAL_SIZE = FRAG_HEADER_SIZE + SEQ_SIZE

assert HEADER_SIZE == 28 and FRAG_HEADER_SIZE == 7 and SEQ_SIZE == 8 and SEAL_SIZE == 15
assert FULL_HEADER.size == FRAG_HEADER_SIZE + SEQ_SIZE and TYPE_SEQ.size == 9
assert BLOCK_SIZE - FRAG_HEADER_SIZE <= MAX_FRAGMENT


class ForeignFileError(CorruptionError):
    """A file named like a segment that does not start with our magic."""


class MissingSegmentError(CorruptionError):
    """A sealed segment names a successor that is not in the directory: the newest
    segment (or one in the middle) was deleted, and its records with it."""


def encode_header(first_seq: int, version: int = VERSION) -> bytes:
    """A segment header (``version``: tests build older segments with it)."""
    body = HEADER.pack(MAGIC, version, 0, BLOCK_SIZE, first_seq, 0)[:_HEADER_BODY]
    return body + struct.pack("<I", crc32c(body))


def decode_header(data: bytes, path: str) -> int:
    """The ``first_seq`` of a segment header; :class:`CorruptionError` if it is not valid."""
    return parse_header(data, path)[0]


def parse_header(data: bytes, path: str) -> tuple[int, int]:
    """``(first_seq, version)`` of a segment header; :class:`CorruptionError` if it is not valid."""
    if len(data) < HEADER_SIZE:
        raise CorruptionError(f"segment header truncated ({len(data)} of {HEADER_SIZE} bytes)",
                              path=path, offset=0)
    magic, version, flags, block_size, first_seq, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ForeignFileError(f"not a banyanstore log segment (magic {magic!r})", path=path, offset=0)
    if crc32c(memoryview(data)[:_HEADER_BODY]) != crc:
        raise CorruptionError("segment header checksum mismatch", path=path, offset=0)
    if version not in _READABLE or flags != 0:
        raise CorruptionError(f"unsupported log format version {version} (flags {flags:#x})",
                              path=path, offset=0)
    if block_size != BLOCK_SIZE:
        raise CorruptionError(f"unsupported block size {block_size}", path=path, offset=0)
    if first_seq > MAX_FIRST_SEQ:
        raise CorruptionError(f"first seq {first_seq} is past {MAX_FIRST_SEQ}, more records than "
                              "a log ever holds", path=path, offset=0)
    return int(first_seq), int(version)


def frame_crc(kind: int, payload: bytes | memoryview) -> int:
    return crc32c(payload, crc32c(bytes((kind,))))


def fragment(seq: int, data: bytes, block_left: int) -> Iterator[tuple[int, bytes]]:
    """Split the record ``seq || data`` into ``(type, framed bytes)`` pieces.

    ``block_left`` is the room left in the current block; it must be at least
    :data:`FRAG_HEADER_SIZE` (the caller pads and starts a new block otherwise).
    Each piece but the last fills its block exactly, so the next one starts a
    block.  This is the slow path for records that do not fit where they start.
    """
    head, body = SEQ.pack(seq), memoryview(data)
    pos, total, first = 0, SEQ_SIZE + len(body), True
    while True:
        room = block_left - FRAG_HEADER_SIZE
        end = min(total, pos + room)
        chunk = _record_bytes(head, body, pos, end)
        pos = end
        last = pos >= total
        kind = (FULL if last else FIRST) if first else (LAST if last else MIDDLE)
        yield kind, FRAG_HEADER.pack(frame_crc(kind, chunk), len(chunk), kind) + chunk
        if last:
            return
        first, block_left = False, BLOCK_SIZE


def _record_bytes(head: bytes, body: memoryview, start: int, end: int) -> bytes | memoryview:
    """Bytes ``start:end`` of the record ``head || body``, without joining the two whole
    (a record of megabytes would be one more copy of it in memory)."""
    if start >= SEQ_SIZE:
        return body[start - SEQ_SIZE:end - SEQ_SIZE]
    return head[start:min(end, SEQ_SIZE)] + body[:max(0, end - SEQ_SIZE)]


def seal_bytes(offset: int, next_seq: int) -> bytes:
    """What the writer stores at ``offset`` (a record boundary) to seal a segment:
    zeros to the end of the block if the SEAL fragment does not fit in it, then the
    SEAL naming ``next_seq``."""
    room = BLOCK_SIZE - offset % BLOCK_SIZE
    pad = bytes(room) if room < SEAL_SIZE else b""
    payload = SEQ.pack(next_seq)
    return pad + FRAG_HEADER.pack(frame_crc(SEAL, payload), SEQ_SIZE, SEAL) + payload


def parse_seal(data: bytes | memoryview) -> int | None:
    """The ``next_seq`` of the :data:`SEAL_SIZE` bytes ``data`` if they are an intact
    SEAL fragment, else None."""
    if len(data) != SEAL_SIZE:
        return None
    crc, length, kind = FRAG_HEADER.unpack_from(data)
    payload = memoryview(data)[FRAG_HEADER_SIZE:]
    if kind != SEAL or length != SEQ_SIZE or frame_crc(SEAL, payload) != crc:
        return None
    return int(SEQ.unpack_from(payload)[0])
