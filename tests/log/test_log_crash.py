"""Simulated crashes (``MemoryEnv.crash()``): whatever was acknowledged durable survives.

A seeded random walk of appends (synced and not), batches, multi-fragment
records, rotations, syncs, truncations, clean reopens and crashes.  After each
crash -- optionally with a random prefix of the lost bytes written back, plus
zeros or junk, the way a partly written-back page cache leaves a file -- the
reopened log must hold every record acknowledged durable, in order, intact,
with no duplicate, no garbage, no hole, and must go on from the last survivor.
"""

from __future__ import annotations

import contextlib
import os
import random

import pytest
from log_helpers import payload, rewrite

from banyanstore.errors import BanyanStoreError
from banyanstore.io.memory import MemoryEnv
from banyanstore.log import Log
from banyanstore.options import Options

ROOT = "/crash/log"
SEEDS = 3000 if os.environ.get("BANYANSTORE_SOAK") == "1" else 300


class Model:
    """What the test knows: the records' contents and what was acknowledged durable."""

    def __init__(self) -> None:
        self.expect: dict[int, bytes] = {}
        self.durable = 0  # highest seq acknowledged durable
        self.floor = 1  # highest truncate_before() argument: records >= it must stay
        self.last = 0


def _record(rng: random.Random, seq: int) -> bytes:
    if rng.random() < 0.06:
        return payload(seq, rng.randint(30_000, 140_000))  # spans blocks (and maybe segments)
    return payload(seq)


def _tear_tail(rng: random.Random, env: MemoryEnv, before: dict[str, bytes]) -> None:
    """Write back a random prefix of the lost bytes of the last segment, maybe plus junk."""
    names = [n for n in env.listdir(ROOT) if n.endswith(".log")]
    if not names or rng.random() < 0.4:
        return
    path = f"{ROOT}/{names[-1]}"
    now, live = env.read_file(path), before.get(path, b"")
    if not live.startswith(now):
        return
    keep = live[:len(now) + rng.randint(0, len(live) - len(now))]
    junk = rng.choice([b"", bytes(rng.randint(1, 700)), rng.randbytes(rng.randint(1, 40))])
    rewrite(env, path, keep + junk)


def _check(env: MemoryEnv, opts: Options, m: Model) -> Log:
    log = Log.open(ROOT, env=env, options=opts)
    first, last = log.first_seq, log.last_seq
    assert last >= m.durable, f"lost acknowledged records: last_seq {last} < durable {m.durable}"
    if m.durable >= m.floor:
        assert first <= m.floor, f"records from {m.floor} were removed (first_seq {first})"
    got = list(log.read())
    assert [s for s, _ in got] == list(range(first, last + 1))  # no hole, no reorder, no dup
    for s, rec in got:
        assert rec == m.expect[s], f"record {s} is not what was appended"
    if last >= first:
        s = random.Random(last).randint(first, last)
        assert log.get(s) == m.expect[s]
    m.last = last
    m.durable = last  # recovery synced the survivors
    return log


def _walk(seed: int) -> None:
    rng = random.Random(seed)
    env = MemoryEnv()
    opts = Options(segment_size=64 * 1024, log_index_interval=rng.choice([1, 3, 64]),
                   wal_sync=rng.choice(["never", "never", "always"]), io_mode="sync")
    always = opts.wal_sync == "always"
    m = Model()
    log = Log.open(ROOT, env=env, options=opts)
    for _ in range(rng.randint(5, 70)):
        op = rng.random()
        if op < 0.5:
            sync = rng.choice([True, False, None, None])
            rec = _record(rng, m.last + 1)
            m.last = log.append(rec, sync=sync)
            m.expect[m.last] = rec
            if sync or (sync is None and always):
                m.durable = m.last
        elif op < 0.65:
            recs = [_record(rng, m.last + 1 + i) for i in range(rng.randint(1, 40))]
            sync = rng.choice([True, False, None, None])
            assert log.append_many(recs, sync=sync) == m.last + len(recs)
            for rec in recs:
                m.last += 1
                m.expect[m.last] = rec
            if sync or (sync is None and always):
                m.durable = m.last
        elif op < 0.72:
            log.rotate()
            m.durable = m.last
        elif op < 0.77:
            log.sync()
            m.durable = m.last
        elif op < 0.85:
            t = rng.randint(1, m.last + 1)
            log.truncate_before(t)
            m.floor = max(m.floor, t)
        elif op < 0.95:
            before = env.snapshot_state()
            env.crash()  # the old Log object is dead: abandon it, as a crashed process would
            _abandon(log)
            _tear_tail(rng, env, before)
            log = _check(env, opts, m)
        else:
            log.close()
            m.durable = m.last
            log = _check(env, opts, m)
    env.crash()
    _abandon(log)
    _check(env, opts, m).close()


