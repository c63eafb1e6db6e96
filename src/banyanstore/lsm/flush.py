"""Flushing immutable memtables to tables, off the caller's thread.

A switch seals the active memtables (they move to the views' immutable memtables)
and then has the flusher queue a :class:`PendingFlush`: every sealed memtable the
queue does not hold yet -- the ones that switch sealed, and any a switch interrupted
before its submit (a Ctrl-C) left in the views -- with the version they hold
everything up to and the WAL sequence where the next memtables start.  So every
sealed memtable is flushed, jobs in the order they were sealed, and no job's
``flushed_version`` passes a memtable still awaiting its flush.  The flusher writes
one table per non-empty memtable, syncs the tables and their directory, then
records them in the manifest *and* swaps the keyspaces' views under the state lock,
and only then cuts the WAL.

Crash states (each proven by tests/lsm/test_crash.py):

* tables written, manifest edit not durable: the tables are orphans, removed
  at the next open; the WAL still holds their data.
* manifest edit durable, WAL not yet cut: replay skips records whose version
  is ``<= flushed_version``.

The flusher reports the bytes of the memtables it holds to the memory budget
(lsm/budget.py), and starts its worker process ahead of the first flush when the
writer says a memtable is half full (:meth:`Flusher.prepare`).

A failing flush (EIO, ENOSPC) removes its partial files and is retried with
back-off; writers keep going until ``max_immutable_memtables`` memtables wait,
then stall -- and get the flush error (e.g. :class:`DiskFullError`) instead
of waiting forever while it persists.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .. import heaptrim
from ..errors import BanyanStoreError, StoreClosedError
from ..sstable.builder import TableBuilder
from ..sstable.meta import TableOrigin
from ..sstable.reader import TableReader
from . import flushbuf
from .background import BackgroundThread
from .budget import MemoryBudget
from .flushbuf import FlushEntries
from .manifest import TableInfo
from .memtable import Memtable
from .rangedel import RangeDel
from .tree import Change, Tree, table_path
from .view import KeyspaceState, View
from .workers import WorkerPools, build_table_in_worker, offload

__all__ = ["Flusher", "PendingFlush", "table_path", "build_table"]

logger = logging.getLogger("banyanstore.flush")
BACKOFF_START = 0.05
BACKOFF_MAX = 2.0
TRIM_EVERY = heaptrim.TRIM_EVERY
#: A memtable smaller than this is built into its table in the writer's process when the
#: flush worker is not running: starting that process takes 0.2-0.5 s, while building a
#: table of 1 MiB here holds the GIL for milliseconds.  (So closing a store that took a
#: few writes does not start a process to flush them.)
INLINE_FLUSH_BYTES = 1 << 20
"""Bytes of memtables flushed between two returns of freed heap to the OS."""


@dataclass
class PendingFlush:
    """Sealed memtables by keyspace id, oldest first (more than one only after an
    interrupted switch); every entry up to ``last_version`` is in them or in tables, and
    the WAL records before ``wal_seq`` only hold such entries."""

    mems: dict[int, tuple[Memtable, ...]]
    last_version: int
    wal_seq: int

    @property
    def nbytes(self) -> int:
        """The memtables' charge (sealed: it no longer changes)."""
        return sum(mem.approx_bytes for mems in self.mems.values() for mem in mems)


def build_table(tree: Tree, workers: WorkerPools, ks: KeyspaceState, entries: FlushEntries,
                range_dels: list[RangeDel] | None = None,
                nbytes: int = INLINE_FLUSH_BYTES) -> tuple[TableReader, TableInfo] | None:
    """Write a memtable's entries (a flush buffer or the columns: lsm/flushbuf.py) and
    range tombstones to a new table of keyspace ``ks`` -- in a worker process in
    process mode, which then receives one bytes object rather than lists to pickle,
    unless the memtable (``nbytes``, its charge) is under INLINE_FLUSH_BYTES and the
    worker is not running -- sync it and open it.  On failure the partial file is
    removed and the error raised.  ``ks`` may be dropped meanwhile: the table is built
    all the same, and Tree.apply leaves it out."""
    range_dels = range_dels or []
    if flushbuf.is_empty(entries) and not range_dels:
        return None
    env, opts = tree.env, tree.table_options
    file_no = tree.allocate_file_no()
    path = table_path(tree.path, file_no)
    origin = TableOrigin(ks.id, ks.name)  # covering its own versions
    in_worker = offload(opts, env) and (nbytes >= INLINE_FLUSH_BYTES or workers.running("flush"))
    if in_worker and isinstance(entries, flushbuf.Pieces):
        meta = workers.submit_streamed("flush", build_table_in_worker,
                                       (path, opts, None, origin, range_dels), 2, entries)
    elif in_worker:
        meta = workers.submit("flush", build_table_in_worker, path, opts, entries, origin,
                              range_dels)
    else:
        builder = TableBuilder(env, path, opts, origin)
        try:
            flushbuf.load_into(builder, entries)
            builder.add_range_dels(range_dels)
            meta = builder.finish()
        except BaseException:
            builder.abandon()
            raise
    try:
        reader = tree.open_table(path)
    except BaseException:
        _remove_quietly(tree, path)
        raise
    info = TableInfo(ks.id, file_no, meta.file_size, meta.smallest_key, meta.largest_key,
                     meta.min_version, meta.max_version, meta.entry_count, meta.tombstone_count)
    reader.file_no = file_no
    return reader, info


