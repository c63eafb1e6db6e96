"""Rescue the intact blocks of a damaged table (``banyanstore repair``, tools/salvage.py).

A table is a run of stored blocks, each with its own checksum (sstable/format.py), so
one damaged block need not cost the others.  :func:`rescue_table` reads a damaged
table block by block and returns every entry of every data block whose checksum and
decode pass (versions and tombstones as they are), the table's range tombstones, and
the key range of each block it could not read; the caller builds a new table from
them through the normal table builder.

Where the blocks are:

* from the **index** when it reads (the footer or, failing that, the blocks' own
  framing locates it): every data block is known, and a lost block's keys lie between
  the last key of the block before it (the index holds each block's last key) and
  its own last key;
* else by the blocks' **own framing**: a stored block carries no length, but its
  trailer's checksum covers exactly its bytes, so the first position after a block's
  start whose trailer checksums the bytes before it is its end (a false match is one
  in 2**32, and the payload must still decode).  Framing cannot go past a damaged
  block: from there to the end of the data blocks is lost, its keys from the last
  rescued key to the table's largest key.

**Older versions.** A lost block may have held the newest version of a key -- a value
or a tombstone -- whose older versions live on in older tables of the keyspace (lower
covered versions) or in the table's own next block.  They are kept and served, as
LevelDB's repairer does: a key of a lost range may show an older value again (or a
deleted one), and the report names the range.  Hiding the range instead would hide
every older key in it that this table never wrote -- in time-series data, the whole
older history of a series whose keys a lost block's range spans -- and merges would
then drop those intact entries for good.

**Range tombstones** are read from the range-tombstone block.  A table whose range
tombstones cannot be read -- the block damaged, or the table cut (or its meta blocks
damaged) so that whether it had any cannot be told -- is not rescued (``rescue_table``
says why): a lost range tombstone could have deleted entries of this very table.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..crc import crc32c
from ..errors import CorruptionError
from ..sstable.block import Block, BlockFormatError, Entry
from ..sstable.format import (
    COMPRESSION_CODES,
    COMPRESSION_NAMES,
    FOOTER,
    FOOTER_HANDLES_SIZE,
    FOOTER_SIZE,
    FORMAT_VERSIONS,
    MAGIC,
    MAX_VERSION,
    TRAILER_SIZE,
    unwrap_block,
)
from ..sstable.meta import TableMeta, decode_index, decode_props
from ..sstable.rangedels import RangeDel, decode_range_dels

__all__ = ["LostBlock", "Rescued", "rescue_table"]

_U32 = struct.Struct("<I")
_CTYPE_BYTE = re.compile(b"[" + re.escape(bytes(sorted(COMPRESSION_CODES.values()))) + b"]")
"""A byte that may be a block trailer's compression type."""


@dataclass
class LostBlock:
    """Data a rescue could not read: where, why, and the keys it may have held
    (``first`` None: from the table's first key on)."""

    offset: int
    why: str
    first: bytes | None
    last: bytes | None  # None: up to the table's last key, which is not known


@dataclass
class Rescued:
    """What :func:`rescue_table` read: ``entries`` in internal order, ``ranges`` (the
    table's range tombstones) and ``lost`` blocks (see the module docstring)."""

    entries: list[Entry] = field(default_factory=list)
    ranges: list[RangeDel] = field(default_factory=list)
    lost: list[LostBlock] = field(default_factory=list)
    meta: TableMeta | None = None  # the properties, when they read


@dataclass
class _Layout:
    """Where a table's parts are, as far as the file tells."""

    data_end: int  # where its data blocks end
    blocks: list[tuple[int, int]] | None  # each data block's (start, end), from the index
    last_keys: Sequence[bytes] | None
    meta: TableMeta | None
    ranges: tuple[RangeDel, ...] | None  # None: they cannot be read
    why_not: str = ""  # why the ranges cannot be read


def _block(data: bytes, path: str, start: int, end: int, no: int) -> Block:
    """Data block ``no``, stored at ``data[start:end]``; CorruptionError if it does not
    verify, decompress or parse."""
    payload = unwrap_block(data[start:end], path, start, what="data block", block_no=no)
    try:
        return Block(bytes(payload))
    except (BlockFormatError, ValueError) as exc:
        raise CorruptionError(f"data block {no} does not parse: {exc}", path=path,
                              offset=start) from exc


