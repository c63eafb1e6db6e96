"""A consistent copy of a store's files, taken while the store keeps running.

The backup reads the store's *files*, never its memory, so the same code works
for a store open in this process, a store a writer in another process holds,
and a closed one; nothing is flushed and the writer is never blocked.

One attempt, in the order that makes it safe:

1. read the manifest ``CURRENT`` names: state *S* (live tables, ``flushed_version``
   F, ``wal_seq``);
2. hard-link every table S names into the scratch directory.  Tables are
   immutable, so a link pins exactly the bytes S means; a table a merge removed
   in the meantime is missing: start over;
3. hard-link every WAL segment;
4. read the manifest again: *S2*.  If a flush finished since step 1 (``wal_seq``
   moved) its WAL truncation may have removed segments step 3 needed: start over.
   The WAL is cut only after the edit naming the new ``wal_seq`` is durable, so an
   unchanged ``wal_seq`` in S2 proves the linked segments still hold every record
   from S's ``wal_seq`` on;
5. read the linked WAL from S's ``wal_seq`` up to its last intact record (a
   writer may be appending: its half-written last record is a torn tail here) and
   copy every record with a version above F into the WAL tail object, stopping
   at the first record of a keyspace S2 does not know (created after step 4).

The manifest can run ahead of the files: a merge or ``set_history_floor`` records a
history floor at the writer's version, whose newest writes a power loss may have
taken from the WAL (they were not synced yet).  The capture lowers a floor above V to V (the merges behind
it kept, for every key, its newest write at or below the floor, so reads at V are
exact), and keeps the time samples up to V only (a sample of a later version
would date new writes of the restored store too early).

Every version up to F is in the tables of S; every version in ``(F, V]`` is in
the tail, because WAL records are appended in version order and the tail is a
prefix of the WAL.  So the capture holds exactly the writes with version <= V
-- one version across every keyspace.  Every write whose call returned is in the
WAL file (log/writer.py), so a backup holds every write acknowledged before it
read the WAL; a backup of a store open in this process also syncs it first
(``store.sync()``), which makes those writes durable.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from dataclasses import dataclass

from ..errors import CorruptionError, StorageIOError, StoreNotFoundError
from ..io.posix import PosixEnv
from ..log.log import Log
from ..log.segment import parse_segment_name
from ..lsm.manifest import Manifest, ManifestState, TableInfo
from ..lsm.wal import decode, encode_batch, encode_with_ranges
from .waltail import TailWriter

__all__ = ["Capture", "StagedTail", "capture", "MAX_ATTEMPTS"]

MAX_ATTEMPTS = 100


@dataclass(frozen=True)
class StagedTail:
    path: str
    sha256: str
    size: int
    records: int
    first_version: int
    last_version: int


@dataclass(frozen=True)
class Capture:
    """What a backup holds: the manifest state of step 1 (tables, counters), the
    keyspaces of step 4, the staged files and the version."""

    state: ManifestState
    keyspaces: dict[int, str]
    keyspace_ttl: dict[int, float | None]
    tables: list[tuple[TableInfo, str]]  # (the manifest's record, the staged copy)
    tail: StagedTail | None
    version: int
    history_floor: int
    time_map: list[tuple[int, int]]


class _Raced(Exception):
    """The store changed under this attempt; start over."""


def capture(store_dir: str, staging: str, *, known_version: int = 0) -> Capture:
    """Capture the store in ``store_dir`` into the directory ``staging``.

    ``known_version``: a version every write up to which is already in the store's
    files (the caller synced it); the capture's version is at least that."""
    env = PosixEnv()
    if not os.path.exists(os.path.join(store_dir, "CURRENT")):
        raise StoreNotFoundError(f"no store at {store_dir} (no CURRENT)")
    cause: BaseException | None = None
    for attempt in range(MAX_ATTEMPTS):
        try:
            return _attempt(env, store_dir, staging, known_version)
        except _Raced as exc:
            cause = exc.__cause__ or exc
            time.sleep(min(0.05, 0.001 * attempt))
    if isinstance(cause, CorruptionError):
        raise cause  # it was not a race after all
    raise StorageIOError(f"store {store_dir} changed under every one of {MAX_ATTEMPTS} attempts "
                         f"to capture it (last: {cause})", path=store_dir, op="backup")


def _fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.mkdir(path)
    return path


