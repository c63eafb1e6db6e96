"""A sorted-list model of a table and small builders shared by the sstable tests."""

from __future__ import annotations

import itertools
import os
import random
import struct
from collections.abc import Callable
from typing import Any

from banyanstore.io.base import Env
from banyanstore.options import Options
from banyanstore.sstable import BlockCache, TableBuilder, TableMeta, TableReader
from banyanstore.sstable.block import Block
from banyanstore.sstable.format import COMPRESSION_NONE, TRAILER, crc32c

Entry = tuple[bytes, int, "bytes | None"]
_names = itertools.count(1)


def internal_sorted(entries: list[Entry]) -> list[Entry]:
    """Key ascending, version descending."""
    return sorted(entries, key=lambda e: (e[0], -e[1]))


def model_get(entries: list[Entry], key: bytes, version: int) -> tuple[bool, bytes | None, int]:
    best: Entry | None = None
    for k, v, val in entries:
        if k == key and v <= version and (best is None or v > best[1]):
            best = (k, v, val)
    return (False, None, 0) if best is None else (True, best[2], best[1])


def model_scan(entries: list[Entry], start: bytes | None, end: bytes | None,
               reverse: bool = False) -> list[Entry]:
    out = [e for e in entries
           if (start is None or e[0] >= start) and (end is None or e[0] < end)]
    return out[::-1] if reverse else out


def random_entries(rng: random.Random, nkeys: int, *, max_versions: int = 3, key_len: int | None = None,
                   value_len: int | None = None, tombstone_rate: float = 0.1) -> list[Entry]:
    """Entries in internal order: distinct keys, each with 1..max_versions versions."""
    keys: set[bytes] = set()
    while len(keys) < nkeys:
        n = key_len if key_len is not None else rng.randrange(0, 12)
        keys.add(bytes(rng.randrange(256) for _ in range(n)) if n else b"")
    out: list[Entry] = []
    for k in sorted(keys):
        versions = sorted(rng.sample(range(1, 60), rng.randrange(1, max_versions + 1)), reverse=True)
        for v in versions:
            if rng.random() < tombstone_rate:
                out.append((k, v, None))
            else:
                n = value_len if value_len is not None else rng.randrange(0, 40)
                out.append((k, v, os.urandom(n)))
    return out


def new_path(root: str, stem: str = "t") -> str:
    return os.path.join(root, f"{stem}{next(_names):06d}.sst")


def build(env: Env, root: str, entries: list[Entry], **opts: object) -> tuple[str, TableMeta]:
    path = new_path(root)
    b = TableBuilder(env, path, Options(**opts))  # type: ignore[arg-type]
    b.add_many(entries)
    return path, b.finish()


def open_table(env: Env, path: str, cache_bytes: int = 1 << 24, **kw: bool) -> TableReader:
    return TableReader.open(env, path, BlockCache(cache_bytes), **kw)


def with_payload(data: bytes, offset: int, payload: bytes) -> bytes:
    """Table bytes ``data`` with the payload of the uncompressed stored block at ``offset``
    replaced by ``payload`` (of the same length) and its checksum recomputed: damage that
    only the validation of the decoded fields can find."""
    end = offset + len(payload)
    assert data[end] == COMPRESSION_NONE, "the block must be stored uncompressed"
    crc = crc32c(bytes([COMPRESSION_NONE]), crc32c(payload))
    return data[:offset] + payload + TRAILER.pack(COMPRESSION_NONE, crc) + data[end + TRAILER.size:]


def set_block_offset(payload: bytes, section: str, i: int, how: str) -> bytes:
    """A data block ``payload`` with offset ``i`` of its ``section`` ("key" or "value")
    offsets array out of order: ``how`` = "above the next" (still inside the heap),
    "past the heap" or "below the previous".  REQUIRES: 0 < i < count."""
    block = Block(payload)
    at = block.keys_at if section == "key" else block.values_at
    assert (block.kw if section == "key" else block.vw) == -1, "a fixed-width section has no offsets"
    offs = struct.unpack_from(f"<{block.count + 1}I", payload, at)
    value = {"above the next": offs[i + 1] + 1, "past the heap": 0xFFFFFFFF,
             "below the previous": offs[i - 1] - 1}[how]
    if value < 0:  # the previous item is empty: the step below it is the heap's wrap-around
        value = 0xFFFFFFFF
    out = bytearray(payload)
    struct.pack_into("<I", out, at + 4 * i, value)
    return bytes(out)


def offsets_damaged_table(env: Env, root: str, layout: str, section: str,
                          how: str) -> tuple[str, list, int, list[bytes]]:
    """A table whose data block 1 has offset 3 of an offsets array out of order (``how``:
    see :func:`set_block_offset`) behind a valid checksum:
    ``(path, entries, the block's offset, the keys it holds)``.  ``layout`` "variable":
    variable-width keys and values; "fixed-keys": fixed-width keys, variable-width values."""
    if layout == "variable":
        entries = sorted((b"k%d" % i, 1, b"v" * (i % 7)) for i in range(300))
    else:
        entries = [(b"key%04d" % i, 1, b"value-%d" % i + b"!" * (i % 9)) for i in range(300)]
    path, _ = build(env, root, entries, block_size=1024, compression="none", bloom_bits_per_key=10)
    with open_table(env, path) as r:
        assert r.block_count > 2
        _, off, length = r.block_request(1)
        keys = r.load_blocks([1])[1].keys
    data = env.read_file(path)
    payload = set_block_offset(data[off:off + length - TRAILER.size], section, 3, how)
    f = env.open_writable(path)
    try:
        f.write(with_payload(data, off, payload))
    finally:
        f.close()
    return path, entries, off, keys


def read_paths(r: TableReader, keys: list[bytes], tmp_root: str) -> dict[str, Callable[[], Any]]:
    """Each way a table is read, as a callable reaching data block 1 (its ``keys``)."""
    from banyanstore.lsm.merge import MergeSpec, build_merged  # (the lsm package imports sstable)
    k = keys[3]
    return {
        "get": lambda: r.get(k, 2**64 - 1),
        "get another key of the block": lambda: r.get(keys[-1], 2**64 - 1),
        "load_blocks (batched reads)": lambda: r.load_blocks([1]),
        "scan": lambda: list(r.scan()),
        "reverse scan": lambda: list(r.scan(reverse=True)),
        "seek": lambda: list(r.scan(k)),
        "reverse seek": lambda: list(r.scan(None, k + b"\x00", reverse=True)),
        "scan_runs": lambda: [list(run) for run in r.scan_runs()],
        "seek_head": lambda: r.seek_head(k, None, 5),
        "history": lambda: r.history(k),
        "compaction": lambda: build_merged(r.env, [r], os.path.join(tmp_root, "merged.sst"),
                                           Options(), MergeSpec(2**64 - 1)),
    }
