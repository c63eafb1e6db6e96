"""The read side of an open Log: seq bounds, ``read``, ``get``, ``follow``, ``stats``.

A mixin of :class:`banyanstore.log.log.Log`, kept apart so each module holds
one concept.  Reads take the append lock only for a moment -- to snapshot the
segment list and, if the records asked for were stored after the writer last
published its end, to publish it (log/writer.py: no system call) -- and then
read files without any lock, so
reads and appends run concurrently.  ``read()`` is a generator over the
snapshot: it survives concurrent appends, rotations and syncs and stops at the
``last_seq`` of the moment it was called.  ``follow()`` is a blocking tail:
it waits on a condition over the append lock, which appends notify only while
somebody waits.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any, Self

from ..arguments import check_bool, check_int
from ..errors import LogRangeError, ReadOnlyError, StorageIOError, StoreClosedError
from ..handles import ProcessLocal
from ..io.base import Env
from ..options import Options
from ..sticky import sticky_items
from .catalog import SegmentCatalog, View
from .commit import GroupCommit
from .writer import AnySegmentWriter, LogTail

__all__ = ["LogView"]


class LogView(ProcessLocal):
    """Read-only operations; the attributes below are set by ``Log.__init__``."""

    _handle_kind = "log"  # (handles.py: what pickling and copying refuse)

    path: str
    _env: Env
    _opts: Options
    _lock: threading.Lock
    _closed: bool
    _read_only: bool
    _appends: LogTail
    _catalog: SegmentCatalog
    _commit: GroupCommit
    _writer: AnySegmentWriter | None
    _counters: dict[str, int]
    _rotations: int
    _rotate_seconds: float
    _appended: threading.Condition  # over _lock; notified by appends while _appends.followers > 0

    def _io_failed(self, exc: BaseException) -> None:
        raise NotImplementedError  # pragma: no cover  (Log's)

    def close(self) -> None:
        raise NotImplementedError  # pragma: no cover  (Log's)

    _closed_why = "is closed"
    """What a closed log's StoreClosedError says of it (a forked child's copy: whose it is)."""

    def _closed_error(self) -> StoreClosedError:
        return StoreClosedError(f"log {self.path} {self._closed_why}")

    def _unwritable(self) -> BaseException:
        if self._closed:
            return self._closed_error()
        if self._read_only:
            return ReadOnlyError(f"log {self.path} was opened with read_only=True")
        try:
            self._commit.check()
        except StorageIOError as exc:
            return exc
        return StoreClosedError(f"log {self.path} is not writable")  # pragma: no cover

    def __enter__(self) -> Self:
        # A closed log raises here, as Python's closed files do at `with f:` (and the
        # store, lsm/store.py): every call inside the block would raise anyway.
        if self._closed:
            raise self._closed_error()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only " if self._read_only else ""
        held = "empty" if self.last_seq < self.first_seq else f"seqs [{self.first_seq}, {self.last_seq}]"
        state = "closed" if self._closed else mode + held
        return f"<banyanstore Log {self.path!r} {state}>"

    @property
    def first_seq(self) -> int:
        """Seq of the oldest record kept (``last_seq + 1`` when the log is empty)."""
        segs = self._catalog.segments
        return min(segs[0].first_seq, self._appends.next_seq) if segs else self._appends.next_seq

    @property
    def last_seq(self) -> int:
        """Seq of the newest record (0 for a log never written)."""
        return self._appends.next_seq - 1

    @property
    def durable_seq(self) -> int:
        """Every record up to this seq is durable.  A read-only log cannot see what its
        writer (another process) has synced: there it is ``last_seq``."""
        return self._commit.durable_seq if not self._read_only else self._appends.next_seq - 1

    @property
    def closed(self) -> bool:
        """True once the log is closed (by ``close()``, or in a forked child)."""
        return self._closed

    def _visible(self, upto: int) -> tuple[View, int]:
        """A snapshot of the segments with every record up to ``upto`` readable from files."""
        with self._lock:
            return self._visible_locked(upto)

    def _visible_locked(self, upto: int) -> tuple[View, int]:
        if self._closed:
            raise self._closed_error()
        w = self._writer
        if w is not None and w.flushed_seq < upto:
            try:
                w.flush(self._appends.next_seq - 1)  # stored but not published yet: publish the end
            except BaseException as exc:
                self._io_failed(exc)
                raise
        return self._catalog.view, self._appends.next_seq - 1

    def read(self, start: int | None = None, end: int | None = None,
             limit: int | None = None, *, check_gaps: bool = True) -> Iterator[tuple[int, bytes]]:
        """Iterate ``(seq, record)`` for ``start <= seq < end``, at most ``limit`` of them.

        ``start`` defaults to ``first_seq`` and must lie in ``[first_seq, last_seq + 1]``
        (else :class:`LogRangeError`); ``end`` (exclusive) defaults to "everything up
        to the ``last_seq`` of the moment of the call" -- appends made meanwhile are
        not waited for (see :meth:`follow` for that).  The iterator is a snapshot:
        records truncated after the call are still read (the segments it needs stay
        pinned until it ends, is closed or is dropped).

        Seqs that no segment holds (a segment that ends short of the next one's first
        seq) are damage: :class:`CorruptionError` (with ``skip_damaged_records=True``:
        counted, logged and skipped).  ``check_gaps=False`` lets the caller see the jump
        in seqs and apply its own policy instead (the store's WAL replay does).

        >>> import tempfile
        >>> from banyanstore.log import Log
        >>> with tempfile.TemporaryDirectory() as d, Log.open(d, io_mode="sync") as log:
        ...     _ = log.append_many([b"a", b"b", b"c", b"d"])
        ...     list(log.read(2, end=4)), list(log.read(limit=1)), len(log), [s for s, _ in log]
        ([(2, b'b'), (3, b'c')], [(1, b'a')], 4, [1, 2, 3, 4])
        """
        check_bool(check_gaps, "check_gaps")
        stop = _seq_or_none(end, "end")
        if stop is not None and stop < 0:  # (0 is an empty range: seqs start at 1)
            raise ValueError(f"end must be a seq >= 0 or None, not {stop}")
        records, _ = self._snapshot(_seq_or_none(start, "start"), stop, _limit(limit),
                                    continuous=check_gaps)
        return sticky_items(records)  # one that raised raises again: never a silent end

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """``for seq, record in log``: :meth:`read` from ``first_seq``."""
        return self.read()

    def __len__(self) -> int:
        """The number of records kept: ``last_seq - first_seq + 1`` (seqs of damaged
        records skipped with ``skip_damaged_records=True`` included).  Constant time."""
        return max(0, self._appends.next_seq - self.first_seq)

    def _snapshot(self, start: int | None, end: int | None, limit: int | None, *,
                  continuous: bool = True) -> tuple[Generator[tuple[int, bytes], None, None], int]:
        """:meth:`read`'s iterator, and the last seq it covers."""
        with self._lock:
            upto = self._appends.next_seq - 1 if end is None else min(end - 1, self._appends.next_seq - 1)
            view, last = self._visible_locked(upto)
            first = self.first_seq
            if start is None:
                start = first
            elif not first <= start <= last + 1:
                raise LogRangeError(f"read start {start} is outside [{first}, {last + 1}]")
            stop = last if end is None else min(last, end - 1)
            if limit == 0:
                stop = start - 1
            pins = self._catalog.pin(view, start, stop)  # under the lock: atomic with truncation
        records = self._catalog.iterate(pins, start, stop, limit, continuous=continuous)
        pins.release_when_collected(records)
        return records, stop

    def follow(self, start: int | None = None, *,
               timeout: float | None = None) -> Iterator[tuple[int, bytes]]:
        """A blocking tail for consumers of an event stream: yield ``(seq, record)``
        from ``start`` on, waiting for records as they are appended.

        * ``start``: the first seq to yield (default ``first_seq``; ``last_seq + 1``
          for only what is appended from now on).  A consumer that remembers the seq
          after the last record it handled resumes exactly there.
        * ``timeout``: the longest wait, in seconds, for the *next* record; if none
          comes in that time the iterator ends (call ``follow`` again, from the next
          seq, to go on).  ``None`` (default): wait as long as it takes.
        * It ends, cleanly, when the log is closed (by any thread).
        * Segment rotation is invisible to it.  If the records it is about to read
          were truncated away first (the consumer fell that far behind), it raises
          :class:`LogRangeError`.
        * It yields records once they are appended, before they are necessarily
          durable (as :meth:`read` does): a consumer that must act only on durable
          records calls ``log.wait_durable(seq)`` first -- on the writer's Log: a
          read-only log cannot see what its writer synced (its ``wait_durable``
          returns at once).
        * A read-only log (a writer in another process) catches up with
          :meth:`refresh` every ``follow_interval_ms`` while it waits -- and first,
          when ``start`` lies past the ``last_seq + 1`` it has caught up with.

        Appends pay nothing for this while nobody follows (one attribute test).

        >>> import tempfile, threading
        >>> from banyanstore.log import Log
        >>> with tempfile.TemporaryDirectory() as d, Log.open(d, io_mode="sync") as log:
        ...     _ = log.append(b"a")
        ...     threading.Timer(0.05, log.append_many, ([b"b", b"c"],)).start()
        ...     for seq, record in log.follow(1, timeout=30):
        ...         print(seq, record)
        ...         if seq == 3:
        ...             break
        ...     list(log.follow(4, timeout=0.01))  # nothing new within 10 ms: it ends
        1 b'a'
        2 b'b'
        3 b'c'
        []
        """
        checked = self._follow_args(start, timeout)
        return sticky_items(self._tail(self._follow_start(checked), timeout))

    def _follow_args(self, start: object, timeout: float | None) -> int | None:
        """``start`` checked for :meth:`follow` and ``follow_async`` (and ``timeout``), and
        the log open."""
        checked = _seq_or_none(start, "start")
        if timeout is not None:
            if type(timeout) not in (int, float):
                raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
            if not timeout >= 0:  # also NaN
                raise ValueError(f"timeout must be >= 0, not {timeout!r}")
        if self._closed:  # first: a closed log is not "start outside the log"
            raise self._closed_error()
        return checked

    def _refresh_needed(self, start: int | None) -> bool:
        """Whether a follow from ``start`` must catch up first to check it: a seq handed
        over from elsewhere (the writer is another process) may have been appended
        since this reader last caught up."""
        return start is not None and start > self.last_seq + 1 and self._read_only

    def _follow_start(self, start: int | None) -> int:
        """The first seq of a follow from ``start``; LogRangeError outside the log."""
        if self._refresh_needed(start):
            self.refresh()
        first, last = self.first_seq, self.last_seq
        if start is None:
            return first
        if not first <= start <= last + 1:
            raise LogRangeError(f"follow start {start} is outside [{first}, {last + 1}]")
        return start

    def _tail(self, seq: int, timeout: float | None) -> Iterator[tuple[int, bytes]]:
        while self._await_record(seq, None if timeout is None else time.monotonic() + timeout):
            try:
                records, stop = self._snapshot(seq, None, None)
                with contextlib.closing(records):  # a consumer that stops lets go of the pins
                    for item in records:
                        yield item
                        seq = item[0] + 1
            except StoreClosedError:
                return
            seq = max(seq, stop + 1)  # past records skipped as damaged too

    def _await_record(self, seq: int, deadline: float | None) -> bool:
        """Wait until record ``seq`` exists (True), or the deadline passes or the log
        closes (False)."""
        poll = self._opts.follow_interval_ms / 1000 if self._read_only else None
        while True:
            if poll is not None and self._appends.next_seq <= seq and not self._closed:
                with contextlib.suppress(StoreClosedError):
                    self.refresh()  # the writer is another process: nobody notifies us
            with self._lock:
                if self._closed:
                    return False
                if self._appends.next_seq > seq:
                    return True
                wait = poll
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    # One wait is bounded by what the platform can wait (a longer timeout,
                    # math.inf included, raises OverflowError): wait again when it ends.
                    wait = min(remaining, threading.TIMEOUT_MAX) if wait is None else min(wait, remaining)
                self._appends.followers += 1  # appends notify while this is non-zero
                try:
                    self._appended.wait(wait)
                finally:
                    self._appends.followers -= 1

    def refresh(self) -> int:
        raise NotImplementedError  # pragma: no cover  (Log's)

    def get(self, seq: int) -> bytes:
        """The record with seq ``seq``; :class:`LogRangeError` outside ``[first_seq, last_seq]``."""
        check_int(seq, "seq")  # a bool is not a seq
        if self._closed:  # first: a closed log is not "seq outside the log" (read() agrees)
            raise self._closed_error()
        first, last = self.first_seq, self._appends.next_seq - 1
        if not first <= seq <= last:
            if last < first:  # ("[1, 0]" did not read as "nothing yet")
                raise LogRangeError(f"seq {seq} is outside the log, which is empty (its first "
                                    f"record will be seq {last + 1})")
            raise LogRangeError(f"seq {seq} is outside [{first}, {last}]")
        view, _ = self._visible(seq)
        return self._catalog.get(view, seq)

    def __getitem__(self, seq: int) -> bytes:
        """``log[seq]``: :meth:`get` -- :class:`LogRangeError`, an ``IndexError``, for a seq
        the log does not hold (never appended, or truncated away), as a sequence raises for
        an index past its end.  Seqs are not positions: no negative index, no slice
        (``read(start, end)`` is the range).

        >>> import tempfile
        >>> from banyanstore.log import Log
        >>> with tempfile.TemporaryDirectory() as d, Log.open(d, io_mode="sync") as log:
        ...     _ = log.append_many([b"a", b"b"])
        ...     log[2], 2 in log, 3 in log, 0 in log
        (b'b', True, False, False)
        """
        if type(seq) is not int:  # a slice too: say what to use instead
            raise TypeError(f"seq must be an int, not {type(seq).__name__} "
                            "(for a range of records use log.read(start, end))")
        return self.get(seq)

    def __contains__(self, seq: object) -> bool:
        """``seq in log``: whether ``first_seq <= seq <= last_seq`` (no IO), the seqs
        ``len(log)`` counts and ``log[seq]`` answers for (a damaged record skipped with
        ``skip_damaged_records=True`` is in the log: ``log[seq]`` raises CorruptionError
        for it); TypeError naming ``seq`` for anything but an int."""
        check_int(seq, "seq")
        if self._closed:  # as log[seq] and log.get(seq) after close()
            raise self._closed_error()
        return self.first_seq <= seq <= self._appends.next_seq - 1  # type: ignore[operator]

    def stats(self) -> dict[str, Any]:
        """Counters and state: segments, bytes, seq bounds, syncs, group-commit batches,
        rotations and their time, torn-tail repairs, skipped damaged records, the IO mode."""
        segs = self._catalog.segments
        w = self._writer
        described = self._env.describe()
        return {
            "segments": len(segs),
            "bytes": sum(s.end for s in segs) + (w.pending() if w is not None else 0),
            "first_seq": self.first_seq, "last_seq": self.last_seq, "durable_seq": self.durable_seq,
            "syncs": self._counters["syncs"] + self._commit.syncs,
            "group_commit_batches": self._commit.syncs, "sync_waits": self._commit.waits,
            # new segments started, and the seconds it took (their syncs included)
            "rotations": self._rotations, "rotate_seconds": round(self._rotate_seconds, 6),
            "torn_tail_repairs": self._counters["torn_tail_repairs"],
            "torn_tail_bytes": self._counters["torn_tail_bytes"],
            "damaged_records_skipped": self._counters["damaged_records_skipped"] + self._catalog.skipped,
            "wal_sync": self._opts.wal_sync, "read_only": self._read_only,
            "io_mode": described.get("io_mode"), "io": described,
        }


def _seq_or_none(value: object, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:  # bool is an int, and never a seq
        raise TypeError(f"{name} must be an int seq or None, not {type(value).__name__}")
    return value


def _limit(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise TypeError(f"limit must be an int or None, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"limit must be >= 0, not {value}")
    return value
