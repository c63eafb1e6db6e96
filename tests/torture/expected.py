"""What the torture writer writes, derived from small descriptions, and the
expected state it must leave behind: full version history per keyspace.

A write is described by its entries ``[keyspace index, key number, size]``
(``size < 0``: a delete); :func:`value` derives the bytes from the operation's
``(round, n, j)``, so every value ever written is unique and the journal stays
small.  Log records are derived from their seq (:func:`log_record`).

>>> e = ExpectedState()
>>> e.apply(3, {(0, b"k00001"): b"x", (1, b"k00002"): None})
>>> e.value_at(0, b"k00001", 2), e.value_at(0, b"k00001", 3), e.scan_at(1, 9)
(None, b'x', [])
"""

from __future__ import annotations

import random
from bisect import bisect_right
from typing import Any

__all__ = ["KEYSPACES", "ExpectedState", "key", "value", "log_record", "entries_of", "random_options"]

KEYSPACES = ("default", "index", "events")
"""Keyspaces of the torture store, by index (the journal stores the index)."""

Entry = tuple[int, bytes]  # (keyspace index, key)


def key(n: int) -> bytes:
    return b"k%05d" % n


def value(round_no: int, n: int, j: int, size: int) -> bytes:
    """The value of entry ``j`` of operation ``n`` of round ``round_no``: unique, ``size``
    bytes or just the unique tag when ``size`` is smaller."""
    tag = b"%d.%d.%d|" % (round_no, n, j)
    if size <= len(tag):
        return tag
    return (tag * (size // len(tag) + 1))[:size]


def log_record(seq: int) -> bytes:
    """The Log record the torture writer appends at ``seq``."""
    return b"L%d|" % seq * (1 + seq % 37)


def entries_of(round_no: int, n: int, spec: list[list[int]]) -> dict[Entry, bytes | None]:
    """The ``{(keyspace, key): value or None}`` a write applies (the last op on a key wins)."""
    out: dict[Entry, bytes | None] = {}
    for j, (ks, k, size) in enumerate(spec):
        out[(ks, key(k))] = None if size < 0 else value(round_no, n, j, size)
    return out


class ExpectedState:
    """Every surviving write, by version; ``floor`` is the history floor applied so far."""

    def __init__(self) -> None:
        self.history: dict[Entry, list[tuple[int, bytes | None]]] = {}
        self.floor = 0
        self.last_version = 0

    def apply(self, version: int, entries: dict[Entry, bytes | None]) -> None:
        if version <= self.last_version:
            raise AssertionError(f"expected versions must rise: {version} after {self.last_version}")
        for e, v in entries.items():
            self.history.setdefault(e, []).append((version, v))
        self.last_version = version

    def value_at(self, ks: int, k: bytes, version: int) -> bytes | None:
        entries = self.history.get((ks, k), [])
        i = bisect_right(entries, version, key=lambda e: e[0])
        return entries[i - 1][1] if i else None

    def scan_at(self, ks: int, version: int) -> list[tuple[bytes, bytes]]:
        out = []
        for (space, k) in sorted(self.history):
            if space == ks:
                v = self.value_at(ks, k, version)
                if v is not None:
                    out.append((k, v))
        return out

    def history_of(self, ks: int, k: bytes) -> list[tuple[int, bytes | None]]:
        """Newest first, only versions at or above the floor (what the store must list)."""
        return [e for e in reversed(self.history.get((ks, k), [])) if e[0] >= self.floor]

    def raise_floor(self, floor: int) -> None:
        """Forget versions nobody may read any more: per key, keep the newest entry
        below ``floor`` (it is still the value at ``floor``) and everything above."""
        self.floor = max(self.floor, floor)
        for entries in self.history.values():
            i = bisect_right(entries, self.floor, key=lambda x: x[0])
            if i > 1:
                del entries[:i - 1]

    def keys(self) -> int:
        return len(self.history)


def random_options(rng: random.Random, io_mode: str) -> dict[str, Any]:
    """Store options for one round: tiny memtables, blocks and segments so that
    flushes, merges and rotations never stop; the mode switches drawn at random."""
    return dict(
        io_mode=io_mode,
        compaction_mode=rng.choice(("process", "thread")),
        wal_sync=rng.choice(("always", "interval", "never")),
        wal_sync_interval_ms=rng.choice((5, 50)),
        compression=rng.choice(("none", "lz4", "zstd")),
        bloom_bits_per_key=rng.choice((0, 12)),
        memtable_size=64 * 1024,
        block_size=1024,
        segment_size=64 * 1024,
        compaction_min_width=2,
        compaction_max_width=4,
        history_retention=1e9,
        max_tables_before_slowdown=8,
        max_tables_before_stall=64,
    )
