"""The WAL tail object: the store's WAL records a backup holds beyond its tables.

A backup does not flush the store: writes newer than the tables (versions in
``(flushed_version, version]``) are copied from the WAL as they are, one
payload per committed write or batch (the record of ``lsm/wal.py``), and a
restore appends them to the new store's WAL, whose replay rebuilds the
memtables -- exactly what reopening the source store would do.

Byte grammar (little endian)::

    wal_tail := header record*
    header   := magic:8 = "BNYWTAIL"  format:u32 = 1  header_crc:u32     # 16 bytes
                header_crc = crc32c(magic || format)
    record   := length:u32  crc:u32  payload:length
                crc = crc32c(payload); payload = one WAL record (lsm/wal.py)

The backup manifest names the object by its SHA-256 and records the number
of records and the first and last version; the reader checks all of it.

>>> import io
>>> w = TailWriter(io.BytesIO())
>>> from banyanstore.lsm.wal import encode_one
>>> w.add(encode_one(5, 0, 0, b"k", b"v"), 5)
>>> w.records, w.first_version, w.last_version, len(w.sha256.hexdigest())
(1, 5, 5, 64)
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import BinaryIO, Final

from ..crc import crc32c
from ..errors import CorruptionError
from ..lsm.wal import decode

__all__ = ["TailWriter", "read_tail"]

MAGIC: Final = b"BNYWTAIL"
FORMAT: Final = 1
HEADER = struct.Struct("<8sII")
RECORD = struct.Struct("<II")
assert HEADER.size == 16 and RECORD.size == 8
_HEAD_BYTES: Final = struct.pack("<8sI", MAGIC, FORMAT)
_CHUNK: Final = 1 << 20


class TailWriter:
    """Writes a tail object to ``out`` and computes its SHA-256 on the way."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.records = 0
        self.first_version = 0
        self.last_version = 0
        self._write(HEADER.pack(MAGIC, FORMAT, crc32c(_HEAD_BYTES)))

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.sha256.update(data)
        self.size += len(data)

    def add(self, payload: bytes, version: int) -> None:
        """Append one WAL record whose version is ``version`` (ascending)."""
        if not self.records:
            self.first_version = version
        self.last_version = version
        self.records += 1
        self._write(RECORD.pack(len(payload), crc32c(payload)))
        self._write(payload)


def read_tail(src: BinaryIO, where: str, *, records: int, first_version: int, last_version: int,
              keyspaces: set[int]) -> Iterator[bytes]:
    """The payloads of a tail object, each checked: framing and CRC, a WAL record that
    decodes, versions ascending from ``first_version`` to ``last_version``, keyspaces
    the backup declares, and ``records`` of them.  CorruptionError (``where`` and the
    offset) otherwise.  Checks the end only when the iterator is exhausted."""
    head = _read_at_most(src, HEADER.size)
    if len(head) != HEADER.size or head[:12] != _HEAD_BYTES or \
            HEADER.unpack(head)[2] != crc32c(_HEAD_BYTES):
        raise CorruptionError("not a banyanstore WAL tail (bad magic, format or header "
                              "checksum)", path=where, offset=0)
    offset, count, previous = HEADER.size, 0, 0
    while True:
        frame = _read_at_most(src, RECORD.size)
        if not frame:
            break
        if len(frame) != RECORD.size:
            raise CorruptionError("WAL tail ends inside a record header", path=where, offset=offset)
        length, crc = RECORD.unpack(frame)
        payload = _read_at_most(src, length)
        if len(payload) != length or crc32c(payload) != crc:
            raise CorruptionError("WAL tail record is cut short or fails its checksum",
                                  path=where, offset=offset)
        rec = decode(payload, where)
        version = rec.version
        ascending = version == first_version if count == 0 else version > previous
        if not ascending or version > last_version:
            raise CorruptionError(f"WAL tail record has version {version} after {previous} "
                                  f"(tail versions [{first_version}, {last_version}])",
                                  path=where, offset=offset)
        for ks in sorted(rec.keyspaces()):
            if ks not in keyspaces:
                raise CorruptionError(f"WAL tail record writes to undeclared keyspace {ks}",
                                      path=where, offset=offset)
        count += 1
        previous = version
        offset += RECORD.size + length
        yield payload
    if count != records or (count and previous != last_version):
        raise CorruptionError(f"WAL tail holds {count} records up to version {previous}; the "
                              f"manifest says {records} up to {last_version}", path=where,
                              offset=offset)


_READ_CHUNK = 1 << 20


def _read_at_most(src: BinaryIO, length: int) -> bytes:
    """``length`` bytes of ``src``, fewer only at its end.  A read may return less than
    asked before the end (a network or raw stream: fsspec's HTTP files), so reads go on
    until the bytes are there or a read returns none.  Read in chunks: a corrupt length
    field costs memory in proportion to the bytes really there, not to the length it
    claims."""
    if length <= _READ_CHUNK:
        first = src.read(length)
        if len(first) == length or not first:  # the usual case: one read
            return first
        parts, remaining = [first], length - len(first)
    else:
        parts, remaining = [], length
    while remaining:
        part = src.read(min(remaining, _READ_CHUNK))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)

