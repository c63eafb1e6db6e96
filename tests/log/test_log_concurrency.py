"""Races of the Log under many threads: group commit across segment rotations,
readers beside truncation.

Each test runs a race for a bounded time (1.5 s; a minute with
``BANYANSTORE_SOAK=1``; ``BANYANSTORE_TEST_RACE_SECONDS=N`` sets it) with daemon
threads, and fails -- rather than hangs -- if a thread has not finished some
seconds after the deadline: a thread parked forever in group commit shows up
as a failure naming the state it is stuck in.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable

import pytest
from log_helpers import open_log, payload, segments

from banyanstore.errors import LogRangeError
from banyanstore.io.posix import PosixEnv
from banyanstore.log import Log
from banyanstore.log.commit import GroupCommit

SOAK = os.environ.get("BANYANSTORE_SOAK", "") not in ("", "0")
#: how long each race runs
RACE_SECONDS = float(os.environ.get("BANYANSTORE_TEST_RACE_SECONDS", 60.0 if SOAK else 1.5))
MIN_TRUNCATIONS = 3
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


def _readers_beside_truncation(log: Log, readers: int) -> dict[str, int]:
    """One writer appends and keeps cutting the log to its last ~3 segments while
    ``readers`` threads get and scan records that may be truncated under them.

    Every record a reader sees must be the right one; a record truncated away may
    only be reported as :class:`LogRangeError`.  Returns counts of what happened."""
    # The race runs RACE_SECONDS and at least MIN_TRUNCATIONS truncations: on a loaded
    # machine the writer may get too little CPU in the time to truncate at all.
    stop, give_up = time.monotonic() + RACE_SECONDS, time.monotonic() + 20 * RACE_SECONDS
    counts = {"gets": 0, "scanned": 0, "range_errors": 0, "truncations": 0}
    done = threading.Event()

    def writer() -> None:
        try:
            while (time.monotonic() < stop or counts["truncations"] < MIN_TRUNCATIONS) \
                    and time.monotonic() < give_up:
                log.append_many([payload(s) for s in range(log.last_seq + 1, log.last_seq + 51)])
                if log.stats()["segments"] > 4:
                    counts["truncations"] += log.truncate_before(log.last_seq - 1500)
        finally:
            done.set()

    def reader(i: int) -> None:
        rng = random.Random(i)
        while not done.is_set():
            first, last = log.first_seq, log.last_seq
            if last < first:
                continue
            try:
                if rng.random() < 0.5:
                    seq = rng.randint(first, last)
                    assert log.get(seq) == payload(seq), seq
                    counts["gets"] += 1
                else:
                    expect = rng.randint(first, last)
                    for seq, record in log.read(expect):
                        assert (seq, record) == (expect, payload(expect))
                        expect += 1
                        counts["scanned"] += 1
                        if expect % 97 == 0:
                            time.sleep(0)  # let the writer truncate under this scan
                        if counts["scanned"] % 500 == 0:
                            break  # and leave the generator suspended mid-segment
            except LogRangeError:
                counts["range_errors"] += 1

    run_threads(readers + 1, lambda i: writer() if i == readers else reader(i),
                describe=lambda: repr(log.stats()))
    return counts


def test_readers_beside_truncate_before_see_records_or_log_range_error(env_dir):
    """``truncate_before`` used to close and delete segments under
    concurrent readers, who got CorruptionError("record N is missing"), EBADF, or --
    from a descriptor number reused for another segment -- "record seq X where Y
    was expected".  Truncated records must give LogRangeError, nothing else."""
    env, root = env_dir
    with open_log(env, root) as log:
        counts = _readers_beside_truncation(log, readers=4)
    assert counts["truncations"] >= MIN_TRUNCATIONS and counts["gets"] and counts["scanned"], counts


def _descriptors_of(path: str) -> int:
    """How many of this process's descriptors point at ``path`` (unlinked or not)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(path):
                count += 1
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_readers_keep_truncated_segments_open_until_they_let_go(tmp_path):
    """``read()`` is a snapshot: segments truncated after the call stay readable
    through descriptors kept open for its iterator, started or not, and each
    closes once every iterator holding it has moved past it or been dropped."""
    env = PosixEnv()
    try:
        with open_log(env, str(tmp_path)) as log:
            for s in range(1, 700):
                log.append(payload(s, 500))
            paths = sorted(segments(env, log.path))
            assert len(paths) > 3
            third = int(os.path.basename(paths[2])[:-4])
            started = log.read(1)
            assert next(started) == (1, payload(1, 500))
            unstarted = log.read(2)
            assert log.truncate_before(third) == 2
            assert not os.path.exists(paths[0]) and not os.path.exists(paths[1])
            assert [_descriptors_of(p) for p in paths[:2]] == [1, 1], "closed under a reader"
            del unstarted  # never started: its pins go with it
            assert [_descriptors_of(p) for p in paths[:2]] == [1, 1], "closed under the other reader"
            for seq, record in started:
                assert record == payload(seq, 500)
                if seq == third:
                    break
            assert [_descriptors_of(p) for p in paths[:2]] == [0, 0], "left behind, still open"
            assert [seq for seq, _ in started] == list(range(third + 1, 700))
            with pytest.raises(LogRangeError):
                log.read(third - 1)
            with pytest.raises(LogRangeError):
                log.get(third - 1)
            assert log.get(third) == payload(third, 500)
    finally:
        env.close()


def test_a_reader_freed_by_the_collector_inside_retire_does_not_deadlock() -> None:
    """The garbage collector runs a dropped log iterator's finalizer (``Pins.release`` ->
    ``Segment.unpin``) at any allocation -- also inside ``Segment.retire()``, which opens
    the segment's handle under its lock; ``unpin`` then waited for that lock, held by its
    own thread, for ever.  Here the open runs the finalizer's call itself."""
    from banyanstore.io.base import RandomAccessFile
    from banyanstore.io.memory import MemoryEnv
    from banyanstore.log.format import HEADER_SIZE
    from banyanstore.log.segment import Segment, create_segment

    class CollectingEnv(MemoryEnv):
        collect: Callable[[], None] | None = None

        def open_readable(self, path: str) -> RandomAccessFile:
            collect, self.collect = self.collect, None
            if collect is not None:
                collect()
            return super().open_readable(path)

    env = CollectingEnv()
    env.mkdir("/l")
    create_segment(env, "/l/1.log", 1).close()
    seg = Segment(env, "/l/1.log", 1, HEADER_SIZE)
    assert seg.pin()  # a reader inside the segment, no handle open yet
    env.collect = seg.unpin  # that reader's iterator freed by the collector mid-open
    retiring = threading.Thread(target=seg.retire, daemon=True)
    retiring.start()
    retiring.join(10)
    assert not retiring.is_alive(), "retire() waited for the lock its own thread held"
    assert seg.pin() is False