def _abandon(log: Log) -> None:
    """Retire a Log whose env crashed (before the next open of its directory): its close
    fails at the first write to its dead handles, and releases it.  Left open, each stayed
    registered for the exit hook, whose closes at exit all failed and were each logged."""
    with contextlib.suppress(BanyanStoreError):
        log.close()
    assert log.closed


@pytest.mark.parametrize("chunk", range(10))
def test_random_crashes(chunk):
    for seed in range(chunk, SEEDS, 10):
        try:
            _walk(seed)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc


def test_crash_right_after_creating_a_segment():
    env = MemoryEnv()
    opts = Options(segment_size=64 * 1024, wal_sync="never", io_mode="sync")
    log = Log.open(ROOT, env=env, options=opts)
    log.append_many([payload(s) for s in range(1, 11)])
    assert log.rotate() == 11
    log.append(payload(11))  # not synced
    env.crash()
    _abandon(log)
    with Log.open(ROOT, env=env, options=opts) as log:
        assert log.last_seq == 10 and log.append(b"x") == 11


def test_reopen_after_a_failed_directory_sync_makes_the_segment_name_durable():
    """A new segment's directory sync fails (the append raises and the log must be
    reopened); the reopened log appends into that segment, whose *name* is still not
    durable: records it acknowledges as synced must survive a power loss, so opening
    for writing syncs the directory too (found by tests/torture/faults.py)."""
    import errno

    from banyanstore.errors import BanyanStoreError
    from banyanstore.io.faults import FaultEnv

    disk = MemoryEnv()
    env = FaultEnv(disk)
    log = Log.open(ROOT, env=env, segment_size=64 * 1024, wal_sync="never")
    rule = env.inject("sync_dir", errno.EIO, path_contains=ROOT)
    with pytest.raises(BanyanStoreError):
        for seq in range(1, 1000):
            log.append(payload(seq, 1000), sync=True)
    assert rule.fired == 1
    log.close()  # the failure was reported; close releases the log without writing more
    log = Log.open(ROOT, env=disk)
    first = log.last_seq + 1
    acked = [log.append(payload(seq), sync=True) for seq in range(first, first + 20)]
    log.close()
    disk.crash()
    with Log.open(ROOT, env=disk) as log:
        assert log.last_seq >= acked[-1], f"acknowledged seqs {first}..{acked[-1]} lost"
        assert [rec for seq, rec in log.read(first)] == [payload(s) for s in acked]


