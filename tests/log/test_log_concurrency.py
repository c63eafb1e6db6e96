"""Races of the Log under many threads: group commit across segment rotations.

Each test runs a race for a bounded time (1.5 s; a minute with
``BANYANSTORE_SOAK=1``; ``BANYANSTORE_RACE_SECONDS=N`` sets it) with daemon
threads, and fails -- rather than hangs -- if a thread has not finished some
seconds after the deadline: a thread parked forever in group commit shows up
as a failure naming the state it is stuck in.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable

from banyanstore.io.posix import PosixEnv
from banyanstore.log import Log
from banyanstore.log.commit import GroupCommit

SOAK = os.environ.get("BANYANSTORE_SOAK", "") not in ("", "0")
#: how long each race runs
RACE_SECONDS = float(os.environ.get("BANYANSTORE_RACE_SECONDS", 60.0 if SOAK else 1.5))
#: how long after the race's end a thread may still take to finish before it counts as hung
GRACE_SECONDS = 20.0
TMPFS = "/dev/shm"


def run_threads(count: int, body: Callable[[int], None], *, describe: Callable[[], str]) -> None:
    """Run ``body(i)`` in ``count`` daemon threads; fail if one raises or has not
    returned ``GRACE_SECONDS`` after ``RACE_SECONDS``."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            body(i)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + RACE_SECONDS + GRACE_SECONDS
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = sum(t.is_alive() for t in threads)
    assert hung == 0, f"{hung} of {count} threads hung: {describe()}"
    if errors:
        raise errors[0]




class _NoopFile:
    def sync(self) -> None:
        pass


def test_group_commit_with_rotation_marks_never_hangs():
    """The protocol alone, at full speed: 8 threads wait for their seqs while every
    7th append plays a segment rotation (``mark_durable`` under the append lock).

    A waiter promoted to leader used to return without leading when a rotation had
    made its own record durable meanwhile, leaving ``_leading`` set with nobody
    leading: every later waiter parked forever (within a second or two here)."""
    mu = threading.Lock()
    last = [0]
    gc = GroupCommit(lambda: (last[0], _NoopFile()))
    stop = time.monotonic() + RACE_SECONDS

    def append() -> int:
        with mu:
            last[0] += 1
            if last[0] % 7 == 0:
                gc.mark_durable(last[0])  # what Log._rotate_locked does after its barrier sync
            return last[0]

    def writer(_i: int) -> None:
        while time.monotonic() < stop:
            seq = append()
            gc.wait_durable(seq)
            assert gc.durable_seq >= seq

    run_threads(8, writer, describe=lambda: repr(gc))
    assert gc.durable_seq >= last[0] - 8


def _synced_appends_across_rotations(log: Log, threads: int) -> None:
    stop = time.monotonic() + RACE_SECONDS
    acked: list[list[int]] = [[] for _ in range(threads)]

    def writer(i: int) -> None:
        while time.monotonic() < stop:
            seq = log.append(b"x" * 100, sync=True)
            assert log.durable_seq >= seq
            acked[i].append(seq)

    run_threads(threads, writer, describe=lambda: repr(log.stats()))
    seqs = sorted(s for a in acked for s in a)
    assert seqs == list(range(1, len(seqs) + 1))
    assert log.stats()["segments"] > 3, "the race needs rotations"


def test_synced_appends_across_rotations(tmp_path):
    """The original report: synced appends from many threads, 64 KiB segments, on a
    tmpfs (where fdatasync is nearly free, so rounds and rotations are frequent; the
    test's own directory elsewhere).  Before the fix 16 threads hung within a second."""
    root = tempfile.mkdtemp(prefix="banyanstore-test-", dir=TMPFS) if os.path.isdir(TMPFS) else str(tmp_path)
    env = PosixEnv()
    try:
        with Log.open(root, env=env, segment_size=64 * 1024, wal_sync="never") as log:
            _synced_appends_across_rotations(log, 16)
    finally:
        env.close()
        shutil.rmtree(root, ignore_errors=True)
