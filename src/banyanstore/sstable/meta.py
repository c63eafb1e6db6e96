"""The index block and the properties block: encoders, decoders and :class:`TableMeta`.

Payload grammar of the index block (integers little-endian)::

    index        := count:u32 reserved:u32 block_starts:(count+1) x u64
                    last_versions:count x u64 key_offsets:(count+1) x u32 key_heap
    block i      := the stored block (body + trailer) at [block_starts[i], block_starts[i+1])
    last key i   := key_heap[key_offsets[i]:key_offsets[i+1]], with last_versions[i]
                    the internal key (user key, version) of block i's last entry

Payload of the properties block: ``PROPS`` in format.py, then the smallest and
largest user keys, then (format version 3) ``range_props`` -- where the
range-tombstone block is, how many it holds, their key bounds (rangedels.py) --
then (format version 2; optional in 3) the table's :class:`TableOrigin`.

Why "last key" and no "first key": a lookup of ``(key, version)`` wants the
first block whose last internal key is >= ``(key, version)``; bisecting the
last user keys and then stepping over blocks whose last entry is the same key
at a newer version finds it, and a key whose versions span blocks is handled
by that step.  The index is decoded once per table open: offsets and versions into
``array("Q")``, keys into a list (which a reader on the compiled core decodes only when
Python code asks: reader.py's LazyIndexKeys).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from operator import lt

from .format import MAX_KEYSPACE_NAME, ORIGIN, PROPS, u32_bytes, u32_list, u64_array, u64_bytes
from .rangedels import RANGE_PROPS

__all__ = ["TableMeta", "TableOrigin", "IndexData", "encode_index", "decode_index", "encode_props",
           "decode_props"]

INDEX_HEADER = struct.Struct("<II")
assert INDEX_HEADER.size == 8


@dataclass(frozen=True)
class TableOrigin:
    """Where a table belongs (format version 2): its store keyspace, and the versions
    it stands for -- ``covers_min .. covers_max`` (a merge's inputs' together, some
    maybe dropped; ``(0, 0)`` when building means the table's own range) -- and the
    history floor a merge applied (0 for a flush).  Picklable, for worker processes.
    """

    keyspace: int
    keyspace_name: str
    covers_min: int = 0
    covers_max: int = 0
    history_floor: int = 0

    def encode(self) -> bytes:
        name = self.keyspace_name.encode()
        return ORIGIN.pack(self.keyspace, len(name), self.covers_min, self.covers_max,
                           self.history_floor) + name

    @classmethod
    def decode(cls, data: bytes, min_version: int, max_version: int) -> TableOrigin:
        """Raises ValueError when ``data`` (the origin section, exactly) does not parse."""
        if len(data) < ORIGIN.size:
            raise ValueError("origin section shorter than its fixed part")
        ks, name_len, lo, hi, floor = ORIGIN.unpack_from(data, 0)
        if ORIGIN.size + name_len != len(data) or not 0 < name_len <= MAX_KEYSPACE_NAME:
            raise ValueError(f"origin keyspace name of {name_len} bytes does not fit the block")
        try:
            name = data[ORIGIN.size:].decode()
        except UnicodeDecodeError:
            raise ValueError("origin keyspace name is not UTF-8") from None
        if not 1 <= lo <= min_version <= max_version <= hi:
            raise ValueError(f"origin covers versions {lo}..{hi}, not the table's "
                             f"{min_version}..{max_version}")
        return cls(ks, name, lo, hi, floor)


@dataclass(frozen=True)
class TableMeta:
    """What a table holds; returned by ``TableBuilder.finish`` and ``TableReader.meta``.

    ``data_size`` is the on-disk size of the data blocks (compressed, with
    trailers); ``raw_size`` the sum of the user key and value lengths.
    """

    path: str
    file_size: int
    smallest_key: bytes
    largest_key: bytes
    min_version: int
    max_version: int
    entry_count: int
    tombstone_count: int
    key_count: int
    data_size: int
    raw_size: int = 0
    block_count: int = 0
    compression: str = "none"
    bloom_bits_per_key: int = 0
    block_size: int = 0
    origin: TableOrigin | None = None
    range_del_count: int = 0
    """Range tombstones in the table (format version 3; its versions count in
    ``min_version .. max_version``)."""
    range_dels_handle: tuple[int, int] = (0, 0)
    """``(offset, body length)`` of the range-tombstone block; ``(0, 0)`` when none."""
    range_del_bounds: tuple[bytes, bytes] = (b"", b"")
    """The smallest start and the greatest end of its range tombstones."""


@dataclass
class IndexData:
    block_starts: array[int]  # arrays: a reader keeps them while its table is open
    last_versions: array[int]
    last_keys: list[bytes]


def encode_index(block_starts: Sequence[int], last_versions: Sequence[int],
                 last_keys: list[bytes]) -> bytes:
    """REQUIRES: ``len(block_starts) == len(last_keys) + 1 == len(last_versions) + 1``."""
    count = len(last_keys)
    offs = [0] * (count + 1)
    total = 0
    for i, k in enumerate(last_keys, 1):
        total += len(k)
        offs[i] = total
    return b"".join((INDEX_HEADER.pack(count, 0), u64_bytes(block_starts), u64_bytes(last_versions),
                     u32_bytes(offs), b"".join(last_keys)))


def decode_index(payload: bytes) -> IndexData:
    """Raises ValueError when the sections do not add up to the payload size, or its key
    offsets or block offsets are out of order (the compiled core's TableCore checks the
    same, in the same order), or its last keys (a key's last versions) are out of order
    (checked here only: the reader decodes the index before it makes the core)."""
    size = len(payload)
    if size < INDEX_HEADER.size:
        raise ValueError("index block shorter than its header")
    count, _ = INDEX_HEADER.unpack_from(payload, 0)
    pos = INDEX_HEADER.size
    heap_at = pos + 8 * (count + 1) + 8 * count + 4 * (count + 1)
    if count < 1 or heap_at > size:
        raise ValueError(f"index block of {size} bytes cannot hold {count} entries")
    starts = u64_array(payload, pos, count + 1)
    pos += 8 * (count + 1)
    last_versions = u64_array(payload, pos, count)
    pos += 8 * count
    offs = u32_list(payload, pos, count + 1)
    if offs[0] != 0 or heap_at + offs[-1] != size:
        raise ValueError("index key heap bounds are invalid")
    if offs != sorted(offs):  # (else a block's last key would slice as a wrong or empty key)
        raise ValueError("index key offsets are not increasing")
    heap = payload[heap_at:]
    keys = [heap[a:b] for a, b in zip(offs, islice(offs, 1, None), strict=False)]
    if any(b <= a for a, b in zip(starts, islice(starts, 1, None), strict=False)):
        raise ValueError("index block offsets are not increasing")
    # The lookups bisect the last keys: out of order (damage behind a good checksum), a
    # present key was read as absent.  Blocks' last entries ascend in internal order: keys
    # never decrease, and a key that ends two blocks has the lower version in the later.
    # (Strictly ascending keys, the common case, are checked at C speed: this runs at every
    # table open.)
    if not all(map(lt, keys, islice(keys, 1, None))):
        for a, b, va, vb in zip(keys, islice(keys, 1, None), last_versions,
                                islice(last_versions, 1, None), strict=False):
            if b < a:
                raise ValueError("index last keys are out of order")
            if b == a and vb >= va:
                raise ValueError("index last versions of a key are out of order")
    return IndexData(starts, last_versions, keys)


def encode_props(meta: TableMeta, compression_code: int) -> bytes:
    origin = meta.origin.encode() if meta.origin is not None else b""
    ranges = b""
    if meta.range_del_count:
        lo, hi = meta.range_del_bounds
        ranges = b"".join((RANGE_PROPS.pack(*meta.range_dels_handle, meta.range_del_count,
                                            len(lo), len(hi)), lo, hi))
    return b"".join((PROPS.pack(meta.entry_count, meta.tombstone_count, meta.key_count, meta.raw_size,
                                meta.data_size, meta.min_version, meta.max_version, meta.block_count,
                                meta.block_size, compression_code, meta.bloom_bits_per_key,
                                len(meta.smallest_key), len(meta.largest_key)),
                     meta.smallest_key, meta.largest_key, ranges, origin))


def decode_props(payload: bytes, path: str, file_size: int,
                 compression_names: dict[int, str], version: int = 1) -> TableMeta:
    """Raises ValueError when the payload does not parse (``version``: the footer's)."""
    if len(payload) < PROPS.size:
        raise ValueError("properties block shorter than its fixed part")
    (entries, tombstones, keys, raw_size, data_size, min_v, max_v, blocks, block_size, ccode, bpk,
     slen, llen) = PROPS.unpack_from(payload, 0)
    if tombstones > entries or keys > entries or (keys == 0) != (entries == 0):
        raise ValueError(f"properties count {entries} entries, {tombstones} tombstones and "
                         f"{keys} distinct keys: impossible")
    keys_end = PROPS.size + slen + llen
    if keys_end > len(payload) or (version == 1 and keys_end != len(payload)):
        raise ValueError("properties block key lengths do not match its size")
    smallest = payload[PROPS.size:PROPS.size + slen]
    largest = payload[PROPS.size + slen:keys_end]
    if ccode not in compression_names:
        raise ValueError(f"unknown compression code {ccode} in properties")
    pos, count, handle, bounds = keys_end, 0, (0, 0), (b"", b"")
    if version >= 3:
        pos, count, handle, bounds = _decode_range_props(payload, keys_end)
    origin = None
    if version == 2 or (version >= 3 and pos < len(payload)):
        origin = TableOrigin.decode(payload[pos:], min_v, max_v)
    return TableMeta(path=path, file_size=file_size, smallest_key=smallest, largest_key=largest,
                     min_version=min_v, max_version=max_v, entry_count=entries,
                     tombstone_count=tombstones, key_count=keys, data_size=data_size,
                     raw_size=raw_size, block_count=blocks, compression=compression_names[ccode],
                     bloom_bits_per_key=bpk, block_size=block_size, origin=origin,
                     range_del_count=count, range_dels_handle=handle, range_del_bounds=bounds)


def _decode_range_props(payload: bytes, pos: int) -> tuple[int, int, tuple[int, int],
                                                            tuple[bytes, bytes]]:
    """``(end position, count, block handle, bounds)`` of the ``range_props`` at ``pos``."""
    if pos + RANGE_PROPS.size > len(payload):
        raise ValueError("properties block too short for its range-tombstone section")
    off, length, count, slen, llen = RANGE_PROPS.unpack_from(payload, pos)
    pos += RANGE_PROPS.size
    end = pos + slen + llen
    if count < 1 or end > len(payload):
        raise ValueError(f"range-tombstone section of the properties is malformed ({count} "
                         f"tombstones, bounds of {slen} and {llen} bytes)")
    lo, hi = payload[pos:pos + slen], payload[pos + slen:end]
    if not lo < hi:
        raise ValueError("range-tombstone bounds are not ascending")
    return end, count, (off, length), (lo, hi)
