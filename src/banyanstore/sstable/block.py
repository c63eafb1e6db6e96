"""Data blocks: the encoder (:class:`BlockBuilder`) and the cached form (:class:`Block`).

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
Fixed-width arrays let a block be used two ways, both in a few C calls:

* **point lookups on the payload itself** (what the cache holds): with
  fixed-width keys, ``bytes.find`` over the key section finds a key's first
  (newest) entry, ``unpack_from`` reads its version and a slice its value.
  Nothing is decoded when a block is loaded, the cached form is the payload
  (~1.1x the raw entry bytes instead of ~2.5x for decoded Python lists), and a
  lookup touches one contiguous buffer rather than a dozen scattered objects
  (random lookups in a big warm cache are bound by memory/TLB misses);
* **scans decode ranges into lists**: ``memoryview.cast("Q").tolist()`` for
  versions, one precompiled ``struct.Struct("16s16s...").unpack_from`` for
  fixed-width keys or values (~32 ns per entry measured, against ~107 ns for a
  slicing comprehension, the fallback for variable widths), ``bytes.find`` over
  ``kinds`` to place tombstones.  Decoding is chunked (first 16 entries, then
  the rest) so a seek + 10 does not decode a whole block.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterator
from itertools import chain, islice

from .format import u32_bytes, u32_list, u64_bytes, u64_list

__all__ = ["Block", "BlockBuilder", "BlockFormatError", "decode_block", "encode_block",
           "Entry", "FIXED_KEYS", "FIXED_VALUES", "TOMBSTONES"]

Entry = tuple[bytes, int, "bytes | None"]

HEADER = struct.Struct("<IIII")
assert HEADER.size == 16
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U32X2 = struct.Struct("<II")
assert _U64.size == 8 and _U32.size == 4 and _U32X2.size == 8

FIXED_KEYS = 1
FIXED_VALUES = 2
TOMBSTONES = 4
_KNOWN_FLAGS = FIXED_KEYS | FIXED_VALUES | TOMBSTONES

# Cache charge: the payload bytes plus the Block object; blocks with variable-width
# keys also keep their keys as a list (bytes object ~37 B + slot 8 B per key).
BLOCK_OVERHEAD = 300
VARIABLE_KEY_OVERHEAD = 45

# Tombstone slots may be padded to value_width only while that padding stays small.
_MAX_TOMBSTONE_PADDING = 4096
# Scans decode the first _FIRST_CHUNK entries of a block range on their own.
_FIRST_CHUNK = 16

MISS: tuple[bool, bytes | None, int] = (False, None, 0)


class BlockFormatError(ValueError):
    """A block payload that passed its checksum but does not parse (a writer bug or a
    checksum collision).  The reader turns it into a CorruptionError with file and offset."""


_unpackers: dict[tuple[int, int], struct.Struct] = {}


def _fixed_unpacker(count: int, width: int) -> struct.Struct:
    """``Struct("<w>s" * count)``, cached: compiling one costs as much as using it."""
    st = _unpackers.get((count, width))
    if st is None:
        if len(_unpackers) >= 1024:  # odd counts (chunks, last blocks) must not grow this forever
            _unpackers.clear()
        st = _unpackers[(count, width)] = struct.Struct(f"{width}s" * count)
    return st


class Block:
    """One data block as cached: its payload plus the positions of its sections.

    ``kw``/``vw`` are the key/value widths, -1 when variable.  ``nbytes`` is
    what the block cache charges; ``ref`` is the cache's CLOCK bit.  Immutable
    after construction except for ``ref`` and the lazily decoded key list of a
    variable-width block (benign race: two threads may both decode it).
    """

    __slots__ = ("data", "count", "kw", "vw", "flags", "keys_at", "kheap_at", "values_at",
                 "vheap_at", "kinds_at", "nbytes", "ref", "_keys")

    def __init__(self, data: bytes) -> None:
        """Parse the header and check the sections add up to ``len(data)``.

        REQUIRES: ``data`` is ``bytes`` (slices of it become keys and values).
        Raises :class:`BlockFormatError` otherwise.
        """
        size = len(data)
        if size < HEADER.size:
            raise BlockFormatError(f"block of {size} bytes is shorter than its header")
        count, kw, vw, flags = HEADER.unpack_from(data, 0)
        if flags & ~_KNOWN_FLAGS:
            raise BlockFormatError(f"unknown block flags {flags:#x}")
        if count < 1:
            raise BlockFormatError("empty block")
        pos = HEADER.size + 8 * count
        self.keys_at = pos
        if flags & FIXED_KEYS:
            self.kheap_at = pos
            pos += count * kw
        else:
            kw = -1
            self.kheap_at, pos = _heap(data, pos, count, size, "key")
        self.values_at = pos
        if flags & FIXED_VALUES:
            self.vheap_at = pos
            pos += count * vw
        else:
            vw = -1
            self.vheap_at, pos = _heap(data, pos, count, size, "value")
        self.kinds_at = pos
        if flags & TOMBSTONES:
            pos += count
        if pos != size:
            raise BlockFormatError(f"block sections end at {pos}, block has {size} bytes")
        self.data = data
        self.count = count
        self.kw = kw
        self.vw = vw
        self.flags = flags
        self.ref = False
        self._keys: list[bytes] | None = None
        self.nbytes = BLOCK_OVERHEAD + size
        if kw < 0:
            self.nbytes += VARIABLE_KEY_OVERHEAD * count

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"<Block {self.count} entries, {len(self.data)} bytes>"

    # -- single entries -----------------------------------------------------------------------
    def key_at(self, i: int) -> bytes:
        kw = self.kw
        if kw >= 0:
            p = self.keys_at + i * kw
            return self.data[p:p + kw]
        return self.keys_list()[i]

    def version_at(self, i: int) -> int:
        return _U64.unpack_from(self.data, HEADER.size + 8 * i)[0]

    def value_at(self, i: int) -> bytes | None:
        data = self.data
        if self.flags & TOMBSTONES and data[self.kinds_at + i]:
            return None
        vw = self.vw
        if vw >= 0:
            p = self.values_at + i * vw
            return data[p:p + vw]
        a, b = _U32X2.unpack_from(data, self.values_at + 4 * i)
        h = self.vheap_at
        return data[h + a:h + b]

    def keys_list(self) -> list[bytes]:
        """All keys as a list (cached for variable-width blocks, whose lookups bisect it)."""
        keys = self._keys
        if keys is None:
            keys = self._decode_keys(0, self.count)
            if self.kw < 0:
                self._keys = keys
        return keys

    # -- lookups ------------------------------------------------------------------------------
    def first_index(self, key: bytes) -> int:
        """Index of the first (newest) entry of ``key`` in this block, or -1."""
        kw = self.kw
        if kw < 0:
            keys = self.keys_list()
            i = bisect_left(keys, key)
            return i if i < self.count and keys[i] == key else -1
        if len(key) != kw:
            return -1
        if kw == 0:
            return 0  # every key of the block is b""
        data = self.data
        start = self.keys_at
        end = start + self.count * kw
        pos = data.find(key, start, end)
        while pos >= 0:
            i, misaligned = divmod(pos - start, kw)
            if not misaligned:
                return i
            # the match straddles two keys: resume at the next key boundary
            pos = data.find(key, start + (i + 1) * kw, end)
        return -1

    def lookup(self, key: bytes, version: int) -> tuple[bool, bytes | None, int]:
        """``(found, value, entry_version)`` for the newest entry of ``key`` with a version
        <= ``version`` *in this block*; ``MISS`` if none.  Definitive when this is the
        block the table index chose for ``(key, version)``."""
        i = self.first_index(key)
        if i < 0:
            return MISS
        data = self.data
        v = _U64.unpack_from(data, HEADER.size + 8 * i)[0]
        if v > version:
            count, kw = self.count, self.kw
            while True:
                i += 1
                if i == count:
                    return MISS
                if kw >= 0:
                    if not data.startswith(key, self.keys_at + i * kw):
                        return MISS
                elif self.keys_list()[i] != key:
                    return MISS
                v = _U64.unpack_from(data, HEADER.size + 8 * i)[0]
                if v <= version:
                    break
        return (True, self.value_at(i), v)

    def seek(self, key: bytes) -> int:
        """Index of the first entry whose user key is >= ``key`` (may be ``len(self)``)."""
        kw = self.kw
        if kw < 0:
            return bisect_left(self.keys_list(), key)
        i = self.first_index(key)  # an exact hit is one C call
        if i >= 0:
            return i
        data = self.data
        base = self.keys_at
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) >> 1
            p = base + mid * kw
            if data[p:p + kw] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find(self, key: bytes, version: int) -> int:
        """Index of the first entry >= ``(key, version)`` in internal order, i.e. the
        first entry with a greater key, or with this key and a version <= ``version``.
        May be ``len(self)`` (the sought entry, if any, is in a later block)."""
        i = self.seek(key)
        while i < self.count and self.key_at(i) == key and self.version_at(i) > version:
            i += 1
        return i

    # -- decoding ranges ------------------------------------------------------------------------
    def _decode_keys(self, lo: int, hi: int) -> list[bytes]:
        if self.kw >= 0:
            if self.kw == 0:
                return [b""] * (hi - lo)
            return list(_fixed_unpacker(hi - lo, self.kw).unpack_from(self.data, self.keys_at + lo * self.kw))
        if self._keys is not None:
            return self._keys[lo:hi]
        return _slices(self.data, self.keys_at, self.kheap_at, lo, hi)

    def decode(self, lo: int = 0, hi: int | None = None) -> tuple[list[bytes], list[int], list[bytes | None]]:
        """Entries ``lo .. hi-1`` as three parallel lists (keys, versions, values)."""
        count = self.count
        if hi is None or hi > count:
            hi = count
        if lo >= hi:
            return [], [], []
        n = hi - lo
        data = self.data
        keys = self._decode_keys(lo, hi)
        versions = u64_list(data, HEADER.size + 8 * lo, n)
        vw = self.vw
        values: list[bytes | None]
        if vw > 0:
            values = list(_fixed_unpacker(n, vw).unpack_from(data, self.values_at + lo * vw))
        elif vw == 0:
            values = [b""] * n
        else:
            values = _slices(data, self.values_at, self.vheap_at, lo, hi)  # type: ignore[assignment]
        if self.flags & TOMBSTONES:
            kinds = data[self.kinds_at + lo:self.kinds_at + hi]
            i = kinds.find(1)
            while i >= 0:
                values[i] = None
                i = kinds.find(1, i + 1)
        return keys, versions, values

    @property
    def keys(self) -> list[bytes]:
        return self._decode_keys(0, self.count)

    @property
    def versions(self) -> list[int]:
        return u64_list(self.data, HEADER.size, self.count)

    @property
    def values(self) -> list[bytes | None]:
        return self.decode()[2]

    def entries(self, lo: int = 0, hi: int | None = None) -> Iterator[Entry]:
        """Entries ``lo .. hi-1`` in internal order.  The first few are decoded on
        their own, the rest only if the consumer gets that far."""
        count = self.count
        if hi is None or hi > count:
            hi = count
        if hi - lo <= 2 * _FIRST_CHUNK:
            return zip(*self.decode(lo, hi), strict=True)
        mid = lo + _FIRST_CHUNK
        return chain(zip(*self.decode(lo, mid), strict=True), self._lazy(mid, hi, False))

    def reversed_entries(self, lo: int = 0, hi: int | None = None) -> Iterator[Entry]:
        """Entries ``hi-1`` down to ``lo``: the exact reverse of internal order."""
        count = self.count
        if hi is None or hi > count:
            hi = count
        if hi - lo <= 2 * _FIRST_CHUNK:
            return zip(*map(reversed, self.decode(lo, hi)), strict=True)
        mid = hi - _FIRST_CHUNK
        return chain(zip(*map(reversed, self.decode(mid, hi)), strict=True), self._lazy(lo, mid, True))

    def _lazy(self, lo: int, hi: int, reverse: bool) -> Iterator[Entry]:
        cols = self.decode(lo, hi)
        if reverse:
            yield from zip(*map(reversed, cols), strict=True)
        else:
            yield from zip(*cols, strict=True)


def _heap(data: bytes, pos: int, count: int, size: int, what: str) -> tuple[int, int]:
    """Validate the offsets array + heap at ``pos``; returns (heap start, heap end)."""
    heap_at = pos + 4 * (count + 1)
    if heap_at > size:
        raise BlockFormatError(f"{what} offsets run past the end of the block")
    first, = _U32.unpack_from(data, pos)
    last, = _U32.unpack_from(data, heap_at - 4)
    if first != 0 or heap_at + last > size:
        raise BlockFormatError(f"{what} heap bounds are invalid")
    return heap_at, heap_at + last


def _slices(data: bytes, offsets_at: int, heap_at: int, lo: int, hi: int) -> list[bytes]:
    """Items ``lo .. hi-1`` of an offsets array + heap section."""
    offs = u32_list(data, offsets_at + 4 * lo, hi - lo + 1)
    if heap_at:
        offs = [o + heap_at for o in offs]
    return [data[a:b] for a, b in zip(offs, islice(offs, 1, None), strict=False)]


def decode_block(data: bytes) -> Block:
    """The cached form of a block payload (already decompressed and checksum-verified).

    Raises :class:`BlockFormatError` if the sections do not add up to ``len(data)``.
    """
    return Block(data)


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
