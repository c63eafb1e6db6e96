"""Tables (SSTables) from the command line: the deep check behind ``verify`` and
the ``dump-table`` command.

:func:`verify_table` goes further than opening a table (which checks the footer,
the filter, index and properties blocks): it reads and decodes *every* data
block, checks its checksum, the internal order of its entries (key ascending,
version descending), that the bloom filter knows every key, and that the
counts, fences and version range agree with the properties block and with
what the manifest recorded.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from ..errors import CorruptionError
from ..lsm.manifest import TableInfo
from ..sstable.block import BlockFormatError, decode_block
from ..sstable.format import unwrap_block
from ..sstable.reader import TableReader
from .common import (
    EXIT_OK,
    NOT_A_FILE,
    Failure,
    Output,
    Report,
    UsageError,
    make_env,
    parse_key,
    show_bytes,
)

__all__ = ["verify_table", "disagreements", "cmd_dump_table", "table_properties"]


def verify_table(path: str, report: Report, info: TableInfo | None = None) -> None:
    """Check the table at ``path`` (named by the manifest as ``info``), adding problems."""
    if not os.path.exists(path):
        report.error(path, "table named by the manifest is missing")
        return
    if not os.path.isfile(path):
        report.error(path, NOT_A_FILE)
        return
    size = os.path.getsize(path)
    if info is not None and size != info.file_size:
        report.error(path, f"table is {size} bytes, the manifest says {info.file_size}")
    try:
        reader = TableReader.open(make_env(), path, None)
    except CorruptionError as exc:
        report.from_corruption(exc, path)
        return
    try:
        meta = reader.meta
        if info is not None:
            _compare(path, meta, info, report)
        checked = _check_blocks(reader, path, report)
    finally:
        reader.close()
    report.advance(max(size - checked, 0))  # the index, filter, properties and footer
    report.count("tables")
    report.count("table_bytes", size)


def _compare(path: str, meta: Any, info: TableInfo, report: Report) -> None:
    for message in disagreements(meta, info):
        report.error(path, message)


def disagreements(meta: Any, info: TableInfo) -> list[str]:
    """Where the table's properties (``meta``) differ from what the manifest recorded
    for its file (``info``), the file size aside: each as a message."""
    return [f"{what} is {in_table!r} in the table, {in_manifest!r} in the manifest"
            for what, in_table, in_manifest in info.differences(meta)]


def _check_blocks(reader: TableReader, path: str, report: Report) -> int:
    """Check every data block; returns the bytes of data blocks read."""
    meta = reader.meta
    checked = 0
    entries = tombstones = keys = 0
    prev: tuple[bytes, int] | None = None
    first_key: bytes | None = None
    bad_blocks = 0
    for no in range(reader.block_count):
        f, off, length = reader.block_request(no)
        stored = f.read(off, length)
        checked += length
        report.advance(length)
        if len(stored) != length:
            report.error(path, f"data block {no}: short read ({len(stored)} of {length} bytes)", off)
            bad_blocks += 1
            continue
        try:
            block = decode_block(unwrap_block(stored, path, off, what=f"data block {no}"))
        except CorruptionError as exc:
            report.from_corruption(exc, path)
            bad_blocks, prev = bad_blocks + 1, None
            continue
        except (BlockFormatError, ValueError) as exc:
            report.error(path, f"data block {no} does not parse: {exc}", off)
            bad_blocks, prev = bad_blocks + 1, None
            continue
        report.count("data_blocks")
        for key, version, value in block.entries():
            if prev is not None and (key < prev[0] or (key == prev[0] and version >= prev[1])):
                report.error(path, f"data block {no}: entry {show_bytes(key)!r}@{version} is out of "
                             "order", off)
            if not (meta.min_version <= version <= meta.max_version):
                report.error(path, f"data block {no}: version {version} outside the table's range "
                             f"[{meta.min_version}, {meta.max_version}]", off)
            if not reader.may_contain_key(key):
                report.error(path, f"data block {no}: key {show_bytes(key)!r} is outside the fences "
                             "or missing from the bloom filter", off)
            if first_key is None:
                first_key = key
            keys += prev is None or key != prev[0]
            prev = (key, version)
            entries += 1
            tombstones += value is None
    report.count("table_entries", entries)
    if bad_blocks:
        report.note(f"{path}: {bad_blocks} unreadable data blocks, so its entry counts and fences "
                    "were not checked")
        return checked
    if entries != meta.entry_count or tombstones != meta.tombstone_count:
        report.error(path, f"data blocks hold {entries} entries ({tombstones} tombstones); the "
                     f"properties say {meta.entry_count} ({meta.tombstone_count})")
    if keys != meta.key_count:  # (scans of a table with one entry a key trust it: reader.plain)
        report.error(path, f"data blocks hold {keys} distinct keys; the properties say "
                     f"{meta.key_count}")
    if first_key is not None and first_key != meta.smallest_key:
        report.error(path, "first key differs from the smallest key of the properties")
    if prev is not None and prev[0] != meta.largest_key:
        report.error(path, "last key differs from the largest key of the properties")
    return checked


def table_properties(reader: TableReader, show: Callable[[bytes], str] = show_bytes,
                     as_json: bool = False) -> dict[str, Any]:
    """The table's properties for a person (or, ``as_json`` with ``show`` encoding bytes,
    for JSON: range tombstones as objects whose keys are encoded like any other)."""
    m = reader.meta
    return {"file": reader.path, "file_size": m.file_size, "smallest_key": show(m.smallest_key),
            "largest_key": show(m.largest_key), "min_version": m.min_version,
            "max_version": m.max_version, "entries": m.entry_count, "tombstones": m.tombstone_count,
            "keys": m.key_count, "raw_size": m.raw_size, "data_size": m.data_size,
            "data_blocks": m.block_count, "block_size": m.block_size, "compression": m.compression,
            "bloom_bits_per_key": m.bloom_bits_per_key, "has_bloom_filter": reader.has_filter,
            **_origin_properties(m.origin), **_range_properties(reader, show, as_json)}


def _range_properties(reader: TableReader, show: Callable[[bytes], str],
                      as_json: bool) -> dict[str, Any]:
    """Format version 3: the range tombstones, ``[start, end) @version`` each (in JSON,
    ``{"start", "end", "version"}``)."""
    if not reader.range_dels:
        return {}
    origin = "" if reader.meta.origin is not None else " (no origin)"
    shown: list[Any] = [{"start": show(s), "end": show(e), "version": v} if as_json
                        else f"[{show(s)}, {show(e)}) @{v}" for s, e, v in reader.range_dels]
    return {"format": f"3{origin}", "range_tombstones": shown}


def _origin_properties(origin: Any) -> dict[str, Any]:
    if origin is None:
        return {"format": "1 (no origin)"}
    return {"format": "2", "keyspace": f"{origin.keyspace} ({origin.keyspace_name})",
            "covers_versions": f"{origin.covers_min}..{origin.covers_max}",
            "history_floor": origin.history_floor}


def cmd_dump_table(args: argparse.Namespace, out: Output) -> int:
    """``dump-table FILE``: properties, then entries from ``--start`` (at most ``--limit``)."""
    if os.path.isdir(args.file):  # not "no such table file": it is there, and not a file
        hint = (" (a store: its tables are the tables/*.sst files in it)"
                if os.path.isdir(os.path.join(args.file, "tables")) else "")
        raise UsageError(f"{args.file}: is a directory, not a table file{hint}")
    if not os.path.isfile(args.file):
        raise UsageError(f"{args.file}: no such table file")
    try:
        reader = TableReader.open(make_env(), args.file, None)
    except CorruptionError as exc:
        raise Failure(str(exc)) from None
    start = parse_key(args.start) if args.start is not None else None
    shown = 0
    with reader:
        props = table_properties(reader, out.show, as_json=out.json)
        if out.json:
            out.doc({"properties": props})
        else:
            for k, v in props.items():
                # a list (the range tombstones) item by item: its repr would escape the
                # escapes show_bytes wrote
                out.line(f"{k:>20}: {'; '.join(v) if isinstance(v, list) else v}")
            out.line("")
        try:
            for key, version, value in reader.scan(start, None, fill_cache=False):
                if args.limit is not None and shown >= args.limit:
                    break
                shown += 1
                if out.json:
                    out.doc({"key": out.show(key), "version": version, "tombstone": value is None,
                             "value": out.show_value(value)})
                else:
                    out.line(f"{out.show(key)} @{version} = {out.show_value(value, args.width)}")
        except CorruptionError as exc:
            raise Failure(str(exc)) from None
    if not out.json:
        out.line(f"({shown} entries shown)")
    return EXIT_OK