def _remove_quietly(tree: Tree, path: str) -> None:
    try:
        tree.env.remove(path)
    except (FileNotFoundError, BanyanStoreError, OSError):
        logger.warning("could not remove %s after a failed flush", path)


def _install(mems: tuple[Memtable, ...], readers: list[TableReader]) -> Callable[[View], View]:
    """The view change of one keyspace's flush: ``mems`` out, their tables (``readers``,
    oldest first) in, newest first."""
    def build(old: View) -> View:
        return View(old.mem, tuple(m for m in old.imms if all(m is not f for f in mems)),
                    tuple(reversed(readers)) + old.tables)
    return build


class Flusher(BackgroundThread):
    """The background thread that turns immutable memtables into tables."""

    thread_name = "banyanstore-flush"

    def __init__(self, tree: Tree, workers: WorkerPools,
                 on_flushed: Callable[[], None] | None = None,
                 budget: MemoryBudget | None = None) -> None:
        self._tree = tree
        self._workers = workers
        self._budget = budget
        self._sealed_bytes = 0  # of the memtables in the queue
        self._want_worker = False
        self._on_flushed = on_flushed  # e.g. wake the compactor
        self._queue: deque[PendingFlush] = deque()
        super().__init__()
        self.error: BaseException | None = None
        self.flushes = 0
        self.failures = 0  # consecutive failed attempts
        self.failed_attempts = 0  # every failed attempt ever (wait_idle tells fresh from stale)
        self.bytes_written = 0
        self.stalls = 0
        self.stall_seconds = 0.0
        self._untrimmed = 0  # memtable bytes flushed since the heap was last trimmed

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, last_version: int, wal_seq: int) -> None:
        """Queue the flush of every sealed memtable not queued yet (:meth:`unqueued`):
        every entry up to ``last_version`` is in them, in tables or in the memtables
        queued before, and the WAL records before ``wal_seq`` only hold such entries.
        REQUIRES: the write lock (no memtable is sealed meanwhile).  The job joins the
        queue in one step, so an interrupt (a Ctrl-C) anywhere in this call either
        queues all of them or leaves all of them to the next call."""
        with self._cv:
            job = PendingFlush(self._unqueued_locked(), last_version, wal_seq)
            self._queue.append(job)
            self._charge_locked()
            self._cv.notify_all()

    def unqueued(self) -> bool:
        """Whether some sealed memtable is not in the queue: a switch was interrupted
        between sealing the memtables and :meth:`submit` (the next switch queues it)."""
        with self._cv:
            return bool(self._unqueued_locked())

    def _unqueued_locked(self) -> dict[int, tuple[Memtable, ...]]:
        """The sealed memtables of the views that no job in the queue holds, by keyspace
        id, oldest first.  REQUIRES: ``_cv`` held (a job leaves the queue only after its
        memtables left the views)."""
        queued = {id(m) for job in self._queue for mems in job.mems.values() for m in mems}
        out: dict[int, tuple[Memtable, ...]] = {}
        for ks in self._tree.keyspaces():
            mems = tuple(m for m in reversed(ks.view.imms) if id(m) not in queued)
            if mems:
                out[ks.id] = mems
        return out

    def _charge_locked(self) -> None:
        """Tell the budget what the queue's memtables hold (recounted, so an interrupted
        update cannot leave it wrong).  REQUIRES: ``_cv`` held."""
        self._sealed_bytes = sum(job.nbytes for job in self._queue)
        if self._budget is not None:
            self._budget.set_sealed(self._sealed_bytes)

    def prepare(self) -> None:
        """A flush is coming: have the flush worker process started (by this flusher's
        thread) if flushes run in one and it is not running yet."""
        tree = self._tree
        if (self._want_worker or self.error is not None  # (failing: keep the back-off)
                or not offload(tree.options, tree.env) or self._workers.running("flush")):
            return
        with self._cv:
            self._want_worker = True
            self._cv.notify_all()

    def wait_for_room(self) -> None:
        """Stall the (write-locked) caller while too many memtables wait.
        Raises the flush error if flushing keeps failing meanwhile."""
        limit = self._tree.options.max_immutable_memtables
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
        """Return once every memtable submitted before this call is in a table; raise
        the flush error if they cannot be.  Memtables other threads' writes seal
        meanwhile are not waited for: under a steady stream of writes the queue is
        seldom empty, and flush() (compact(), checkpoint()) waited as long as the
        writers went on.  Jobs leave the queue in order, so the last one queued now is
        the one to see go (by identity: a count kept beside the queue could be left
        behind by an interrupt between the two updates)."""
        with self._cv:
            last = self._queue[-1] if self._queue else None
            # Only an attempt made during this call may fail it: an error left from
            # before (the disk was full, and space has returned since) must not fail
            # flush()/close() while the retry waits out its back-off.  So wake the
            # flusher to retry now, and raise only after a fresh failure.
            seen = self.failed_attempts
            self._cv.notify_all()
            while last is not None and any(job is last for job in self._queue):
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
                while not self._queue and not self._stopping and not self._want_worker:
                    self._cv.wait()
                if self._stopping and (not self._queue or self.error is not None):
                    return
                start_worker, self._want_worker = self._want_worker, False
                job = self._queue[0] if self._queue else None
            if start_worker:
                self._workers.prestart("flush")
            if job is None:
                continue
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
            del job  # the flushed memtables go now, not when the next flush begins
            with self._cv:
                self._queue.popleft()
                self._charge_locked()
                self.error = None
                self.failures = 0
                self.flushes += 1
                self._cv.notify_all()

    def _trim_heap(self, job: PendingFlush) -> None:
        """A switch is when the process holds the most: the sealed memtables and a new one
        filling.  So give back the heap freed since the last flush (its buffers, the
        readers', the program's: malloc keeps it resident, heaptrim.py) now, from this
        thread -- once per ``TRIM_EVERY`` bytes of memtables, so small memtables do not
        pay it at every flush.  The memtables' own arenas are mapped apart and go back as
        each is dropped."""
        self._untrimmed += job.nbytes
        if self._untrimmed >= TRIM_EVERY:
            self._untrimmed = 0
            heaptrim.return_free_memory()

    def _flush(self, job: PendingFlush) -> None:
        self._trim_heap(job)
        tree = self._tree
        built: dict[int, list[TableReader]] = {ks_id: [] for ks_id in job.mems}
        added: list[tuple[TableInfo, TableReader]] = []
        try:
            for ks_id, mems in job.mems.items():
                ks = tree.keyspace_by_id(ks_id)  # looked up once: a drop may come any time
                if ks is None:
                    continue  # dropped (Store.drop_keyspace): its entries go with it
                for mem in mems:  # oldest first: the newer table gets the higher number
                    result = build_table(tree, self._workers, ks, mem.flush_entries(),
                                         mem.sorted_range_dels(), mem.approx_bytes)
                    if result is not None:
                        reader, info = result
                        built[ks_id].append(reader)
                        added.append((info, reader))
            tree.env.sync_dir(f"{tree.path}/tables")
        except BaseException:
            for info, _reader in added:
                _remove_quietly(tree, table_path(tree.path, info.file_no))
            raise
        # Durable edit, then the views (tables in, memtables out), then the WAL cut.  A
        # keyspace dropped while its table was built: Tree.apply leaves the table out.
        infos = [info for info, _reader in added]
        tree.apply(Change(
            edit={"add_tables": [i.to_json() for i in infos], "flushed_version": job.last_version,
                  "wal_seq": job.wal_seq},
            added=added,
            views={ks_id: _install(mems, built[ks_id]) for ks_id, mems in job.mems.items()},
            wal_cut=job.wal_seq, time_map=True))
        self.bytes_written += sum(i.file_size for i in infos)
        if self._on_flushed is not None:
            self._on_flushed()