@pytest.mark.parametrize("power_loss", [False, True])
def test_a_failed_segment_removal_never_leaves_a_hole(power_loss):
    """``truncate_before`` whose removal of the oldest segment fails (EIO) raises; the
    segments it had not removed yet must stay removable in order: a later truncation used
    to remove the newer ones only (the failed ones were no longer the log's), leaving the
    old segment, a hole, then the rest -- a log whose every read raised CorruptionError
    after reopening."""
    import errno

    from banyanstore.errors import StorageIOError
    from banyanstore.io.faults import FaultEnv

    disk = MemoryEnv()
    env = FaultEnv(disk)
    log = Log.open(ROOT, env=env, segment_size=64 * 1024, wal_sync="never")
    for _ in range(4):
        first = log.last_seq + 1
        log.append_many([payload(s) for s in range(first, first + 50)])
        log.rotate()
    log.append(payload(log.last_seq + 1), sync=True)
    env.inject("remove", errno.EIO, path_contains=ROOT)
    with pytest.raises(StorageIOError):
        log.truncate_before(101)
    log.truncate_before(151)  # the earlier truncation's segments go first, oldest first
    log.truncate_before(log.last_seq)
    last = log.last_seq
    log.close()
    if power_loss:
        disk.crash()
    with Log.open(ROOT, env=disk) as log:
        assert log.last_seq == last
        assert [s for s, _ in log.read()] == list(range(log.first_seq, last + 1))
        assert all(rec == payload(s) for s, rec in log.read())


def test_a_truncation_failing_to_keep_a_readers_segment_open_never_leaves_a_hole():
    """``truncate_before`` opens a handle for a reader that pinned a segment before it
    read from it (so it can read on after the unlink); when that open failed (EIO, or
    EMFILE), the segments after it were dropped from the log but left on disk and out of
    the retry list: the next truncation removed newer segments while they stayed -- a
    hole that made every read of the reopened log raise CorruptionError."""
    import errno

    from banyanstore.errors import StorageIOError
    from banyanstore.io.faults import FaultEnv

    env = FaultEnv(MemoryEnv())
    log = Log.open(ROOT, env=env, segment_size=64 * 1024, wal_sync="never")
    for _ in range(4):
        first = log.last_seq + 1
        log.append_many([payload(s) for s in range(first, first + 50)])
        log.rotate()
    reader = log.read()  # pins every segment; handles open at its first read
    env.inject("open_readable", errno.EIO, path_contains=ROOT, after=1)
    with pytest.raises(StorageIOError):
        log.truncate_before(151)
    reader.close()
    first = log.last_seq + 1
    log.append_many([payload(s) for s in range(first, first + 50)])
    log.rotate()
    log.truncate_before(log.last_seq)  # the failed truncation's segments go first
    last = log.last_seq
    log.close()
    with Log.open(ROOT, env=env) as log:
        assert log.last_seq == last
        assert [s for s, _ in log.read()] == list(range(log.first_seq, last + 1))
        assert all(rec == payload(s) for s, rec in log.read())


def test_concurrent_truncations_remove_segments_in_order():
    """Two threads truncating at once: the second must not remove a newer segment while
    the first is still removing older ones (a power loss then kept the older segments,
    a hole, then the rest -- a log every read of which raised CorruptionError)."""
    import threading

    from banyanstore.io.hooked import HookedEnv

    first_remove, release = threading.Event(), threading.Event()

    class SlowFirstRemove(HookedEnv):
        def hook(self, op, paths, nbytes=0):
            if op == "remove" and not first_remove.is_set():
                first_remove.set()
                release.wait(5)

    disk = MemoryEnv()
    log = Log.open(ROOT, env=SlowFirstRemove(disk), segment_size=64 * 1024, wal_sync="never")
    for _ in range(4):
        first = log.last_seq + 1
        log.append_many([payload(s) for s in range(first, first + 50)])
        log.rotate()
    log.append(payload(log.last_seq + 1), sync=True)
    first_truncation = threading.Thread(target=log.truncate_before, args=(101,))
    first_truncation.start()
    assert first_remove.wait(5)
    second_truncation = threading.Thread(target=log.truncate_before, args=(151,))
    second_truncation.start()
    second_truncation.join(1)  # (takes its turn after the first, which waits)
    power_lost = disk.clone()  # the disk as it is now, then a power loss
    power_lost.crash()
    release.set()
    first_truncation.join(5)
    second_truncation.join(5)
    log.close()
    with Log.open(ROOT, env=power_lost) as reopened:
        seqs = [s for s, _ in reopened.read()]
        assert seqs == list(range(reopened.first_seq, reopened.last_seq + 1))