def _frame(data: bytes, start: int, limit: int) -> int | None:
    """The end of the stored block at ``start`` (no later than ``limit``): the first
    position whose 5-byte trailer checksums the bytes before it; None if none does.
    Only a position holding a compression type can start a trailer: those are found by
    one C-level scan, and the running checksum advances from one to the next."""
    crc, done, view = 0, start, memoryview(data)
    for m in _CTYPE_BYTE.finditer(data, start, limit - TRAILER_SIZE + 1):
        tail = m.start()
        crc = crc32c(view[done:tail], crc)
        done = tail
        if crc32c(view[tail:tail + 1], crc) == _U32.unpack_from(data, tail + 1)[0]:
            return tail + TRAILER_SIZE
    return None


def _chain(data: bytes, limit: int) -> tuple[list[tuple[int, int]], int]:
    """The stored blocks from the file's start, each framed by its own checksum, up to
    ``limit`` or the first that does not frame; and where framing stopped."""
    out, pos = [], 0
    while pos < limit:
        end = _frame(data, pos, limit)
        if end is None:
            break
        out.append((pos, end))
        pos = end
    return out, pos


def _footer_layout(data: bytes, path: str) -> _Layout | None:
    """The layout the footer gives, or None when the footer does not check."""
    size = len(data)
    if size < FOOTER_SIZE:
        return None
    foot_at = size - FOOTER_SIZE
    footer = data[foot_at:]
    (index_off, index_len, filter_off, filter_len, props_off, props_len, crc, version,
     magic) = FOOTER.unpack(footer)
    index_end = index_off + index_len + TRAILER_SIZE
    meta_start = filter_off if filter_len else index_off
    if (magic != MAGIC or version not in FORMAT_VERSIONS
            or crc32c(footer[FOOTER_HANDLES_SIZE + 4:FOOTER_HANDLES_SIZE + 8],
                      crc32c(footer[:FOOTER_HANDLES_SIZE])) != crc
            or props_off + props_len + TRAILER_SIZE != foot_at
            or not (index_end == props_off or (version >= 3 and index_end < props_off))
            or (filter_len and filter_off + filter_len + TRAILER_SIZE != index_off)):
        return None
    meta = _props(data, path, props_off, props_off + props_len + TRAILER_SIZE, version)
    ranges, why = _ranges(data, path, index_end, props_off, meta)
    return _with_index(_Layout(meta_start, None, None, meta, ranges, why), data, path,
                       index_off, index_end)


def _props(data: bytes, path: str, start: int, end: int, version: int) -> TableMeta | None:
    try:
        payload = unwrap_block(data[start:end], path, start, what="properties block")
        return decode_props(payload, path, len(data), COMPRESSION_NAMES, version)
    except (CorruptionError, ValueError):
        return None


def _ranges(data: bytes, path: str, start: int, end: int,
            meta: TableMeta | None) -> tuple[tuple[RangeDel, ...] | None, str]:
    """The range tombstones stored at ``data[start:end]`` (none when it is empty)."""
    if start == end:
        return (), ""
    try:
        payload = unwrap_block(data[start:end], path, start, what="range-tombstone block")
        count = _U32.unpack_from(payload, 0)[0] if len(payload) >= 4 else -1
        lo, hi = (meta.min_version, meta.max_version) if meta is not None else (1, MAX_VERSION)
        return decode_range_dels(payload, count, lo, hi), ""
    except (CorruptionError, ValueError) as exc:
        return None, f"its range-tombstone block at offset {start} does not read ({exc})"


def _with_index(layout: _Layout, data: bytes, path: str, start: int, end: int) -> _Layout:
    """``layout`` with the data blocks the index block at ``data[start:end]`` lists, if
    it reads and agrees with where the data blocks end."""
    try:
        idx = decode_index(unwrap_block(data[start:end], path, start, what="index block"))
    except (CorruptionError, ValueError):
        return layout
    starts = list(idx.block_starts)
    if starts[0] != 0 or starts[-1] != layout.data_end:
        return layout
    layout.blocks = list(zip(starts, starts[1:], strict=False))
    layout.last_keys = idx.last_keys
    return layout


def _chain_layout(data: bytes, path: str) -> _Layout:
    """The layout found by framing every block from the start (the footer is damaged):
    data blocks while they parse, then ``[filter] index [ranges] props`` -- known only
    when framing reaches the footer's place."""
    chain, stop = _chain(data, len(data) - FOOTER_SIZE)
    n = 0
    for start, end in chain:
        try:
            _block(data, path, start, end, n)
        except CorruptionError:
            break
        n += 1
    data_end = chain[n][0] if n < len(chain) else stop
    unknown = _Layout(data_end, None, None, None, None,
                      "it is cut or damaged past its data blocks, so whether it held range "
                      "tombstones cannot be told")
    rest = chain[n:]
    if stop != len(data) - FOOTER_SIZE or len(rest) < 2:
        return unknown
    for i, (start, end) in enumerate(rest[:-1]):
        layout = _with_index(_Layout(rest[0][0], None, None, None, (), ""), data, path, start, end)
        if layout.blocks is None:
            continue
        between = rest[i + 1:-1]
        if len(between) > 1:
            return unknown
        version = 3 if between else 2
        layout.meta = (_props(data, path, rest[-1][0], rest[-1][1], version)
                       or (None if between else _props(data, path, rest[-1][0], rest[-1][1], 1)))
        if between:
            layout.ranges, layout.why_not = _ranges(data, path, between[0][0], between[0][1],
                                                    layout.meta)
        layout.data_end = data_end
        return layout
    return unknown


