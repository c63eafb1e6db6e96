"""Data blocks: the encoder (:class:`BlockBuilder`) and the decoded form (:class:`Block`).

Payload grammar of a data block (before compression; integers little-endian)::

    block    := header versions keys values kinds?
    header   := count:u32 key_width:u32 value_width:u32 flags:u32
    versions := count x u64                      entry versions, in entry order
    keys     := if flags & FIXED_KEYS:   count x key_width bytes, back to back
                else:                    key_offsets:(count+1) x u32  key_heap
                                         (key i = key_heap[off[i]:off[i+1]], off[0] = 0)
    values   := if flags & FIXED_VALUES: count x value_width bytes, back to back
                                         (a tombstone's slot holds value_width zero bytes)
                else:                    value_offsets:(count+1) x u32  value_heap
                                         (a tombstone's value is empty)
    kinds    := if flags & TOMBSTONES:   count bytes: 1 = tombstone, 0 = value
    flags    := FIXED_KEYS (1) | FIXED_VALUES (2) | TOMBSTONES (4)

Entries are in internal order: user key ascending (bytewise), then version
descending.  A key's versions may continue into the next block.

Why this layout: a per-entry varint loop costs ~1 us per entry in Python.
Here a block decodes in a handful of C calls: ``memoryview.cast(...).tolist()``
for the versions and offsets, one precompiled ``struct.Struct("16s16s...")``
``unpack_from`` for fixed-width keys or values (~32 ns per entry measured,
against ~107 ns for a slicing comprehension, which remains the fallback for
variable widths), and ``bytes.find`` over ``kinds`` to place tombstones.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterator
from itertools import islice

from .format import u32_bytes, u32_list, u64_bytes, u64_list

__all__ = ["Block", "BlockBuilder", "BlockFormatError", "decode_block", "encode_block",
           "Entry", "FIXED_KEYS", "FIXED_VALUES", "TOMBSTONES"]

Entry = tuple[bytes, int, "bytes | None"]

HEADER = struct.Struct("<IIII")
assert HEADER.size == 16

FIXED_KEYS = 1
FIXED_VALUES = 2
TOMBSTONES = 4
_KNOWN_FLAGS = FIXED_KEYS | FIXED_VALUES | TOMBSTONES

# Estimated Python memory per decoded entry beyond the raw key/value bytes: two
# bytes objects (~37 B header each incl. allocator rounding), an int version (32 B),
# three list slots (24 B) and its share of the lookup dict (~38 B).  Used to
# charge the block cache honestly.
ENTRY_OVERHEAD = 170
BLOCK_OVERHEAD = 400

# Tombstone slots may be padded to value_width only while that padding stays small.
_MAX_TOMBSTONE_PADDING = 4096


class BlockFormatError(ValueError):
    """A block payload that passed its checksum but does not parse (a writer bug or a
    checksum collision).  The reader turns it into a CorruptionError with file and offset."""


_unpackers: dict[tuple[int, int], struct.Struct] = {}


def _fixed_unpacker(count: int, width: int) -> struct.Struct:
    """``Struct("<w>s" * count)``, cached: compiling one costs as much as using it."""
    st = _unpackers.get((count, width))
    if st is None:
        if len(_unpackers) >= 512:  # odd counts (last blocks) must not grow this forever
            _unpackers.clear()
        st = _unpackers[(count, width)] = struct.Struct(f"{width}s" * count)
    return st


class Block:
    """A decoded data block: parallel lists in internal order.

    ``values[i]`` is None for a tombstone.  ``nbytes`` is the estimated memory
    the decoded block occupies (what the block cache charges, including the
    lookup dict built by :meth:`first_index`).  ``ref`` is the block cache's
    CLOCK bit.  Immutable by convention: blocks are shared between threads
    through the cache.
    """

    __slots__ = ("keys", "versions", "values", "nbytes", "ref", "index")

    def __init__(self, keys: list[bytes], versions: list[int], values: list[bytes | None],
                 nbytes: int) -> None:
        self.keys = keys
        self.versions = versions
        self.values = values
        self.nbytes = nbytes
        self.ref = False
        self.index: dict[bytes, int] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"<Block {len(self.keys)} entries, {self.nbytes} bytes>"

    def build_index(self) -> dict[bytes, int]:
        """key -> index of its first (newest) entry in this block.

        Built lazily by point lookups on a block's second use: a dict probe
        touches ~3 cache lines where bisecting the key list touches ~12 (each
        key is a separate object), ~0.9 us saved per random lookup on a large
        warm cache, for ~70 ns per entry once.  Benign race: two threads may
        both build it; either result is correct.
        """
        keys = self.keys
        # reversed, so the first occurrence of a multi-version key wins
        index = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))
        self.index = index
        return index

    def first_index(self, key: bytes) -> int:
        """Index of the first (newest) entry of ``key`` in this block, or -1."""
        index = self.index
        if index is None:
            index = self.build_index()
        return index.get(key, -1)

    def seek(self, key: bytes) -> int:
        """Index of the first entry whose user key is >= ``key`` (may be ``len(self)``)."""
        return bisect_left(self.keys, key)

    def find(self, key: bytes, version: int) -> int:
        """Index of the first entry >= ``(key, version)`` in internal order, i.e. the
        first entry with a greater key, or with this key and a version <= ``version``.
        May be ``len(self)`` (the sought entry, if any, is in a later block)."""
        keys = self.keys
        i = bisect_left(keys, key)
        n = len(keys)
        versions = self.versions
        while i < n and keys[i] == key and versions[i] > version:
            i += 1
        return i

    def entries(self, lo: int = 0, hi: int | None = None) -> Iterator[Entry]:
        """Entries ``lo .. hi-1`` in internal order.

        C-level zip over list iterators positioned with ``__setstate__``, so the
        cost is per entry *consumed* (a seek + 10 does not copy or touch the
        rest of the block, as slicing three lists would).
        """
        n = len(self.keys)
        if hi is None or hi > n:
            hi = n
        if lo == 0 and hi == n:
            return zip(self.keys, self.versions, self.values, strict=True)
        if lo >= hi:
            return iter(())
        return islice(zip(_iter_at(self.keys, lo), _iter_at(self.versions, lo),
                          _iter_at(self.values, lo), strict=True), hi - lo)

    def reversed_entries(self, lo: int = 0, hi: int | None = None) -> Iterator[Entry]:
        """Entries ``hi-1`` down to ``lo``: the exact reverse of internal order."""
        n = len(self.keys)
        if hi is None or hi > n:
            hi = n
        if lo == 0 and hi == n:
            return zip(reversed(self.keys), reversed(self.versions), reversed(self.values),
                       strict=True)
        if lo >= hi:
            return iter(())
        return islice(zip(_rev_at(self.keys, hi - 1), _rev_at(self.versions, hi - 1),
                          _rev_at(self.values, hi - 1), strict=True), hi - lo)


def _iter_at(items: list, start: int) -> Iterator:
    """A list iterator positioned at ``start`` in O(1)."""
    it = iter(items)
    if start:
        it.__setstate__(start)  # type: ignore[attr-defined]
    return it


def _rev_at(items: list, start: int) -> Iterator:
    """A reverse list iterator whose first item is ``items[start]``, in O(1)."""
    it = reversed(items)
    it.__setstate__(start)  # type: ignore[attr-defined]
    return it


def decode_block(data: bytes) -> Block:
    """Decode a block payload (already decompressed and checksum-verified).

    REQUIRES: ``data`` is ``bytes`` (slices of it become the keys and values).
    Raises :class:`BlockFormatError` if the sections do not add up to ``len(data)``.
    """
    size = len(data)
    if size < HEADER.size:
        raise BlockFormatError(f"block of {size} bytes is shorter than its header")
    count, kw, vw, flags = HEADER.unpack_from(data, 0)
    if flags & ~_KNOWN_FLAGS:
        raise BlockFormatError(f"unknown block flags {flags:#x}")
    pos = HEADER.size
    if pos + 8 * count > size:
        raise BlockFormatError(f"block claims {count} entries but has {size} bytes")
    versions = u64_list(data, pos, count)
    pos += 8 * count

    if flags & FIXED_KEYS:
        end = pos + count * kw
        if end > size:
            raise BlockFormatError("fixed-width keys run past the end of the block")
        keys = list(_fixed_unpacker(count, kw).unpack_from(data, pos)) if kw else [b""] * count
        key_bytes = end - pos
        pos = end
    else:
        pos, keys, key_bytes = _variable(data, pos, count, size, "key")

    if flags & FIXED_VALUES:
        end = pos + count * vw
        if end > size:
            raise BlockFormatError("fixed-width values run past the end of the block")
        values: list[bytes | None] = (
            list(_fixed_unpacker(count, vw).unpack_from(data, pos)) if vw else [b""] * count)
        value_bytes = end - pos
        pos = end
    else:
        pos, values, value_bytes = _variable(data, pos, count, size, "value")  # type: ignore[assignment]

    if flags & TOMBSTONES:
        kinds = data[pos:pos + count]
        pos += count
        i = kinds.find(1)
        while i >= 0:
            values[i] = None
            i = kinds.find(1, i + 1)
    if pos != size:
        raise BlockFormatError(f"block sections end at {pos}, block has {size} bytes")
    return Block(keys, versions, values,
                 BLOCK_OVERHEAD + count * ENTRY_OVERHEAD + key_bytes + value_bytes)


def _variable(data: bytes, pos: int, count: int, size: int,
              what: str) -> tuple[int, list[bytes], int]:
    """Decode an offsets array + heap section; returns (end position, items, heap size)."""
    heap_at = pos + 4 * (count + 1)
    if heap_at > size:
        raise BlockFormatError(f"{what} offsets run past the end of the block")
    offs = u32_list(data, pos, count + 1)
    heap_len = offs[-1]
    if offs[0] != 0 or heap_at + heap_len > size:
        raise BlockFormatError(f"{what} heap bounds are invalid")
    heap = data[heap_at:heap_at + heap_len]
    items = [heap[a:b] for a, b in zip(offs, islice(offs, 1, None), strict=False)]
    return heap_at + heap_len, items, heap_len


def encode_block(keys: list[bytes], versions: list[int], values: list[bytes | None]) -> bytes:
    """The payload of a block holding these entries (already in internal order).

    REQUIRES: equal, non-zero lengths; versions fit in u64; each key and value is
    bytes-like; the heaps stay below 4 GiB (the options cap key and value sizes).
    """
    count = len(keys)
    flags = 0
    klens = list(map(len, keys))
    kw = klens[0]
    parts: list[bytes] = [b"", u64_bytes(versions)]
    if klens.count(kw) == count:
        flags |= FIXED_KEYS
        parts.append(b"".join(keys))
    else:
        kw = 0
        parts.append(_offsets(klens))
        parts.append(b"".join(keys))

    tombstones = values.count(None)
    if tombstones:
        flags |= TOMBSTONES
        live = [v for v in values if v is not None]
    else:
        live = values  # type: ignore[assignment]
    vlens = list(map(len, live))
    vw = vlens[0] if vlens else 0
    if vlens.count(vw) == len(vlens) and tombstones * vw <= _MAX_TOMBSTONE_PADDING:
        flags |= FIXED_VALUES
        if tombstones:
            pad = bytes(vw)
            parts.append(b"".join([pad if v is None else v for v in values]))
        else:
            parts.append(b"".join(live))
    else:
        vw = 0
        if tombstones:
            full = [b"" if v is None else v for v in values]
            parts.append(_offsets(list(map(len, full))))
            parts.append(b"".join(full))
        else:
            parts.append(_offsets(vlens))
            parts.append(b"".join(live))
    if tombstones:
        parts.append(bytes([v is None for v in values]))
    parts[0] = HEADER.pack(count, kw, vw, flags)
    return b"".join(parts)


def _offsets(lengths: list[int]) -> bytes:
    offs = [0] * (len(lengths) + 1)
    total = 0
    for i, n in enumerate(lengths, 1):
        total += n
        offs[i] = total
    return u32_bytes(offs)


class BlockBuilder:
    """Collects entries for one data block.

    REQUIRES: entries added in internal order (the table builder checks that).
    ``estimated_size`` is the exact payload size :meth:`finish` will produce, up
    to the choice between fixed and variable widths (which only makes it smaller).
    """

    __slots__ = ("keys", "versions", "values", "size")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.versions: list[int] = []
        self.values: list[bytes | None] = []
        self.size = HEADER.size + 8  # header + the extra offset of each offsets array

    def add(self, key: bytes, version: int, value: bytes | None) -> None:
        self.keys.append(key)
        self.versions.append(version)
        self.values.append(value)
        # u64 version + two u32 offsets + one kind byte per entry
        self.size += 17 + len(key) + (0 if value is None else len(value))

    @property
    def estimated_size(self) -> int:
        return self.size

    def __len__(self) -> int:
        return len(self.keys)

    def finish(self) -> bytes:
        """The encoded payload; the builder is reset for the next block."""
        if not self.keys:
            raise ValueError("cannot finish an empty block")
        data = encode_block(self.keys, self.versions, self.values)
        self.reset()
        return data

    def reset(self) -> None:
        self.keys = []
        self.versions = []
        self.values = []
        self.size = HEADER.size + 8
