"""The write path of a store: one writer at a time, WAL first, then memtables, then
the version (LevelDB's ``DBImpl::Write``).

Under the write lock (``Writer._lock``) a write takes the next version, appends one
WAL record (the whole batch), adds the entries to the keyspaces' active memtables,
records its commit time when it is the first of a wall-clock second (lsm/timemap.py),
and only then publishes the version (:meth:`Tree.publish_version`) -- readers read
at the published version and so never see a half-applied batch, nor a version whose
time the TTL and retention floors do not know yet.  ``sync=True``
writes wait for the WAL's group commit *after* releasing the lock, so concurrent
writers share fdatasyncs.

When the active memtables of all keyspaces hold ``memtable_size`` bytes together,
the next write switches them (:meth:`Writer._switch_memtables`): it waits for room
in the flush queue and for merges to catch up (back-pressure), rotates the WAL,
has the tree seal the memtables and hands them to the flusher with the WAL
sequence where the new ones start.  Before that, at every sixteenth of
``memtable_size`` or ``MEM_STEP_MAX`` bytes, whichever is less (``_mem_check``, which
the compiled put path compares too), the
writer reports the memtables' charge to the memory budget (lsm/budget.py: the block
cache gives it up) and, from half full on, has the flusher start its worker process,
so that the first flush does not wait for one to start (a sealed memtable lives as
long as its flush, and the next fills meanwhile).

The writer also owns the states that refuse writes: not yet open, read-only,
closed, and a failed WAL write (after which the store only serves reads until it
is reopened, since whether the record reached the disk is unknown).

Locking: ``_lock`` is the write lock.  Methods whose docstring says REQUIRES the
write lock are called with it held (by this class only); :meth:`Tree.seal_memtables`
and :meth:`Tree.publish_version` require it too.  The write lock is taken before the
tree's state lock, never after.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .. import accel, shutdown
from ..arguments import as_bytes, check_sync
from ..errors import (
    DiskFullError,
    EntryTooLargeError,
    KeyspaceNotFoundError,
    ReadOnlyError,
    StorageIOError,
    StoreClosedError,
)
from ..log.log import Log
from ..options import Options
from ..sstable.format import MAX_VERSION
from .budget import MemoryBudget
from .compaction import Compactor
from .flush import Flusher
from .memtable import Memtable, NativeMemtable
from .rangedel import check_range
from .tree import Tree
from .view import KeyspaceState, View
from .wal import VERSION_OFFSET, encode_batch, encode_one, encode_with_ranges

__all__ = ["Writer", "Op", "RangeOp"]

logger = logging.getLogger("banyanstore.store")

Op = tuple[KeyspaceState, bytes, "bytes | None"]
"""One operation of a batch: keyspace, key, value (None: a tombstone)."""
RangeOp = tuple[KeyspaceState, bytes, bytes]
"""A range tombstone of a batch: keyspace, start, end (lsm/rangedel.py)."""
MEM_STEP_MAX = 1 << 20
"""The most bytes of memtables between two reports to the memory budget."""


class Writer:
    """The write path of one store (see the module docstring)."""

    __slots__ = ("_tree", "_options", "_clock", "_lock", "_wal", "_wal_append", "_wal_put", "_wal_sync",
                 "_flusher", "_compactor", "_mem_bytes", "_mem_check", "_mem_step", "_budget",
                 "_next_sample_ms", "_sync_default", "_max_key", "_max_value", "_memtable_size",
                 "_refused", "_closed", "_read_only", "_queued_wal_seq",
                 "_wal_error", "_put_path", "fast_put", "fast_delete",
                 "stalls", "stall_seconds")

    def __init__(self, tree: Tree, options: Options, clock: Callable[[], float],
                 budget: MemoryBudget | None = None) -> None:
        self._tree, self._options, self._clock = tree, options, clock
        self._budget = budget
        self._lock = threading.Lock()
        self._wal: Log | None = None
        self._wal_put: Callable[[int, int, int, bytes, bytes | None], int | None] | None = None
        self._flusher: Flusher | None = None
        self._compactor: Compactor | None = None
        self._mem_bytes = 0
        self._queued_wal_seq = 0  # the wal_seq of the last flush queued: records below it go
        self._next_sample_ms = 0
        self._sync_default = options.wal_sync == "always"
        self._max_key, self._max_value = options.max_key_size, options.max_value_size
        self._memtable_size = options.memtable_size
        self._mem_step = max(1, min(options.memtable_size // 16, MEM_STEP_MAX))
        # the charge at which the next write takes _memory_step (the put path compares it)
        self._mem_check = 0
        self._read_only = options.read_only
        self._closed = False
        # Set once a WAL append or sync failed: the store then only serves reads.
        self._wal_error: BaseException | None = None
        # not started, closed, read-only or failed WAL: the one flag the fast path checks
        self._refused = True
        # The compiled core's write of one entry (native/putpath.c): Writer.write_one's
        # common case in one call, on this writer's own state and lock.  Not with
        # wal_sync="always", where every write waits for a sync on the Python path.
        self._put_path: Any = None
        if accel.native is not None and Memtable is NativeMemtable and not self._sync_default:
            self._put_path = accel.native.PutPath(
                self, tree, self._lock, self._sample_time, None if clock is time.time else clock,
                self._max_key, self._max_value, NativeMemtable, KeyspaceState, View)
        self.fast_put: Callable[[KeyspaceState, object, object, object], int | None] | None = (
            None if self._put_path is None else self._put_path.put)
        """``fast_put(ks, key, value, sync)``: the version of a put done in one C call, or
        None when nothing was done and :meth:`write_one` must do it (anything but the
        common case, bad arguments included); None itself on the pure-Python engine."""
        self.fast_delete: Callable[[KeyspaceState, object, object], int | None] | None = (
            None if self._put_path is None else self._put_path.delete)
        """``fast_delete(ks, key, sync)``: :attr:`fast_put`'s tombstone."""
        self.stalls = 0
        """How often back-pressure from compaction slowed or stalled a write."""
        self.stall_seconds = 0.0
        """The time writes spent slowed or stalled by compaction."""

    def start(self, wal: Log, mem_bytes: int, flusher: Flusher, compactor: Compactor | None) -> None:
        """Begin taking writes: append to ``wal`` (whose replay left ``mem_bytes`` in the
        memtables), hand full memtables to ``flusher``; ``compactor`` (when its thread
        runs) applies back-pressure."""
        self._wal, self._wal_append, self._wal_sync = wal, wal.append, wal.sync
        self._wal_put = wal.put_appender()  # None on pure Python
        if self._put_path is not None:
            self._put_path.attach(self._wal_put)
        self._flusher, self._compactor = flusher, compactor
        self._set_mem_bytes(mem_bytes)
        self._refused = self._read_only

    @property
    def mem_bytes(self) -> int:
        """Bytes in the active memtables (what the next switch waits for)."""
        return self._mem_bytes

    @property
    def one_call_writes(self) -> int:
        """Entries written by the compiled core's one-call path (:attr:`fast_put`) so far."""
        return 0 if self._put_path is None else self._put_path.writes

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` refused writes from now on."""
        return self._closed

    @property
    def wal_failed(self) -> bool:
        """Whether a WAL write failed (the store is read-only until reopened)."""
        return self._wal_error is not None

    @property
    def wal_error(self) -> BaseException | None:
        """The failed WAL write (or interrupted write) that made the store read-only."""
        return self._wal_error

    # -- refusing writes -----------------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise why writes are refused (closed, read-only, failed WAL), if they are."""
        path = self._tree.path
        if self._tree.closed:
            self._tree.raise_closed()
        if self._closed:
            raise StoreClosedError(f"store {path} is closed")
        if self._read_only:
            raise ReadOnlyError(f"store {path} was opened read-only")
        if self._wal_error is not None:
            err = self._wal_error
            why = (f"a failed WAL write ({err})" if isinstance(err, StorageIOError)
                   else f"an interrupted write it could not complete ({err!r})")
            raise ReadOnlyError(f"store {path} is read-only after {why}; reads still work: "
                                "close and reopen it to write again") from err

    def _wal_failed(self, exc: StorageIOError) -> None:
        """A WAL append or sync failed: whether the record reached the disk is unknown
        and the Log refuses more appends, so the store turns read-only (reads go on,
        close() works, a reopen recovers the WAL)."""
        if self._wal_error is None:
            logger.error("store %s: WAL write failed, the store is read-only until reopened: %s",
                         self._tree.path, exc)
            self._wal_error = exc
            self._refused = True

    def _wal_append_failed(self, exc: StorageIOError) -> None:
        """A WAL append raised: the store turns read-only when the Log refuses appends
        until it is reopened (``Log.failure``).  A full disk that stopped the Log's
        rotation while reserving space leaves it refusing only until a later append
        finishes that rotation (``Log._rotate_guarded``): nothing was stored, so only
        this write failed.  REQUIRES: the write lock."""
        wal = self._wal
        if wal is None or wal.failure is not None:
            self._wal_failed(exc)

    # -- writes ----------------------------------------------------------------------------------
    def check_entry(self, key: object, value: bytes | None,
                    ks: KeyspaceState | None = None) -> bytes:
        """``key`` as bytes; EntryTooLargeError if the key or ``value`` is too large.

        A delete (``value`` None) in ``ks`` of a key over ``max_key_size`` that ``ks``
        holds is allowed: the limit is for new keys, and a store reopened with a lower
        one still holds the longer keys written before (README, options) -- refusing
        their deletes left no way to delete them one by one.  Only such deletes pay the
        lookup."""
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if len(key) > self._max_key and not (value is None and ks is not None
                                              and ks.view.get_entry(key, self._tree.version) is not None):
            raise EntryTooLargeError(f"key of {len(key)} bytes exceeds max_key_size "
                                     f"({self._max_key})")
        if value is not None and len(value) > self._max_value:
            raise EntryTooLargeError(f"value of {len(value)} bytes exceeds max_value_size "
                                     f"({self._max_value})")
        return key

    def write_one(self, ks: KeyspaceState, key: object, value: bytes | None,
                  sync: bool | None) -> int:
        """Write ``value`` (None: a tombstone) under ``key`` in ``ks``; returns its version."""
        # The hottest path of the engine: keep it to a handful of C-level calls.
        if sync is not None and sync is not True and sync is not False:
            check_sync(sync)
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if len(key) > self._max_key or (value is not None and len(value) > self._max_value):
            self.check_entry(key, value, ks)
        tree = self._tree
        if self._refused:  # before the lock too: a forked child's copy of it may never be released
            self.check_writable()
        with self._lock:
            if self._refused:
                self.check_writable()
            if ks.dropped is not None:  # dropped while this write waited for the lock
                raise KeyspaceNotFoundError(ks.dropped)
            if self._mem_bytes >= self._mem_check:
                self._memory_step()
            v = tree.version + 1
            if v > MAX_VERSION:
                self._versions_exhausted()
            try:  # (free unless something is raised: see _complete_write)
                ms = int(self._clock() * 1000)
                try:
                    # One C call when the compiled core can store the record where the log
                    # stands (else None: the log's Python path, same bytes).
                    if self._wal_put is None or (seq := self._wal_put(v, ms, ks.id, key, value)) is None:
                        seq = self._wal_append(encode_one(v, ms, ks.id, key, value), sync=False)
                except StorageIOError as exc:
                    self._wal_append_failed(exc)
                    raise
                self._mem_bytes += ks.view.mem.add(key, v, value)
                if ms >= self._next_sample_ms:
                    self._sample_time(v, ms)
                # Tree.publish_version's one assignment, folded in: on the hottest path its
                # frame cost more than the rest of the call (the compiled core's put sets
                # the slot in place too).
                tree.version = v
            except BaseException:
                self._complete_write(v, ((ks, key, value),), ())
                raise
        if sync or (sync is None and self._sync_default):
            self._sync_wal(seq)
        return v

    def _versions_exhausted(self) -> None:
        """Refuse a write past the last version a WAL record and a table can hold (a
        store gets there only from a damaged or hand-made manifest: 2**64 - 1 writes)."""
        raise OverflowError(f"store {self._tree.path} has used every version up to "
                            f"{MAX_VERSION}: it takes no more writes")

    def check_range(self, start: object, end: object) -> tuple[bytes, bytes]:
        """``start`` and ``end`` of a range tombstone as bytes (TypeError, ValueError for
        an empty range and EntryTooLargeError name the argument)."""
        start = as_bytes(start, "start")
        end = as_bytes(end, "end")
        for name, key in (("start", start), ("end", end)):
            if len(key) > self._max_key:
                raise EntryTooLargeError(f"{name} of {len(key)} bytes exceeds max_key_size "
                                         f"({self._max_key})")
        check_range(start, end)
        return start, end

    def write_batch(self, ops: list[Op], sync: bool | None,
                    ranges: Sequence[RangeOp] = ()) -> int | None:
        """Write ``ops`` and the range tombstones ``ranges`` (lsm/rangedel.py) as one WAL
        record under one new version (None for nothing to write); returns it."""
        check_sync(sync)
        if not ops and not ranges:
            return None
        tree = self._tree
        self.check_writable()  # before the lock too: a forked child's copy of it may never be released
        with self._lock:
            self.check_writable()
            for ks, _k, _v in (*ops, *ranges):  # a keyspace dropped since the batch named it
                if ks.dropped is not None:
                    raise KeyspaceNotFoundError(ks.dropped)
            if self._mem_bytes >= self._mem_check:
                self._memory_step()
            v = tree.version + 1
            if v > MAX_VERSION:
                self._versions_exhausted()
            try:  # (free unless something is raised: see _complete_write)
                ms = int(self._clock() * 1000)
                wal_ops = [(ks.id, k, val) for ks, k, val in ops]
                if ranges:
                    record = encode_with_ranges(v, ms, wal_ops, [(ks.id, a, b) for ks, a, b in ranges])
                else:
                    record = encode_batch(v, ms, wal_ops)
                try:
                    seq = self._wal_append(record, sync=False)
                except StorageIOError as exc:
                    self._wal_append_failed(exc)
                    raise
                for ks, k, val in ops:
                    self._mem_bytes += ks.view.mem.add(k, v, val)
                for ks, lo, hi in ranges:
                    self._mem_bytes += ks.view.mem.add_range(lo, hi, v)
                if ms >= self._next_sample_ms:
                    self._sample_time(v, ms)
                tree.publish_version(v)
            except BaseException:
                self._complete_write(v, ops, ranges)
                raise
        if sync or (sync is None and self._sync_default):
            self._sync_wal(seq)
        return v

    def _complete_write(self, v: int, ops: Sequence[Op], ranges: Sequence[RangeOp]) -> None:
        """The write of version ``v`` (``ops`` and ``ranges``) raised before publishing
        ``v`` -- a Ctrl-C's KeyboardInterrupt can land at any point of it.  Make it whole
        or nothing, as its WAL record decides (a reopen replays that record whole):
        nothing reaches a memtable before the record is in the log, so without it there
        is nothing to undo; with it, the entries the memtables lack are added and ``v``
        is published, so no later write takes ``v`` and publishes part of it.  If that
        fails too (a second Ctrl-C), writes are refused from then on, as after a failed
        WAL write (a reopen replays the record).  The caller re-raises its exception.
        REQUIRES: the write lock."""
        self._wal_refusing()
        if self._wal_error is not None:
            return  # writes are refused (the WAL failed): a reopen replays what it holds
        try:
            if not self._wal_holds(v):
                return
            for ks, k, val in ops:  # in order: the last op of a key twice in it wins
                mem = ks.view.mem
                if mem.get_entry(k, v) != (v, val):
                    self._mem_bytes += mem.add(k, v, val)
            for ks, lo, hi in ranges:
                mem = ks.view.mem
                if (lo, hi, v) not in mem.range_dels:
                    self._mem_bytes += mem.add_range(lo, hi, v)
            self._tree.publish_version(v)
        except BaseException as exc:  # noqa: BLE001 - the caller raises its own
            logger.error("store %s: an interrupted write could not be completed, the store "
                         "is read-only until reopened: %r", self._tree.path, exc)
            self._wal_error = exc
            self._refused = True

    def _wal_refusing(self) -> None:
        """After an exception out of the Log: if it refuses appends now -- an interrupt
        inside its append or rotation stops it, since what reached the segment is
        unknown -- the store turns read-only now, as after a failed WAL write (so close()
        leaves the memtables to the WAL's replay rather than switch them into a Log that
        refuses).  REQUIRES: the write lock."""
        wal = self._wal
        if self._wal_error is None and wal is not None and (exc := wal.failure) is not None:
            self._wal_failed(exc)

    def _wal_holds(self, version: int) -> bool:
        """Whether the WAL's last record is the write of ``version`` (versions only grow
        from record to record).  REQUIRES: the write lock (no append runs)."""
        wal = self._wal
        assert wal is not None
        last = wal.last_seq
        if last < wal.first_seq:
            return False  # the log is empty (cut after a flush)
        record = wal.get(last)
        return int.from_bytes(record[VERSION_OFFSET:VERSION_OFFSET + 8], "little") == version

    def _sync_wal(self, seq: int) -> None:
        try:
            self._wal_sync(upto_seq=seq)
        except StorageIOError as exc:
            self._wal_failed(exc)
            raise

    def _sample_time(self, version: int, ms: int) -> None:
        """The first write of a wall-clock second: remember it (see timemap.py) before
        ``version`` is published -- a TTL read that saw the version without its sample
        would date it to an older second and take it for expired (Tree.ttl_floor), and
        cache that answer.  REQUIRES: the write lock."""
        self._tree.note_time(version, ms)
        self._next_sample_ms = (ms // 1000 + 1) * 1000

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No write runs while this is held (for a change of the tree a write must not
        race, such as dropping a keyspace).  Not reentrant: not from inside a write."""
        with self._lock:
            yield

    def create_keyspace(self, name: str, ttl: float | None) -> KeyspaceState:
        """Keyspace ``name``, created durably if it does not exist (in order with writes)."""
        self.check_writable()
        with self._lock:
            return self._tree.add_keyspace(name, ttl)

    # -- memtable switching ----------------------------------------------------------------------
    def _memory_step(self) -> None:
        """The active memtables reached ``_mem_check``: switch them when full, else report
        their charge (see the module docstring).  REQUIRES: the write lock."""
        if self._mem_bytes >= self._memtable_size:
            self._switch_memtables()
            if self._mem_bytes < self._mem_check:
                return
        self._set_mem_bytes(self._mem_bytes)
        if self._mem_bytes >= self._memtable_size // 2 and self._flusher is not None:
            self._flusher.prepare()

    def _set_mem_bytes(self, nbytes: int) -> None:
        """The active memtables hold ``nbytes``: the budget learns it, and the next check
        is at the next step (or at ``memtable_size``, the switch).  REQUIRES: the write
        lock (or the writer not started)."""
        self._mem_bytes = nbytes
        step = self._mem_step
        self._mem_check = min(self._memtable_size, (nbytes // step + 1) * step)
        if self._budget is not None:
            self._budget.set_active(nbytes)

    def _switch_memtables(self) -> None:
        """Seal the active memtables and queue them for flushing.  REQUIRES: the write lock.

        An exception anywhere in it (a Ctrl-C's KeyboardInterrupt) strands nothing:
        whatever it sealed stays in the views, and the next switch -- a write's, or
        flush()'s and close()'s, which switch even when the active memtables are empty
        -- queues it with its own (:meth:`Flusher.submit` takes every sealed memtable
        not queued yet), so no flush's ``flushed_version`` passes it."""
        flusher = self._flusher
        assert flusher is not None and self._wal is not None
        flusher.wait_for_room()  # stalls while too many memtables await flushing
        self._wait_for_merges()
        tree = self._tree
        wal = self._wal
        # Nothing to flush and no WAL record to cut: nothing to do.  With records left
        # (writes to keyspaces dropped since), a flush of nothing cuts them: else a store
        # writing only to keyspaces it drops kept them in its WAL for ever.
        if (tree.memtables_empty() and not flusher.unqueued()
                and wal.last_seq < max(wal.first_seq, self._queued_wal_seq)):
            self._set_mem_bytes(0)  # (a dropped keyspace's memtable may have been charged)
            return
        try:
            wal.rotate()
        except StorageIOError as exc:
            # The Log may have failed only to create the next segment (no descriptor
            # or space for it), leaving the active one taking appends: then this
            # write fails and a later one switches again; else the store is read-only.
            if self._wal.failure is not None:
                self._wal_failed(exc)
            raise
        except BaseException:
            self._wal_refusing()
            raise
        wal_seq = self._wal.last_seq + 1
        tree.seal_memtables()
        # Queues what this switch sealed and whatever an interrupted one left unqueued
        # (charged as sealed, then no longer active).
        flusher.submit(tree.version, wal_seq)
        self._queued_wal_seq = wal_seq
        self._set_mem_bytes(0)

    def _wait_for_merges(self) -> None:
        """Back-pressure from compaction (REQUIRES: the write lock): with many unmerged
        tables, slow the writer down; with too many, stall it until merges catch up
        (or raise the merge error, e.g. DiskFullError, while it persists)."""
        c, opts, tree = self._compactor, self._options, self._tree
        if c is None:
            return
        n = tree.most_tables()
        if n < opts.max_tables_before_slowdown:
            return
        began = time.monotonic()
        self.stalls += 1
        c.wake()
        try:
            if n < opts.max_tables_before_stall:
                time.sleep(min(0.1, 0.005 * (n - opts.max_tables_before_slowdown + 1)))
                return
            while tree.most_tables() >= opts.max_tables_before_stall:
                if not c.can_relieve(opts.max_tables_before_stall):
                    return  # only quarantined tables keep the count up: no merge will lower it
                # Only a failure of a merge tried since this stall began counts: an
                # older DiskFullError may predate space coming back.
                err = c.error
                if isinstance(err, DiskFullError) and c.error_at > began:
                    raise err
                c.wake()
                time.sleep(0.02)
        finally:
            self.stall_seconds += time.monotonic() - began

    def refuse_reentry(self, call: str) -> None:
        """RuntimeError if this thread is inside one of this writer's writes, holding its
        lock: ``call`` (``close()``, ``flush()``) was made by a signal handler that
        interrupted the write, and waiting for the lock would wait for ever for the write
        it interrupted (the usual "close the store on SIGTERM" hung so).  Python's own
        files raise RuntimeError for such a reentrant call too.  Another thread's write
        holding the lock: returns, and the call waits for it as usual."""
        if not self._lock.locked():
            return
        # The writer's calls that run (partly) under its lock: a thread with one of them on
        # its stack while the lock is held is the one holding it.
        if shutdown.inside_own_call(self, (
                self.write_one, self.write_batch, self.create_keyspace, self.flush,
                self.close_and_flush, self._memory_step, self._switch_memtables,
                self._wait_for_merges, self._complete_write, self._set_mem_bytes)):
            raise RuntimeError(
                f"{call} of store {self._tree.path} was called on a thread inside one of "
                "its writes (from a signal handler that interrupted the write) and would "
                "wait for ever for the lock that write holds; raise an exception in the "
                "handler instead (sys.exit(), KeyboardInterrupt): the write is finished or "
                "undone, and the store is closed at exit or by a close() after it")

    def flush(self) -> None:
        """Write every memtable to tables now and wait until they are durable."""
        self.check_writable()
        self.refuse_reentry("flush()")
        assert self._flusher is not None
        with self._lock:
            self._switch_memtables()
        self._flusher.wait_idle()

    def sync(self) -> None:
        """Make every write so far durable (fdatasync of the WAL)."""
        self.check_writable()  # after a failed WAL write nothing can be made durable
        assert self._wal is not None
        self._sync_wal(self._wal.last_seq)

    def close_and_flush(self) -> None:
        """close()'s flush: refuse writes and switch the memtables under one hold of the
        write lock -- a write acknowledged after the last switch would be left to the
        WAL's replay -- then wait until every memtable is in a table.  Writes stay
        refused if the flush fails; calling it again flushes again."""
        assert self._flusher is not None
        with self._lock:
            self.close()
            self._switch_memtables()
        self._flusher.wait_idle()

    def close(self) -> None:
        """Refuse writes from now on."""
        self._closed = self._refused = True
        if self._put_path is not None:
            self._put_path.attach(None)
