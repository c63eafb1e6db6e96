"""Group commit: one fdatasync makes every record written before it durable.

Threads that need record ``seq`` durable call :meth:`GroupCommit.wait_durable`.
If no sync is running, the caller becomes the *leader*: it takes the Log's
append lock just long enough to hand the buffer to the file and note the last
seq written, releases it, and runs ONE fdatasync outside every lock.
Everybody else waits on a condition; when the leader finishes, those covered
return and one of the rest leads the next round, which covers everything
appended while the previous sync ran.  So under N concurrent synced writers the
number of syncs per record falls towards 1/N, and appends never wait for a sync.

A failed sync (or write) poisons the commit: the data's fate on disk is
unknown (fsync errors are not retryable on Linux), so every later call
raises the same error until the Log is reopened and recovery has run.

>>> from banyanstore.log.commit import GroupCommit
>>> class F:
...     def sync(self): pass
>>> gc = GroupCommit(lambda: (3, F()))
>>> gc.wait_durable(2); gc.durable_seq, gc.syncs
(3, 1)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..errors import StorageIOError

__all__ = ["GroupCommit", "IntervalSyncer", "ALREADY_SYNCED"]

_log = logging.getLogger("banyanstore.log")
#: longest a leader waits for writers already inside append(sync=True) to join its batch
MAX_GATHER_SECONDS = 0.002
#: with concurrent synced writers, a leader waits this fraction of the last sync time for more
LINGER = 0.5


class _Syncable(Protocol):
    def sync(self) -> None: ...


class _Closable(Protocol):
    def close(self) -> None: ...


class _AlreadySynced:
    def sync(self) -> None:
        pass


ALREADY_SYNCED = _AlreadySynced()
"""What a leader 'syncs' when the Log was closed (close() synced everything)."""


class GroupCommit:
    """Leader/follower durability over ``collect() -> (last seq written, file to sync)``."""

    def __init__(self, collect: Callable[[], tuple[int, _Syncable]], durable_seq: int = 0) -> None:
        self._collect = collect
        mu = threading.Lock()
        self._cond = threading.Condition(mu)
        self._gather = threading.Condition(mu)  # wakes a gathering leader when a writer arrives
        self._arriving = 0  # writers between arrive() and wait_durable()
        self._leading = False
        self._retired: list[_Closable] = []
        self.durable_seq = durable_seq
        self.error: BaseException | None = None
        self.syncs = 0  # fdatasyncs run by leaders
        self._last_sync_seconds = 0.0
        self._last_batch = 0  # records the last sync covered
        self.waits = 0  # wait_durable calls that had to wait for (or run) a sync

    def check(self) -> None:
        """Raise if an earlier write or sync failed."""
        if self.error is not None:
            raise StorageIOError(f"the log is unusable after an earlier IO error ({self.error}); "
                                 "close and reopen it") from self.error

    def arrive(self) -> None:
        """Announce an append that will call :meth:`wait_durable` (``arrived=True``) next,
        so a leader about to sync can wait a moment for it to join the batch."""
        with self._cond:
            self._arriving += 1

    def depart(self) -> None:
        """Withdraw an :meth:`arrive` (the append failed)."""
        with self._cond:
            self._arriving -= 1
            self._gather.notify()

    def wait_durable(self, seq: int, *, arrived: bool = False) -> None:
        """Return once record ``seq`` (and every one before it) is durable."""
        if arrived:
            self.depart()
        if self.durable_seq >= seq:  # racy read of an int that only grows: safe fast path
            return
        with self._cond:
            self.waits += 1
            while True:
                self.check()
                if self.durable_seq >= seq:
                    return
                if not self._leading:
                    self._leading = True
                    break
                self._cond.wait()
        self._lead()

    def _lead(self) -> None:
        covered, ok = 0, False
        # Let writers that were just woken, or are mid-append, join this sync instead
        # of leaving them for the next one: batches of N instead of ping-pong halves.
        # When the last sync served several writers (concurrency is real), also give
        # the ones still waking up a fraction of a sync's time to append: it costs
        # each writer at most half a sync of latency and saves whole syncs.
        time.sleep(0)
        with self._cond:
            now = time.monotonic()
            linger = 0.0
            if self._last_batch > 1:
                linger = min(MAX_GATHER_SECONDS, LINGER * self._last_sync_seconds)
            deadline = now + max(linger, 0.0)
            hard = now + MAX_GATHER_SECONDS
            while (left := (hard if self._arriving > 0 else deadline) - time.monotonic()) > 0:
                self._gather.wait(left)
        try:
            covered, file = self._collect()
            if covered > self.durable_seq:
                began = time.monotonic()
                file.sync()
                self._last_sync_seconds = time.monotonic() - began
                self._last_batch = covered - self.durable_seq
                self.syncs += 1
            ok = True
        except BaseException as exc:
            with self._cond:
                self.error = exc
            raise
        finally:
            with self._cond:
                self._leading = False
                if ok and covered > self.durable_seq:
                    self.durable_seq = covered
                retired, self._retired = self._retired, []
                self._cond.notify_all()
            for f in retired:
                f.close()

    def mark_durable(self, seq: int) -> None:
        """Record that someone else synced everything up to ``seq`` (segment rotation)."""
        with self._cond:
            if seq > self.durable_seq:
                self.durable_seq = seq
                self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            if self.error is None:
                self.error = exc
            self._cond.notify_all()

    def retire(self, file: _Closable) -> None:
        """Close a replaced segment file once no leader can still be syncing it."""
        with self._cond:
            if self._leading:
                self._retired.append(file)
                return
        file.close()


class IntervalSyncer(threading.Thread):
    """``wal_sync="interval"``: flush and fdatasync every ``interval`` seconds when needed."""

    def __init__(self, commit: GroupCommit, interval: float, last_seq: Callable[[], int]) -> None:
        super().__init__(name="banyanstore-log-sync", daemon=True)
        self._commit = commit
        self._interval = interval
        self._last_seq = last_seq
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self._interval):
            try:
                self._commit.wait_durable(self._last_seq())
            except Exception as exc:  # poisoned: appends report it; nothing more to do here
                _log.error("background log sync failed, stopping interval syncs: %s", exc)
                return

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join()
