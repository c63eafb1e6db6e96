"""Writing a table: :class:`TableBuilder`.

File layout (the full grammar is in format.py)::

    data_block* filter_block? index_block range_block? props_block footer

Range tombstones (:meth:`TableBuilder.add_range_dels`) go to the range block
(rangedels.py) and make the table format version 3.  A table holding only range
tombstones also gets one point tombstone at the first one's ``(start,
version)`` -- it says nothing the range tombstone does not (no other entry has
that version), and every table keeps at least one data block.

The builder buffers data blocks and writes them about 1 MiB at a time (one
syscall per MiB instead of per block), then the filter, index and properties
blocks and the footer, then **syncs** the file before ``finish()`` returns.
Making the *name* durable (``env.sync_dir``) and recording the table in the
manifest is the caller's job.
"""

from __future__ import annotations

import operator
import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate, islice, repeat
from types import TracebackType
from typing import Any

from .. import accel
from ..io.base import Env
from ..options import Options
from .block import HEADER as BLOCK_HEADER
from .block import encode_block
from .bloom import build_filter, key_hash, mask_table_bytes, probes_for
from .format import (
    COMPRESSION_CODES,
    COMPRESSION_NONE,
    FOOTER,
    FOOTER_HANDLES_SIZE,
    FORMAT_VERSION,
    FORMAT_VERSION_RANGES,
    MAGIC,
    MAX_VERSION,
    TRAILER_SIZE,
    crc32c,
    wrap_block,
    wrap_block_parts,
)
from .meta import TableMeta, TableOrigin, encode_index, encode_props
from .rangedels import RangeDel, encode_range_dels, range_bounds, sort_key

__all__ = ["TableBuilder"]


def _check_version_runs(keys: list[bytes], versions: list[int]) -> None:
    """Where a key repeats, its versions must strictly decrease."""
    for i in range(1, len(keys)):
        if keys[i] == keys[i - 1] and versions[i] >= versions[i - 1]:
            raise ValueError(f"out of order: {keys[i]!r}@{versions[i]} after "
                             f"{keys[i - 1]!r}@{versions[i - 1]}")

_WRITE_CHUNK = 1 << 20
_VERSION_U32 = struct.Struct("<I")
_EMPTY_BLOCK_SIZE = BLOCK_HEADER.size + 8
_PER_ENTRY = 17  # u64 version + two u32 offsets + one kind byte
_native = accel.native  # its encode_block makes encode_block's bytes, faster
_NO_MORE_ENTRIES = "add_flush_buffer loaded the whole table: no entry can follow"


