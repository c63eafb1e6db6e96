"""Ctrl-C in a group-commit leader does not disable the Log.

A ``KeyboardInterrupt`` raised in the leader's linger or just before its fdatasync
used to be recorded as the commit's error: the Log then refused every append ("the
log is unusable after an earlier IO error ()") though no sync had failed.  Now the
interrupted caller gets its KeyboardInterrupt, its record's durability is merely
unconfirmed, the round's waiters are handed on to a new leader, and only a failed
write or sync (``OSError``) poisons the Log (fsync-gate: it must still).

The interrupts are raised deterministically, from the code the leader runs, in the
main thread -- where a real Ctrl-C surfaces.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable

import pytest
from log_helpers import open_log, payload

from banyanstore.errors import StorageIOError
from banyanstore.io.faults import FaultEnv
from banyanstore.io.memory import MemoryEnv
from banyanstore.log.commit import GroupCommit

ROOT = "/r"


class InterruptEnv(FaultEnv):
    """A FaultEnv whose next segment sync in the main thread, once ``armed``, raises
    KeyboardInterrupt instead of running (Ctrl-C just before the leader's fdatasync)."""

    def __init__(self, inner: MemoryEnv) -> None:
        super().__init__(inner)
        self.armed = False
        self.interrupts = 0

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if (self.armed and op == "sync" and paths[0].endswith(".log")
                and threading.current_thread() is threading.main_thread()):
            self.armed = False
            self.interrupts += 1
            raise KeyboardInterrupt
        super().hook(op, paths, nbytes)


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the scenario did not reach its next step"
        time.sleep(0.001)


def _durable_records(disk: MemoryEnv) -> set[int]:
    """The seqs a power loss now would keep (a copy of the disk, crashed)."""
    after = disk.clone()
    after.crash()
    with open_log(after, ROOT) as log:
        return {seq for seq, _ in log.read()}


def test_ctrl_c_just_before_the_leaders_sync_leaves_the_log_usable() -> None:
    disk = MemoryEnv()
    disk.mkdir(ROOT)
    env = InterruptEnv(disk)
    log = open_log(env, ROOT)
    acked = {log.append(payload(i), sync=True) for i in range(1, 4)}
    env.armed = True
    with pytest.raises(KeyboardInterrupt):
        log.append(payload(4), sync=True)  # the leader of its own round, interrupted
    assert env.interrupts == 1
    acked.add(log.append(payload(5), sync=False))  # before the fix: StorageIOError, unusable
    acked.add(log.append(payload(6), sync=True))
    assert log.sync() == 6
    assert acked <= _durable_records(disk)
    log.close()


def test_a_failed_sync_after_a_ctrl_c_still_poisons_the_log() -> None:
    """fsync-gate semantics are unchanged: a sync that fails (EIO) makes the Log
    unusable until it is reopened, also after an earlier harmless interrupt."""
    disk = MemoryEnv()
    disk.mkdir(ROOT)
    env = InterruptEnv(disk)
    log = open_log(env, ROOT)
    acked = {log.append(payload(1), sync=True)}
    env.armed = True
    with pytest.raises(KeyboardInterrupt):
        log.append(payload(2), sync=True)
    acked.add(log.append(payload(3), sync=True))
    rule = env.inject("sync", errno.EIO, path_contains=".log")
    with pytest.raises(StorageIOError):
        log.append(payload(4), sync=True)
    assert rule.fired == 1
    for attempt in (lambda: log.append(payload(5), sync=False), log.sync):
        with pytest.raises(StorageIOError, match="unusable|failed"):
            attempt()
    env.clear()
    try:
        log.close()
    except StorageIOError:
        pass
    assert acked <= _durable_records(disk)


class _Synced:
    def __init__(self) -> None:
        self.syncs = 0

    def sync(self) -> None:
        self.syncs += 1


def test_ctrl_c_in_the_leaders_linger_hands_its_waiters_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The main thread leads; while it lingers, C (seq 2) parks behind it; Ctrl-C hits
    the main thread there.  C must be handed the lead and sync its own record, and the
    commit must stay usable (before the fix C got StorageIOError and so did everyone
    after)."""
    last, file = [1], _Synced()
    gc = GroupCommit(lambda: (last[0], file))
    outcome: list[BaseException | None] = []

    def c() -> None:
        try:
            gc.wait_durable(2)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 -- reported by the assertion below
            outcome.append(exc)

    threads: list[threading.Thread] = []
    real_linger = gc._linger

    def linger() -> None:
        if threading.current_thread() is not threading.main_thread() or threads:
            return real_linger()
        last[0] = 2  # C's record is written; C parks behind the lingering leader
        threads.append(threading.Thread(target=c, daemon=True))
        threads[0].start()
        _until(lambda: gc.waits == 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(gc, "_linger", linger)
    with pytest.raises(KeyboardInterrupt):
        gc.wait_durable(1)
    threads[0].join(30)
    assert not threads[0].is_alive(), f"C hung: {gc!r}"
    assert outcome == [None] and gc.error is None
    assert gc.durable_seq == 2 and gc.syncs == file.syncs == 1  # C led, covering 1 and 2
    last[0] = 3
    gc.wait_durable(3)
    assert gc.durable_seq == 3 and gc.syncs == 2
