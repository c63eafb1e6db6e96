"""Group commit: concurrent synced appends share fdatasyncs; appends never wait for one."""

from __future__ import annotations

import _thread
import contextlib
import errno
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from log_helpers import open_log, payload

from banyanstore.errors import StorageIOError
from banyanstore.io.faults import FaultEnv
from banyanstore.io.posix import PosixEnv
from banyanstore.log import commit as commit_module
from banyanstore.log.commit import GroupCommit


def test_concurrent_synced_appends_share_syncs(real_env_dir):
    env, root = real_env_dir
    threads, per_thread = 8, 150
    with open_log(env, root) as log:
        start = threading.Barrier(threads)
        seqs: list[list[int]] = [[] for _ in range(threads)]

        def worker(i: int) -> None:
            start.wait()
            for _ in range(per_thread):
                seq = log.append(payload(i), sync=True)
                assert log.durable_seq >= seq  # durable when append returns
                seqs[i].append(seq)

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        st = log.stats()
    total = threads * per_thread
    assert sorted(s for lst in seqs for s in lst) == list(range(1, total + 1))
    assert st["sync_waits"] <= total
    # Without group commit every append would need its own fdatasync.
    assert st["group_commit_batches"] < total / 2, st


class _HeldSyncEnv(PosixEnv):
    """Once armed, the next fdatasync announces itself (``entered``) and waits for
    ``release``: the test looks at what happens while it runs, whatever the machine's speed."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered, self.release = threading.Event(), threading.Event()

    def open_mapped(self, path, *, create=False):  # type: ignore[no-untyped-def]
        f = super().open_mapped(path, create=create)
        real = f.sync

        def held() -> None:
            if self.armed:
                self.armed = False
                self.entered.set()
                self.release.wait(60)
            real()
        f.sync = held  # type: ignore[method-assign]
        return f


def test_appends_proceed_while_a_sync_runs(tmp_path):
    # (It used to sleep 0.05 s for the leader to be "inside its fdatasync" and time the
    # appends against a 0.3 s sync: on a slow or loaded machine it failed, or passed
    # without a sync running.)  Now the sync is held until the appends have returned.
    env = _HeldSyncEnv()
    with open_log(env, str(tmp_path)) as log:
        env.armed = True
        syncer = threading.Thread(target=log.append, args=(b"synced",), kwargs={"sync": True})
        syncer.start()
        try:
            assert env.entered.wait(30), "the synced append never reached its fdatasync"
            appender = threading.Thread(target=lambda: [log.append(payload(i), sync=False)
                                                        for i in range(100)])
            appender.start()
            appender.join(30)
            assert not appender.is_alive(), "unsynced appends waited for the running sync"
            assert log.last_seq == 101
            assert log.durable_seq == 0  # the sync is still running
        finally:
            env.release.set()
            syncer.join(30)
        assert not syncer.is_alive()
        assert log.durable_seq >= 1


def test_wait_durable_outside_the_callers_lock(real_env_dir):
    """The LSM pattern: append under its own lock, wait for durability after releasing it."""
    env, root = real_env_dir
    with open_log(env, root) as log:
        mu = threading.Lock()
        done: list[int] = []

        def writer() -> None:
            for _ in range(50):
                with mu:
                    seq = log.append(b"wal record", sync=False)
                log.wait_durable(seq)
                assert log.durable_seq >= seq
                done.append(seq)

        ts = [threading.Thread(target=writer) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert sorted(done) == list(range(1, 201))
        assert log.sync(upto_seq=10) >= 200


def test_a_failed_group_sync_fails_every_waiter_and_loses_no_acknowledged_record(real_env_dir):
    """EIO on one fdatasync while 8 writers wait: each unacknowledged append raises a
    StorageIOError (none hangs), later appends refuse, and after reopen every
    acknowledged record is there."""
    env, root = real_env_dir
    fenv = FaultEnv(env)
    rule = fenv.inject("sync", errno.EIO, path_contains=".log", after=20)
    acked: list[set[int]] = [set() for _ in range(8)]
    failures: list[BaseException] = []
    log = open_log(fenv, root)

    def writer(i: int) -> None:
        for _ in range(200):
            try:
                acked[i].add(log.append(payload(i), sync=True))
            except StorageIOError as exc:
                failures.append(exc)
                return

    ts = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in ts), "a writer hung after the failed sync"
    assert rule.fired == 1 and len(failures) == 8
    with pytest.raises(StorageIOError):
        log.append(b"after the failure", sync=False)
    with contextlib.suppress(StorageIOError):
        log.close()
    fenv.clear()
    with open_log(env, root) as again:
        present = {seq for seq, _ in again.read()}
    assert set().union(*acked) <= present


class _Gate:
    """A file whose syncs block until ``go`` is set; ``entered`` says a sync began."""

    def __init__(self) -> None:
        self.entered, self.go = threading.Event(), threading.Event()

    def sync(self) -> None:
        self.entered.set()
        assert self.go.wait(30)


class _InTheWindow:
    """A retired file: the old leader closes it right after handing the lead on, in
    its own thread, before the promoted waiter (which needs the GIL) runs.  So its
    ``close`` lands exactly between a promotion and the promoted waiter's wake-up."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action

    def close(self) -> None:
        self.action()