class TableBuilder:
    """Builds one immutable table at ``path`` from entries given in internal order.

    REQUIRES: entries strictly increasing in internal order -- user key
    ascending (bytewise), then version descending; each version in
    ``1 .. 2**64-1``; keys and values ``bytes`` (value None = tombstone).
    Violations raise ValueError and leave the builder usable (the entry is not
    added).  Use as a context manager to abandon the file on an exception.
    """

    def __init__(self, env: Env, path: str, options: Options | None = None,
                 origin: TableOrigin | None = None) -> None:
        """``origin``: the store keyspace (and versions) the table belongs to; a table
        with one is written as format version 2, one without as version 1."""
        opts = options if options is not None else Options()
        self.env = env
        self.path = path
        self.options = opts
        self._origin = origin
        self._block_size = opts.block_size
        self._ccode = COMPRESSION_CODES[opts.compression]
        self._zstd_level = opts.zstd_level
        self._max_key = opts.max_key_size
        self._max_value = opts.max_value_size
        self._bits_per_key = opts.bloom_bits_per_key
        self._hashes: array | None = array("Q") if opts.bloom_bits_per_key > 0 else None
        self._filter: bytes | None = None  # the filter payload add_flush_buffer built in C
        self._sealed = False  # add_flush_buffer loaded the whole table: no more entries
        self._file = env.open_writable(path)
        self._done = False
        # pending output
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._offset = 0
        # current block
        self._bkeys: list[bytes] = []
        self._bversions: list[int] = []
        self._bvalues: list[bytes | None] = []
        self._bsize = _EMPTY_BLOCK_SIZE
        # index
        self._starts: list[int] = [0]
        self._last_keys: list[bytes] = []
        self._last_versions: list[int] = []
        # properties
        self._entries = 0
        self._tombstones = 0
        self._keys = 0
        self._raw_size = 0
        self._min_version = MAX_VERSION
        self._max_version = 0
        self._smallest = b""
        self._last_key = b""
        self._last_version = MAX_VERSION + 1
        self._range_dels: list[RangeDel] = []

    # -- adding ----------------------------------------------------------------------------
    def add(self, key: bytes, version: int, value: bytes | None) -> None:
        """Append one entry.  ValueError on out-of-order input, a bad version or an
        oversized key or value."""
        if self._done or self._sealed:
            raise ValueError(_NO_MORE_ENTRIES if self._sealed else
                             "table builder is already finished or abandoned")
        if len(key) > self._max_key:
            raise ValueError(f"key of {len(key)} bytes exceeds max_key_size {self._max_key}")
        if value is not None and len(value) > self._max_value:
            raise ValueError(f"value of {len(value)} bytes exceeds max_value_size {self._max_value}")
        if not 0 < version <= MAX_VERSION:
            raise ValueError(f"version {version} is outside 1 .. 2**64-1")
        if key == self._last_key and self._entries:
            if version >= self._last_version:
                raise ValueError(f"out of order: {key!r}@{version} after {key!r}@{self._last_version}")
        elif key > self._last_key or not self._entries:
            if not self._entries:
                self._smallest = key
            self._keys += 1
            if self._hashes is not None:
                self._hashes.append(key_hash(key))
        else:
            raise ValueError(f"out of order: key {key!r} after {self._last_key!r}")
        self._last_key = key
        self._last_version = version
        self._entries += 1
        if version < self._min_version:
            self._min_version = version
        if version > self._max_version:
            self._max_version = version
        self._bkeys.append(key)
        self._bversions.append(version)
        self._bvalues.append(value)
        if value is None:
            self._tombstones += 1
            self._bsize += _PER_ENTRY + len(key)
            self._raw_size += len(key)
        else:
            self._bsize += _PER_ENTRY + len(key) + len(value)
            self._raw_size += len(key) + len(value)
        if self._bsize >= self._block_size:
            self._flush_block()

    def add_many(self, entries: Iterable[tuple[bytes, int, bytes | None]]) -> None:
        """Append many entries; same checks as :meth:`add`, ~2x faster per entry
        (the loop state lives in locals).  On ValueError the entries before the bad
        one are kept."""
        if self._done or self._sealed:
            raise ValueError(_NO_MORE_ENTRIES if self._sealed else
                             "table builder is already finished or abandoned")
        max_key, max_value, block_size = self._max_key, self._max_value, self._block_size
        hashes = self._hashes
        bkeys, bversions, bvalues = self._bkeys, self._bversions, self._bvalues
        bsize = self._bsize
        last_key, last_version = self._last_key, self._last_version
        count, tombstones, nkeys, raw = self._entries, self._tombstones, self._keys, self._raw_size
        min_v, max_v = self._min_version, self._max_version
        try:
            for key, version, value in entries:
                klen = len(key)
                if klen > max_key:
                    raise ValueError(f"key of {klen} bytes exceeds max_key_size {max_key}")
                if value is None:
                    size = klen
                else:
                    size = len(value)
                    if size > max_value:
                        raise ValueError(f"value of {size} bytes exceeds max_value_size {max_value}")
                    size += klen
                if not 0 < version <= MAX_VERSION:
                    raise ValueError(f"version {version} is outside 1 .. 2**64-1")
                if key == last_key and count:
                    if version >= last_version:
                        raise ValueError(
                            f"out of order: {key!r}@{version} after {key!r}@{last_version}")
                elif key > last_key or not count:
                    # last check passed: from here on the entry is committed
                    if not count:
                        self._smallest = key
                    nkeys += 1
                    if hashes is not None:
                        hashes.append(key_hash(key))
                else:
                    raise ValueError(f"out of order: key {key!r} after {last_key!r}")
                if value is None:
                    tombstones += 1
                # the entry is valid: commit it
                last_key = key
                last_version = version
                count += 1
                raw += size
                if version < min_v:
                    min_v = version
                if version > max_v:
                    max_v = version
                bkeys.append(key)
                bversions.append(version)
                bvalues.append(value)
                bsize += _PER_ENTRY + size
                if bsize >= block_size:
                    self._bsize = bsize
                    self._last_key, self._last_version = last_key, last_version
                    self._flush_block()
                    bkeys, bversions, bvalues = self._bkeys, self._bversions, self._bvalues
                    bsize = self._bsize
        finally:
            self._bsize = bsize
            self._last_key, self._last_version = last_key, last_version
            self._entries, self._tombstones, self._keys, self._raw_size = count, tombstones, nkeys, raw
            self._min_version, self._max_version = min_v, max_v

    def add_sorted_columns(self, keys: list[bytes], versions: list[int],
                           values: list[bytes | None]) -> None:
        """Bulk-load a whole table from three parallel lists (a memtable flush).

        REQUIRES: nothing was added before; the entries are strictly increasing in
        internal order.  Checked with C-level passes (key order, sizes, versions)
        rather than per entry in Python, which makes this ~5x faster than
        :meth:`add_many`; a violation raises ValueError and adds nothing.
        """
        if self._done or self._entries:
            raise ValueError("add_sorted_columns needs a fresh builder")
        n = len(keys)
        if not n:
            return
        if len(versions) != n or len(values) != n:
            raise ValueError("keys, versions and values differ in length")
        if not all(map(operator.le, keys, islice(keys, 1, None))):
            raise ValueError("keys are not in ascending order")
        distinct = list(dict.fromkeys(keys)) if len(set(keys)) != n else keys
        if distinct is not keys:
            _check_version_runs(keys, versions)
        klens = list(map(len, keys))
        vlens = [0 if v is None else len(v) for v in values]
        if max(klens) > self._max_key:
            raise ValueError(f"key of {max(klens)} bytes exceeds max_key_size {self._max_key}")
        if max(vlens) > self._max_value:
            raise ValueError(f"value of {max(vlens)} bytes exceeds max_value_size {self._max_value}")
        lo_v, hi_v = min(versions), max(versions)
        if not 0 < lo_v or hi_v > MAX_VERSION:
            raise ValueError("versions must be in 1 .. 2**64-1")
        if self._hashes is not None:
            self._hashes.extend(map(key_hash, distinct))
        # cumulative encoded size after each entry; blocks close where it passes block_size
        totals = list(accumulate(map(operator.add, map(operator.add, klens, vlens),
                                     repeat(_PER_ENTRY, n))))
        budget = self._block_size - _EMPTY_BLOCK_SIZE
        start = 0
        while start < n:
            end = min(n, bisect_left(totals, (totals[start - 1] if start else 0) + budget, start) + 1)
            self._bkeys, self._bversions = keys[start:end], versions[start:end]
            self._bvalues = values[start:end]
            self._flush_block()
            start = end
        self._entries, self._keys = n, len(distinct)
        self._tombstones = values.count(None)
        self._raw_size = sum(klens) + sum(vlens)
        self._min_version, self._max_version = lo_v, hi_v
        self._smallest, self._last_key, self._last_version = keys[0], keys[-1], versions[-1]

    def add_flush_buffer(self, buf: bytes) -> None:
        """Bulk-load a whole table from a flush buffer (lsm/flushbuf.py) in the compiled
        core: what ``add_sorted_columns(*flushbuf.columns(buf))`` does, with the same
        checks and ValueErrors (and a buffer that does not parse raises the decoder's
        ValueError), and the same table bytes -- the blocks are encoded, the filter
        built and the keys hashed in C with the GIL released; each block is compressed
        and checksummed here, by ``wrap_block``.

        REQUIRES: nothing was added before; the compiled core is built (RuntimeError
        otherwise: callers choose this path only when ``accel.native`` is loaded).
        """
        native, bits, probes, masks = self._bulk_load_start("add_flush_buffer")
        table = native.TableBuild(buf, self._block_size, self._max_key, self._max_value, bits,
                                  probes, masks)
        self._load_blocks(table)

    def add_merged(self, sources: list[Iterator[tuple[int, bytes]]], paths: list[str],
                   points: list[int], floor: int, ttl_floor: int, bottom: bool,
                   check: Callable[[], None] | None = None) -> None:
        """Bulk-load a whole table from a merge of tables in the compiled core
        (native/mergebuild.c): what ``add_many(merge.merge_entries(...))`` adds for
        tables without range tombstones, with the same checks and ValueErrors and the
        same table bytes.  ``sources``: per input table, newest first, its data blocks'
        ``(offset, payload)`` (TableReader.data_payloads); ``paths``: the tables' paths;
        ``points``, ``floor``, ``ttl_floor``, ``bottom``: the merge's MergeSpec;
        ``check``: run before each input block is read (raises to stop the merge).

        REQUIRES: nothing was added before; the compiled core is built.
        """
        native, bits, probes, masks = self._bulk_load_start("add_merged")
        merge = native.MergeBuild(sources, paths, points, floor, ttl_floor, bottom,
                                  self._block_size, self._max_key, self._max_value, bits,
                                  probes, masks, check=check)
        self._load_blocks(merge)

    def _bulk_load_start(self, what: str) -> tuple[Any, int, int, bytes | None]:
        """The compiled core and the filter's bits per key, probes and mask table, for a
        bulk load into a fresh builder (ValueError, or RuntimeError without the core)."""
        if self._done or self._entries:
            raise ValueError(f"{what} needs a fresh builder")
        native = accel.load_native()
        if native is None:
            raise RuntimeError(f"{what} needs the compiled core")
        bits = self._bits_per_key
        probes = probes_for(bits) if bits > 0 else 0
        return native, bits, probes, mask_table_bytes(probes) if bits > 0 else None

    def _load_blocks(self, table: Any) -> None:
        """Write the data blocks a compiled TableBuild or MergeBuild yields, then take
        its index lists, filter and properties (known once it is exhausted)."""
        ccode, level, starts = self._ccode, self._zstd_level, self._starts
        for payload in table:
            self._write(*wrap_block_parts(payload, ccode, level))
            starts.append(self._offset)
        if not table.entries:
            return
        self._last_keys, self._last_versions = table.last_keys, table.last_versions
        self._filter = table.filter
        self._entries, self._keys = table.entries, table.keys
        self._tombstones, self._raw_size = table.tombstones, table.raw_size
        self._min_version, self._max_version = table.min_version, table.max_version
        self._smallest, self._last_key = table.smallest, table.largest
        self._last_version = table.last_versions[-1]
        self._sealed = True

    def add_range_dels(self, dels: Iterable[RangeDel]) -> None:
        """Add range tombstones ``(start, end, version)`` (any order; duplicates are
        kept once).  ValueError for an empty range, a bad version or an oversized key."""
        if self._done:
            raise ValueError("table builder is already finished or abandoned")
        fresh = []
        for start, end, version in dels:
            if not isinstance(start, bytes) or not isinstance(end, bytes) or not start < end:
                raise ValueError(f"range tombstone [{start!r}, {end!r}) is not a non-empty range "
                                 "of bytes keys")
            if max(len(start), len(end)) > self._max_key:
                raise ValueError(f"range tombstone key exceeds max_key_size {self._max_key}")
            if type(version) is not int or not 0 < version <= MAX_VERSION:
                raise ValueError(f"version {version} is outside 1 .. 2**64-1")
            fresh.append((start, end, version))
        self._range_dels = sorted(set(self._range_dels).union(fresh), key=sort_key)

    # -- progress (for callers cutting compaction output) ---------------------------------
    @property
    def entry_count(self) -> int:
        return self._entries

    @property
    def range_del_count(self) -> int:
        return len(self._range_dels)

    @property
    def last_key(self) -> bytes | None:
        """User key of the last entry added (None before the first)."""
        return self._last_key if self._entries else None

    @property
    def estimated_size(self) -> int:
        """Bytes written so far plus the unfinished block (before compression)."""
        return self._offset + (self._bsize if self._bkeys else 0)

    # -- output ------------------------------------------------------------------------------
    def _write(self, *parts: bytes) -> None:
        for data in parts:
            self._offset += len(data)
            if len(data) >= _WRITE_CHUNK:  # written as it is: joined, a big value's block
                self._drain()                # would be one more copy of it in memory
                self._file.write(data)
                continue
            self._pending.append(data)
            self._pending_size += len(data)
        if self._pending_size >= _WRITE_CHUNK:
            self._drain()

    def _drain(self) -> None:
        if self._pending:
            self._file.write(b"".join(self._pending))
            self._pending = []
            self._pending_size = 0

    def _flush_block(self) -> None:
        keys = self._bkeys
        if not keys:
            return
        payload = None if _native is None else _native.encode_block(keys, self._bversions,
                                                                    self._bvalues)
        if payload is None:
            payload = encode_block(keys, self._bversions, self._bvalues)
        self._last_keys.append(keys[-1])
        self._last_versions.append(self._bversions[-1])
        self._write(*wrap_block_parts(payload, self._ccode, self._zstd_level))
        self._starts.append(self._offset)
        self._bkeys, self._bversions, self._bvalues = [], [], []
        self._bsize = _EMPTY_BLOCK_SIZE

    def finish(self) -> TableMeta:
        """Write the filter, index, properties and footer; sync and close the file.

        REQUIRES: at least one entry was added (ValueError otherwise; the file
        stays open, so the caller can still :meth:`abandon` it).
        """
        if self._done:
            raise ValueError("table builder is already finished or abandoned")
        ranges = self._range_dels
        if not self._entries and ranges:
            self.add(ranges[0][0], ranges[0][2], None)  # see the module docstring
        if not self._entries:
            raise ValueError("cannot finish an empty table; abandon() it instead")
        self._flush_block()
        data_size = self._offset
        for _s, _e, v in ranges:
            self._min_version = min(self._min_version, v)
            self._max_version = max(self._max_version, v)

        filter_off = filter_len = 0
        if self._hashes is not None:
            payload = (self._filter if self._filter is not None else
                       build_filter(self._hashes, len(self._hashes), self._bits_per_key))
            filter_off, filter_len = self._offset, len(payload)
            self._write(wrap_block(payload, COMPRESSION_NONE))

        payload = encode_index(self._starts, self._last_versions, self._last_keys)
        index_off, index_len = self._offset, len(payload)
        self._write(wrap_block(payload, COMPRESSION_NONE))

        ranges_handle = (0, 0)
        if ranges:
            payload = encode_range_dels(ranges)
            ranges_handle = (self._offset, len(payload))
            self._write(wrap_block(payload, COMPRESSION_NONE))

        meta = TableMeta(
            path=self.path, file_size=0, smallest_key=self._smallest, largest_key=self._last_key,
            min_version=self._min_version, max_version=self._max_version,
            entry_count=self._entries, tombstone_count=self._tombstones, key_count=self._keys,
            data_size=data_size, raw_size=self._raw_size, block_count=len(self._last_keys),
            compression=self.options.compression, bloom_bits_per_key=self._bits_per_key,
            block_size=self._block_size, origin=self._finished_origin(),
            range_del_count=len(ranges), range_dels_handle=ranges_handle,
            range_del_bounds=range_bounds(ranges) if ranges else (b"", b""))
        payload = encode_props(meta, self._ccode)
        props_off, props_len = self._offset, len(payload)
        self._write(wrap_block(payload, COMPRESSION_NONE))

        version = (FORMAT_VERSION_RANGES if ranges else
                   FORMAT_VERSION if meta.origin is not None else 1)
        footer = FOOTER.pack(index_off, index_len, filter_off, filter_len, props_off, props_len,
                             0, version, MAGIC)
        crc = crc32c(_VERSION_U32.pack(version), crc32c(footer[:FOOTER_HANDLES_SIZE]))
        footer = FOOTER.pack(index_off, index_len, filter_off, filter_len, props_off, props_len,
                             crc, version, MAGIC)
        self._write(footer)
        self._drain()
        self._file.sync()
        self._file.close()
        self._done = True
        assert props_off + props_len + TRAILER_SIZE + FOOTER.size == self._offset
        return _with_size(meta, self._offset)

    def _finished_origin(self) -> TableOrigin | None:
        """The origin to record: covering the table's own versions unless told otherwise."""
        o = self._origin
        if o is None or o.covers_max:
            return o
        return TableOrigin(o.keyspace, o.keyspace_name, self._min_version, self._max_version,
                           o.history_floor)

    def abandon(self) -> None:
        """Close and remove the partial file.  Idempotent; never raises for a missing file."""
        was_done = self._done
        self._done = True
        self._pending = []
        try:
            self._file.close()
        finally:
            if not was_done:
                try:
                    self.env.remove(self.path)
                except FileNotFoundError:
                    pass

    def __enter__(self) -> TableBuilder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None and not self._done:
            self.abandon()


def _with_size(meta: TableMeta, file_size: int) -> TableMeta:
    from dataclasses import replace
    return replace(meta, file_size=file_size)
