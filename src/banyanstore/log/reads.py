"""The read side of an open Log: seq bounds, ``read``, ``get``, ``stats``.

A mixin of :class:`banyanstore.log.log.Log`, kept apart so each module holds
one concept.  Reads take the append lock only for a moment -- to snapshot the
segment list and, if the records asked for still sit in the user-space buffer,
to hand that buffer to the OS -- and then read files without any lock, so
reads and appends run concurrently.  ``read()`` is a generator over the
snapshot: it survives concurrent appends, rotations and syncs and stops at the
``last_seq`` of the moment it was called.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Self

from ..errors import LogRangeError, ReadOnlyError, StorageIOError, StoreClosedError
from ..io.base import Env
from ..options import Options
from .catalog import SegmentCatalog, View
from .commit import GroupCommit
from .writer import SegmentWriter

__all__ = ["LogView"]


class LogView:
    """Read-only operations; the attributes below are set by ``Log.__init__``."""

    path: str
    _env: Env
    _opts: Options
    _lock: threading.Lock
    _closed: bool
    _read_only: bool
    _next_seq: int
    _catalog: SegmentCatalog
    _commit: GroupCommit
    _writer: SegmentWriter | None
    _counters: dict[str, int]

    def _io_failed(self, exc: BaseException) -> None:
        raise NotImplementedError  # pragma: no cover  (Log's)

    def close(self) -> None:
        raise NotImplementedError  # pragma: no cover  (Log's)

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"seqs [{self.first_seq}, {self.last_seq}]"
        return f"<banyanstore Log {self.path!r} {state}>"

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

    def _visible(self, upto: int) -> tuple[View, int]:
        """A snapshot of the segments with every record up to ``upto`` readable from files."""
        with self._lock:
            return self._visible_locked(upto)

    def _visible_locked(self, upto: int) -> tuple[View, int]:
        if self._closed:
            raise StoreClosedError(f"log {self.path} is closed")
        w = self._writer
        if w is not None and w.flushed_seq < upto:
            try:
                w.flush(self._next_seq - 1)  # the records are in our buffer: hand them to the OS first
            except BaseException as exc:
                self._io_failed(exc)
                raise
        return self._catalog.view, self._next_seq - 1

    def read(self, start: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Iterate ``(seq, record)`` from ``start`` (default: ``first_seq``) to the
        ``last_seq`` of the moment of the call; appends made meanwhile are not waited for.

        The iterator is a snapshot: records truncated after the call are still read
        (the segments it needs are pinned until it ends, is closed or is dropped)."""
        with self._lock:
            view, last = self._visible_locked(self._next_seq - 1)
            first = self.first_seq
            if start is None:
                start = first
            elif not first <= start <= last + 1:
                raise LogRangeError(f"read start {start} is outside [{first}, {last + 1}]")
            pins = self._catalog.pin(view, start, last)  # under the lock: atomic with truncation
        records = self._catalog.iterate(pins, start, last)
        pins.release_when_collected(records)
        return records

    def get(self, seq: int) -> bytes:
        """The record with seq ``seq``; :class:`LogRangeError` outside ``[first_seq, last_seq]``."""
        if not isinstance(seq, int):
            raise TypeError(f"seq must be an int, not {type(seq).__name__}")
        first, last = self.first_seq, self._next_seq - 1
        if not first <= seq <= last:
            raise LogRangeError(f"seq {seq} is outside [{first}, {last}]")
        view, _ = self._visible(seq)
        return self._catalog.get(view, seq)

    def stats(self) -> dict[str, Any]:
        """Counters and state: segments, bytes, seq bounds, syncs, group-commit batches,
        torn-tail repairs, skipped damaged records, the IO mode."""
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
