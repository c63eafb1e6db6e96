"""Flushing immutable memtables to tables, off the caller's thread.

A switch hands the flusher a :class:`PendingFlush` (the memtables of every
keyspace as of one version, and the WAL sequence where the next memtables
start).  The flusher writes one table per non-empty memtable, syncs the
tables and their directory, then records them in the manifest *and* swaps
the keyspaces' views under the state lock, and only then cuts the WAL.

Crash states (each proven by tests/lsm/test_crash.py):

* tables written, manifest edit not durable: the tables are orphans, removed
  at the next open; the WAL still holds their data.
* manifest edit durable, WAL not yet cut: replay skips records whose version
  is ``<= flushed_version``.

A failing flush (EIO, ENOSPC) removes its partial files and is retried with
back-off; writers keep going until ``max_immutable_memtables`` memtables wait,
then stall -- and get the flush error (e.g. :class:`DiskFullError`) instead
of waiting forever while it persists.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BanyanStoreError, StoreClosedError
from ..sstable.builder import TableBuilder
from ..sstable.meta import TableOrigin
from ..sstable.reader import TableReader
from .background import BackgroundThread
from .manifest import TableInfo
from .memtable import Memtable
from .view import View
from .workers import build_table_in_worker, offload

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Flusher", "PendingFlush", "table_path", "build_table"]

logger = logging.getLogger("banyanstore.flush")
BACKOFF_START = 0.05
BACKOFF_MAX = 2.0


def table_path(store_path: str, file_no: int) -> str:
    return f"{store_path}/tables/{file_no:06d}.sst"


@dataclass
class PendingFlush:
    mems: dict[int, Memtable]
    last_version: int
    wal_seq: int


def build_table(store: Store, ks_id: int, entries: tuple[list[bytes], list[int], list[bytes | None]]
                ) -> tuple[TableReader, TableInfo] | None:
    """Write memtable columns (keys, versions, values in internal order) to a new table
    of keyspace ``ks_id`` -- in a worker process in process mode -- sync it and open
    it.  On failure the partial file is removed and the error raised."""
    if not entries[0]:
        return None
    file_no = store._allocate_file_no()
    path = table_path(store.path, file_no)
    origin = TableOrigin(ks_id, store._ks_by_id[ks_id].name)  # covering its own versions
    if offload(store):
        meta = store._workers.submit("flush", build_table_in_worker, path, store.options, *entries,
                                     origin)
    else:
        builder = TableBuilder(store._env, path, store.options, origin)
        try:
            builder.add_sorted_columns(*entries)
            meta = builder.finish()
        except BaseException:
            builder.abandon()
            raise
    try:
        reader = TableReader.open(store._env, path, store._cache)
    except BaseException:
        _remove_quietly(store, path)
        raise
    info = TableInfo(ks_id, file_no, meta.file_size, meta.smallest_key, meta.largest_key,
                     meta.min_version, meta.max_version, meta.entry_count, meta.tombstone_count)
    reader.file_no = file_no
    return reader, info


def _remove_quietly(store: Store, path: str) -> None:
    try:
        store._env.remove(path)
    except (FileNotFoundError, BanyanStoreError, OSError):
        logger.warning("could not remove %s after a failed flush", path)


class Flusher(BackgroundThread):
    """The background thread that turns immutable memtables into tables."""

    thread_name = "banyanstore-flush"

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: deque[PendingFlush] = deque()
        super().__init__()
        self.error: BaseException | None = None
        self.flushes = 0
        self.failures = 0  # consecutive failed attempts
        self.failed_attempts = 0  # every failed attempt ever (wait_idle tells fresh from stale)
        self.bytes_written = 0
        self.stalls = 0
        self.stall_seconds = 0.0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, mems: dict[int, Memtable], last_version: int, wal_seq: int) -> None:
        with self._cv:
            self._queue.append(PendingFlush(mems, last_version, wal_seq))
            self._cv.notify_all()

    def wait_for_room(self) -> None:
        """Stall the (write-locked) caller while too many memtables wait.
        Raises the flush error if flushing keeps failing meanwhile."""
        limit = self._store.options.max_immutable_memtables
        if len(self._queue) < limit:
            return
        began = time.monotonic()
        self.stalls += 1
        try:
            with self._cv:
                # As in wait_idle: ask for a retry now and fail only on a fresh failure,
                # so writers resume as soon as the fault is gone (not after the back-off).
                seen = self.failed_attempts
                self._cv.notify_all()
                while len(self._queue) >= limit:
                    if self.error is not None and self.failed_attempts > seen:
                        raise self.error
                    if self._stopping:
                        raise StoreClosedError("store is closing")
                    self._cv.wait(0.1)
        finally:
            self.stall_seconds += time.monotonic() - began

    def wait_idle(self) -> None:
        """Return once every submitted memtable is in a table; raise the flush
        error if the queue cannot drain."""
        with self._cv:
            # Only an attempt made during this call may fail it: an error left from
            # before (the disk was full, and space has returned since) must not fail
            # flush()/close() while the retry waits out its back-off.  So wake the
            # flusher to retry now, and raise only after a fresh failure.
            seen = self.failed_attempts
            self._cv.notify_all()
            while self._queue:
                if self.error is not None and self.failures >= 3 and self.failed_attempts > seen:
                    raise self.error
                if self._stopping or self._thread is None or not self._thread.is_alive():
                    raise StoreClosedError("flusher is not running")
                self._cv.wait(0.1)


    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        backoff = BACKOFF_START
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if self._stopping and (not self._queue or self.error is not None):
                    return
                job = self._queue[0]
            try:
                self._flush(job)
            except BaseException as exc:  # noqa: BLE001 - reported to writers, retried
                with self._cv:
                    self.error = exc
                    self.failures += 1
                    self.failed_attempts += 1
                    self._cv.notify_all()
                logger.error("flush failed (attempt %d), retrying in %.2fs: %s",
                             self.failures, backoff, exc)
                with self._cv:
                    if self._stopping:
                        return
                    self._cv.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_START
            with self._cv:
                self._queue.popleft()
                self.error = None
                self.failures = 0
                self.flushes += 1
                self._cv.notify_all()

    def _flush(self, job: PendingFlush) -> None:
        store = self._store
        built: dict[int, Any] = {}
        infos: list[TableInfo] = []
        try:
            for ks_id, mem in job.mems.items():
                if ks_id not in store._ks_by_id:
                    continue  # dropped (Store.drop_keyspace): its entries go with it
                result = build_table(store, ks_id, mem.flush_columns())
                if result is not None:
                    built[ks_id], info = result
                    infos.append(info)
            store._env.sync_dir(f"{store.path}/tables")
        except BaseException:
            for info in infos:
                _remove_quietly(store, table_path(store.path, info.file_no))
            raise
        edit: dict[str, Any] = {
            "add_tables": [i.to_json() for i in infos], "flushed_version": job.last_version,
            "wal_seq": job.wal_seq}
        with store._state_lock:
            gone = [i for i in infos if i.keyspace not in store._ks_by_id]
            if gone:  # dropped while its table was built: no edit may name it
                infos = [i for i in infos if i.keyspace in store._ks_by_id]
                edit["add_tables"] = [i.to_json() for i in infos]
                for info in gone:
                    built.pop(info.keyspace).close()
                    _remove_quietly(store, table_path(store.path, info.file_no))
            edit["time_map"] = [list(s) for s in store._unpersisted_time_samples()]
            try:
                store._log_edit(edit)
            except BaseException:
                # The edit may or may not be durable: delete the tables only once a
                # later manifest that does not name them is.
                store._defer_delete([table_path(store.path, i.file_no) for i in infos])
                raise
            for ks_id, mem in job.mems.items():
                ks = store._ks_by_id.get(ks_id)
                if ks is None:
                    continue  # dropped
                old = ks.view
                reader = built.get(ks_id)
                tables = old.tables if reader is None else (reader,) + old.tables
                ks.view = View(old.mem, tuple(m for m in old.imms if m is not mem), tables)
        self.bytes_written += sum(i.file_size for i in infos)
        assert store._wal is not None
        # The flush is complete: its edit is durable and the views hold its tables.
        # Cutting the WAL only reclaims space, so a failure here must not fail the
        # flush -- a retry would install the same entries a second time.  The segments
        # left behind are skipped by replay (below wal_seq) and cut by the next flush.
        try:
            store._wal.truncate_before(job.wal_seq)
        except BanyanStoreError as exc:
            logger.warning("could not cut the WAL before seq %d after a flush: %s", job.wal_seq, exc)
        if store._compactor is not None:
            store._compactor.wake()
