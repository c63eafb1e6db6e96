"""Write-ahead log records of the Store: one record per committed write or batch.

The WAL is a :class:`banyanstore.log.log.Log` (segments, CRC32C framing, torn
tail repair, group commit) in ``<store>/wal/``.  This module only defines the
payload of one log record.  Byte grammar (little endian)::

    record    := header entry{count}
    header    := format:u8 flags:u8 (=0) count:u32 version:u64 commit_ms:u64       # 22 bytes
    format    := 1 (kinds 1 and 2 only) | 2 (a record holding a range tombstone)
    entry     := kind:u8 keyspace:u32 key_len:u32 value_len:u32 key value        # 13 + n bytes
    kind      := 1 (value) | 2 (tombstone; value_len = 0)
               | 3 (range tombstone, format 2 only: key = start, value = end, start < end)

A range tombstone ``[start, end)`` at version ``v`` hides every entry of a key
``start <= key < end`` whose version is below ``v`` (lsm/rangedel.py).  Records
without one keep format 1, so a build that predates range tombstones reads
them; one with a range tombstone is format 2, which such a build refuses by its
format number (instead of misreading the entry).

``version`` is the store-wide version of the whole batch (every entry of a
batch shares it); ``commit_ms`` is wall-clock milliseconds, used for the
coarse version->time map behind ``history_retention`` and ``ttl``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, NamedTuple

from .. import accel
from ..errors import CorruptionError

__all__ = ["encode_one", "encode_batch", "encode_with_ranges", "decode", "WalRecord", "KIND_VALUE",
           "KIND_TOMBSTONE", "KIND_RANGE", "WAL_FORMAT", "WAL_FORMAT_RANGES", "py_encode_one",
           "py_encode_batch", "VERSION_OFFSET",
           "check_version_order"]

WAL_FORMAT: Final = 1
WAL_FORMAT_RANGES: Final = 2
KIND_VALUE: Final = 1
KIND_TOMBSTONE: Final = 2
KIND_RANGE: Final = 3

HEADER = struct.Struct("<BBIQQ")
ENTRY = struct.Struct("<BIII")
ONE = struct.Struct("<BBIQQBIII")  # header + first entry in one pack call (single puts)
VERSION_OFFSET: Final = 6  # of the header's version field (after format, flags, count)
assert HEADER.size == 22 and ENTRY.size == 13 and ONE.size == 35
assert struct.calcsize("<BBI") == VERSION_OFFSET

Op = tuple[int, bytes, bytes | None]  # (keyspace id, key, value or None for a tombstone)
RangeOp = tuple[int, bytes, bytes]  # (keyspace id, start, end): a range tombstone


class WalRecord(NamedTuple):
    """One decoded record: every op and range tombstone shares ``version``."""

    version: int
    commit_ms: int
    ops: list[Op]
    ranges: list[RangeOp]

    def keyspaces(self) -> set[int]:
        """The keyspace ids the record writes to."""
        return {op[0] for op in self.ops} | {r[0] for r in self.ranges}


def py_encode_one(version: int, commit_ms: int, keyspace: int, key: bytes, value: bytes | None) -> bytes:
    """The record of a single put or delete."""
    if value is None:
        return ONE.pack(WAL_FORMAT, 0, 1, version, commit_ms, KIND_TOMBSTONE, keyspace,
                        len(key), 0) + key
    return b"".join((ONE.pack(WAL_FORMAT, 0, 1, version, commit_ms, KIND_VALUE, keyspace,
                              len(key), len(value)), key, value))


def py_encode_batch(version: int, commit_ms: int, ops: Iterable[Op]) -> bytes:
    """The record of a batch (every op shares ``version``)."""
    parts = [b""]
    pack = ENTRY.pack
    count = 0
    for ks, key, value in ops:
        if value is None:
            parts.append(pack(KIND_TOMBSTONE, ks, len(key), 0))
            parts.append(key)
        else:
            parts.append(pack(KIND_VALUE, ks, len(key), len(value)))
            parts.append(key)
            parts.append(value)
        count += 1
    parts[0] = HEADER.pack(WAL_FORMAT, 0, count, version, commit_ms)
    return b"".join(parts)


def encode_with_ranges(version: int, commit_ms: int, ops: Iterable[Op],
                       ranges: Iterable[RangeOp]) -> bytes:
    """The record of a batch holding range tombstones (format 2): the ops, then the
    range tombstones.  Their order does not matter: a range tombstone hides only
    entries *older* than its version, never those of its own batch (lsm/batch.py
    drops a batch's earlier writes that a later range tombstone of it covers)."""
    parts = [b""]
    pack = ENTRY.pack
    count = 0
    for ks, key, value in ops:
        if value is None:
            parts += (pack(KIND_TOMBSTONE, ks, len(key), 0), key)
        else:
            parts += (pack(KIND_VALUE, ks, len(key), len(value)), key, value)
        count += 1
    for ks, start, end in ranges:
        parts += (pack(KIND_RANGE, ks, len(start), len(end)), start, end)
        count += 1
    parts[0] = HEADER.pack(WAL_FORMAT_RANGES, 0, count, version, commit_ms)
    return b"".join(parts)


# The compiled core encodes the same bytes (tests/sstable/test_native.py compares them)
# in one call, without the struct packing and joins; it requires bytes keys and values.
encode_one = py_encode_one if accel.native is None else accel.native.wal_encode_one
encode_batch = py_encode_batch if accel.native is None else accel.native.wal_encode_batch


def decode(record: bytes, where: str = "wal") -> WalRecord:
    """The :class:`WalRecord` of ``record``; :class:`CorruptionError` if malformed (the
    framing CRC passed, so this means a bug or a foreign writer): short, an unknown
    format or kind, flags not 0, a range tombstone in a format-1 record or with ``start >= end``,
    lengths running past the end, trailing bytes."""
    n = len(record)
    if n < HEADER.size:
        raise CorruptionError(f"WAL record too short ({n} bytes)", path=where)
    fmt, flags, count, version, commit_ms = HEADER.unpack_from(record, 0)
    if fmt != WAL_FORMAT and fmt != WAL_FORMAT_RANGES:
        # offset 0: the format byte, so a newer writer's record is located like other damage
        raise CorruptionError(f"WAL record format {fmt} is not supported (expected {WAL_FORMAT} "
                              f"or {WAL_FORMAT_RANGES})", path=where, offset=0)
    if flags:
        raise CorruptionError(f"WAL record flags {flags:#x} are not 0", path=where, offset=1)
    kinds = (KIND_VALUE, KIND_TOMBSTONE) if fmt == WAL_FORMAT else (KIND_VALUE, KIND_TOMBSTONE,
                                                                   KIND_RANGE)
    ops: list[Op] = []
    ranges: list[RangeOp] = []
    pos = HEADER.size
    unpack = ENTRY.unpack_from
    for _ in range(count):
        if pos + ENTRY.size > n:
            raise CorruptionError("WAL record entry header past its end", path=where, offset=pos)
        kind, ks, klen, vlen = unpack(record, pos)
        pos += ENTRY.size
        end = pos + klen + vlen
        if end > n or kind not in kinds or (kind == KIND_TOMBSTONE and vlen):
            raise CorruptionError(f"WAL record entry malformed (kind {kind})", path=where, offset=pos)
        key = record[pos:pos + klen]
        if kind == KIND_RANGE:
            stop = record[pos + klen:end]
            if not key < stop:
                raise CorruptionError("WAL range tombstone does not end after its start",
                                      path=where, offset=pos)
            ranges.append((ks, key, stop))
        else:
            ops.append((ks, key, record[pos + klen:end] if kind == KIND_VALUE else None))
        pos = end
    if pos != n:
        raise CorruptionError(f"WAL record has {n - pos} trailing bytes", path=where, offset=pos)
    return WalRecord(version, commit_ms, ops, ranges)


def check_version_order(version: int, previous: int, where: str) -> None:
    """CorruptionError unless a WAL record's ``version`` is at least ``previous``, the
    version of the record before it.  Equal is allowed: a write interrupted after its
    record reached the log (a KeyboardInterrupt) leaves its version unpublished, and
    the next write takes it again; both memtables let the later entry win, as within
    one batch.  Lower cannot be written by the store.

    >>> check_version_order(7, 7, "wal (record 3)")
    >>> try:
    ...     check_version_order(6, 7, "wal (record 3)")
    ... except CorruptionError as exc:
    ...     print(exc.path, exc.offset)
    wal (record 3) 6
    """
    if version < previous:
        raise CorruptionError(f"WAL record version {version} is below version {previous} of "
                              "the record before it", path=where, offset=VERSION_OFFSET)
