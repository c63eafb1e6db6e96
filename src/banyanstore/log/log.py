"""The append-only Log: segments, seqs, durability modes, group commit, recovery.

Byte format: see :mod:`banyanstore.log.format` and ``docs/format/log.md``.

Seqs start at 1 and are never reused: each segment's header stores its first
seq and each record its own, so seqs survive restarts and ``truncate_before``.
``first_seq`` is the first seq of the oldest segment; an empty log has
``first_seq == last_seq + 1`` (a new log: 1 and 0).

Records are stored into a shared memory mapping of the active segment
(:mod:`banyanstore.log.writer`), so every record ``append()`` returned is in
the kernel: a crash of the process -- ``kill -9``, an exit without
``close()`` -- loses nothing in any mode.  Durability against a power loss
(``wal_sync``, overridden per call by ``sync=True|False``):

======== ========================================= ==========================================
mode     process crash (kill -9) loses              power loss loses
======== ========================================= ==========================================
always   nothing that append() returned             nothing that append() returned
interval nothing that append() returned             records appended in the last
                                                    ``wal_sync_interval_ms`` (+ one sync)
never    nothing that append() returned             everything since the last sync()/close()/
                                                    segment rotation
======== ========================================= ==========================================

A read-only log (``read_only=True``) may run beside a writer in another process:
it pins the segments it opens and catches up with :meth:`Log.refresh`
(log/follow.py).

Records appended with ``sync=True`` are durable when the call returns, in any
mode.  Lost records are always a suffix: never a hole, never reordered; after
a crash, seqs of lost (never-durable) records are given out again.  The append
lock is never held during an fdatasync except at segment rotation, which syncs
the sealed segment and the new header once per ``segment_size``.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     with Log.open(d, io_mode="sync", wal_sync="never") as log:
...         log.append(b"a"), log.append_many([b"b", b"c"]), log.rotate(), log.get(2)
...     with Log.open(d, io_mode="sync") as log:
...         list(log.read(2)), log.first_seq, log.last_seq
(1, 3, 4, b'b')
([(2, b'b'), (3, b'c')], 1, 3)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import shutdown
from ..arguments import BytesLike, as_bytes, as_path, check_bool, check_seq, check_sync, is_buffer
from ..errors import (
    DiskFullError,
    LogRangeError,
    StorageIOError,
)
from ..io import check_env
from ..io.base import Env, FileLock, MappedFile
from ..options import Options, resolve_options
from .aio import AsyncAppends
from .catalog import SegmentCatalog
from .commit import ALREADY_SYNCED, GroupCommit, IntervalSyncer
from .follow import catch_up
from .follow_async import AsyncFollowing, AsyncWaiters
from .format import HEADER_SIZE, SEAL_SIZE, SEAL_VERSION, VERSION, ZERO_TAIL_VERSION
from .opening import LogExistsError, LogNotFoundError, opened_directory
from .reads import LogView
from .recovery import recover
from .segment import Segment, SparseIndex, create_segment, segment_name, staged_name
from .writer import AnySegmentWriter, LogTail, SegmentWriter, new_tail

__all__ = ["Log", "LogNotFoundError", "LogExistsError"]

_log = logging.getLogger("banyanstore.log")


class Log(LogView, AsyncAppends, AsyncFollowing):
    """An open log directory.  Thread-safe (each iterator from :meth:`read` or
    :meth:`follow` belongs to one consumer).  Use :meth:`open`."""

    def __init__(self, env: Env, own_env: bool, directory: str, opts: Options,
                 lock: FileLock | None, keep: Callable[[Log], None] | None = None) -> None:
        self.path, self._env, self._own_env, self._opts, self._flock = directory, env, own_env, opts, lock
        self._interval, self._read_only = opts.log_index_interval, opts.read_only
        self._segment_size, self._always = opts.segment_size, opts.wal_sync == "always"
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)  # follow() waits on it
        self._async_waiters = AsyncWaiters()  # follow_async()'s tasks wait in it, threadless
        self._refresh_lock = threading.Lock()
        self._closed = False  # no more appends or reads (set by the first close(), or disown())
        # One close() at a time, and "closed" only once everything is released: a second
        # close() (another thread, or a retry after a Ctrl-C interrupted the first) must not
        # return while the records are unsynced and LOCK is still held.
        self._close_mu = threading.Lock()
        self._closer: int | None = None  # the thread inside close(), to spot re-entry
        self._released = False
        rec = recover(env, directory, read_only=opts.read_only, skip_damaged=opts.skip_damaged_records,
                      index_interval=opts.log_index_interval)
        self._catalog = SegmentCatalog(rec.segments, index_interval=opts.log_index_interval,
                                       skip_damaged=opts.skip_damaged_records)
        # Segments truncate_before took from the log but could not remove yet, oldest first:
        # removed before any newer one, so that no failure leaves a hole on disk.
        self._unremoved: list[Segment] = []
        # One truncation at a time: another one's removal of newer segments meanwhile would
        # leave a hole at a crash (or a failure) before this one's older ones are gone.
        self._truncating = threading.Lock()
        # next_seq, followers (threads waiting on _appended: appends notify only then) and
        # the active segment's C framing for the store's one-call appends (log/writer.py)
        self._appends: LogTail = new_tail(rec.next_seq, self._lock)
        self._counters = {"torn_tail_repairs": rec.torn_tail_repairs, "torn_tail_bytes": rec.torn_tail_bytes,
                          "damaged_records_skipped": rec.damaged_records, "syncs": 0}
        # Rotations and the time they took: a store's writer rotates its WAL at each memtable
        # switch, holding its write lock through the rotation's syncs -- on a slow disk the
        # time its writes wait, which stats() must be able to show.
        self._rotations = 0
        self._rotate_seconds = 0.0
        self._writer: AnySegmentWriter | None = None
        self._no_successor = False  # the failed rotation made no file of its successor
        # A rotation a full disk stopped while reserving space (_rotate_guarded): appends
        # stay stopped (_ok False) and the next append or rotate() finishes it first.
        self._rotation_due = False
        self._commit = GroupCommit(self._collect, durable_seq=self._appends.next_seq - 1,
                                   on_error=self._sync_failed)
        self._syncer: IntervalSyncer | None = None
        self._exit_token: int | None = None
        try:
            self._start_writing()
            _log.debug("opened log %s: seqs [%d, %d], %d segments", directory, self.first_seq,
                       self.last_seq, len(self._catalog.segments))
            if keep is not None:
                # Handed over before the open returns: a Ctrl-C between the return and the
                # caller's assignment would drop an open writer (its sync thread running,
                # closed -- its segment cut -- only at exit).  Until keep() has returned an
                # interrupt closes it here; after, the caller has it to close.
                keep(self)
        except BaseException:
            self._abort_open()
            raise

    def _start_writing(self) -> None:
        """A writer's segment, sync thread and registration for the exit hook."""
        opts = self._opts
        if not opts.read_only:
            self._open_writer()
            if opts.wal_sync == "interval":
                self._syncer = IntervalSyncer(self._commit, opts.wal_sync_interval_ms / 1000,
                                              lambda: self._appends.next_seq - 1)
                self._syncer.start()
        self._ok = not opts.read_only  # the one flag the append fast path checks
        if self._writer is not None:
            self._appends.frames = self._writer.frames
        # An exit without close() still closes a writer (shutdown.py).
        if not opts.read_only:
            self._exit_token = shutdown.track(self)
        else:
            shutdown.track_reader(self)  # a closed handle in a forked child

    def _abort_open(self) -> None:
        """__init__ raised (a Ctrl-C, a thread that could not start) after the writer had
        opened: close what it opened now, while the lock is still held.  Left open, its
        sync thread would run for ever and the exit hook would close it at exit -- cutting
        the segment under a later open's records.  The lock and the env are released by
        the caller (log/opening.py)."""
        self._flock, self._own_env = None, False
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the original error matters more
            _log.exception("cleanup after a failed open of log %s", self.path)

    @classmethod
    def open(cls, path: str | bytes | os.PathLike[Any], *, options: Options | None = None,
             env: Env | None = None, lock: bool = True, keep: Callable[[Log], None] | None = None,
             **kwargs: Any) -> Log:
        """Open (or create) the log in directory ``path``.

        ``lock=False`` is for embedding: the caller (the LSM store) already holds
        its own lock over a directory containing this one.  So is ``keep``: called with
        the opened log before this returns, so that the caller holds it even when an
        interrupt (a Ctrl-C) ends the open after that (it is the caller's to close then).
        """
        directory = as_path(path)
        check_bool(lock, "lock")
        check_env(env)
        opts = resolve_options(options, kwargs)
        made: list[Log] = []

        def hold(log: Log) -> None:
            made.append(log)
            if keep is not None:
                keep(log)
        # A Ctrl-C after the constructor's own clean-up stopped covering it (as it returns,
        # or in the with statement's exit) left the log built -- its sync thread started,
        # its exit hook registered, LOCK held until exit -- with nobody to close it.
        try:
            with opened_directory(directory, opts, env, lock=lock) as (env, own_env, flock):
                try:
                    return cls(env, own_env, directory, opts, flock, hold)
                except BaseException:
                    for log in made:  # the lock and env are opened_directory's to release
                        cls._abort_open(log)
                    raise
        except BaseException:
            for log in made:  # (closed above, unless the with statement's exit was interrupted)
                try:
                    log.close()
                except Exception:  # noqa: BLE001 - the interrupt matters more
                    _log.exception("cleanup after an interrupted open of log %s", directory)
            raise

    def _open_writer(self) -> None:
        segs = self._catalog.segments
        if not segs:
            seg, file = self._new_segment(self._appends.next_seq)
            self._catalog.add(seg)
        elif segs[-1].version < ZERO_TAIL_VERSION:
            seg, file = self._leave_old_format(segs[-1])
        else:
            seg = segs[-1]
            file = self._env.open_mapped(seg.path)
            try:
                file.sync()  # records left in the page cache by a crashed process become durable
                # ... and so does the segment's name: the process that created it may have
                # died (or failed) before its directory sync, and records acknowledged in it
                # from now on must not vanish with the name at a power loss.
                self._env.sync_dir(self.path)
            except BaseException:
                file.close()
                raise
            seg.index = seg.index or SparseIndex()
        self._writer = self._make_writer(file, seg, seg.end)

    def _leave_old_format(self, last: Segment) -> tuple[Segment, MappedFile]:
        """The last segment has a format without reserved zero space (version 1): records
        go to a new segment instead.  An *empty* one is replaced, by an atomic rename,
        with a new segment of the same first seq (the seq it must keep carrying)."""
        if last.first_seq != self._appends.next_seq:
            seg, file = self._new_segment(self._appends.next_seq)
            self._catalog.add(seg)
            return seg, file
        staged = os.path.join(self.path, staged_name(last.first_seq))
        create_segment(self._env, staged, last.first_seq).close()
        self._env.rename(staged, last.path)
        self._env.sync_dir(self.path)
        last.drop_handle()  # its read handle is on the replaced file (no reader yet: opening)
        last.version, last.end, last.index = VERSION, HEADER_SIZE, SparseIndex()
        return last, self._env.open_mapped(last.path)

    def _make_writer(self, file: MappedFile, seg: Segment, start: int) -> AnySegmentWriter:
        try:
            return SegmentWriter(file, seg, start=start, last_seq=self._appends.next_seq - 1,
                                 index_interval=self._interval, segment_size=self._segment_size)
        except BaseException:
            file.close()
            raise

    def _new_segment(self, first_seq: int) -> tuple[Segment, MappedFile]:
        path = os.path.join(self.path, segment_name(first_seq))
        file = create_segment(self._env, path, first_seq)
        try:
            self._env.sync_dir(self.path)  # the name is durable before any record in it is acknowledged
        except BaseException:
            file.close()
            raise
        self._counters["syncs"] += 1
        return Segment(self._env, path, first_seq, HEADER_SIZE, SparseIndex()), file

    def _stop_appends(self) -> None:
        """Refuse appends from now on: the Python path (``_ok``) and the one-call path
        (its ``frames``) alike."""
        self._ok = False
        self._appends.frames = None

    def _io_failed(self, exc: BaseException) -> None:
        # The error first: an append that finds _ok false (without the lock) reports it,
        # not "log is not writable" (StoreClosedError) as before the error was set.
        self._commit.fail(exc)
        self._stop_appends()

    def _sync_failed(self, exc: BaseException) -> None:
        # Whether the records before it survive is unknown (a failed fdatasync may drop
        # dirty pages), so nothing may be appended behind them: the log must be reopened.
        self._stop_appends()

    # -- writing --------------------------------------------------------------------
    def append(self, record: BytesLike, *, sync: bool | None = None) -> int:
        """Append one record; return its seq.  ``sync`` overrides ``wal_sync`` for this call."""
        if type(record) is not bytes:
            record = as_bytes(record, "record")
        # sync=False first: the store's writer passes it for every put (it syncs itself)
        if sync is not False:
            if sync is None:
                if self._always:
                    return self._append_synced(record)
            elif sync is True:
                return self._append_synced(record)
            else:
                check_sync(sync)  # raises: not a bool
        if not self._ok and not self._rotation_due:  # before the lock too: a forked child's
            raise self._unwritable()                 # copy of it may never be released
        with self._lock:
            if not self._ok:
                self._resume_locked()
            tail = self._appends
            seq = tail.next_seq
            try:
                if not self._writer.add(seq, record):  # type: ignore[union-attr]
                    self._rotate_guarded()  # the segment is full: seal it first
                    self._writer.add(seq, record)  # type: ignore[union-attr]
            except BaseException as exc:
                if not self._rotation_due:
                    self._io_failed(exc)
                raise
            tail.next_seq = seq + 1
            if tail.followers:
                self._wake_followers_locked()
        return seq

    def _wake_followers_locked(self) -> None:
        """Wake every follower: threads in follow(), tasks in follow_async()."""
        self._appended.notify_all()
        self._appends.followers -= self._async_waiters.wake_all()

    def put_appender(self) -> Callable[[int, int, int, bytes, bytes | None], int | None] | None:
        """The compiled core's one-call append for the store's write path, or None (pure
        Python): ``append_put(version, commit_ms, keyspace, key, value)`` appends the
        store's WAL record of one put or delete (lsm/wal.py's ``encode_one`` payload),
        encoded, framed and stored into the mapped segment under this log's lock, and
        returns its seq -- or None, appending nothing, when the record needs
        :meth:`append` (a full segment, a record crossing its block, followers to
        notify, a failed or closed log): the caller then appends ``encode_one(...)``
        with :meth:`append`, which handles all of those.  The same bytes either way
        (tests/log/test_native_framing.py)."""
        return getattr(self._appends, "append_put", None)

    @property
    def failure(self) -> StorageIOError | None:
        """The error appends raise after a failed write or sync -- or an exception (a
        Ctrl-C) inside an append or a rotation, after which what reached the segment is
        unknown -- until the log is reopened; None while it takes appends (and for a
        closed or read-only log)."""
        if self._ok or self._closed or self._read_only or self._rotation_due:
            return None
        exc = self._unwritable()
        return exc if isinstance(exc, StorageIOError) else None

    def _append_synced(self, record: bytes) -> int:
        seq = self.append(record, sync=False)
        self._commit.wait_durable(seq)
        return seq

    def append_many(self, records: Iterable[BytesLike], *, sync: bool | None = None) -> int:
        """Append records in order under one lock; return the seq of the last one
        (``last_seq`` unchanged if ``records`` is empty).  With a sync, every record up to
        the seq returned is durable on return -- an empty batch's too."""
        check_sync(sync)
        if isinstance(records, str) or is_buffer(records):
            raise TypeError("records must be an iterable of bytes-like records, not a single "
                            f"{type(records).__name__}")
        if not isinstance(records, Iterable):
            raise TypeError(f"records must be an iterable of bytes-like records, not "
                            f"{type(records).__name__}")
        items: list[bytes] = [r if type(r) is bytes else as_bytes(r, f"records[{i}]")
                              for i, r in enumerate(records)]
        if not self._ok and not self._rotation_due:  # before the lock too (see append)
            raise self._unwritable()
        with self._lock:
            if not self._ok:
                self._resume_locked()
            try:
                rest = items
                while rest:
                    stored = self._writer.add_many(self._appends.next_seq, rest)  # type: ignore[union-attr]
                    self._appends.next_seq += stored
                    rest = rest[stored:]
                    if rest:
                        self._rotate_guarded()  # the segment is full: seal it, go on in the next
            except BaseException as exc:
                if not self._rotation_due:
                    self._io_failed(exc)
                raise
            last = self._appends.next_seq - 1
            if self._appends.followers:
                self._wake_followers_locked()
        # An empty batch too: the seq returned (another call's record) must be durable when
        # the caller asked for a sync, as after append_many_async.
        if (self._always if sync is None else sync):
            self._commit.wait_durable(last)
        return last

    def rotate(self) -> int:
        """Start a new segment now (no-op if the active one is empty); return its first seq.

        Everything before the returned seq is durable when this returns.
        """
        with self._lock:
            if not self._ok and not self._rotation_due:
                raise self._unwritable()
            if self._rotation_due or self._catalog.segments[-1].first_seq != self._appends.next_seq:
                self._rotate_guarded()
            return self._appends.next_seq

    def _resume_locked(self) -> None:
        """Appends are stopped: finish the rotation a full disk stopped, or raise why the
        log takes no appends.  REQUIRES: the lock."""
        if not self._rotation_due or self._closed:
            raise self._unwritable()
        self._rotate_guarded()

    def _rotate_guarded(self) -> None:
        """:meth:`_rotate_locked`, deciding what its failure leaves (REQUIRES: the lock):

        * the successor's file could not even be opened (EMFILE, ENOSPC...;
          _seal_after_successor): nothing changed but a sync of the active segment, which
          stays the one appends go to (refusing them turned a store read-only for want of
          a descriptor, where a retry once it is back succeeds);
        * a full disk refused to *reserve* space (a ``map``: posix_fallocate) -- the
          successor's header, the SEAL's room, or the successor's first window: nothing
          was stored and no sync failed, so nothing acknowledged is in doubt.  Appends
          stay stopped and the next append or rotate() runs the rotation again from where
          it stopped (_rotate_locked), for the same seq: the old segment takes no record
          past the seq the successor was made for, so a reader that saw the successor
          never meets those seqs in two files.  Before, the log refused appends until
          reopened, and a store over it turned read-only though space came back;
        * anything else (a failed sync or cut: what reached the files is unknown) stops
          appends until the log is reopened."""
        # Appends check _ok, then _rotation_due, without the lock: each change below keeps
        # "not _ok and not _rotation_due" false until the log really refuses appends --
        # else an append racing it got "log is not writable" (StoreClosedError).
        self._no_successor = False
        self._rotations += 1
        began = time.monotonic()
        try:
            self._rotate_locked()
        except BaseException as exc:
            self._rotate_seconds += time.monotonic() - began
            if self._no_successor and isinstance(exc, StorageIOError) and self._writer is not None:
                self._appends.frames = self._writer.frames
                self._ok = True  # (already, unless a due rotation is retried)
                self._rotation_due = False
            elif isinstance(exc, DiskFullError) and exc.op == "map":
                self._rotation_due = True
                self._stop_appends()
            else:
                self._io_failed(exc)
                self._rotation_due = False
            raise
        self._rotate_seconds += time.monotonic() - began
        self._ok = True
        self._rotation_due = False

    def _rotate_locked(self) -> None:
        """Seal the active segment and start its successor; with no active writer (a
        full disk stopped the last rotation after the SEAL), only map the successor."""
        w = self._writer
        self._appends.frames = None  # no one-call appends until the next segment is ready
        if w is None:
            seg = self._catalog.segments[-1]
            file = self._env.open_mapped(seg.path)
        else:
            next_seq = self._appends.next_seq
            w.flush(next_seq - 1)
            if w.segment.version >= SEAL_VERSION:
                seg, file = self._seal_after_successor(w, next_seq)
            else:
                seg, file = self._seal_before_successor(w, next_seq)
            self._commit.retire(w.file)
            self._catalog.add(seg)
            # Sealed: from here the old writer must never store again (a retry maps the
            # successor only).  No writer means nothing unsynced: close() and the
            # group commit's _collect() take it for synced, as it is.
            self._writer = None
        self._writer = self._make_writer(file, seg, HEADER_SIZE)
        self._appends.frames = self._writer.frames

    def _seal_after_successor(self, w: AnySegmentWriter,
                              next_seq: int) -> tuple[Segment, MappedFile]:
        """Format 3: the old segment's records are synced, then the successor is made
        durable (header and name synced), then the old segment gets its SEAL, is cut and
        synced; no record is stored in the successor before that.  A crash between the
        last two steps leaves an unsealed segment whose records reach the successor's
        first seq and an empty successor, which recovery seals (log/recovery.py).
        (Without the first sync a power loss there could take records off the old
        segment's end while the successor's first seq stays: a hole, not a suffix.)"""
        self._sync_records_before(w, next_seq)
        try:
            seg, file = self._new_segment(next_seq)
        except StorageIOError:
            self._no_successor = self._successor_never_made(next_seq)
            raise
        try:
            w.segment.end = w.seal(next_seq)
            w.segment.seal = (next_seq, w.segment.end - SEAL_SIZE)
            w.file.sync()
        except BaseException:
            file.close()
            raise
        self._counters["syncs"] += 1
        return seg, file

    def _sync_records_before(self, w: AnySegmentWriter, next_seq: int) -> None:
        """Make the records before ``next_seq`` durable, syncing only if one is not yet:
        under ``wal_sync="always"`` the group commit has usually synced them all, and a
        sync of nothing still costs an fsync with the lock held.  ``durable_seq`` only
        grows, and only after a sync of the file that held those records returned."""
        if self._commit.durable_seq >= next_seq - 1:
            return
        w.file.sync()
        self._counters["syncs"] += 1
        self._commit.mark_durable(next_seq - 1)

    def _successor_never_made(self, first_seq: int) -> bool:
        """After the successor's creation failed: True if no file of it exists -- its
        open failed (EMFILE, or ENOSPC for a new name) -- so the active segment may take
        appends again.  A file that was created is not removed and forgotten: a reader
        beside the writer may have opened it already, and would take the records the
        active segment then gets past its first seq for a truncation (a gap)."""
        try:
            return not self._env.exists(os.path.join(self.path, segment_name(first_seq)))
        except Exception:  # noqa: BLE001 -- the caller raises the first failure; the Log is poisoned
            return False

    def _seal_before_successor(self, w: AnySegmentWriter,
                               next_seq: int) -> tuple[Segment, MappedFile]:
        """Formats 1 and 2 (no SEAL): the old segment is cut to its last record and
        synced before its successor exists, so a crash only ever loses a suffix."""
        w.seal()
        w.file.sync()
        self._counters["syncs"] += 1
        self._commit.mark_durable(next_seq - 1)
        return self._new_segment(next_seq)

    def _collect(self) -> tuple[int, Any]:
        """For the group-commit leader: flush the buffer, say what one sync will cover."""
        with self._lock:
            w = self._writer
            if w is None:  # closed: close() synced everything under this lock
                return self._appends.next_seq - 1, ALREADY_SYNCED
            try:
                w.flush(self._appends.next_seq - 1)
            except BaseException:
                self._stop_appends()
                raise
            return self._appends.next_seq - 1, w.file

    def sync(self, upto_seq: int | None = None) -> int:
        """Make every record up to ``upto_seq`` (default: all) durable; return ``durable_seq``."""
        if upto_seq is not None:
            check_seq(upto_seq, "upto_seq")
        if self._closed:
            raise self._closed_error()
        self.wait_durable(self._appends.next_seq - 1 if upto_seq is None else upto_seq)
        return self.durable_seq

    def wait_durable(self, seq: int) -> None:
        """Block until record ``seq`` is durable, joining (or leading) a group commit.

        For callers that appended under their own lock and sync outside it.  A read-only
        log returns at once: it cannot see what its writer (another process) has synced.
        """
        check_seq(seq, "seq")
        if seq > self._appends.next_seq - 1:
            raise LogRangeError(f"seq {seq} has not been appended (last_seq is {self._appends.next_seq - 1})")
        if not self._read_only:
            self._commit.wait_durable(seq)

    # -- following a writer -----------------------------------------------------------
    def refresh(self) -> int:
        """Catch up with the writer of this log and return the new ``last_seq``.

        For a read-only log (``read_only=True``), which otherwise sees the log as it
        was when it opened: records appended since (complete, checksummed ones only),
        new segments, and segments the writer removed (``first_seq`` moves up) --
        see log/follow.py.  Safe beside a writer in another process, and with reads
        running in this one; readers that started before keep their view.  A
        writable log is always current: this only returns ``last_seq``.
        """
        if self._closed:
            raise self._closed_error()
        if not self._read_only:
            return self.last_seq
        with self._refresh_lock:  # one catch-up at a time; appends and reads go on
            caught = catch_up(self._env, self.path, self._catalog.segments, self._appends.next_seq,
                              interval=self._interval, policy=self._catalog.on_damage)
            if not caught.changed:
                return caught.next_seq - 1
            with self._lock:
                if self._closed:
                    raise self._closed_error()
                caught.apply_growth()
                self._catalog.replace(caught.segments)
                self._appends.next_seq = caught.next_seq
            for seg in caught.dropped:  # gone from the directory: close as readers let go
                seg.retire()
        return caught.next_seq - 1

    # -- maintenance ----------------------------------------------------------------
    def truncate_before(self, seq: int) -> int:
        """Delete the segments holding only records ``< seq`` (never the active one);
        return how many were deleted.  ``first_seq`` may stay below ``seq``."""
        check_seq(seq, "seq")
        with self._truncating:
            with self._lock:
                # Not refused after a failed write or sync: only the records at the end
                # are in doubt then, and the segments before the last one were synced and
                # sealed when the next one began.  On a full disk this is how the log's own
                # retention frees the space that the reopen (which reserves some) needs.
                if self._closed or self._read_only:
                    raise self._unwritable()
                dropped = self._catalog.drop_before(seq)
                doomed, self._unremoved = self._unremoved + dropped, []
            self._remove_oldest_first(doomed)
            if doomed:
                self._env.sync_dir(self.path)
                _log.info("log %s: removed %d segments before seq %d", self.path, len(doomed), seq)
        return len(dropped)

    def _remove_oldest_first(self, doomed: list[Segment]) -> None:
        """Remove the files of ``doomed`` (oldest first): a crash midway leaves a contiguous
        log.  On a failure the rest -- the failed one included -- wait for the next
        truncation, ahead of the segments it drops: removing a newer segment while an
        older one stays would leave a hole that every read of the reopened log reports."""
        for k, seg in enumerate(doomed):
            try:
                # Readers inside it keep their handle (and its data) until they let go.  Inside
                # the try: retire() may have to open that handle, and if it cannot (EIO,
                # EMFILE) this segment and the newer ones must wait for the next truncation
                # like a failed removal -- dropped from the log and forgotten, they stayed
                # on disk while the next truncation removed newer ones: a hole.
                seg.retire()
                self._env.remove(seg.path)
            except FileNotFoundError:
                continue  # removed by an earlier attempt whose error came after the unlink
            except BaseException:
                with self._lock:
                    self._unremoved[:0] = doomed[k:]
                raise

    def disown(self) -> None:
        """Called in a forked child (shutdown.py): the log is the parent's.  Appends and
        reads raise StoreClosedError here, and close() releases nothing -- it would cut
        the active segment under the parent's appends and unlock the parent's lock.
        (No lock taken: the child has one thread, and the parent's may have held it.)"""
        self._closed_why = (f"belongs to process {os.getppid()}: a forked child cannot use it "
                            "(open the log in the child)")
        self._closed = self._released = True
        self._rotation_due = False
        self._stop_appends()
        if self._flock is not None:
            self._flock.disown()

    def close(self) -> None:
        """Sync everything, cut the active segment's reserved space, release the lock.
        Idempotent: a close() from another thread meanwhile returns once this one is done,
        and one that was interrupted part-way (a Ctrl-C) is finished by the next call.
        After an IO error (the appender was told) the log is released as a crash would
        leave it, without writing: the next open recovers it."""
        if self._released:
            return
        if self._closer == threading.get_ident():
            return  # re-entered on the closing thread (a signal handler): the outer call finishes
        self._refuse_reentry()
        with self._close_mu:
            if self._released:
                return
            self._closer = threading.get_ident()
            try:
                self._close_steps()
            finally:
                self._closer = None

    def _refuse_reentry(self) -> None:
        """RuntimeError if this thread is inside one of this log's calls that hold its lock:
        close() was made by a signal handler that interrupted an append (or a rotation, a
        read), and waiting for the lock would wait for ever for the call it interrupted --
        the usual "close the log on SIGTERM" hung so.  Python's own files raise
        RuntimeError for such a reentrant call too.  Another thread holding the lock:
        returns, and close() waits for it as usual."""
        if not self._lock.locked():
            return
        if shutdown.inside_own_call(self, (
                self.append, self.append_many, self.rotate, self.truncate_before, self.refresh,
                self._rotate_locked, self._collect, self._remove_oldest_first, self._visible,
                self._visible_locked, self._snapshot, self._await_record, self._await_record_async)):
            raise RuntimeError(
                f"close() of log {self.path} was called on a thread inside one of its "
                "appends (from a signal handler that interrupted it) and would wait for "
                "ever for the lock that append holds; raise an exception in the handler "
                "instead (sys.exit(), KeyboardInterrupt): the log is closed at exit or by "
                "a close() after it")

    def _close_steps(self) -> None:
        """close()'s work; each step may run again after an interrupted close()."""
        if self._exit_token is not None:
            shutdown.untrack(self._exit_token)
            self._exit_token = None
        if self._syncer is not None:
            self._syncer.stop()
        error: BaseException | None = None
        with self._lock:
            if not self._closed:
                self._closed = True
                self._rotation_due = False
                self._stop_appends()
                self._wake_followers_locked()  # followers end
                w, self._writer = self._writer, None
                if w is not None:
                    if self._commit.error is None:
                        try:  # under the lock on purpose: a leader's _collect() must find it all synced
                            w.flush(self._appends.next_seq - 1)
                            w.seal()
                            w.file.sync()
                            self._counters["syncs"] += 1
                            self._commit.mark_durable(self._appends.next_seq - 1)
                        except BaseException as exc:
                            # Waiters still parked must not take the closed log for synced.
                            self._commit.fail(exc)
                            error = exc
                    self._commit.retire(w.file)  # a leader may still be syncing it
        self._commit.close()  # outside the lock: the runner's last round may need it
        self._catalog.close()
        if self._flock is not None:
            self._flock.release()
        if self._own_env:
            self._env.close()
        self._released = True
        if error is not None:
            raise error
