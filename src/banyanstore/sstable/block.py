"""Data blocks: the encoder (:class:`BlockBuilder`) and the cached form (:class:`Block`).

Payload grammar of a data block (before compression; integers little-endian)::

    block    := header versions keys values kinds?
    header   := count:u32 key_width:u32 value_width:u32 flags:u32
    versions := count x u64                      entry versions, in entry order
    keys     := if flags & FIXED_KEYS:   count x key_width bytes, back to back
                else:                    key_offsets:(count+1) x u32  key_heap
                                         (key i = key_heap[off[i]:off[i+1]], off[0] = 0,
                                          off never decreasing: checked at decode)
    values   := if flags & FIXED_VALUES: count x value_width bytes, back to back
                                         (a tombstone's slot holds value_width zero bytes)
                else:                    value_offsets:(count+1) x u32  value_heap
                                         (a tombstone's value is empty; offsets as keys')
    kinds    := if flags & TOMBSTONES:   count bytes: 1 = tombstone, 0 = value (no other)
    flags    := FIXED_KEYS (1) | FIXED_VALUES (2) | TOMBSTONES (4)

Entries are in internal order: user key ascending (bytewise), then version
descending.  A key's versions may continue into the next block.

Why this layout: a per-entry varint loop costs ~1 us per entry in Python.
Fixed-width arrays let a block be used two ways, both in a few C calls:

* **point lookups on the payload itself** (what the cache holds): a sparse
  sample of the keys (every ``STRIDE``-th, decoded at load by ONE strided
  ``Struct("16s112x16s...")`` call) is bisected in C, then ``bytes.find``
  locates the key inside the <= 8-key window of the fixed-width key section;
  ``unpack_from`` reads the version and one slice the value.  The cached form
  is ~1.1x the raw entry bytes (fully decoded lists: ~2.5x), and -- measured --
  evicting a block that owns one Python object per key costs ~6 us in cold
  deallocations, more than the lookup itself; ``find`` over a whole key
  section is no alternative (common key prefixes defeat its skip table: ~1 ns
  per byte, 2.2 us per block).  Variable-width keys keep a full key list;
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
from itertools import chain
from typing import TYPE_CHECKING, Any

from .format import u32_bytes, u32_list, u64_bytes, u64_list

__all__ = ["Block", "LazyBlock", "BlockBuilder", "BlockFormatError", "decode_block", "encode_block",
           "Entry", "FIXED_KEYS", "FIXED_VALUES", "TOMBSTONES"]

Entry = tuple[bytes, int, "bytes | None"]

HEADER = struct.Struct("<IIII")
assert HEADER.size == 16
_VERSIONS_AT = 16
"""Where the versions start (``HEADER.size``: a Struct's ``size`` is a descriptor whose
lookup the interpreter does not specialise, ~100 instructions on every point lookup)."""
assert _VERSIONS_AT == HEADER.size
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U32X2 = struct.Struct("<II")
assert _U64.size == 8 and _U32.size == 4 and _U32X2.size == 8

FIXED_KEYS = 1
FIXED_VALUES = 2
TOMBSTONES = 4
_KNOWN_FLAGS = FIXED_KEYS | FIXED_VALUES | TOMBSTONES

# Cache charge: the payload bytes, the Block object, and the decoded keys (per key a
# bytes object, ~37 B header with allocator rounding, plus its list slot, 8 B).
BLOCK_OVERHEAD = 400
KEY_OVERHEAD = 45
STRIDE = 8
"""Fixed-width blocks keep every STRIDE-th key decoded (the lookup sample)."""

# Tombstone slots may be padded to value_width only while that padding stays small.
_MAX_TOMBSTONE_PADDING = 4096
# Scans decode the first _FIRST_CHUNK entries of a block range on their own.
_FIRST_CHUNK = 16

MISS: tuple[bool, bytes | None, int] = (False, None, 0)


class BlockFormatError(ValueError):
    """A block payload that passed its checksum but does not parse (a writer bug or a
    checksum collision).  The reader turns it into a CorruptionError with file and offset."""


_unpackers: dict[tuple[int, int, int], struct.Struct] = {}


def _fixed_unpacker(count: int, width: int, stride: int = 1) -> struct.Struct:
    """``Struct`` unpacking ``count`` items of ``width`` bytes, every ``stride``-th of a
    back-to-back array (``"16s112x" * (count - 1) + "16s"``); cached, since compiling
    one costs as much as using it."""
    st = _unpackers.get((count, width, stride))
    if st is None:
        if len(_unpackers) >= 1024:  # odd counts (chunks, last blocks) must not grow this forever
            _unpackers.clear()
        gap = f"{(stride - 1) * width}x" if stride > 1 and width else ""
        fmt = f"{width}s{gap}" * (count - 1) + f"{width}s" if count else ""
        st = _unpackers[(count, width, stride)] = struct.Struct(fmt)
    return st


_unpack_header = HEADER.unpack_from
_sample_unpackers: dict[int, Any] = {}
"""The bound ``unpack_from`` of the Struct that reads a fixed-width block's key sample, by
``kw << 32 | samples`` (one int: a tuple key would be built and hashed on every cache miss)."""


def _sample_unpacker(samples: int, kw: int) -> Any:
    """The bound ``unpack_from`` reading every STRIDE-th of ``kw``-byte keys, ``samples`` of
    them (cached in ``_sample_unpackers``)."""
    if len(_sample_unpackers) >= 1024:  # (as _unpackers: odd counts must not grow this)
        _sample_unpackers.clear()
    unpack = _sample_unpackers[kw << 32 | samples] = _fixed_unpacker(samples, kw, STRIDE).unpack_from
    return unpack


_LAZY_FIELDS = frozenset(("count", "kw", "vw", "flags", "keys_at", "kheap_at", "values_at", "vheap_at",
                          "kinds_at", "keys_end", "span", "sample", "sample_stride"))
"""The fields of a Block that a block built by the compiled core fills on first use."""


class Block:
    """One data block as cached: its payload plus the positions of its sections.

    ``sample`` holds the keys lookups bisect: every STRIDE-th key for a
    fixed-width block, every key (``sample_stride`` 1) for a variable-width one.
    ``kw``/``vw`` are the key/value widths, -1 when variable.  ``nbytes`` is
    what the block cache charges; ``ref`` is the cache's CLOCK bit.  Immutable
    after construction except for ``ref``.  (A block the compiled core built on a cache
    miss is a :class:`LazyBlock`, which fills its fields on first use.)
    """

    # "data" and "ref" first: a lookup by the compiled core reads the one and writes the
    # other, and next to the object header they share its first cache line.
    __slots__ = ("data", "ref", "count", "kw", "vw", "flags", "keys_at", "kheap_at", "values_at",
                 "vheap_at", "kinds_at", "keys_end", "span", "nbytes", "sample",
                 "sample_stride")

    def __init__(self, data: bytes) -> None:
        """Parse the header and check the sections add up to ``len(data)``.

        REQUIRES: ``data`` is ``bytes`` (slices of it become keys and values).
        Raises :class:`BlockFormatError` otherwise.  (The parse is here, not in a method
        __init__ calls: every cache miss of the pure-Python engine runs it, and a Python
        call costs about as much as parsing a fixed-width block's header.)
        """
        self.ref = False
        size = len(data)
        if size < _VERSIONS_AT:
            raise BlockFormatError(f"block of {size} bytes is shorter than its header")
        count, kw, vw, flags = _unpack_header(data)
        if flags & ~_KNOWN_FLAGS:
            raise BlockFormatError(f"unknown block flags {flags:#x}")
        if count < 1:
            raise BlockFormatError("empty block")
        # (locals, not the slots just stored, and the header constants as literals: each
        # global, slot read or Struct attribute is work on every cache miss)
        keys_at = _VERSIONS_AT + 8 * count
        if flags & FIXED_KEYS:
            pos = keys_at + count * kw
            if pos > size:
                raise BlockFormatError("fixed-width keys run past the end of the block")
            kheap_at = keys_at
            keys_end = pos
            samples = (count + STRIDE - 1) // STRIDE
            if kw:  # (inline: a Python call costs as much as the rest of this branch)
                unpack = _sample_unpackers.get(kw << 32 | samples) or _sample_unpacker(samples, kw)
                keys = list(unpack(data, keys_at))
            else:
                keys = [b""] * samples
            key_bytes = samples * kw
            stride = STRIDE
        else:
            kw = -1
            kheap_at, pos, offs = _heap(data, keys_at, count, size, "key")
            keys = _heap_items(data, offs, kheap_at)
            key_bytes = pos - kheap_at
            keys_end = kheap_at
            stride = 1
        values_at = pos
        if flags & FIXED_VALUES:
            vheap_at = pos
            pos += count * vw
        else:
            vw = -1
            vheap_at, pos, _ = _heap(data, pos, count, size, "value")
        kinds_at = pos
        if flags & TOMBSTONES:
            pos += count
            # a kind byte is 0 or 1: what another would mean, a get and a scan would read
            # apart (one C-level pass over count bytes: bytes.translate deleting the two
            # good values)
            if pos == size and data[kinds_at:pos].translate(None, b"\x00\x01"):
                raise BlockFormatError("kind bytes other than 0 (value) or 1 (tombstone)")
        if pos != size:
            raise BlockFormatError(f"block sections end at {pos}, block has {size} bytes")
        self.data = data
        self.count = count
        self.kw = kw
        self.vw = vw
        self.flags = flags
        self.keys_at = keys_at
        self.kheap_at = kheap_at
        self.values_at = values_at
        self.vheap_at = vheap_at
        self.kinds_at = kinds_at
        self.sample: list[bytes] = keys
        self.sample_stride = stride
        self.keys_end = keys_end
        self.span = STRIDE * kw  # bytes of key section between two samples
        self.nbytes = BLOCK_OVERHEAD + size + KEY_OVERHEAD * len(keys) + key_bytes

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"<Block {self.count} entries, {len(self.data)} bytes>"

    # -- single entries -----------------------------------------------------------------------
    def key_at(self, i: int) -> bytes:
        kw = self.kw
        if kw < 0:
            return self.sample[i]
        p = self.keys_at + i * kw
        return self.data[p:p + kw]

    def version_at(self, i: int) -> int:
        return _U64.unpack_from(self.data, _VERSIONS_AT + 8 * i)[0]

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

    # -- lookups ------------------------------------------------------------------------------
    def first_index(self, key: bytes) -> int:
        """Index of the first (newest) entry of ``key`` in this block, or -1."""
        kw = self.kw
        sample = self.sample
        s = bisect_left(sample, key)
        if kw < 0:  # the sample is every key
            return s if s < self.count and sample[s] == key else -1
        if len(key) != kw:
            return -1
        if s < len(sample) and sample[s] == key and (s == 0 or kw == 0):
            return s * STRIDE
        # The first entry >= key is in ((s-1)*STRIDE, s*STRIDE]: sample s-1 < key <= sample s.
        base = self.keys_at
        lo = base + (s * STRIDE - STRIDE + 1) * kw if s else base
        hi = min(base + (s * STRIDE + 1) * kw, base + self.count * kw)
        data = self.data
        pos = data.find(key, lo, hi)
        while pos >= 0:
            i, misaligned = divmod(pos - base, kw)
            if not misaligned:
                return i
            pos = data.find(key, base + (i + 1) * kw, hi)  # straddled two keys: next boundary
        return -1

    def lookup(self, key: bytes, version: int) -> tuple[bool, bytes | None, int]:
        """``(found, value, entry_version)`` for the newest entry of ``key`` with a version
        <= ``version`` *in this block*; ``MISS`` if none.  Definitive when this is the
        block the table index chose for ``(key, version)``."""
        kw = self.kw
        data = self.data
        if kw > 0:  # first_index(), inlined with fewer operations: the hot path
            if len(key) != kw:
                return MISS
            s = bisect_left(self.sample, key)
            base = self.keys_at
            # The key's first entry, if any, follows sample s-1 and is at most sample s.  The
            # find runs from there to the end of the keys: it stops at the key all the same
            # (the keys past sample s are greater), and only a key absent from the block --
            # a filter's false positive -- costs a longer search, where the window's end
            # cost every lookup bytecode.
            end = self.keys_end
            pos = data.find(key, base + (s - 1) * self.span + kw if s else base, end)
            while pos >= 0:
                off = pos - base
                if not off % kw:  # (not divmod: a builtin call and a tuple, on every get)
                    i = off // kw
                    break
                pos = data.find(key, base + (off // kw + 1) * kw, end)  # straddled two keys
            else:
                return MISS
        else:
            i = self.first_index(key)
            if i < 0:
                return MISS
        v = _U64.unpack_from(data, _VERSIONS_AT + 8 * i)[0]
        if v > version:
            count = self.count
            kw = self.kw
            while True:
                i += 1
                if i == count:
                    return MISS
                if kw >= 0:
                    if not data.startswith(key, self.keys_at + i * kw):
                        return MISS
                elif self.sample[i] != key:
                    return MISS
                v = _U64.unpack_from(data, _VERSIONS_AT + 8 * i)[0]
                if v <= version:
                    break
        # value_at(i), inlined: this is the hot path of every point lookup
        if self.flags & TOMBSTONES and data[self.kinds_at + i]:
            return (True, None, v)
        vw = self.vw
        if vw >= 0:
            p = self.values_at + i * vw
            return (True, data[p:p + vw], v)
        a, b = _U32X2.unpack_from(data, self.values_at + 4 * i)
        h = self.vheap_at
        return (True, data[h + a:h + b], v)

    def seek(self, key: bytes) -> int:
        """Index of the first entry whose user key is >= ``key`` (may be ``len(self)``)."""
        kw = self.kw
        sample = self.sample
        s = bisect_left(sample, key)
        if kw < 0:
            return s
        if kw == 0 or (s < len(sample) and sample[s] == key and s == 0):
            return s * STRIDE if s < len(sample) else self.count
        # the answer is in ((s-1)*STRIDE, s*STRIDE]: bisect the keys strictly inside
        lo = s * STRIDE - STRIDE + 1 if s else 0
        hi = min(s * STRIDE, self.count)
        if lo >= hi:
            return lo
        st = _unpackers.get((hi - lo, kw, 1)) or _fixed_unpacker(hi - lo, kw)
        return lo + bisect_left(st.unpack_from(self.data, self.keys_at + lo * kw), key)

    def find(self, key: bytes, version: int) -> int:
        """Index of the first entry >= ``(key, version)`` in internal order, i.e. the
        first entry with a greater key, or with this key and a version <= ``version``.
        May be ``len(self)`` (the sought entry, if any, is in a later block)."""
        i = self.seek(key)
        while i < self.count and self.key_at(i) == key and self.version_at(i) > version:
            i += 1
        return i

    # -- decoding ranges ------------------------------------------------------------------------
    def decode(self, lo: int = 0, hi: int | None = None, with_versions: bool = True,
               ) -> tuple[list[bytes], list[int], list[bytes | None]]:
        """Entries ``lo .. hi-1`` as three parallel lists (keys, versions, values); the
        versions list is empty when ``with_versions`` is False (:meth:`pairs` needs none,
        and a list of big ints costs about as much as the keys)."""
        count = self.count
        if hi is None or hi > count:
            hi = count
        if lo >= hi:
            return [], [], []
        n = hi - lo
        data = self.data
        kw = self.kw
        if kw > 0:
            keys = list(_fixed_unpacker(n, kw).unpack_from(data, self.keys_at + lo * kw))
        elif kw == 0:
            keys = [b""] * n
        else:
            keys = self.sample[lo:hi]
        versions = u64_list(data, _VERSIONS_AT + 8 * lo, n) if with_versions else []
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
        return self.decode()[0]

    @property
    def versions(self) -> list[int]:
        return u64_list(self.data, HEADER.size, self.count)

    @property
    def values(self) -> list[bytes | None]:
        return self.decode()[2]

    def pairs(self, lo: int, hi: int) -> list[tuple[bytes, bytes | None]]:
        """``(key, value)`` of entries ``lo .. hi-1``: what a scan yields from a table
        whose every entry is visible (TableReader.plain), built in C by ``zip``."""
        keys, _, values = self.decode(lo, hi, False)
        return list(zip(keys, values, strict=True))

    def range_pairs(self, start: bytes | None, end: bytes | None) -> list[tuple[bytes, bytes | None]]:
        """:meth:`pairs` of the entries whose user key is in ``[start, end)`` (None: no
        bound).  Fixed-width keys and values in a heap, no tombstone: every key of the block
        in one cached ``Struct`` and both bounds by ``bisect`` in C -- two :meth:`seek` calls
        cost more than unpacking the block's few dozen keys."""
        kw = self.kw
        if kw <= 0 or self.vw >= 0 or self.flags & TOMBSTONES:
            lo = 0 if start is None else self.seek(start)
            hi = self.count if end is None else self.seek(end)
            return self.pairs(lo, hi) if lo < hi else []
        count = self.count
        data = self.data
        keys = (_unpackers.get((count, kw, 1)) or _fixed_unpacker(count, kw)).unpack_from(data, self.keys_at)
        lo = 0 if start is None else bisect_left(keys, start)
        hi = count if end is None else bisect_left(keys, end)
        if lo >= hi:
            return []
        values = _heap_items(data, u32_list(data, self.values_at + 4 * lo, hi - lo + 1), self.vheap_at)
        return list(zip(keys[lo:hi], values, strict=True))

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
            return _rzip(self.decode(lo, hi))
        mid = hi - _FIRST_CHUNK
        return chain(_rzip(self.decode(mid, hi)), self._lazy(lo, mid, True))

    def _lazy(self, lo: int, hi: int, reverse: bool) -> Iterator[Entry]:
        cols = self.decode(lo, hi)
        if reverse:
            yield from _rzip(cols)
        else:
            yield from zip(*cols, strict=True)


class LazyBlock(Block):
    """A :class:`Block` the compiled core built on a cache miss: it sets only ``data``,
    ``ref`` and ``nbytes`` (from a payload it checked as ``Block.__init__`` does), and the other
    fields are parsed on their first use by Python code.

    A subclass rather than a ``__getattr__`` on Block itself: defining ``__getattr__``
    slows every attribute access of the class (CPython then neither takes the direct
    slot path nor specialises the access), which cost the pure-Python engine ~11% of
    each point read.  Same slots and layout, so the compiled core reads both alike.
    """

    __slots__ = ()

    if not TYPE_CHECKING:  # (so that mypy still checks every attribute use)
        def __getattr__(self, name: str) -> Any:
            """Parse every field now, on the first use of one by Python code."""
            if name in _LAZY_FIELDS:
                try:
                    data = object.__getattribute__(self, "data")
                except AttributeError:
                    pass
                else:
                    ref = self.ref  # (Block.__init__ clears the CLOCK bit: keep it)
                    Block.__init__(self, data)
                    self.ref = ref
                    return object.__getattribute__(self, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


assert _LAZY_FIELDS == set(Block.__slots__) - {"data", "ref", "nbytes"}


def _rzip(cols: tuple[list[bytes], list[int], list[bytes | None]]) -> Iterator[Entry]:
    keys, versions, values = cols
    return zip(reversed(keys), reversed(versions), reversed(values), strict=True)


def _heap(data: bytes, pos: int, count: int, size: int, what: str) -> tuple[int, int, list[int]]:
    """Validate the offsets array + heap at ``pos``; returns (heap start, heap end, offsets).

    The offsets must start at 0, end inside the block and never decrease (an empty item
    repeats one): checked once, at decode, because slicing a bad pair does not fail -- it
    returns a wrong, often empty, item.  The compiled core checks the same
    (native/blockview.c, bs_block_parse).  Cost (callgrind), no per-entry bytecode: for
    value offsets ~290 instructions an entry, mostly the list's ints (the sorted copy and
    the comparison are C loops) -- ~1 us for a 4 KiB block of 35 entries, ~2.5 us for
    130: +20% / +39% of a pure-Python cold get in such blocks; for key offsets ~50 an
    entry (their list is made for the keys anyway).  Big-integer arithmetic over the
    array, with no int per entry, measured only ~20% cheaper at 35 entries: not worth
    its obscurity.
    """
    heap_at = pos + 4 * (count + 1)
    if heap_at > size:
        raise BlockFormatError(f"{what} offsets run past the end of the block")
    offs = u32_list(data, pos, count + 1)
    last = offs[-1]
    if offs[0] != 0 or heap_at + last > size:
        raise BlockFormatError(f"{what} heap bounds are invalid")
    if offs != sorted(offs):
        raise BlockFormatError(f"{what} offsets are out of order")
    return heap_at, heap_at + last, offs


def _items(data: bytes, offs: list[int], heap_at: int) -> list[bytes]:
    """The items of a heap at ``heap_at`` between consecutive ``offs``.

    A plain loop carrying the previous end: every block decode and scan run of the
    pure-Python engine runs it, and it takes ~30% fewer instructions (cachegrind, 17
    items) than a comprehension over ``zip(offs, offs[1:])`` of a shifted copy of
    ``offs`` -- no pair tuple and no list of shifted offsets (``map(slice, ...)`` costs
    more: a slice object per item)."""
    items: list[bytes] = []
    append = items.append
    rest = iter(offs)
    a = next(rest) + heap_at
    for b in rest:
        b += heap_at
        append(data[a:b])
        a = b
    return items


def _heap_items(data: bytes, offs: list[int], heap_at: int) -> list[bytes]:
    """:func:`_items` cut from a copy of the heap up to the last item (one memcpy), so the
    offsets need no adding of ``heap_at``: 12% fewer instructions at 25 items when the
    items start at or near the heap's start (a whole block, a short range's blocks).  Not
    for a few items deep in the heap (a seek's head), where copying the heap before them
    costs more than the adds it saves (cachegrind: +0.07% a seek)."""
    items: list[bytes] = []
    append = items.append
    rest = iter(offs)
    a = next(rest)
    heap = data[heap_at:heap_at + offs[-1]]
    for b in rest:
        append(heap[a:b])
        a = b
    return items


def _slices(data: bytes, offsets_at: int, heap_at: int, lo: int, hi: int) -> list[bytes]:
    """Items ``lo .. hi-1`` of an offsets array + heap section."""
    offs = u32_list(data, offsets_at + 4 * lo, hi - lo + 1)
    return _heap_items(data, offs, heap_at) if lo == 0 else _items(data, offs, heap_at)


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