def _load(env: PosixEnv, store_dir: str) -> ManifestState:
    try:
        return Manifest.load(env, store_dir)
    except (CorruptionError, FileNotFoundError, StorageIOError) as exc:
        # A manifest roll replaces CURRENT and then removes the old file: a reader
        # between the two finds it missing.  Real damage persists over every attempt.
        raise _Raced(str(exc)) from exc


def _link(env: PosixEnv, src: str, dst: str) -> None:
    try:
        env.link(src, dst)
    except OSError as exc:
        if getattr(exc, "errno", None) == errno.ENOENT or isinstance(exc, FileNotFoundError):
            raise _Raced(f"{src} was removed") from exc
        raise


def _check_still_named(env: PosixEnv, store_dir: str, info: TableInfo, src: str) -> None:
    """A merge removes its inputs only after the edit dropping them is durable, so a
    missing table that a fresh read of the manifest still names is lost, not raced."""
    now = _load(env, store_dir)
    if info.file_no in now.tables.get(info.keyspace, {}):
        raise CorruptionError("table named by the manifest is missing", path=src)


def _attempt(env: PosixEnv, store_dir: str, staging: str, known_version: int) -> Capture:
    state = _load(env, store_dir)
    tables_dir = _fresh(os.path.join(staging, "tables"))
    tables: list[tuple[TableInfo, str]] = []
    for per_keyspace in state.tables.values():
        for info in per_keyspace.values():
            name = f"{info.file_no:06d}.sst"
            src, dst = os.path.join(store_dir, "tables", name), os.path.join(tables_dir, name)
            try:
                _link(env, src, dst)
            except _Raced:
                _check_still_named(env, store_dir, info, src)
                raise
            size = os.stat(dst).st_size
            if size != info.file_size:
                raise CorruptionError(f"table is {size} bytes, the manifest says {info.file_size}",
                                      path=src)
            tables.append((info, dst))
    wal_dir = _fresh(os.path.join(staging, "wal"))
    src_wal = os.path.join(store_dir, "wal")
    for name in sorted(os.listdir(src_wal)) if os.path.isdir(src_wal) else []:
        if parse_segment_name(name) is not None:
            _link(env, os.path.join(src_wal, name), os.path.join(wal_dir, name))
    again = _load(env, store_dir)
    if (again.wal_seq, again.flushed_version) != (state.wal_seq, state.flushed_version):
        raise _Raced("a flush finished during the capture")
    if again.dropped != state.dropped:  # the tables linked include a dropped keyspace's
        raise _Raced("a keyspace was dropped during the capture")
    tail = _copy_tail(wal_dir, os.path.join(staging, "wal-tail"), state, set(again.keyspaces))
    version = max(state.flushed_version, tail.last_version if tail else 0, known_version)
    floor = min(state.history_floor, version)
    samples = [(v, second) for v, second in state.time_map.samples if v <= version]
    return Capture(state, dict(again.keyspaces), dict(again.keyspace_ttl), tables, tail, version,
                   floor, samples)


def _copy_tail(wal_dir: str, dest: str, state: ManifestState, keyspaces: set[int]) -> StagedTail | None:
    """Copy the WAL records above ``flushed_version`` into a tail object at ``dest``."""
    with Log.open(wal_dir, read_only=True, io_mode="sync") as log, open(dest, "wb") as out:
        writer = TailWriter(out)
        start = max(state.wal_seq, log.first_seq)
        if start <= log.last_seq:
            for seq, record in log.read(start):
                version, ms, ops, ranges = decode(record, f"{wal_dir} (record {seq})")
                if version <= state.flushed_version:
                    continue  # in the tables already (the WAL was not cut yet)
                if any(op[0] in state.dropped for op in (*ops, *ranges)):
                    # written before its keyspace was dropped: the restored store knows
                    # neither the keyspace nor the drop, so the record goes without those ops
                    ops = [op for op in ops if op[0] not in state.dropped]
                    ranges = [r for r in ranges if r[0] not in state.dropped]
                    if not ops and not ranges:
                        continue
                    record = (encode_with_ranges(version, ms, ops, ranges) if ranges
                              else encode_batch(version, ms, ops))
                if any(op[0] not in keyspaces for op in (*ops, *ranges)):
                    break  # its keyspace is younger than the manifest read: after the capture
                if writer.records and version <= writer.last_version:
                    raise CorruptionError(f"WAL record {seq} has version {version}, not above "
                                          f"{writer.last_version}", path=wal_dir)
                writer.add(record, version)
    if not writer.records:
        os.remove(dest)
        return None
    return StagedTail(dest, writer.sha256.hexdigest(), writer.size, writer.records,
                      writer.first_version, writer.last_version)