def rescue_table(path: str, covers: tuple[int, int],
                 bounds: tuple[bytes, bytes] | None) -> Rescued | str:
    """Every entry of every intact data block of the table at ``path`` that covers
    versions ``covers`` (``bounds``: its smallest and largest key, as a manifest recorded
    them, if known), and the key ranges of its lost blocks; or why the table cannot be
    rescued (its range tombstones cannot be read, no block of it reads, or the largest
    key of a lost range is unknown)."""
    if not os.path.isfile(path):
        return "it is not a file"
    with open(path, "rb") as f:
        data = f.read()
    layout = _footer_layout(data, path) or _chain_layout(data, path)
    out = Rescued(meta=layout.meta)
    if layout.meta is not None:
        bounds = (layout.meta.smallest_key, layout.meta.largest_key)
    if layout.ranges is None:
        return layout.why_not
    out.ranges = list(layout.ranges)
    if layout.blocks is not None and layout.last_keys is not None:
        _by_index(out, data, path, layout.blocks, layout.last_keys, covers)
    else:
        _by_framing(out, data, path, layout.data_end, covers)
    if not out.entries and not out.ranges:
        return "no data block of it reads"
    for lost in out.lost:  # the keys each may have held
        lost.first = lost.first if lost.first is not None else (bounds[0] if bounds else b"")
        lost.last = lost.last if lost.last is not None else (bounds[1] if bounds else None)
        if lost.last is None:
            return f"{lost.why}, and the table's largest key is unknown"
    return out


def _take(out: Rescued, block: Block, covers: tuple[int, int]) -> bool:
    """Add ``block``'s entries; False (nothing added) when they are out of order or
    outside ``covers`` -- damage behind a good checksum."""
    entries = list(block.entries())
    prev = out.entries[-1] if out.entries else None
    for key, version, _value in entries:
        if not covers[0] <= version <= covers[1]:
            return False
        if prev is not None and (key < prev[0] or (key == prev[0] and version >= prev[1])):
            return False
        prev = (key, version, None)
    out.entries += entries
    return True


def _add_block(out: Rescued, data: bytes, path: str, no: int, span: tuple[int, int],
               covers: tuple[int, int]) -> str | None:
    """Add the entries of data block ``no`` stored at ``span`` (see _take); None, or why
    the block is lost."""
    start, end = span
    try:
        if _take(out, _block(data, path, start, end, no), covers):
            return None
        return (f"data block {no}: its entries are out of order or outside the table's "
                f"versions (offset {start})")
    except CorruptionError as exc:
        return f"{exc.message} (offset {start})"


def _by_index(out: Rescued, data: bytes, path: str, blocks: list[tuple[int, int]],
              last_keys: Sequence[bytes], covers: tuple[int, int]) -> None:
    for no, span in enumerate(blocks):
        why = _add_block(out, data, path, no, span, covers)
        if why is not None:
            first = last_keys[no - 1] if no else None
            out.lost.append(LostBlock(span[0], why, first, last_keys[no]))


def _by_framing(out: Rescued, data: bytes, path: str, data_end: int,
                covers: tuple[int, int]) -> None:
    chain, stop = _chain(data, data_end)
    for no, span in enumerate(chain):
        why = _add_block(out, data, path, no, span, covers)
        if why is not None:
            _lose_rest(out, span[0], f"{why}, and the data blocks after it (the index that "
                                     "locates them is damaged)")
            return
    if stop < data_end:
        _lose_rest(out, stop, f"data block {len(chain)} and those after it do not frame (offset "
                              f"{stop}; the index that locates them is damaged, and so is that "
                              "block)")


def _lose_rest(out: Rescued, offset: int, why: str) -> None:
    """Everything from ``offset`` to the end of the data blocks is lost: its keys run
    from the last rescued key to the table's last key."""
    first = out.entries[-1][0] if out.entries else None
    out.lost.append(LostBlock(offset, why, first, None))
