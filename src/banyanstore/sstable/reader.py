"""Reading a table: :class:`TableReader` and the cross-table batch loader :func:`read_blocks`.

Opening reads the footer, then the filter, index and properties blocks in one
read, verifying magic, format version and every checksum; any mismatch, a
truncated file, a non-table file or a future format version raises
:class:`~banyanstore.errors.CorruptionError` naming the file and offset.  Data
blocks are read on demand, verified (``verify=True``), decoded and kept in the
shared :class:`~banyanstore.sstable.cache.BlockCache`.

Lookup of ``(key, version)`` -- "the newest entry of key with version <= version":

1. fences: ``smallest_key <= key <= largest_key``;
2. bloom filter (hash computed once per lookup by the caller, shared by tables);
3. index: the first block whose last internal key is >= ``(key, version)``;
   bisect the blocks' last user keys, then step over blocks whose last entry is
   ``key`` at a version newer than asked (a key's versions may span blocks);
4. in that block (cached as its decompressed payload, see block.py), the key's
   first entry by ``bytes.find`` over the fixed-width key section (bisect for
   variable-width keys), then step over versions newer than asked.

Range tombstones (format version 3) are read with the meta blocks, checked, and
kept as :attr:`TableReader.range_dels`; the table's own lookups and scans do not
apply them -- the store's reads do (lsm/rangedel.py).

Scans yield ``(key, version, value)`` in internal order (key ascending, version
descending) from per-block lists via C-level ``zip``; ``reverse=True`` yields the
exact reverse (key descending and, within a key, version ASCENDING).  Blocks are
fetched with read-ahead that doubles from 1 to ``READAHEAD_BLOCKS``, each run of
missing blocks in one read, so a short seek reads one block and a long scan few
large ones.  :meth:`TableReader.seek_head` is the seek's entry point: the first
entries of the range straight from one block, the rest as a lazy iterator.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from types import TracebackType
from typing import Any, TypeVar

import lz4.block
import xxhash

from .. import accel
from ..errors import CorruptionError
from ..io.base import Env, RandomAccessFile
from ..io.pread import PosixRandomAccessFile
from .block import MISS, Block, BlockFormatError, Entry, LazyBlock
from .bloom import BloomFilter, mask_table_bytes
from .cache import BlockCache, cache_key, new_table_id
from .format import (
    COMPRESSION_LZ4,
    COMPRESSION_NAMES,
    COMPRESSION_NONE,
    FOOTER,
    FOOTER_HANDLES_SIZE,
    FOOTER_SIZE,
    FORMAT_VERSIONS,
    MAGIC,
    TRAILER,
    TRAILER_SIZE,
    crc32c,
    unwrap_block,
)
from .meta import TableMeta, decode_index, decode_props
from .rangedels import RangeDel, decode_range_dels, range_bounds

__all__ = ["TableReader", "read_blocks", "READAHEAD_BLOCKS", "RUN_FIRST", "MISS"]

READAHEAD_BLOCKS = 16
MERGE_READ_BLOCKS = 64  # a merge's reads: 256 KiB at the default block size
# A read-ahead run or a merge's read spans at most this many stored bytes (or its first
# block, when that alone is larger): blocks of one big value each would otherwise hold 16
# (64) values of a table in memory -- a GiB per table at 64 MiB values.  The block counts
# above bind first at the default block size.
READ_SPAN_BYTES = 1 << 20
RUN_FIRST = 16
SHORT_RANGE_BLOCKS = 2
"""A scan whose range lies in at most this many blocks reads them at the call (scan_runs)."""
SHORT_PAIRS_BLOCKS = 4
""":meth:`TableReader.short_pairs` reads a range of at most this many blocks at the call: a
time series' window over a table that holds more than a block's worth of the series (a
fifth of cached ts-queries, at 3 blocks in a table, fell back to the merge, at twice
the instructions); 16 KiB of pairs read ahead of a consumer that may stop early is cheap."""
_xxh3 = xxhash.xxh3_64_intdigest
_P = TypeVar("_P")  # what TableReader._short_runs makes of each block's part of a range
_MIN_TABLE_SIZE = FOOTER_SIZE + 3 * TRAILER_SIZE
# TableReader._decode's inline unwrap_block: the callables bound once
_unpack_trailer = TRAILER.unpack_from
_crc32c = crc32c
_view = memoryview
_lz4_decompress = lz4.block.decompress
_LZ4_ERRORS = (lz4.block.LZ4BlockError, ValueError, MemoryError)



def bind_native(module: Any) -> Any:
    """Hand the compiled core the Python objects it works with; returns ``module``."""
    module.bind(Block, CorruptionError, _xxh3, MISS, PosixRandomAccessFile, LazyBlock)
    return module


native = bind_native(accel.native) if accel.native is not None else None
"""The compiled core (None: pure Python).  Read when a table is opened, so a test may
switch it per table."""
def _weak_callbacks(reader: TableReader) -> tuple[Callable[..., Block],
                                                  Callable[[int, bytes, bool], Block]]:
    """The compiled core's ways back into ``reader`` (a cache miss; a stored block the
    core's own decoder leaves to the reader's: zstd, or damage to report), holding it
    weakly: a strong reference would make reader -> core -> reader a cycle, and a table
    dropped by a merge must be freed -- its descriptor closed -- as soon as the last view
    using it goes (see io/posix.py).  Whoever holds a core holds its reader too (a View
    holds its tables; a MergeScan is handed them)."""
    ref = weakref.ref(reader)

    def load(no: int, fill: bool = True) -> Block:
        r = ref()
        if r is None:
            raise ReferenceError("the table reader of this core is gone")
        return r.load_block(no, fill)

    def accept(no: int, stored: bytes, fill: bool) -> Block:
        r = ref()
        if r is None:
            raise ReferenceError("the table reader of this core is gone")
        return r.accept_block(no, stored, fill)
    return load, accept


class LazyIndexKeys(Sequence[bytes]):
    """The last keys of a table's index blocks, decoded from the index payload on first use:
    what a reader the compiled core serves keeps instead of the list (the core searches its
    own copy of the index; only ``history`` and ``approximate_range`` read these in Python).

    A sequence rather than a ``__getattr__`` on TableReader, which would slow every
    attribute read of every reader (tests/sstable/test_table.py).

    >>> from banyanstore.sstable.meta import encode_index
    >>> keys = LazyIndexKeys(encode_index([0, 10, 20], [5, 6], [b"b", b"d"]))
    >>> keys.decoded, len(keys), keys[-1], keys.decoded
    (False, 2, b'd', True)
    """

    __slots__ = ("_payload", "_keys", "_on_decode")

    def __init__(self, payload: bytes,
                 on_decode: weakref.WeakMethod[Callable[[list[bytes]], None]] | None = None) -> None:
        self._payload: bytes | None = payload
        self._keys: list[bytes] = []
        self._on_decode = on_decode  # given the list once: the reader keeps it instead

    @property
    def decoded(self) -> bool:
        return self._payload is None

    def as_list(self) -> list[bytes]:
        if self._payload is not None:
            self._keys = decode_index(self._payload).last_keys
            self._payload = None
            keep = self._on_decode() if self._on_decode is not None else None
            if keep is not None:
                keep(self._keys)
        return self._keys

    def __len__(self) -> int:
        return len(self.as_list())

    def __getitem__(self, i: Any) -> Any:
        return self.as_list()[i]


class TableReader:
    """An open, immutable table.  Thread-safe: all state is read-only after open,
    positional reads share the file handle, and the block cache locks itself.

    Use :meth:`open`; the file handle stays open until :meth:`close`.
    """

    # -- opening -------------------------------------------------------------------------
    def __init__(self, env: Env, path: str, file: RandomAccessFile, cache: BlockCache,
                 verify: bool) -> None:
        self.env = env
        self.path = path
        self._file = file
        self.cache = cache
        self.table_id = new_table_id()
        self.file_no = -1  # the store's file number, set by whoever names the file
        # Filter effectiveness for stats(): lookups the filter answered alone, and
        # lookups it let through that found nothing at the version asked (false
        # positives, plus keys this table holds only at newer versions).  Counted
        # without a lock: approximate under concurrent readers.
        self._bloom_useful = 0
        self._bloom_passed_misses = 0
        self.core: Any = None  # the compiled core's lookup state, when it is in use
        self._base = cache_key(self.table_id, 0)
        self._cache_put = cache.put
        self._verify = verify
        self._closed = False
        self._open()

    @classmethod
    def open(cls, env: Env, path: str, cache: BlockCache | None = None, *,
             verify: bool = True, opener: Callable[[str], RandomAccessFile] | None = None) -> TableReader:
        """Open and validate the table at ``path``.

        ``cache`` None means no caching (every data block read is a file read).
        ``verify=False`` skips the crc32c of *data* blocks on each read (the
        footer, index, filter and properties are always verified).
        Raises CorruptionError for anything that is not an intact table of a
        known format version; FileNotFoundError if ``path`` is missing.
        ``opener`` opens the file instead of ``env.open_readable`` (the store's cap on
        open tables, io/capped.py).
        """
        f = (env.open_readable if opener is None else opener)(path)
        try:
            return cls(env, path, f, cache if cache is not None else BlockCache(0), verify)
        except BaseException:
            f.close()
            raise

    def _corrupt(self, message: str, offset: int | None) -> CorruptionError:
        return CorruptionError(message, path=self.path, offset=offset)

    def _open(self) -> None:
        f, path = self._file, self.path
        size = f.size
        if size < _MIN_TABLE_SIZE:
            raise self._corrupt(f"not a table: {size} bytes is too small (truncated?)", 0)
        foot_at = size - FOOTER_SIZE
        footer = f.read(foot_at, FOOTER_SIZE)
        if len(footer) != FOOTER_SIZE:
            raise self._corrupt("truncated table: short read of the footer", foot_at)
        (index_off, index_len, filter_off, filter_len, props_off, props_len, crc, version,
         magic) = FOOTER.unpack(footer)
        if magic != MAGIC:
            raise self._corrupt("not a banyanstore table: bad magic (or a truncated file)", size - 8)
        if version not in FORMAT_VERSIONS:
            raise self._corrupt(f"unknown table format version {version} "
                                f"(this build reads versions {', '.join(map(str, FORMAT_VERSIONS))})",
                                size - 12)
        if crc32c(footer[FOOTER_HANDLES_SIZE + 4:FOOTER_HANDLES_SIZE + 8],
                  crc32c(footer[:FOOTER_HANDLES_SIZE])) != crc:
            raise self._corrupt("table footer checksum mismatch", foot_at)
        # The writer lays meta blocks out back to back: [filter] index [ranges] props footer
        # (the range block's handle is in the properties: checked once they are decoded).
        meta_start = filter_off if filter_len else index_off
        index_end = index_off + index_len + TRAILER_SIZE
        if not (props_off + props_len + TRAILER_SIZE == foot_at
                and (index_end == props_off or (version >= 3 and index_end < props_off))
                and (not filter_len or filter_off + filter_len + TRAILER_SIZE == index_off)):
            raise self._corrupt("table footer handles are inconsistent", foot_at)
        region = f.read(meta_start, foot_at - meta_start)
        if len(region) != foot_at - meta_start:
            raise self._corrupt("truncated table: short read of the meta blocks", meta_start)

        def stored(off: int, length: int) -> bytes:
            return region[off - meta_start:off - meta_start + length + TRAILER_SIZE]

        props = unwrap_block(stored(props_off, props_len), path, props_off, what="properties block")
        index = unwrap_block(stored(index_off, index_len), path, index_off, what="index block")
        try:
            meta = decode_props(props, path, size, COMPRESSION_NAMES, version)
        except ValueError as exc:
            raise self._corrupt(f"bad properties block: {exc}", props_off) from exc
        self.range_dels = self._read_range_dels(meta, stored, index_end, props_off)
        try:
            idx = decode_index(index)
        except ValueError as exc:
            raise self._corrupt(f"bad index block: {exc}", index_off) from exc
        if (idx.block_starts[0] != 0 or idx.block_starts[-1] != meta_start
                or len(idx.last_keys) != meta.block_count
                or idx.last_keys[-1] != meta.largest_key or idx.last_keys[0] < meta.smallest_key):
            raise self._corrupt("index block disagrees with the table layout", index_off)
        self._filter: BloomFilter | None = None
        if filter_len:
            payload = unwrap_block(stored(filter_off, filter_len), path, filter_off,
                                   what="filter block")
            try:
                self._filter = BloomFilter(payload)
            except ValueError as exc:
                raise self._corrupt(f"bad filter block: {exc}", filter_off) from exc
        self.meta: TableMeta = meta
        self.smallest_key: bytes = meta.smallest_key
        self.largest_key: bytes = meta.largest_key
        self.min_version: int = meta.min_version
        self.max_version: int = meta.max_version
        self._starts: Sequence[int] = idx.block_starts
        self._last_keys: Sequence[bytes] = idx.last_keys
        self._last_versions: Sequence[int] = idx.last_versions
        self._nblocks = len(idx.last_keys)
        # block number -> decoded block while the cache holds it (the cache fills
        # and clears these slots; a hit is one list index, see cache.py)
        self._slots: list[Block | None] = [None] * self._nblocks
        flt = self._filter
        # The bloom probe is inlined in probe() and probe_block() (may_contain's body: a call
        # a table is what they save); these save attribute hops.
        self._words = flt.words if flt is not None else None
        self._masks = flt.masks if flt is not None else []
        self._nwords = flt.nwords if flt is not None else 1
        self._shift = flt.shift if flt is not None else 0
        if native is not None and self.cache.native_counters is not None:
            # index and filter payloads are validated again, whole, by the core
            # A cache miss is read (through the file's own read: every io mode and test
            # env works), verified, decompressed, decoded and cached by the core itself.
            load, accept = _weak_callbacks(self)
            self.core = native.TableCore(
                meta.smallest_key, meta.largest_key, meta.min_version, index,
                None if flt is None else payload,
                b"" if flt is None else mask_table_bytes(flt.k, flt.table_bits),
                self._slots, load, path, self.cache.native_counters,
                file=self._file, accept=accept, cache_put=self._cache_put,
                cache_base=self._base, verify=self._verify, index_offset=index_off,
                filter_offset=filter_off if flt is not None else -1)
            # The core reads the index keys from its own copy of the index block; the list
            # of them (about 65 bytes a block) is made again only if Python code asks.
            # Once decoded the reader holds the list itself: bisect then probes a list, with
            # no Python call per probe (a weak method: no cycle through the reader).
            self._last_keys = LazyIndexKeys(index, weakref.WeakMethod(self._keep_index_keys))
        else:
            # The Python path indexes these on every read: a list index is specialised by
            # the interpreter, an array's builds an int each time (seeks whose blocks miss
            # the cache: about 1% of their instructions).  The core keeps the arrays (8
            # bytes a block, not ~40).
            self._starts = list(self._starts)
            self._last_versions = list(self._last_versions)

    def _keep_index_keys(self, keys: list[bytes]) -> None:
        self._last_keys = keys

    def _read_range_dels(self, meta: TableMeta, stored: Callable[[int, int], bytes],
                         index_end: int, props_off: int) -> tuple[RangeDel, ...]:
        """The range tombstones (format version 3), checked against the properties."""
        if not meta.range_del_count:
            if index_end != props_off:
                raise self._corrupt("table footer handles are inconsistent", props_off)
            return ()
        off, length = meta.range_dels_handle
        if off != index_end or off + length + TRAILER_SIZE != props_off:
            raise self._corrupt("range-tombstone block handle disagrees with the table layout",
                                props_off)
        payload = unwrap_block(stored(off, length), self.path, off, what="range-tombstone block")
        try:
            dels = decode_range_dels(payload, meta.range_del_count, meta.min_version,
                                     meta.max_version)
        except ValueError as exc:
            raise self._corrupt(f"bad range-tombstone block: {exc}", off) from exc
        if range_bounds(dels) != meta.range_del_bounds:
            raise self._corrupt("range-tombstone bounds in the properties disagree with the block",
                                off)
        return dels

    # -- statistics ------------------------------------------------------------------------
    @property
    def bloom_useful(self) -> int:
        """Lookups the filter answered alone (approximate under concurrent readers)."""
        core = self.core
        return self._bloom_useful + (core.bloom_useful if core is not None else 0)

    @property
    def bloom_passed_misses(self) -> int:
        """Lookups the filter let through that found nothing at the version asked
        (false positives, plus keys held here only at newer versions)."""
        core = self.core
        return self._bloom_passed_misses + (core.bloom_passed_misses if core is not None else 0)

    # -- properties -------------------------------------------------------------------------
    @property
    def block_count(self) -> int:
        return self._nblocks

    @property
    def file_size(self) -> int:
        return self.meta.file_size

    @property
    def has_filter(self) -> bool:
        return self._filter is not None

    def may_contain(self, key_hash: int) -> bool:
        """Bloom check with a precomputed ``key_hash(key)``; False = certainly absent.
        (No filter: always True.)  Does not check the key fences."""
        words = self._words
        if words is None:
            return True
        m = self._masks[key_hash >> self._shift]
        return words[key_hash % self._nwords] & m == m

    def may_contain_key(self, key: bytes) -> bool:
        """Fences and bloom filter for ``key``; False = certainly absent."""
        if key < self.smallest_key or key > self.largest_key:
            return False
        return self.may_contain(_xxh3(key))

    # -- point lookups -----------------------------------------------------------------------
    def get(self, key: bytes, version: int, key_hash: int | None = None) -> tuple[bool, bytes | None, int]:
        """``(found, value, entry_version)`` of the newest entry of ``key`` whose version is
        <= ``version``; value None for a tombstone; ``MISS`` (False, None, 0) if none here.

        ``key_hash`` (``key_hash(key)``) saves rehashing when probing several tables.
        """
        core = self.core
        if core is not None:
            return core.get(key, version, key_hash)
        if key < self.smallest_key or key > self.largest_key:
            return MISS
        return self.probe(key, version, _xxh3(key) if key_hash is None else key_hash)

    def probe(self, key: bytes, version: int, key_hash: int) -> tuple[bool, bytes | None, int]:
        """:meth:`get` on the Python path, for a view's loop over its tables that has
        checked the fences itself and hashed the key once: neither is done again here,
        nor the test for a compiled core (together a tenth of a pure-Python get over
        nine tables: docs/performance.md).

        REQUIRES: ``self.core is None``; ``smallest_key <= key <= largest_key``;
        ``key_hash == key_hash(key)``.
        """
        words = self._words
        if words is not None:
            m = self._masks[key_hash >> self._shift]
            if words[key_hash % self._nwords] & m != m:
                self._bloom_useful += 1
                return MISS
        lk = self._last_keys
        i = bisect_left(lk, key)  # < nblocks: key <= largest_key == lk[-1]
        if lk[i] == key:
            lv = self._last_versions
            n = self._nblocks
            while lv[i] > version:
                i += 1
                if i == n:
                    return MISS
                if lk[i] != key:
                    break
        block = self._slots[i]
        if block is None:
            block = self.load_block(i)
        else:
            block.ref = True
            self.cache.hits += 1
        found = block.lookup(key, version)
        if not found[0] and words is not None:
            self._bloom_passed_misses += 1
        return found

    def history(self, key: bytes) -> list[tuple[int, bytes | None]]:
        """Every ``(version, value)`` of ``key`` in this table, newest first."""
        if key < self.smallest_key or key > self.largest_key:
            return []
        return [(v, val) for _, v, val in self.scan(key, key + b"\x00")]

    # -- batched lookups ----------------------------------------------------------------------
    def locate(self, key: bytes, version: int, key_hash: int | None = None) -> int:
        """The block that holds the answer for ``(key, version)``, or -1 when the
        fences, the filter or the index prove there is none."""
        core = self.core
        if core is not None:
            return core.locate(key, version, key_hash)
        if key < self.smallest_key or key > self.largest_key:
            return -1
        if not self.may_contain(_xxh3(key) if key_hash is None else key_hash):
            return -1  # (not counted: the core's locate counts nothing either)
        return self._index_block(key, version)

    def probe_block(self, key: bytes, version: int, key_hash: int) -> int:
        """:meth:`locate` on the Python path, for a view's loop that has checked the
        fences and hashed the key (as :meth:`probe`); a filter's no is counted in
        ``bloom_useful``, as :meth:`probe` and the core's batched lookups count it (then
        :meth:`lookup_in_block` counts a block that does not hold the key).

        REQUIRES: ``self.core is None``; ``smallest_key <= key <= largest_key``;
        ``key_hash == key_hash(key)``.
        """
        words = self._words
        if words is not None:
            m = self._masks[key_hash >> self._shift]
            if words[key_hash % self._nwords] & m != m:
                self._bloom_useful += 1
                return -1
        # _index_block(key, version), inlined: a batched read runs this once a key
        lk = self._last_keys
        i = bisect_left(lk, key)  # < nblocks: key <= largest_key == lk[-1]
        if lk[i] == key:
            lv = self._last_versions
            n = self._nblocks
            while lv[i] > version:
                i += 1
                if i == n:
                    return -1
                if lk[i] != key:
                    break
        return i

    def _index_block(self, key: bytes, version: int) -> int:
        """The block the index says holds the answer for ``(key, version)``, or -1."""
        lk = self._last_keys
        lv = self._last_versions
        i = bisect_left(lk, key)
        n = self._nblocks
        while i < n and lk[i] == key and lv[i] > version:
            i += 1
        return i if i < n else -1

    def plan_blocks(self, keys: Sequence[bytes], version: int,
                    key_hashes: Sequence[int] | None = None) -> list[int]:
        """:meth:`locate` for each key: a block number per key, -1 = certainly absent."""
        if key_hashes is None:
            return [self.locate(k, version) for k in keys]
        return [self.locate(k, version, h) for k, h in zip(keys, key_hashes, strict=True)]

    def load_blocks(self, block_nos: Iterable[int], *, fill_cache: bool = True) -> dict[int, Block]:
        """The decoded blocks (``-1`` entries ignored), cache misses read with ONE
        ``env.read_batch`` call."""
        wanted = sorted({no for no in block_nos if no >= 0})
        return dict(zip(wanted, read_blocks(self.env, [(self, no) for no in wanted],
                                            fill_cache=fill_cache), strict=True))

    @staticmethod
    def get_in_block(block: Block, key: bytes, version: int) -> tuple[bool, bytes | None, int]:
        """Like :meth:`get` within ``block``, which must be the block :meth:`locate`
        chose for ``(key, version)``."""
        if native is not None:
            return native.block_lookup(block, key, version)
        return block.lookup(key, version)

    def lookup_in_block(self, block: Block, key: bytes, version: int) -> tuple[bool, bytes | None, int]:
        """:meth:`get_in_block` for a view's batched lookup after :meth:`probe_block`: a
        miss in a table with a filter is counted in ``bloom_passed_misses``, as
        :meth:`probe` counts it."""
        # (get_in_block's body: one Python call fewer a key of a batched read)
        found = native.block_lookup(block, key, version) if native is not None else block.lookup(
            key, version)
        if not found[0] and self._words is not None:
            self._bloom_passed_misses += 1
        return found

    # -- scans ---------------------------------------------------------------------------------
    def scan(self, start: bytes | None = None, end: bytes | None = None, *, reverse: bool = False,
             fill_cache: bool = True) -> Iterator[Entry]:
        """Entries with ``start <= key < end`` (None = unbounded) as ``(key, version, value)``.

        Forward: internal order.  ``reverse=True``: the exact reverse of internal
        order -- keys descending and, within a key, versions ascending.
        ``fill_cache=False`` (long scans, compaction) leaves blocks it reads out of
        the cache, so a scan does not evict the point-lookup working set.
        """
        blocks = self._block_range(start, end)
        if blocks is None:
            return iter(())
        return self._scan(*blocks, start, end, reverse, fill_cache)

    def _scan(self, first: int, last: int, start: bytes | None, end: bytes | None,
              reverse: bool, fill: bool) -> Iterator[Entry]:
        for no, block in self._iter_blocks(
                range(last, first - 1, -1) if reverse else range(first, last + 1), fill):
            lo = 0 if start is None or no != first else block.seek(start)
            hi = None if end is None or no != last else block.seek(end)
            if reverse:
                yield from block.reversed_entries(lo, hi)
            else:
                yield from block.entries(lo, hi)

    @property
    def plain(self) -> bool:
        """Every entry a key of its own and none a tombstone (a compacted table, typically):
        a read at or above :attr:`max_version` sees every entry, so a scan of this table
        alone needs no visibility pass.  (A property, not an attribute: a 30th instance
        attribute takes the reader past the 29 names CPython 3.11 kept in its instances'
        shared dict keys here, after which every attribute read is slower -- +1.5%
        instructions a seek over nine tables; tests/sstable/test_table.py.)"""
        meta = self.meta
        return (meta.key_count == meta.entry_count > 0 and not meta.tombstone_count
                and not meta.range_del_count)

    def scan_pairs(self, start: bytes | None, end: bytes | None, reverse: bool = False,
                   fill: bool = True) -> Iterator[list[tuple[bytes, bytes | None]]]:
        """``(key, value)`` of ``[start, end)`` as lists, a block's worth each, in scan
        direction; the blocks read and cached as :meth:`scan_runs` reads them.  REQUIRES:
        :attr:`plain` (so every entry is the visible one of its key)."""
        blocks = self._block_range(start, end)
        if blocks is None:
            return
        first, last = blocks
        nos = range(last, first - 1, -1) if reverse else range(first, last + 1)
        for no, block in self._iter_blocks(nos, fill):
            lo = 0 if start is None or no != first else block.seek(start)
            hi = block.count if end is None or no != last else block.seek(end)
            if lo < hi:
                pairs = block.pairs(lo, hi)
                if reverse:
                    pairs.reverse()
                yield pairs

    def seek_pairs(self, start: bytes | None, end: bytes | None, n: int,
                   fill: bool = True) -> list[tuple[bytes, bytes | None]]:
        """The first ``n`` ``(key, value)`` of ``[start, end)``, read now: a seek on a
        :attr:`plain` table (the blocks read as :meth:`seek_head` reads them: the first
        cached, the next ones if the cache admits them).

        REQUIRES: :attr:`plain`; ``start`` is None or ``<= largest_key``; ``n >= 1``."""
        lk = self._last_keys
        final_no = self._nblocks - 1
        no = 0 if start is None else bisect_left(lk, start)
        block = self._block(no, fill)
        lo = 0 if start is None else block.seek(start)
        out: list[tuple[bytes, bytes | None]] = []
        while True:
            hi, final = block.count, no == final_no
            if end is not None and end <= lk[no]:  # the range ends in this block
                hi, final = block.seek(end), True
            take = min(hi, lo + n - len(out))
            if lo < take:
                out += block.pairs(lo, take)
            if len(out) >= n or final:
                return out
            no, lo = no + 1, 0
            cached = self._slots[no]
            block = self._hit(cached) if cached is not None else self.load_block(
                no, fill and self.cache.admit(self._base + no))

    def scan_runs(self, start: bytes | None = None, end: bytes | None = None, *,
                  reverse: bool = False, fill_cache: bool = True) -> Iterable[list[Entry]]:
        """The entries of :meth:`scan` as lists ("runs"), each run in ASCENDING internal
        order, the runs themselves in scan direction (``reverse=True``: the last run
        first).  One run per block range, built by C-level ``list(zip(...))``; the first
        block's range is split so that its first run (in scan direction) holds at most
        RUN_FIRST entries, which is all a seek usually needs.

        A range within SHORT_RANGE_BLOCKS blocks comes as a *list* of its runs, read
        now (the merge takes a list as a complete source); a longer one as a lazy
        iterator."""
        blocks = self._block_range(start, end)
        if blocks is None:
            return []
        first, last = blocks
        if last - first < SHORT_RANGE_BLOCKS:
            return self._short_runs(first, last, start, end, reverse, fill_cache, _run)
        return self._runs(first, last, start, end, reverse, fill_cache)

    def short_pairs(self, start: bytes | None, end: bytes | None,
                    fill: bool = True) -> list[tuple[bytes, bytes | None]] | None:
        """``(key, value)`` of ``[start, end)`` in ascending order, read now, when the range
        lies in at most SHORT_PAIRS_BLOCKS blocks (read and cached as :meth:`scan_runs`
        reads a short range); None, reading nothing, when it is longer.  REQUIRES:
        :attr:`plain` (so every entry is the visible one of its key)."""
        blocks = self._block_range(start, end)
        if blocks is None:
            return []
        first, last = blocks
        if last - first >= SHORT_PAIRS_BLOCKS:
            return None
        # (:meth:`_short_runs` inline, the blocks' pairs into one list: a query reads a table
        # or four this way, and the calls and the list of pieces were a tenth of it)
        out: list[tuple[bytes, bytes | None]] = []
        slots = self._slots
        for no in range(first, last + 1):
            block = slots[no]
            if block is None:
                block = self.load_block(no, fill and (no == first or self.cache.admit(self._base + no)))
            else:
                block.ref = True  # (a hit, as _hit counts it)
                self.cache.hits += 1
            out += block.range_pairs(start if no == first else None, end if no == last else None)
        return out

    def _short_runs(self, first: int, last: int, start: bytes | None, end: bytes | None,
                    reverse: bool, fill: bool, piece: Callable[[Block, int, int], _P]) -> list[_P]:
        """``piece(block, lo, hi)`` of every block of a range that lies in at most
        SHORT_RANGE_BLOCKS blocks, read now (:func:`_run` for :meth:`scan_runs`): a list
        tells the merge this source is complete, so a short range over several tables (a
        time series' window) is merged in one pass instead of a round per table.  The
        blocks are cached as :meth:`_runs` caches them (the first always with ``fill``,
        the others if the cache admits them)."""
        out: list[_P] = []
        nos = range(last, first - 1, -1) if reverse else range(first, last + 1)
        head = nos[0]
        for no in nos:
            block = self._slots[no]
            if block is None:
                block = self.load_block(no, fill and (no == head or self.cache.admit(self._base + no)))
            else:
                block.ref = True  # (a hit, as _hit counts it: inlined, once a block a query)
                self.cache.hits += 1
            lo = 0 if start is None or no != first else block.seek(start)
            hi = block.count if end is None or no != last else block.seek(end)
            if lo < hi:
                out.append(piece(block, lo, hi))
        return out

    def approximate_range(self, start: bytes | None, end: bytes | None) -> tuple[int, int]:
        """``(keys, bytes)`` of ``[start, end)`` from the index alone: the on-disk bytes
        of the data blocks a scan of the range would read, and the table's distinct
        keys scaled by those blocks' share of all blocks (exact for the whole table)."""
        blocks = self._block_range(start, end)
        if blocks is None:
            return 0, 0
        first, last = blocks
        n = last - first + 1
        keys = self.meta.key_count if n == self._nblocks else -(-self.meta.key_count * n // self._nblocks)
        return keys, self._starts[last + 1] - self._starts[first]

    def _block_range(self, start: bytes | None, end: bytes | None) -> tuple[int, int] | None:
        """``(first, last)`` data blocks a scan of ``[start, end)`` reads; None if none."""
        if ((start is not None and end is not None and start >= end)
                or (start is not None and start > self.largest_key)
                or (end is not None and end <= self.smallest_key)):
            return None
        lk = self._last_keys
        n = self._nblocks
        first = 0 if start is None else bisect_left(lk, start)
        last = n - 1 if end is None else min(bisect_left(lk, end), n - 1)
        return first, last

    def _runs(self, first: int, last: int, start: bytes | None, end: bytes | None,
              reverse: bool, fill: bool, first_cached: bool = True) -> Iterator[list[Entry]]:
        """Runs of blocks ``first``..``last``; ``first_cached``: block ``first`` (``last``
        in reverse) is the scan's first block, always cached if ``fill`` -- else one it
        reads ahead, cached only if the cache admits it (as every later block)."""
        nos = range(last, first - 1, -1) if reverse else range(first, last + 1)
        # The first block straight from its slot (a seek usually needs nothing more);
        # the rest through _iter_blocks, whose read-ahead then starts at one block.
        head = (nos[0], self._block(nos[0], fill and (first_cached or self._admit(nos[0]))))
        leading = True
        for no, block in chain((head,), self._iter_blocks(nos[1:], fill, False, nos[0])):
            lo = 0 if start is None or no != first else block.seek(start)
            hi = block.count if end is None or no != last else block.seek(end)
            if lo >= hi:
                continue
            if leading and hi - lo > 2 * RUN_FIRST:
                if reverse:
                    yield _run(block, hi - RUN_FIRST, hi)
                    yield _run(block, lo, hi - RUN_FIRST)
                else:
                    yield _run(block, lo, lo + RUN_FIRST)
                    yield _run(block, lo + RUN_FIRST, hi)
            else:
                yield _run(block, lo, hi)
            leading = False

    def seek_head(self, start: bytes | None, end: bytes | None, n: int,
                  fill: bool = True) -> tuple[list[Entry], bytes | None, Iterator[list[Entry]] | None]:
        """The start of a forward scan of ``[start, end)`` without generator layers
        (what a limit-bounded scan needs): ``(run, edge, rest)``.

        ``run``: up to ``n`` entries from the first one at or after ``start``, all
        from one block (so possibly fewer: the merge asks ``rest`` for more only
        if it needs them).  ``edge``: None when ``run`` is all the table holds in
        range, else ``run``'s last key -- every entry with a smaller key is in
        ``run``.  ``rest``: the runs after ``run`` (a lazy iterator; None when
        ``edge`` is None).

        REQUIRES: ``start`` is None or ``<= largest_key``; ``n >= 1``.
        """
        lk = self._last_keys
        no = 0 if start is None else bisect_left(lk, start)
        block = self._block(no, fill)
        lo = 0 if start is None else block.seek(start)
        hi = block.count
        final = no == self._nblocks - 1
        if end is not None and end <= lk[no]:  # the range ends in this block
            hi = block.seek(end)
            final = True
        take = min(hi, lo + n)
        if lo >= take:  # only when the range ends in this block: nothing in range
            return [], None, None
        run = _run(block, lo, take)
        if take == hi and final:
            return run, None, None
        return run, run[-1][0], self._runs_after(block, no, take, hi, final, end, fill)

    def _block(self, no: int, fill: bool) -> Block:
        """Block ``no`` from its cache slot, else read (and cached if ``fill``)."""
        block = self._slots[no]
        return self._hit(block) if block is not None else self.load_block(no, fill)

    def _hit(self, block: Block) -> Block:
        """``block``, just found in its cache slot: counted as a hit and marked referenced
        (CLOCK's second chance), as a point read's hit and the compiled core's are."""
        block.ref = True
        self.cache.hits += 1
        return block

    def _admit(self, no: int) -> bool:
        """Whether block ``no``, read ahead by a scan, is to be cached if it is missing:
        the cache's admission (BlockCache.admit).  Asked only on a miss."""
        return self._slots[no] is not None or self.cache.admit(self._base + no)

    def _runs_after(self, block: Block, no: int, pos: int, hi: int, final: bool,
                    end: bytes | None, fill: bool) -> Iterator[list[Entry]]:
        """Forward runs from entry ``pos`` of block ``no`` (which ends the range at
        ``hi``; ``final``: no later block is in range) to ``end``."""
        if pos < hi:
            yield _run(block, pos, hi)
        if final:
            return
        n = self._nblocks
        last = n - 1 if end is None else min(bisect_left(self._last_keys, end), n - 1)
        yield from self._runs(no + 1, last, None, end, False, fill, False)

    def _iter_blocks(self, nos: range, fill: bool, first_cached: bool = True,
                     origin: int | None = None) -> Iterator[tuple[int, Block]]:
        """``(no, block)`` for ``nos``: the first block alone (a seek often needs no
        more), then runs that double up to READAHEAD_BLOCKS.  With ``fill``, the first
        block is cached if ``first_cached`` (the scan's first block) or the cache admits
        it, and every later one (read ahead) if the cache admits it, told how far past
        block ``origin`` (the scan's first; default ``nos[0]``) it lies."""
        total = len(nos)
        if not total:
            return
        no = nos[0]
        if origin is None:
            origin = no
        block = self._slots[no]
        if block is None:
            block = self.load_block(no, fill and (first_cached or self.cache.admit(
                self._base + no, self._scanned(origin, no))))
        else:
            self._hit(block)
        yield no, block
        batch = 2
        pos = 1
        while pos < total:
            chunk = self._within_span(nos[pos:pos + batch])
            yield from zip(chunk, self._fetch_run(chunk, fill, origin), strict=True)
            pos += len(chunk)
            batch = min(batch * 2, READAHEAD_BLOCKS)

    def _within_span(self, nos: range) -> range:
        """The leading blocks of the run ``nos`` (either direction) whose stored bytes
        fit READ_SPAN_BYTES, at least the first."""
        starts, n = self._starts, len(nos)
        while n > 1:
            lo, hi = min(nos[0], nos[n - 1]), max(nos[0], nos[n - 1])
            if starts[hi + 1] - starts[lo] <= READ_SPAN_BYTES:
                break
            n -= 1
        return nos[:n]

    def _scanned(self, origin: int, no: int) -> int:
        """The stored bytes of the blocks a scan that began at block ``origin`` passed
        before block ``no`` (either direction): what BlockCache.admit weighs."""
        starts = self._starts
        return starts[no] - starts[origin] if no >= origin else starts[origin + 1] - starts[no + 1]

    def _fetch_run(self, nos: range, fill: bool, origin: int) -> list[Block]:
        """Blocks ``nos`` (consecutive, either direction); the missing ones read with
        one positional read spanning them, and cached if the cache admits them (a
        scan's read-ahead from block ``origin``)."""
        slots = self._slots
        base = self._base
        out: list[Block | None] = [slots[no] for no in nos]
        missing = [no for no, b in zip(nos, out, strict=True) if b is None]
        for block in out:
            if block is not None:
                self._hit(block)
        if missing:
            starts = self._starts
            lo, hi = min(missing), max(missing)
            data = self._file.read(starts[lo], starts[hi + 1] - starts[lo])
            origin_at = starts[lo]
            loaded: dict[int, Block] = {}
            admit = self.cache.admit
            # the stored bytes before block no from the scan's first (_scanned, inlined)
            forward = nos[0] >= origin
            head = starts[origin] if forward else starts[origin + 1]
            for no in missing:
                a = starts[no] - origin_at
                block = self._decode(data[a:a + starts[no + 1] - starts[no]], no)
                self.cache.misses += 1
                if fill and admit(base + no, starts[no] - head if forward else head - starts[no + 1]):
                    self._cache_put(base + no, block, slots, no)
                loaded[no] = block
            out = [b if b is not None else loaded[no] for no, b in zip(nos, out, strict=True)]
        return out  # type: ignore[return-value]

    def iter_blocks(self, *, fill_cache: bool = False) -> Iterator[Block]:
        """Every data block in order (compaction input); not cached by default."""
        for _, block in self._iter_blocks(range(self._nblocks), fill_cache):
            yield block

    def data_payloads(self) -> Iterator[tuple[int, bytes]]:
        """``(offset, payload)`` of every data block in order, read MERGE_READ_BLOCKS
        at a time (at most READ_SPAN_BYTES, or one block) -- verified and decompressed
        but not parsed (the compiled merge, native/mergebuild.c, parses each payload
        itself) and not cached."""
        starts, n, path, verify = self._starts, self._nblocks, self.path, self._verify
        lo = 0
        while lo < n:
            hi = self._within_span(range(lo, min(n, lo + MERGE_READ_BLOCKS))).stop
            data = self._file.read(starts[lo], starts[hi] - starts[lo])
            if len(data) != starts[hi] - starts[lo]:
                raise self._corrupt(f"truncated table: short read of data blocks {lo}..{hi - 1}",
                                    starts[lo])
            payloads = [unwrap_block(data[starts[no] - starts[lo]:starts[no + 1] - starts[lo]],
                                     path, starts[no], verify=verify, what=f"data block {no}")
                        for no in range(lo, hi)]
            del data  # the run's stored bytes: not held beside its payloads while they merge
            yield from zip(starts[lo:hi], payloads, strict=True)
            lo = hi

    # -- block IO -------------------------------------------------------------------------------
    def block_request(self, no: int) -> tuple[RandomAccessFile, int, int]:
        """The ``env.read_batch`` request that reads block ``no``."""
        off = self._starts[no]
        return (self._file, off, self._starts[no + 1] - off)

    def load_block(self, no: int, fill: bool = True) -> Block:
        """Block ``no`` read and decoded (a cache miss); cached unless ``fill`` is False."""
        self.cache.misses += 1
        starts = self._starts  # (block_request inlined: every cache miss runs this)
        off = starts[no]
        block = self._decode(self._file.read(off, starts[no + 1] - off), no)
        if fill:
            self._cache_put(self._base + no, block, self._slots, no)
        return block

    def check_entries(self) -> None:
        """Raise the CorruptionError of the first entry not after the one before it in
        internal order, or with a version outside the table's ``min_version ..
        max_version`` (0 included) -- damage behind a good checksum that only these tell --
        naming this file and the entry's block; return if there is none.  For a merge
        whose table builder refused what it was given (its ValueError names neither file
        nor block), and the pure-Python merge's check of each input's order (the compiled
        merge checks the order itself, native/mergebuild.c, with the same message).
        Reads every block, uncached."""
        prev: tuple[bytes, int] | None = None
        lo, hi = self.min_version, self.max_version
        for no in range(self._nblocks):
            block = self.load_block(no, False)
            for i, (key, version) in enumerate(zip(block.keys, block.versions, strict=True)):
                if prev is not None and (key < prev[0] or (key == prev[0] and version >= prev[1])):
                    raise self._corrupt(f"data block: entry {i} is out of order (not after the "
                                        "entry before it)", self._starts[no])
                if not lo <= version <= hi:
                    raise self._corrupt(f"data block: entry {i} has version {version}, outside "
                                        f"the table's versions {lo} .. {hi}", self._starts[no])
                prev = (key, version)

    def cached(self, no: int) -> Block | None:
        """Block ``no`` if it is in the block cache, else None."""
        return self._slots[no]

    def block_key(self, no: int) -> int:
        """The block cache's key of block ``no`` (unique across tables)."""
        return self._base + no

    def accept_block(self, no: int, stored: bytes, fill: bool) -> Block:
        """Block ``no`` from ``stored``, the bytes :meth:`block_request` asked for
        (verified and decoded; cached if ``fill``)."""
        block = self._decode(stored, no)
        if fill:
            self._cache_put(self._base + no, block, self._slots, no)
        return block

    def _decode(self, stored: bytes, no: int) -> Block:
        """Verify, decompress and decode the stored block ``no``."""
        off = self._starts[no]
        if len(stored) != self._starts[no + 1] - off:
            raise self._corrupt(f"truncated table: short read of data block {no}", off)
        # unwrap_block's work for an intact lz4 or raw block, inlined (no call with keywords
        # on each cache miss); anything else -- damage included -- goes to unwrap_block,
        # which checks the same and raises its CorruptionError
        n = len(stored) - TRAILER_SIZE
        if n >= 0:
            ctype, crc = _unpack_trailer(stored, n)
            view = _view(stored)
            intact = not self._verify or _crc32c(view[:n + 1]) == crc
            if ctype == COMPRESSION_LZ4 and intact:
                try:
                    payload = _lz4_decompress(view[:n])
                except _LZ4_ERRORS:
                    payload = self._unwrap(stored, no)
            elif ctype == COMPRESSION_NONE and intact:
                payload = stored[:n]
            else:
                payload = self._unwrap(stored, no)
        else:
            payload = self._unwrap(stored, no)
        try:
            return Block(payload)  # (decode_block's body: one Python call fewer a miss)
        except (BlockFormatError, ValueError) as exc:
            raise self._corrupt(f"data block {no} does not parse: {exc}", off) from exc

    def _unwrap(self, stored: bytes, no: int) -> bytes:
        """unwrap_block of the stored data block ``no``: what :meth:`_decode` does not do
        inline (zstd; or raises the CorruptionError of a damaged block)."""
        return unwrap_block(stored, self.path, self._starts[no], verify=self._verify,
                            what="data block", block_no=no)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the file and drop this table's blocks from the cache.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.core = None  # the core refers back to this reader (its loader): break the cycle
        self._file.close()
        self.cache.evict_table(self.table_id)

    def retire(self) -> None:
        """:meth:`close` while reads on other threads may still be using the table (a
        store's close): the file is retired (``RandomAccessFile.retire``) -- each read
        either completes on this table or raises, and its descriptor's number is not
        reused while any reader holds the table -- and its blocks leave the cache.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        # (the core stays: readers holding the view use it; its file fails them now)
        retire = getattr(self._file, "retire", None)  # (a duck-typed file: close())
        (retire if retire is not None else self._file.close)()
        self.cache.evict_table(self.table_id)

    def keep_file_open(self) -> None:
        """The table is being deleted while readers may still use it: a file under a cap
        on open descriptors (io/capped.py) keeps its descriptor from now on, as an
        unlinked file cannot be opened again.  Other files stay open anyway."""
        pin = getattr(self._file, "pin", None)
        if pin is not None and not self._closed:
            pin()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> TableReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<TableReader {self.path} #{self.table_id}: {self.meta.entry_count} entries, "
                f"{self._nblocks} blocks>")


def _run(block: Block, lo: int, hi: int) -> list[Entry]:
    keys, versions, values = block.decode(lo, hi)
    return list(zip(keys, versions, values, strict=True))


def read_blocks(env: Env, requests: Sequence[tuple[TableReader, int]], *,
                fill_cache: bool = True) -> list[Block]:
    """Blocks for ``(reader, block_no)`` pairs, possibly of several tables, in request
    order.  Cache hits are served from each reader's cache; every miss is read
    with ONE ``env.read_batch`` call (so io_uring / thread pools see the whole batch);
    duplicate requests are read once."""
    out: list[Block | None] = []
    pending: dict[int, int] = {}  # cache key -> index in reads
    reads: list[tuple[RandomAccessFile, int, int]] = []
    owners: list[tuple[TableReader, int]] = []
    missing: list[tuple[int, int]] = []  # (index in out, cache key) of each miss
    for reader, no in requests:
        block = reader.cached(no)
        out.append(block)
        if block is not None:
            block.ref = True
            reader.cache.hits += 1
            continue
        key = reader.block_key(no)
        reader.cache.misses += 1
        missing.append((len(out) - 1, key))  # (not asked again below: a call a miss)
        if key not in pending:
            pending[key] = len(reads)
            reads.append(reader.block_request(no))
            owners.append((reader, no))
    if not reads:
        return out  # type: ignore[return-value]
    decoded: list[Block] = []
    for (reader, no), data in zip(owners, env.read_batch(reads), strict=True):
        decoded.append(reader.accept_block(no, data, fill_cache))
    for i, key in missing:
        out[i] = decoded[pending[key]]
    return out  # type: ignore[return-value]
