"""Group commit: concurrent synced appends share fdatasyncs; appends never wait for one."""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from _thread import allocate_lock

import pytest
from log_helpers import open_log, payload

from banyanstore.errors import StorageIOError
from banyanstore.io.faults import FaultEnv
from banyanstore.io.posix import PosixEnv
from banyanstore.log.commit import ALREADY_SYNCED, GroupCommit


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


class _SlowSyncEnv(PosixEnv):
    """fdatasync takes 0.3 s, so the test can look at what happens meanwhile."""

    def open_writable(self, path, *, append=False):  # type: ignore[no-untyped-def]
        f = super().open_writable(path, append=append)
        real = f.sync

        def slow() -> None:
            if not self.fast:
                time.sleep(0.3)
            real()
        f.sync = slow  # type: ignore[method-assign]
        return f

    fast = True


def test_appends_proceed_while_a_sync_runs(tmp_path):
    env = _SlowSyncEnv()
    with open_log(env, str(tmp_path)) as log:
        env.fast = False
        syncer = threading.Thread(target=log.append, args=(b"synced",), kwargs={"sync": True})
        syncer.start()
        time.sleep(0.05)  # the leader is inside its fdatasync now
        t0 = time.monotonic()
        for i in range(100):
            log.append(payload(i), sync=False)
        assert time.monotonic() - t0 < 0.2, "unsynced appends waited for the running sync"
        assert log.durable_seq == 0
        syncer.join()
        assert log.durable_seq >= 1
        env.fast = True


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


def test_an_interrupted_promoted_waiter_passes_the_lead_on():
    """A waiter promoted to leader that dies (KeyboardInterrupt) before leading must
    hand the lead to the next parked waiter, or that one would wait forever."""
    gc = GroupCommit(lambda: (0, ALREADY_SYNCED))
    promoted, next_in_line = allocate_lock(), allocate_lock()
    next_in_line.acquire()
    gc._leading, gc._waiters = True, [(7, next_in_line)]
    gc._abandon(5, promoted)  # not parked any more, not durable, no error: it was promoted
    assert next_in_line.acquire(blocking=False), "the next waiter was not promoted"
    assert gc._leading and gc._waiters == []
    gc._abandon(9, allocate_lock())  # the last one leaves too: nobody leads now
    assert not gc._leading
