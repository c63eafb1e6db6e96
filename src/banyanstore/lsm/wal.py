"""Write-ahead log records of the Store: one record per committed write or batch.

The WAL is a :class:`banyanstore.log.log.Log` (segments, CRC32C framing, torn
tail repair, group commit) in ``<store>/wal/``.  This module only defines the
payload of one log record.  Byte grammar (little endian)::

    record    := header entry{count}
    header    := format:u8 (=1) flags:u8 (=0) count:u32 version:u64 commit_ms:u64   # 22 bytes
    entry     := kind:u8 keyspace:u32 key_len:u32 value_len:u32 key value        # 13 + n bytes
    kind      := 1 (value) | 2 (tombstone; value_len = 0)

``version`` is the store-wide version of the whole batch (every entry of a
batch shares it); ``commit_ms`` is wall-clock milliseconds, used for the
coarse version->time map behind ``history_retention`` and ``ttl``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from .. import accel
from ..errors import CorruptionError

__all__ = ["encode_one", "encode_batch", "decode", "KIND_VALUE", "KIND_TOMBSTONE", "WAL_FORMAT",
           "py_encode_one", "py_encode_batch"]

WAL_FORMAT: Final = 1
KIND_VALUE: Final = 1
KIND_TOMBSTONE: Final = 2

HEADER = struct.Struct("<BBIQQ")
ENTRY = struct.Struct("<BIII")
ONE = struct.Struct("<BBIQQBIII")  # header + first entry in one pack call (single puts)
assert HEADER.size == 22 and ENTRY.size == 13 and ONE.size == 35

Op = tuple[int, bytes, bytes | None]  # (keyspace id, key, value or None for a tombstone)


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


# The compiled core encodes the same bytes (tests/sstable/test_native.py compares them)
# in one call, without the struct packing and joins; it requires bytes keys and values.
encode_one = py_encode_one if accel.native is None else accel.native.wal_encode_one
encode_batch = py_encode_batch if accel.native is None else accel.native.wal_encode_batch


def decode(record: bytes, where: str = "wal") -> tuple[int, int, list[Op]]:
    """``(version, commit_ms, ops)`` of a record; :class:`CorruptionError` if malformed
    (the framing CRC passed, so this means a bug or a foreign writer)."""
    n = len(record)
    if n < HEADER.size:
        raise CorruptionError(f"WAL record too short ({n} bytes)", path=where)
    fmt, _flags, count, version, commit_ms = HEADER.unpack_from(record, 0)
    if fmt != WAL_FORMAT:
        raise CorruptionError(f"WAL record format {fmt} is not supported (expected {WAL_FORMAT})",
                              path=where)
    ops: list[Op] = []
    pos = HEADER.size
    unpack = ENTRY.unpack_from
    for _ in range(count):
        if pos + ENTRY.size > n:
            raise CorruptionError("WAL record entry header past its end", path=where, offset=pos)
        kind, ks, klen, vlen = unpack(record, pos)
        pos += ENTRY.size
        end = pos + klen + vlen
        if end > n or kind not in (KIND_VALUE, KIND_TOMBSTONE):
            raise CorruptionError(f"WAL record entry malformed (kind {kind})", path=where, offset=pos)
        key = record[pos:pos + klen]
        ops.append((ks, key, record[pos + klen:end] if kind == KIND_VALUE else None))
        pos = end
    if pos != n:
        raise CorruptionError(f"WAL record has {n - pos} trailing bytes", path=where, offset=pos)
    return version, commit_ms, ops
