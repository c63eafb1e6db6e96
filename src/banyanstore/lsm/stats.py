"""``store.stats()``: what an operator needs to see, as one plain dict."""

from __future__ import annotations

from typing import Any

from .. import accel
from ..log.log import Log
from .compaction import Compactor
from .flush import Flusher
from .tree import Tree
from .writer import Writer

__all__ = ["collect"]


def _table_stats(t: Any) -> dict[str, Any]:
    return {"file": getattr(t, "file_no", None), "bytes": t.file_size,
            "entries": t.meta.entry_count, "min_version": t.min_version,
            "max_version": t.max_version, "range_tombstones": len(getattr(t, "range_dels", ()))}


def _cache_stats(cache: Any) -> dict[str, Any]:
    st = dict(cache.stats())
    lookups = st.get("hits", 0) + st.get("misses", 0)
    st["hit_rate"] = round(st.get("hits", 0) / lookups, 4) if lookups else None
    return st


def collect(tree: Tree, *, read_only: bool, closed: bool, writer: Writer, wal: Log | None,
            flusher: Flusher | None, compactor: Compactor | None) -> dict[str, Any]:
    """The figures of a store: its ``tree``, write path, WAL and background threads
    (None where there are none)."""
    keyspaces: dict[str, Any] = {}
    bloom_useful = bloom_fp = 0
    for ks in tree.keyspaces():
        view = ks.view
        tables = [_table_stats(t) for t in view.tables]
        for t in view.tables:
            bloom_useful += getattr(t, "bloom_useful", 0)
            bloom_fp += getattr(t, "bloom_passed_misses", 0)
        keyspaces[ks.name] = {
            "id": ks.id, "ttl": ks.ttl,
            "memtable_bytes": view.mem.approx_bytes, "memtable_entries": view.mem.entries,
            "immutable_memtables": len(view.imms), "tables": len(tables),
            "table_bytes": sum(t["bytes"] for t in tables), "table_list": tables,
            # reads of a keyspace holding any take the slower paths (docs/store.md)
            "range_tombstones": len(view.range_dels()),
        }
    out: dict[str, Any] = {
        "path": tree.path, "version": tree.version, "history_floor": tree.history_floor,
        # A failed WAL write makes the store read-only until reopened: say so, and why,
        # as every refused write does.
        "read_only": read_only or writer.wal_failed, "closed": closed,
        "write_error": repr(writer.wal_error) if writer.wal_error is not None else None,
        "live_snapshots": tree.pinned(),
        "keyspaces": keyspaces,
        "memtable_bytes": writer.mem_bytes,
        # puts and deletes the compiled core wrote in one call (lsm/writer.py fast_put)
        "writes_in_one_call": writer.one_call_writes,
        "block_cache": _cache_stats(tree.cache),
        # table descriptors under max_open_files (None: no cap, one per live table)
        "open_files": None if tree.table_files is None else tree.table_files.stats(),
        "bloom": {"useful": bloom_useful, "passed_but_missed": bloom_fp},
        "io": tree.env.describe(),
        # "native" (the compiled core, see accel.py) or "python"
        "implementation": accel.IMPLEMENTATION,
    }
    out["io_mode"] = out["io"].get("io_mode")
    if wal is not None:
        wal_stats = wal.stats()
        out["wal"] = wal_stats
        out["wal_bytes"] = wal_stats.get("bytes", 0)
    f = flusher
    if f is not None:
        out["flush"] = {"flushes": f.flushes, "pending": f.pending, "failures": f.failures,
                        "bytes_written": f.bytes_written, "last_error": repr(f.error) if f.error else None}
        # memtable stalls (the flusher's queue) and table stalls (compaction), together
        # and apart, so a slow run of writes can tell which one held it up: a writer
        # waiting for a flush to free a memtable, or one slowed by unmerged tables
        out["stalls"] = {"count": f.stalls + writer.stalls,
                         "seconds": round(f.stall_seconds + writer.stall_seconds, 6),
                         "memtable_waits": f.stalls,
                         "memtable_wait_seconds": round(f.stall_seconds, 6),
                         "table_stalls": writer.stalls,
                         "table_stall_seconds": round(writer.stall_seconds, 6)}
    if compactor is not None:
        out["compaction"] = compactor.stats()
    return out
