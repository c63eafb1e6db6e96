"""The range-tombstone block of a table (format version 3): encoder and decoder.

Payload grammar (integers little-endian)::

    range_dels := count:u32 reserved:u32 (=0) entry{count}
    entry      := start_len:u32 end_len:u32 version:u64 start end
                  -- hides the keys start <= key < end older than version
                  -- entries ascend by (start, version descending, end);
                     start < end; min_version <= version <= max_version

and the table's properties (format version 3) describe the block::

    range_props := off:u64 len:u32 count:u32 smallest_len:u32 largest_len:u32
                   smallest largest
                   -- off/len: the stored block (body length, trailer after it);
                      smallest = the first start, largest = the greatest end

The block sits between the index block and the properties block, is stored like
every other block (body + ``ctype crc`` trailer, its own checksum) and is read
with the other meta blocks when the table opens: range tombstones are few, and a
read needs all of a view's at hand (lsm/rangedel.py).

>>> payload = encode_range_dels([(b"a", b"c", 7), (b"b", b"z", 5)])
>>> decode_range_dels(payload, 2, 1, 9)
((b'a', b'c', 7), (b'b', b'z', 5))
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["RANGE_PROPS", "RangeDel", "encode_range_dels", "decode_range_dels", "sort_key",
           "range_bounds"]

RangeDel = tuple[bytes, bytes, int]  # (start, end, version); see lsm/rangedel.py

HEADER = struct.Struct("<II")
ENTRY = struct.Struct("<IIQ")
RANGE_PROPS = struct.Struct("<QIIII")
assert HEADER.size == 8 and ENTRY.size == 16 and RANGE_PROPS.size == 24


def sort_key(r: RangeDel) -> tuple[bytes, int, bytes]:
    """The block's order: start ascending, version descending, end ascending."""
    return r[0], -r[2], r[1]


def range_bounds(dels: Sequence[RangeDel]) -> tuple[bytes, bytes]:
    """``(smallest start, greatest end)`` of ``dels`` in block order (REQUIRES: some)."""
    return dels[0][0], max(r[1] for r in dels)


def encode_range_dels(dels: Sequence[RangeDel]) -> bytes:
    """The block payload; REQUIRES: ``dels`` in :func:`sort_key` order, each valid."""
    parts = [HEADER.pack(len(dels), 0)]
    for start, end, version in dels:
        parts += (ENTRY.pack(len(start), len(end), version), start, end)
    return b"".join(parts)


def decode_range_dels(payload: bytes, count: int, min_version: int,
                      max_version: int) -> tuple[RangeDel, ...]:
    """The range tombstones of a block that the properties say holds ``count``;
    ValueError for anything out of the grammar (every field is checked)."""
    n = len(payload)
    if n < HEADER.size:
        raise ValueError("range-tombstone block shorter than its header")
    got, reserved = HEADER.unpack_from(payload, 0)
    if got != count or reserved != 0:
        raise ValueError(f"range-tombstone block holds {got} entries (reserved {reserved}), "
                         f"the properties say {count}")
    out: list[RangeDel] = []
    pos = HEADER.size
    prev: tuple[bytes, int, bytes] | None = None
    for _ in range(count):
        if pos + ENTRY.size > n:
            raise ValueError("range-tombstone entry header past the block's end")
        slen, elen, version = ENTRY.unpack_from(payload, pos)
        pos += ENTRY.size
        if pos + slen + elen > n:
            raise ValueError("range-tombstone entry keys past the block's end")
        start = payload[pos:pos + slen]
        end = payload[pos + slen:pos + slen + elen]
        pos += slen + elen
        if not start < end:
            raise ValueError("range tombstone does not end after its start")
        if not min_version <= version <= max_version or version == 0:
            raise ValueError(f"range tombstone version {version} outside the table's "
                             f"{min_version}..{max_version}")
        key = sort_key((start, end, version))
        if prev is not None and not prev < key:
            raise ValueError("range tombstones are out of order")
        prev = key
        out.append((start, end, version))
    if pos != n:
        raise ValueError(f"range-tombstone block has {n - pos} trailing bytes")
    return tuple(out)
