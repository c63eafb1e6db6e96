"""Group commit: one fdatasync makes every record written before it durable.

Threads that need record ``seq`` durable call :meth:`GroupCommit.wait_durable`.
If no sync is running, the caller becomes the *leader*: it takes the Log's
append lock just long enough to hand the buffer to the file and note the last
seq written, releases it, and runs ONE fdatasync outside every lock.  Everybody
else parks on a lock of its own; when the leader finishes it releases the ones
its sync covered and *promotes* the first one it did not cover, who leads the
next round.  Under N concurrent synced writers the syncs per record fall
towards 1/N, and appends never wait for a sync.

Why it is shaped like this (measured on a 2-vCPU VM, ``benchmarks/bench_log.py``):

* Waking a parked thread and getting it the GIL costs ~20-25 us; with 8 synced
  writers those wake-ups, serialised by the GIL, take about as long as the
  fdatasync itself.  So the per-waiter path is a handful of C calls: one
  preallocated lock each, no ``Condition`` (its Python-level ``wait`` costs
  several microseconds more per waiter), and exactly one wake per waiter.
* A leader whose last round served several writers *lingers* until as many
  are parked again or ``LINGER`` x the last sync time has passed: without it
  rounds alternate between halves of the writers and every record pays for
  twice the syncs.  A lone writer never lingers.
* ``time.sleep(0)`` is not a cheap yield here: it costs ~55 us (timer slack).

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
from _thread import LockType, allocate_lock
from collections.abc import Callable
from typing import Protocol

from ..errors import StorageIOError

__all__ = ["GroupCommit", "IntervalSyncer", "ALREADY_SYNCED"]

_log = logging.getLogger("banyanstore.log")
#: longest a leader waits for the writers of its last round to park again
MAX_LINGER_SECONDS = 0.002
#: ... as a fraction of the last sync's duration
LINGER = 1.0


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
    """Leader/follower durability over ``collect() -> (last seq written, file to sync)``.

    Invariant: a waiter is parked in ``_waiters`` only while ``_leading`` is true,
    and every parked waiter is released exactly once: covered, failed or promoted.
    """

    def __init__(self, collect: Callable[[], tuple[int, _Syncable]], durable_seq: int = 0,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._collect = collect
        self._on_error = on_error  # told once a leader's write or sync failed
        self._mu = threading.Lock()
        self._leading = False
        self._waiters: list[tuple[int, LockType]] = []  # (seq, parked lock), seq ascending
        self._want = 0  # a lingering leader is woken when this many waiters are parked
        self._gathered: LockType | None = None
        self._retired: list[_Closable] = []
        self.durable_seq = durable_seq
        self.error: BaseException | None = None
        self.syncs = 0  # fdatasyncs run by leaders
        self.waits = 0  # wait_durable calls that had to wait for (or run) a sync
        self._last_sync_seconds = 0.0
        self._last_writers = 0  # leader + waiters the last round served

    def check(self) -> None:
        """Raise if an earlier write or sync failed."""
        if self.error is not None:
            raise StorageIOError(f"the log is unusable after an earlier IO error ({self.error}); "
                                 "close and reopen it") from self.error

    def wait_durable(self, seq: int) -> None:
        """Return once record ``seq`` (and every one before it) is durable."""
        if self.durable_seq >= seq:  # racy read of an int that only grows: safe fast path
            return
        with self._mu:
            self.check()
            if self.durable_seq >= seq:
                return
            self.waits += 1
            parked = None
            if self._leading:
                parked = allocate_lock()
                parked.acquire()
                self._waiters.append((seq, parked))
                if self._want and len(self._waiters) >= self._want:
                    self._want = 0
                    self._gathered.release()  # type: ignore[union-attr]
            else:
                self._leading = True
        if parked is not None:
            try:
                parked.acquire()
            except BaseException:
                self._abandon(seq, parked)
                raise
            if self.durable_seq >= seq:
                return
            self.check()
            # promoted: lead the next round
        self._lead()

    def _abandon(self, seq: int, parked: LockType) -> None:
        """An interrupted waiter leaves; if it had just been promoted, pass the lead on."""
        with self._mu:
            if (seq, parked) in self._waiters:
                self._waiters.remove((seq, parked))
            elif self.durable_seq < seq and self.error is None:
                self._hand_over_locked()

    def _lead(self) -> None:
        covered, ok = 0, False
        try:
            self._linger()
            covered, file = self._collect()
            if covered > self.durable_seq:
                began = time.monotonic()
                file.sync()
                self._last_sync_seconds = time.monotonic() - began
                self.syncs += 1
            ok = True
        except BaseException as exc:
            with self._mu:
                if self.error is None:
                    self.error = exc
            if self._on_error is not None:
                self._on_error(exc)
            raise
        finally:
            with self._mu:
                if ok and covered > self.durable_seq:
                    self.durable_seq = covered
                self._last_writers = len(self._waiters) + 1
                self._release_locked()
                retired, self._retired = self._retired, []
            for f in retired:
                f.close()

    def _linger(self) -> None:
        """Give the writers the last round served a moment to park again and share this sync."""
        if self._last_writers < 2:
            return
        with self._mu:
            if len(self._waiters) + 1 >= self._last_writers:
                return
            self._want = self._last_writers - 1
            gathered = self._gathered = allocate_lock()
            gathered.acquire()
        try:
            gathered.acquire(timeout=min(MAX_LINGER_SECONDS, LINGER * self._last_sync_seconds))
        finally:
            with self._mu:
                self._want = 0

    def _release_locked(self) -> None:
        """Wake every waiter the durable seq (or an error) now settles; promote the next."""
        waiters = self._waiters
        if self.error is not None:
            self._waiters = []
            cut = len(waiters)
        else:
            cut = 0
            durable = self.durable_seq
            while cut < len(waiters) and waiters[cut][0] <= durable:
                cut += 1
            self._waiters = waiters[cut:]
        for _, parked in waiters[:cut]:
            parked.release()
        self._hand_over_locked()

    def _hand_over_locked(self) -> None:
        if self._waiters:
            self._waiters.pop(0)[1].release()  # promoted: it leads, _leading stays true
        else:
            self._leading = False

    def mark_durable(self, seq: int) -> None:
        """Record that someone else synced everything up to ``seq`` (segment rotation)."""
        with self._mu:
            if seq > self.durable_seq:
                self.durable_seq = seq
            # parked waiters exist only under a running leader, which releases them

    def fail(self, exc: BaseException) -> None:
        """Poison the commit: parked waiters and every later call raise ``exc``."""
        with self._mu:
            if self.error is None:
                self.error = exc
            waiters, self._waiters = self._waiters, []
            for _, parked in waiters:
                parked.release()

    def retire(self, file: _Closable) -> None:
        """Close a replaced segment file once no leader can still be syncing it."""
        with self._mu:
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
