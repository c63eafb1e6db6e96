"""Opening a store: tables named by the manifest, WAL replay, orphan removal.

Rules (BanyanDB lost data by breaking them, see FACTS.md):

* a table the manifest names but that is missing, truncated or fails its
  checks is a :class:`CorruptionError` naming the file -- never skipped;
* only files the manifest does *not* name are removed, and only after the
  manifest this process writes is durable (it is created before this runs);
* WAL records at or below ``flushed_version`` are already in tables and are
  skipped; the rest rebuild the memtables.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from ..errors import CorruptionError
from ..io.base import Env
from ..sstable.cache import BlockCache
from ..sstable.reader import TableReader
from .manifest import ManifestState
from .wal import decode

if TYPE_CHECKING:
    from .store import Store

__all__ = ["open_tables", "remove_orphans", "replay_wal"]

logger = logging.getLogger("banyanstore.recovery")
TABLE_NAME = re.compile(r"^(\d{6,})\.sst$")


def open_tables(env: Env, path: str, state: ManifestState, cache: BlockCache) -> dict[int, list[Any]]:
    """Open every live table; per keyspace, newest (highest versions) first."""
    out: dict[int, list[Any]] = {}
    for ks_id, tables in state.tables.items():
        readers = []
        for info in tables.values():
            tpath = f"{path}/tables/{info.file_no:06d}.sst"
            try:
                size = env.file_size(tpath)
            except FileNotFoundError as exc:
                raise CorruptionError("table named by the manifest is missing", path=tpath) from exc
            if size != info.file_size:
                raise CorruptionError(f"table is {size} bytes, the manifest says {info.file_size}",
                                      path=tpath)
            reader = TableReader.open(env, tpath, cache)
            reader.file_no = info.file_no
            readers.append(reader)
        readers.sort(key=lambda r: r.max_version, reverse=True)
        out[ks_id] = readers
    return out


def remove_orphans(env: Env, path: str, state: ManifestState) -> list[str]:
    """Remove tables no manifest edit names and stale temporary/manifest files.
    REQUIRES: the manifest describing ``state`` is durable."""
    live = {info.file_no for tables in state.tables.values() for info in tables.values()}
    removed = []
    tdir = f"{path}/tables"
    for name in env.listdir(tdir) if env.exists(tdir) else []:
        m = TABLE_NAME.match(name)
        if (m and int(m.group(1)) not in live) or name.endswith(".tmp"):
            env.remove(f"{tdir}/{name}")
            removed.append(f"{tdir}/{name}")
    current = None
    if env.exists(f"{path}/CURRENT"):
        from .manifest import Manifest
        current = Manifest.current_name(env, path)
    for name in env.listdir(path):
        if (name.startswith("MANIFEST-") and name != current) or name == "CURRENT.tmp":
            env.remove(f"{path}/{name}")
            removed.append(f"{path}/{name}")
    if removed:
        logger.info("removed %d unreferenced files: %s", len(removed), ", ".join(removed))
    return removed


def replay_wal(store: Store, state: ManifestState) -> int:
    """Rebuild memtables from WAL records newer than ``flushed_version``.
    Returns the number of records applied."""
    wal = store._wal
    assert wal is not None
    applied = 0
    start = max(state.wal_seq, wal.first_seq)
    if start > wal.last_seq:
        return 0
    by_id = store._ks_by_id
    floor = state.flushed_version
    where = f"{store.path}/wal"
    for seq, record in wal.read(start):
        version, ms, ops = decode(record, f"{where} (record {seq})")
        if version <= floor:
            continue
        for ks_id, key, value in ops:
            ks = by_id.get(ks_id)
            if ks is None:
                raise CorruptionError(f"WAL record {seq} writes to unknown keyspace {ks_id}",
                                      path=where)
            store._mem_bytes += ks.view.mem.add(key, version, value)
        if version > store._version:
            store._version = version
        store._timemap.note(version, ms)
        applied += 1
    if applied:
        logger.info("replayed %d WAL records up to version %d", applied, store._version)
    return applied
