"""A sorted-list model of a table and small builders shared by the sstable tests."""

from __future__ import annotations

import itertools
import os
import random

from banyanstore.io.base import Env
from banyanstore.options import Options
from banyanstore.sstable import BlockCache, TableBuilder, TableMeta, TableReader

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
