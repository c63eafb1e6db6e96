"""``store.stats()``: what an operator needs to see, as one plain dict."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import accel

if TYPE_CHECKING:
    from .store import Store

__all__ = ["collect"]


def _table_stats(t: Any) -> dict[str, Any]:
    return {"file": getattr(t, "file_no", None), "bytes": t.file_size,
            "entries": t.meta.entry_count, "min_version": t.min_version,
            "max_version": t.max_version}


def _cache_stats(cache: Any) -> dict[str, Any]:
    st = dict(cache.stats())
    lookups = st.get("hits", 0) + st.get("misses", 0)
    st["hit_rate"] = round(st.get("hits", 0) / lookups, 4) if lookups else None
    return st


def collect(store: Store) -> dict[str, Any]:
    keyspaces: dict[str, Any] = {}
    bloom_useful = bloom_fp = 0
    for ks in list(store._ks_by_id.values()):
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
        }
    cache = store._cache
    out: dict[str, Any] = {
        "path": store.path, "version": store._version, "history_floor": store._history_floor,
        "read_only": store._read_only, "closed": store._closed,
        "live_snapshots": store._snapshots.live(),
        "keyspaces": keyspaces,
        "memtable_bytes": store._mem_bytes,
        "block_cache": _cache_stats(cache),
        "bloom": {"useful": bloom_useful, "passed_but_missed": bloom_fp},
        "io": store._env.describe(),
        # "native" (the compiled core, see accel.py) or "python"
        "implementation": accel.IMPLEMENTATION,
    }
    out["io_mode"] = out["io"].get("io_mode")
    if store._wal is not None:
        wal = store._wal.stats()
        out["wal"] = wal
        out["wal_bytes"] = wal.get("bytes", 0)
    f = store._flusher
    if f is not None:
        out["flush"] = {"flushes": f.flushes, "pending": f.pending, "failures": f.failures,
                        "bytes_written": f.bytes_written, "last_error": repr(f.error) if f.error else None}
        out["stalls"] = {"count": f.stalls, "seconds": round(f.stall_seconds, 6)}
    if store._compactor is not None:
        out["compaction"] = store._compactor.stats()
    return out
