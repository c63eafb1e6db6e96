"""Group commit: one fdatasync makes every record written before it durable.

Threads that need record ``seq`` durable call :meth:`GroupCommit.wait_durable`.
If no sync is running, the caller becomes the *leader*: it takes the Log's
append lock just long enough to hand the buffer to the file and note the last
seq written, releases it, and runs ONE fdatasync outside every lock.  Everybody
else parks on a lock of its own; when the leader finishes it releases the ones
its sync covered and *promotes* the first one it did not cover, who leads the
next round.  Under N concurrent synced writers the syncs per record fall
towards 1/N, and appends never wait for a sync.  asyncio tasks
(:meth:`GroupCommit.wait_durable_async`) wait in the same rounds as futures;
rounds in which only tasks wait are led by one worker thread (the *runner*).

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
raises the same error until the Log is reopened and recovery has run.  An
interrupt (Ctrl-C: ``KeyboardInterrupt``) of the leader in its linger or around
its sync does not: the interrupted caller gets it, its record's durability is
unconfirmed, and the round's waiters are handed on to a new leader as usual.

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
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    # (imported where a task first waits: asyncio and the ssl it loads cost a program
    # that never awaits about 7 MiB of memory)
    import asyncio

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


class _Task:
    """A parked asyncio waiter: a future of ``loop``, settled from whichever thread
    ends the round.  Never promoted: a task cannot block in a round (see RUNNER)."""

    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self.loop, self.future = loop, future

    def settle(self, error: BaseException | None) -> None:
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, error)
        except RuntimeError:  # its loop is closed: nobody awaits the future any more
            pass


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the task was cancelled meanwhile
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


_RUNNER = object()
"""The baton of the worker thread that leads rounds on behalf of parked tasks."""

_Waker = LockType | _Task


def _poisons(exc: BaseException, writing: bool) -> bool:
    """Whether an exception that ended a round makes the commit unusable.

    A failed write or sync (``OSError``) does: the data's fate on disk is unknown.
    So does anything that stopped ``collect()`` while it handed the buffer to the
    file (``writing``): how much of it reached the file is unknown, and the Log
    refuses appends after it anyway.  Anything else -- a ``KeyboardInterrupt`` in
    the linger or around the sync -- only leaves this round's records unconfirmed
    (like any interrupted call): nothing failed, and the next leader syncs them.

    >>> _poisons(OSError(5, "EIO"), False), _poisons(KeyboardInterrupt(), False)
    (True, False)
    """
    return writing or isinstance(exc, OSError)


class GroupCommit:
    """Leader/follower durability over ``collect() -> (last seq written, file to sync)``,
    for threads (:meth:`wait_durable`) and asyncio tasks (:meth:`wait_durable_async`).

    The protocol, and why nobody waits forever
    ------------------------------------------
    State, all read and written under ``_mu`` (``durable_seq`` is also read
    without it, as a hint that can only be stale-low):

    * ``_leading``: a round of group commit is owned by some thread;
    * ``_baton``: the parked lock of the thread that owns it (its *baton*),
      ``_RUNNER`` when the runner does (see Tasks), or ``None`` when nobody leads;
    * ``_waiters``: ``(seq, parked lock or task)`` of every waiter, in arrival order;
    * ``durable_seq`` (only grows) and ``error`` (once set, stays set).

    Every caller that must wait allocates its own lock.  Under ``_mu`` it either
    takes the lead (``_leading`` was false: it sets it and holds its own lock as
    the baton, unlocked) or parks (``_leading`` was true: it appends its locked
    lock to ``_waiters`` and blocks on it outside ``_mu``).

    I1 -- one owner.  ``_leading`` is true exactly when one thread owns the lead,
         and ``_baton`` is that thread's lock.  Ownership is created only with
         ``_leading`` false -> true, and moves only in :meth:`_hand_over_locked`,
         which gives it to the first parked thread (setting ``_baton`` to its lock
         *before* releasing it), or with only tasks parked to the runner (see
         Tasks), or, with nobody parked, sets ``_leading`` false.
    I2 -- the owner always ends its ownership.  A thread that finds
         ``_baton is`` its lock runs :meth:`_lead`, whose ``finally`` hands over;
         if it is interrupted before (or instead of) that, :meth:`_give_up` sees
         the baton is still its own and hands over for it.  Nothing else --
         neither ``durable_seq`` having passed its seq (a segment rotation's
         :meth:`mark_durable`) nor an error -- lets an owner return without
         handing over.  (The old code let a promoted waiter whose record had
         meanwhile become durable return without leading: ``_leading`` stayed
         true with no leader and every later waiter parked forever.)
    I3 -- parked implies led.  A waiter is appended to ``_waiters`` only while
         ``_leading`` is true, under the same ``_mu`` hold that read it; and
         ``_leading`` becomes false only when ``_waiters`` is empty (I1).  So
         while anyone is parked, some thread owns the lead, and by I2 it will
         hand over or end a round.
    I4 -- every parked waiter is released exactly once: removed from
         ``_waiters`` under ``_mu`` and then released -- as *covered*
         (``seq <= durable_seq``), *failed* (``error`` set) or *promoted*
         (``_baton`` is its lock).  It tells which by looking at ``_baton`` and
         ``durable_seq`` after waking, so a later change of ``durable_seq``
         cannot be mistaken for a promotion or vice versa.
    Liveness.  Each round's ``collect()`` runs after it began, and returns the
         last seq *written*; a waiter appended its record before it parked.  So
         any round that begins after a waiter parked covers it; the round running
         when it parked may not.  Rounds end (a sync returns or raises), and at
         each end the covered waiters are released and the next owner promoted
         (I2).  Hence a parked waiter is released within at most two rounds.
    Rotation.  :meth:`mark_durable` (the Log synced a sealed segment under its
         append lock) only raises ``durable_seq``; it never touches ``_waiters``
         or the lead.  Waiters it covers are released at the end of the current
         round (by I3 there is one while anyone is parked); a promoted waiter
         whose record it covered still leads its round -- cheaply, as
         ``collect()`` then reports nothing new to sync, or usefully, covering
         waiters parked behind it.
    Tasks.  An asyncio waiter (:meth:`wait_durable_async`) parks a :class:`_Task`
         instead of a lock and is never promoted -- it cannot block in a round.
         :meth:`_hand_over_locked` promotes the first parked *thread*; when only
         tasks are parked it gives the lead to the *runner*, one worker thread per
         commit (``_baton is _RUNNER``), which leads rounds until a thread can take
         over or nobody waits; a task arriving while nobody leads starts the
         runner the same way.  So I1-I3 and the liveness argument hold with
         "owner" read as "thread or runner", and tasks are settled (I4) through
         their loop.  Without tasks the runner never exists.
    Retired files.  A file replaced by rotation may still be being synced by the
         owner that collected it; :meth:`retire` defers its close to the end of
         the current round (or closes at once when nobody leads): any later round
         collects the new file, so nobody syncs the old one after that.
    """

    def __init__(self, collect: Callable[[], tuple[int, _Syncable]], durable_seq: int = 0,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._collect = collect
        self._on_error = on_error  # told once a leader's write or sync failed
        self._mu = threading.Lock()
        self._leading = False
        self._baton: LockType | object | None = None  # the lock of the thread owning the lead
        self._waiters: list[tuple[int, _Waker]] = []  # (seq, parked lock or task), in arrival order
        self._runner: ThreadPoolExecutor | None = None  # leads for tasks; made on first use
        self._want = 0  # a lingering leader is woken when this many waiters are parked
        self._gathered: LockType | None = None
        self._retired: list[_Closable] = []
        self.durable_seq = durable_seq
        self.error: BaseException | None = None
        self.syncs = 0  # fdatasyncs run by leaders
        self.waits = 0  # wait_durable calls that had to wait for (or run) a sync
        self._last_sync_seconds = 0.0
        self._last_writers = 0  # leader + waiters the last round served

    def __repr__(self) -> str:
        return (f"<GroupCommit durable_seq={self.durable_seq} leading={self._leading} "
                f"parked={len(self._waiters)} syncs={self.syncs} error={self.error!r}>")

    def check(self) -> None:
        """Raise if an earlier write or sync failed."""
        if self.error is not None:
            raise self._failure()

    def _failure(self) -> StorageIOError:
        err = self.error
        # A Ctrl-C inside an append or a rotation poisons the log as well (what reached the
        # segment is unknown); it is no IO error, and its str() is empty: name its type.
        what = "an earlier IO error" if isinstance(err, Exception) else "an interrupted write"
        exc = StorageIOError(f"the log is unusable after {what} ({str(err) or type(err).__name__}); "
                             "close and reopen it")
        exc.__cause__ = self.error
        return exc

    def wait_durable(self, seq: int) -> None:
        """Return once record ``seq`` (and every one before it) is durable."""
        if self.durable_seq >= seq:  # racy read of an int that only grows: safe fast path
            return
        with self._mu:
            self.check()
            if self.durable_seq >= seq:
                return
            self.waits += 1
            mine = allocate_lock()
            if self._leading:
                mine.acquire()
                self._waiters.append((seq, mine))
                if self._want and len(self._waiters) >= self._want:
                    self._want = 0
                    self._gathered.release()  # type: ignore[union-attr]
            else:
                self._leading, self._baton = True, mine  # the lead is ours (unlocked baton)
        try:
            mine.acquire()  # parked until released; at once when we took the lead ourselves
            if self._baton is not mine:  # released as covered or failed (I4)
                if self.durable_seq >= seq:
                    return
                raise self._failure()
            self._lead()  # the lead is ours: run a round, then hand over (I2)
        except BaseException:
            self._give_up(seq, mine)
            raise

    def _give_up(self, seq: int, mine: LockType) -> None:
        """Leaving on an exception (KeyboardInterrupt while parked, a failed round):
        stop being parked, or hand on a lead we own but did not get to hand over."""
        with self._mu:
            if self._baton is mine:  # promoted, and interrupted before _lead's finally ran
                self._hand_over_locked()
                retired = self._take_retired_locked()
            else:
                if (seq, mine) in self._waiters:
                    self._waiters.remove((seq, mine))
                return
        for f in retired:
            f.close()

    def _lead(self) -> None:
        """Rounds, until the lead is handed over (a thread's: after one round)."""
        while self._round():
            pass

    def _round(self) -> bool:
        """One round: linger, collect, sync; then release who it covers and hand over.
        True if the lead stays with the caller (the runner) for another round."""
        covered, ok, again, writing = 0, False, False, False
        try:
            self.check()  # a failure while the lead was handed over: no round behind it
            self._linger()
            writing = True
            covered, file = self._collect()
            writing = False
            if covered > self.durable_seq:
                began = time.monotonic()
                file.sync()
                self._last_sync_seconds = time.monotonic() - began
                self.syncs += 1
            ok = True
        except BaseException as exc:
            if not _poisons(exc, writing):
                raise  # only this round's records are unconfirmed: the next leader syncs them
            with self._mu:
                first = self.error is None
                if first:
                    self.error = exc
            if first and self._on_error is not None:
                self._on_error(exc)
            raise
        finally:
            with self._mu:
                if ok and covered > self.durable_seq:
                    self.durable_seq = covered
                self._last_writers = len(self._waiters) + 1
                again = self._release_locked()
                retired = self._take_retired_locked()
            for f in retired:
                f.close()
        return again

    def _take_retired_locked(self) -> list[_Closable]:
        retired, self._retired = self._retired, []
        return retired

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

    def _release_locked(self) -> bool:
        """End of a round: wake every waiter the durable seq (or an error) settles,
        then hand the lead on (I1, I4); True if it stays with the runner."""
        waiters = self._waiters
        if self.error is not None:
            settled, self._waiters = waiters, []
        else:
            durable = self.durable_seq
            # All of them, not a prefix: a writer may park after a later seq's writer did.
            settled = [w for w in waiters if w[0] <= durable]
            if settled:
                self._waiters = [w for w in waiters if w[0] > durable]
        failed = self.error is not None
        for _, parked in settled:
            if isinstance(parked, _Task):
                parked.settle(self._failure() if failed else None)
            else:
                parked.release()  # never the baton (I4): they see it is not theirs
        return self._hand_over_locked()

    def _hand_over_locked(self) -> bool:
        """Give the lead to the first parked thread; else, with tasks parked, to the
        runner (True: the caller is the runner and keeps it); else end it."""
        waiters = self._waiters
        for i, (_, parked) in enumerate(waiters):
            if not isinstance(parked, _Task):
                del waiters[i]
                self._baton = parked  # set before the release: the waker reads it (I4)
                parked.release()
                return False
        if not waiters:
            self._leading, self._baton = False, None
            return False
        if self._baton is _RUNNER:
            return True
        self._start_runner_locked()
        return False

    def _start_runner_locked(self) -> None:
        self._baton = _RUNNER
        if self._runner is None:
            self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="banyanstore-log-commit")
        self._runner.submit(self._run_for_tasks)

    def _run_for_tasks(self) -> None:
        """The runner's job: lead rounds while only tasks wait (the lead is ours)."""
        try:
            self._lead()
        except BaseException as exc:  # the waiters got it as StorageIOError; the commit is poisoned
            _log.debug("log commit runner: round failed: %s", exc)

    async def wait_durable_async(self, seq: int) -> None:
        """:meth:`wait_durable` for asyncio: park this task as a future; a round led by a
        thread or by the runner settles it."""
        if self.durable_seq >= seq:
            return
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._mu:
            self.check()
            if self.durable_seq >= seq:
                return
            self.waits += 1
            self._waiters.append((seq, _Task(loop, future)))
            if self._want and len(self._waiters) >= self._want:
                self._want = 0
                self._gathered.release()  # type: ignore[union-attr]
            if not self._leading:
                self._leading = True
                self._start_runner_locked()
        await future

    def close(self) -> None:
        """Stop the runner (after its current round).  Call when no new waiter can come."""
        with self._mu:
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.shutdown(wait=True)

    def mark_durable(self, seq: int) -> None:
        """Record that someone else synced everything up to ``seq`` (segment rotation,
        close).  Parked waiters it covers are released when the current round ends."""
        with self._mu:
            if seq > self.durable_seq:
                self.durable_seq = seq

    def fail(self, exc: BaseException) -> None:
        """Poison the commit: parked waiters and every later call raise ``exc``.

        The owner of the lead (if any) is not parked: it finds the error when it
        leads and hands over then (I2)."""
        with self._mu:
            if self.error is None:
                self.error = exc
            waiters, self._waiters = self._waiters, []
        for _, parked in waiters:
            if isinstance(parked, _Task):
                parked.settle(self._failure())
            else:
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
