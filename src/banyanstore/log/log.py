"""The append-only Log: segments, seqs, durability modes, group commit, recovery.

Byte format: see :mod:`banyanstore.log.format` and ``docs/format/log.md``.

Seqs start at 1 and are never reused: each segment's header stores its first
seq and each record its own, so seqs survive restarts and ``truncate_before``.
``first_seq`` is the first seq of the oldest segment; an empty log has
``first_seq == last_seq + 1`` (a new log: 1 and 0).

Durability (``wal_sync``, overridden per call by ``sync=True|False``):

======== ========================================= ==========================================
mode     process crash (kill -9) loses              power loss loses
======== ========================================= ==========================================
always   nothing that append() returned             nothing that append() returned
interval records still in the user-space buffer:    records appended in the last
         the last ``wal_sync_interval_ms`` at most   ``wal_sync_interval_ms`` (+ one sync)
never    records still in the user-space buffer     everything since the last sync()/close()/
         (< 256 KiB; flushed by sync/read/get/close) segment rotation
======== ========================================= ==========================================

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

import errno
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import (
    LogRangeError,
    ReadOnlyError,
    StorageIOError,
    StoreClosedError,
)
from ..io.base import Env, FileLock, WritableFile
from ..options import Options, resolve_options
from .catalog import SegmentCatalog
from .commit import GroupCommit, IntervalSyncer
from .format import HEADER_SIZE
from .recovery import recover
from .segment import Segment, SparseIndex, create_segment, segment_name
from .writer import SegmentWriter

__all__ = ["Log", "LogNotFoundError", "LogExistsError"]

_log = logging.getLogger("banyanstore.log")
FLUSH_BYTES = 256 * 1024  # user-space buffer handed to the OS in chunks of this size
_BATCH = 1024  # append_many checks for rotation every this many records


class LogNotFoundError(StorageIOError, FileNotFoundError):
    """The log directory does not exist and ``create_if_missing=False`` (or ``read_only``)."""


class LogExistsError(StorageIOError, FileExistsError):
    """The log already holds segments and ``error_if_exists=True``."""


def _as_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        raise TypeError(f"{name} must be bytes-like, not str (encode it first)")
    try:
        return bytes(memoryview(value))  # copy: the caller may reuse its buffer
    except TypeError:
        raise TypeError(f"{name} must be bytes-like, not {type(value).__name__}") from None


class _Synced:
    def sync(self) -> None:  # close() already synced everything
        pass


class Log:
    """An open log directory.  Thread-safe.  Use :meth:`open`."""

    def __init__(self, env: Env, own_env: bool, directory: str, opts: Options,
                 lock: FileLock | None) -> None:
        self.path, self._env, self._own_env, self._opts, self._flock = directory, env, own_env, opts, lock
        self._interval, self._read_only = opts.log_index_interval, opts.read_only
        self._segment_size, self._always = opts.segment_size, opts.wal_sync == "always"
        self._lock = threading.Lock()
        self._closed = False
        rec = recover(env, directory, read_only=opts.read_only, skip_damaged=opts.skip_damaged_records,
                      index_interval=opts.log_index_interval)
        self._catalog = SegmentCatalog(rec.segments, index_interval=opts.log_index_interval,
                                       skip_damaged=opts.skip_damaged_records)
        self._next_seq = rec.next_seq
        self._counters = {"torn_tail_repairs": rec.torn_tail_repairs, "torn_tail_bytes": rec.torn_tail_bytes,
                          "damaged_records_skipped": rec.damaged_records, "syncs": 0}
        self._writer: SegmentWriter | None = None
        self._commit = GroupCommit(self._collect, durable_seq=self._next_seq - 1)
        self._syncer: IntervalSyncer | None = None
        if not opts.read_only:
            self._open_writer()
            if opts.wal_sync == "interval":
                self._syncer = IntervalSyncer(self._commit, opts.wal_sync_interval_ms / 1000,
                                              lambda: self._next_seq - 1)
                self._syncer.start()
        self._ok = not opts.read_only  # the one flag the append fast path checks
        _log.debug("opened log %s: seqs [%d, %d], %d segments", directory, self.first_seq,
                   self.last_seq, len(self._catalog.segments))

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, options: Options | None = None, env: Env | None = None,
             lock: bool = True, **kwargs: Any) -> Log:
        """Open (or create) the log in directory ``path``.

        ``lock=False`` is for embedding: the caller (the LSM store) already holds
        its own lock over a directory containing this one.
        """
        opts = resolve_options(options, kwargs)
        directory = os.fspath(path)
        own_env = env is None
        if env is None:
            from ..io import make_env
            env = make_env(opts)
        flock: FileLock | None = None
        try:
            if not env.exists(directory):
                if opts.read_only or not opts.create_if_missing:
                    why = "read_only=True" if opts.read_only else "create_if_missing=False"
                    raise LogNotFoundError(f"log directory {directory} does not exist ({why})",
                                           path=directory, op="open", errno=errno.ENOENT)
                env.mkdir(directory)
                env.sync_dir(os.path.dirname(os.path.abspath(directory)))
            if lock and not opts.read_only:
                flock = env.lock(os.path.join(directory, "LOCK"))
            if opts.error_if_exists and any(n.endswith(".log") for n in env.listdir(directory)):
                raise LogExistsError(f"log {directory} already exists (error_if_exists=True)",
                                     path=directory, op="open", errno=errno.EEXIST)
            return cls(env, own_env, directory, opts, flock)
        except BaseException:
            if flock is not None:
                flock.release()
            if own_env:
                env.close()
            raise

    def _open_writer(self) -> None:
        segs = self._catalog.segments
        if not segs:
            seg, file = self._new_segment(self._next_seq)
            self._catalog.add(seg)
        else:
            seg = segs[-1]
            file = self._env.open_writable(seg.path, append=True)
            file.sync()  # records left in the page cache by a crashed process become durable
            seg.index = seg.index or SparseIndex()
        self._writer = SegmentWriter(file, seg, last_seq=self._next_seq - 1,
                                     index_interval=self._interval, flush_bytes=FLUSH_BYTES)

    def _new_segment(self, first_seq: int) -> tuple[Segment, WritableFile]:
        path = os.path.join(self.path, segment_name(first_seq))
        file = create_segment(self._env, path, first_seq)
        self._env.sync_dir(self.path)  # the name is durable before any record in it is acknowledged
        self._counters["syncs"] += 1
        return Segment(self._env, path, first_seq, HEADER_SIZE, SparseIndex()), file

    # -- state ----------------------------------------------------------------------
    @property
    def first_seq(self) -> int:
        """Seq of the oldest record kept (``last_seq + 1`` when the log is empty)."""
        segs = self._catalog.segments
        return min(segs[0].first_seq, self._next_seq) if segs else self._next_seq

    @property
    def last_seq(self) -> int:
        """Seq of the newest record (0 for a log never written)."""
        return self._next_seq - 1

    @property
    def durable_seq(self) -> int:
        """Every record up to this seq is durable."""
        return self._commit.durable_seq if not self._read_only else self._next_seq - 1

    @property
    def closed(self) -> bool:
        return self._closed

    def _unwritable(self) -> BaseException:
        if self._closed:
            return StoreClosedError(f"log {self.path} is closed")
        if self._read_only:
            return ReadOnlyError(f"log {self.path} was opened with read_only=True")
        try:
            self._commit.check()
        except StorageIOError as exc:
            return exc
        return StoreClosedError(f"log {self.path} is not writable")  # pragma: no cover

    def _io_failed(self, exc: BaseException) -> None:
        self._ok = False
        self._commit.fail(exc)

    # -- writing --------------------------------------------------------------------
    def append(self, record: bytes, *, sync: bool | None = None) -> int:
        """Append one record; return its seq.  ``sync`` overrides ``wal_sync`` for this call."""
        if type(record) is not bytes:
            record = _as_bytes(record, "record")
        with self._lock:
            if not self._ok:
                raise self._unwritable()
            seq = self._next_seq
            w = self._writer
            try:
                w.add(seq, record)  # type: ignore[union-attr]
                self._next_seq = seq + 1
                if w.offset >= self._segment_size:  # type: ignore[union-attr]
                    self._rotate_locked()
            except BaseException as exc:
                self._io_failed(exc)
                raise
        if self._always if sync is None else sync:
            self._commit.wait_durable(seq)
        return seq

    def append_many(self, records: Iterable[bytes], *, sync: bool | None = None) -> int:
        """Append records in order under one lock; return the seq of the last one
        (``last_seq`` unchanged if ``records`` is empty)."""
        if isinstance(records, (bytes, bytearray, memoryview, str)):
            raise TypeError("records must be an iterable of bytes-like records, not a single "
                            f"{type(records).__name__}")
        items = list(records)
        for i, r in enumerate(items):
            if type(r) is not bytes:
                items[i] = _as_bytes(r, f"records[{i}]")
        with self._lock:
            if not self._ok:
                raise self._unwritable()
            try:
                for lo in range(0, len(items), _BATCH):
                    w = self._writer
                    chunk = items[lo:lo + _BATCH]
                    w.add_many(self._next_seq, chunk)  # type: ignore[union-attr]
                    self._next_seq += len(chunk)
                    if w.offset >= self._segment_size:  # type: ignore[union-attr]
                        self._rotate_locked()
            except BaseException as exc:
                self._io_failed(exc)
                raise
            last = self._next_seq - 1
        if items and (self._always if sync is None else sync):
            self._commit.wait_durable(last)
        return last

    def rotate(self) -> int:
        """Start a new segment now (no-op if the active one is empty); return its first seq.

        Everything before the returned seq is durable when this returns.
        """
        with self._lock:
            if not self._ok:
                raise self._unwritable()
            try:
                if self._catalog.segments[-1].first_seq != self._next_seq:
                    self._rotate_locked()
            except BaseException as exc:
                self._io_failed(exc)
                raise
            return self._next_seq

    def _rotate_locked(self) -> None:
        w = self._writer
        assert w is not None
        w.flush()
        # Barrier: the sealed segment is complete on disk before its successor
        # exists, so a crash can only ever lose a suffix of the whole log.
        w.file.sync()
        self._counters["syncs"] += 1
        self._commit.mark_durable(self._next_seq - 1)
        seg, file = self._new_segment(self._next_seq)
        self._commit.retire(w.file)
        self._catalog.add(seg)
        self._writer = SegmentWriter(file, seg, last_seq=self._next_seq - 1,
                                     index_interval=self._interval, flush_bytes=FLUSH_BYTES)

    def _collect(self) -> tuple[int, Any]:
        """For the group-commit leader: flush the buffer, say what one sync will cover."""
        with self._lock:
            w = self._writer
            if w is None:  # closed: close() synced everything under this lock
                return self._next_seq - 1, _Synced()
            try:
                w.flush()
            except BaseException:
                self._ok = False
                raise
            return self._next_seq - 1, w.file

    def sync(self, upto_seq: int | None = None) -> int:
        """Make every record up to ``upto_seq`` (default: all) durable; return ``durable_seq``."""
        if self._closed:
            raise StoreClosedError(f"log {self.path} is closed")
        self.wait_durable(self._next_seq - 1 if upto_seq is None else upto_seq)
        return self.durable_seq

    def wait_durable(self, seq: int) -> None:
        """Block until record ``seq`` is durable, joining (or leading) a group commit.

        For callers that appended under their own lock and sync outside it.
        """
        if seq > self._next_seq - 1:
            raise LogRangeError(f"seq {seq} has not been appended (last_seq is {self._next_seq - 1})")
        if not self._read_only:
            self._commit.wait_durable(seq)

    # -- reading --------------------------------------------------------------------
    def _visible(self, upto: int) -> tuple[Any, int]:
        """A snapshot of the segments with every record up to ``upto`` readable from files."""
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"log {self.path} is closed")
            w = self._writer
            if w is not None and w.flushed_seq < upto:
                try:
                    w.flush()  # the records are in our buffer: hand them to the OS first
                except BaseException as exc:
                    self._io_failed(exc)
                    raise
            return self._catalog.view, self._next_seq - 1

    def read(self, start: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Iterate ``(seq, record)`` from ``start`` (default: ``first_seq``) to the
        ``last_seq`` of the moment of the call; appends made meanwhile are not waited for."""
        view, last = self._visible(self._next_seq - 1)
        first = self.first_seq
        if start is None:
            start = first
        elif not first <= start <= last + 1:
            raise LogRangeError(f"read start {start} is outside [{first}, {last + 1}]")
        return self._catalog.iterate(view, start, last)

    def get(self, seq: int) -> bytes:
        """The record with seq ``seq``; :class:`LogRangeError` outside ``[first_seq, last_seq]``."""
        if not isinstance(seq, int):
            raise TypeError(f"seq must be an int, not {type(seq).__name__}")
        first, last = self.first_seq, self._next_seq - 1
        if not first <= seq <= last:
            raise LogRangeError(f"seq {seq} is outside [{first}, {last}]")
        view, _ = self._visible(seq)
        return self._catalog.get(view, seq)

    # -- maintenance ----------------------------------------------------------------
    def truncate_before(self, seq: int) -> int:
        """Delete the segments holding only records ``< seq`` (never the active one);
        return how many were deleted.  ``first_seq`` may stay below ``seq``."""
        with self._lock:
            if not self._ok:
                raise self._unwritable()
            dropped = self._catalog.drop_before(seq)
        for seg in dropped:  # oldest first: a crash midway leaves a contiguous log
            seg.close()
            self._env.remove(seg.path)
        if dropped:
            self._env.sync_dir(self.path)
            _log.info("log %s: removed %d segments before seq %d", self.path, len(dropped), seq)
        return len(dropped)

    def stats(self) -> dict[str, Any]:
        segs = self._catalog.segments
        w = self._writer
        described = self._env.describe()
        return {
            "segments": len(segs),
            "bytes": sum(s.end for s in segs) + (w.pending() if w is not None else 0),
            "first_seq": self.first_seq, "last_seq": self.last_seq, "durable_seq": self.durable_seq,
            "syncs": self._counters["syncs"] + self._commit.syncs,
            "group_commit_batches": self._commit.syncs, "sync_waits": self._commit.waits,
            "torn_tail_repairs": self._counters["torn_tail_repairs"],
            "torn_tail_bytes": self._counters["torn_tail_bytes"],
            "damaged_records_skipped": self._counters["damaged_records_skipped"] + self._catalog.skipped,
            "wal_sync": self._opts.wal_sync, "read_only": self._read_only,
            "io_mode": described.get("io_mode"), "io": described,
        }

    def close(self) -> None:
        """Flush and sync everything, release the lock.  Idempotent."""
        if self._closed:
            return
        if self._syncer is not None:
            self._syncer.stop()
        error: BaseException | None = None
        with self._lock:
            if self._closed:
                return
            self._closed, self._ok = True, False
            w, self._writer = self._writer, None
            if w is not None:
                try:  # under the lock on purpose: a leader's _collect() must find it all synced
                    self._commit.check()
                    w.flush()
                    w.file.sync()
                    self._counters["syncs"] += 1
                    self._commit.mark_durable(self._next_seq - 1)
                except BaseException as exc:
                    error = exc
                w.file.close()
        for seg in self._catalog.segments:
            seg.close()
        if self._flock is not None:
            self._flock.release()
        if self._own_env:
            self._env.close()
        if error is not None:
            raise error

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"seqs [{self.first_seq}, {self.last_seq}]"
        return f"<banyanstore Log {self.path!r} {state}>"