def _started(target: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the scenario did not reach its next step"
        time.sleep(0.001)


def _leader_syncing_record_one(gc: GroupCommit, gate: _Gate, last: list[int]) -> threading.Thread:
    """Start leader A, whose round covers record 1 and blocks in its sync; then
    records 2 and 3 are written (their writers park next)."""
    a = _started(lambda: gc.wait_durable(1))
    assert gate.entered.wait(30)
    last[0] = 3
    return a


def test_a_promoted_waiter_leads_even_when_a_rotation_made_its_record_durable():
    """The group-commit hang, deterministically: A's round covers record 1 and promotes
    B (seq 2); a segment rotation then marks everything up to 2 durable before B
    wakes.  B used to return at once without leading or handing on, so C (seq 3)
    stayed parked forever behind a lead nobody held."""
    gate, last = _Gate(), [1]
    gc = GroupCommit(lambda: (last[0], gate))
    threads = [_leader_syncing_record_one(gc, gate, last)]
    threads.append(_started(lambda: gc.wait_durable(2)))
    _until(lambda: gc.waits == 2)
    threads.append(_started(lambda: gc.wait_durable(3)))
    _until(lambda: gc.waits == 3)
    gc.retire(_InTheWindow(lambda: gc.mark_durable(2)))  # the rotation, between promotion and wake
    gate.go.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), f"a waiter hung: {gc!r}"
    assert gc.durable_seq == 3 and gc.syncs == 2
    gc.wait_durable(3)  # and the commit is idle again: a later caller does not hang either


class _WakesInterrupted:
    """The parked lock of a waiter that Ctrl-C hits as it wakes: after the old leader
    promoted it (released this lock), before it ran a line of its own -- where a real
    KeyboardInterrupt surfaces, at the first bytecode after the blocking acquire.

    Raised here rather than sent with ``_thread.interrupt_main``: that one is handled
    whenever the main thread next runs bytecode, so a loaded machine that delays the
    old leader past the promoted waiter's linger moved it out of the window -- into
    the waiter's round (poisoning the commit) or past the test (a stray Ctrl-C for
    the rest of the session)."""

    def __init__(self, lock: _thread.LockType) -> None:
        self._lock = lock
        self._acquires = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        self._acquires += 1
        if self._acquires == 2:  # the first locks it to park, the second waits out the park
            raise KeyboardInterrupt
        return got

    def release(self) -> None:
        self._lock.release()


def test_an_interrupted_promoted_waiter_passes_the_lead_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter promoted to leader that is interrupted (KeyboardInterrupt) before it
    leads must hand the lead to the next parked waiter, or that one would wait forever.
    Here the main thread is that waiter (B, seq 2; only it can get KeyboardInterrupt)."""
    gate, last = _Gate(), [1]
    gc = GroupCommit(lambda: (last[0], gate))
    threads = [_leader_syncing_record_one(gc, gate, last)]
    real_allocate = commit_module.allocate_lock
    parked: list[_WakesInterrupted] = []

    def allocate() -> Any:  # B's own lock, the first one the main thread allocates
        lock = real_allocate()
        if threading.current_thread() is not threading.main_thread() or parked:
            return lock
        parked.append(_WakesInterrupted(lock))
        return parked[0]

    monkeypatch.setattr(commit_module, "allocate_lock", allocate)

    def then_c() -> None:
        _until(lambda: gc.waits == 2)  # B (the main thread) is parked
        threads.append(_started(lambda: gc.wait_durable(3)))
        _until(lambda: gc.waits == 3)
        gate.go.set()  # A's round ends: it covers record 1 and promotes B

    helper = _started(then_c)
    with pytest.raises(KeyboardInterrupt):
        gc.wait_durable(2)
    helper.join(30)
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), f"C hung: {gc!r}"
    assert gc.durable_seq == 3 and gc.error is None and gc.syncs == 2  # C led the next round
    assert parked[0]._acquires == 2
    gc.wait_durable(3)
