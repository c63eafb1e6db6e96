"""The Log's contract (docs/api.md, Log) over every IO backend."""

from __future__ import annotations

import array
import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from log_helpers import SMALL, open_log, payload, segments

from banyanstore.errors import DiskFullError, LogRangeError, ReadOnlyError, StorageIOError, StoreClosedError
from banyanstore.io.faults import FaultEnv
from banyanstore.log import Log, catalog


def test_append_get_read_roundtrip(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        assert (log.first_seq, log.last_seq) == (1, 0)
        assert list(log.read()) == []
        assert log.append(b"first") == 1
        assert log.append_many([b"x", b"", b"z"]) == 4
        assert log.append_many([]) == 4
        assert [log.get(s) for s in range(1, 5)] == [b"first", b"x", b"", b"z"]
        assert list(log.read(3)) == [(3, b""), (4, b"z")]
        assert list(log.read(5)) == []
        assert (log.first_seq, log.last_seq) == (1, 4)


def test_bytes_like_accepted_and_copied_others_rejected(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        buf = bytearray(b"abc")
        seq = log.append(buf)
        buf[:] = b"XYZ"
        assert log.get(seq) == b"abc"
        assert log.get(log.append(memoryview(b"0123")[1:3])) == b"12"
        assert log.get(log.append(array.array("B", [1, 2]))) == b"\x01\x02"
        for bad in ("text", 12, None, [b"a"]):
            with pytest.raises(TypeError, match="record"):
                log.append(bad)
        with pytest.raises(TypeError, match=r"records\[1\]"):
            log.append_many([b"ok", "no"])
        with pytest.raises(TypeError, match="records"):
            log.append_many(b"abc")
        assert log.last_seq == 3  # the rejected calls appended nothing


def test_range_errors(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        with pytest.raises(LogRangeError):
            log.get(1)
        log.append_many([b"a", b"b"])
        for bad in (0, -1, 3, 10**12):
            with pytest.raises(LogRangeError):
                log.get(bad)
        with pytest.raises(IndexError):  # LogRangeError is IndexError-style
            log.get(3)
        with pytest.raises(LogRangeError):
            log.read(4)
        with pytest.raises(LogRangeError):
            log.read(0)
        with pytest.raises(LogRangeError):
            log.wait_durable(3)


@pytest.mark.parametrize("size", [0, 32 * 1024 - 28 - 15, 32 * 1024 - 28 - 14, 32 * 1024, 200_000])
def test_record_sizes_around_blocks(env_dir, size):
    env, root = env_dir
    with open_log(env, root) as log:
        seqs = [log.append(payload(i, size + i % 3)) for i in range(1, 6)]
        seqs.append(log.append(b"tail"))
    with open_log(env, root) as log:
        assert [log.get(s) for s in seqs[:-1]] == [payload(i, size + i % 3) for i in range(1, 6)]
        assert log.get(seqs[-1]) == b"tail"
        assert log.append(b"more") == 7


def test_many_segments_reopen_and_lazy_index(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        for lo in range(1, 3001, 100):
            log.append_many([payload(s) for s in range(lo, lo + 100)])
        assert log.stats()["segments"] > 5
    with open_log(env, root) as log:
        assert (log.first_seq, log.last_seq) == (1, 3000)
        for s in (1, 2, 999, 1000, 1001, 2999, 3000):
            assert log.get(s) == payload(s)
        assert [s for s, _ in log.read(1500)] == list(range(1500, 3001))
        assert all(r == payload(s) for s, r in log.read())
        assert log.append(b"x") == 3001


def test_rotate_and_truncate_before_never_reuse_seqs(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        log.append_many([b"a", b"b"])
        assert log.rotate() == 3
        assert log.rotate() == 3  # empty active segment: no new one
        log.append_many([b"c", b"d"])
        log.rotate()
        log.append(b"e")
        assert log.truncate_before(4) == 1  # [1,2] goes; [3,4] holds 4
        assert log.first_seq == 3 and log.get(3) == b"c"
        with pytest.raises(LogRangeError):
            log.get(2)
        assert log.truncate_before(100) == 1  # never the active segment
        assert (log.first_seq, log.last_seq) == (5, 5)
        log.rotate()
        assert log.truncate_before(100) == 1
        assert (log.first_seq, log.last_seq) == (6, 5)  # empty: first_seq == last_seq + 1
        assert list(log.read()) == []
    with open_log(env, root) as log:
        assert (log.first_seq, log.last_seq) == (6, 5)
        assert log.append(b"f") == 6
        assert list(log.read()) == [(6, b"f")]


def test_close_idempotent_and_closed_errors(env_dir):
    env, root = env_dir
    log = open_log(env, root)
    log.append(b"a")
    log.close()
    log.close()
    assert log.closed
    for call in (lambda: log.append(b"x"), lambda: log.get(1), lambda: log.read(),
                 lambda: log.sync(), lambda: log.append_many([b"x"]), lambda: log.rotate(),
                 lambda: log.truncate_before(1),
                 # Seqs outside the log: StoreClosedError too, not LogRangeError (an
                 # IndexError, "no such record"), which get() and follow() used to raise.
                 lambda: log.get(2), lambda: log.get(0), lambda: log.follow(5),
                 lambda: log.read(5)):
        with pytest.raises(StoreClosedError):
            call()


def test_a_close_interrupted_part_way_is_finished_by_the_next_one(env_dir, monkeypatch):
    # A Ctrl-C inside close() (here: while it retires the segments, before the LOCK is
    # released) used to leave the log marked closed: the next close() returned at once,
    # LOCK stayed held, and every open raised StoreLockedError until the process exited.
    env, root = env_dir
    log = open_log(env, root)
    log.append_many([b"a", b"b"])
    real_close = catalog.SegmentCatalog.close

    def interrupted(self):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(catalog.SegmentCatalog, "close", real_close)
        raise KeyboardInterrupt

    monkeypatch.setattr(catalog.SegmentCatalog, "close", interrupted)
    with pytest.raises(KeyboardInterrupt):
        log.close()
    log.close()
    with open_log(env, root) as again:
        assert list(again.read()) == [(1, b"a"), (2, b"b")]


def test_a_second_close_returns_only_once_the_first_is_done(env_dir, monkeypatch):
    # close() from two threads: the second one used to return while the first was
    # still closing (records not yet synced, LOCK still held), so an open right after
    # it raised StoreLockedError.
    env, root = env_dir
    log = open_log(env, root)
    log.append_many([b"a", b"b"])
    real_close = catalog.SegmentCatalog.close
    inside, go_on = threading.Event(), threading.Event()

    def slow(self):  # type: ignore[no-untyped-def]
        inside.set()
        assert go_on.wait(30)
        real_close(self)

    monkeypatch.setattr(catalog.SegmentCatalog, "close", slow)
    first = threading.Thread(target=log.close)
    first.start()
    assert inside.wait(30)
    outcome: list[object] = []

    def close_and_reopen() -> None:
        log.close()
        try:
            with open_log(env, root) as again:
                outcome.append(list(again.read()))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)

    second = threading.Thread(target=close_and_reopen)
    second.start()
    second.join(0.5)  # (with the defect it has returned and failed by now)
    go_on.set()
    first.join(30)
    second.join(30)
    assert outcome == [[(1, b"a"), (2, b"b")]]


def test_truncate_before_frees_old_segments_after_a_failed_append(env_dir):
    # A full disk failed an append; truncate_before then raised the StorageIOError
    # ("close and reopen it") -- and the reopen, which reserves space for its segment,
    # failed with DiskFullError on the still-full disk: the log's own retention could
    # not free the space.  The old segments (synced and sealed) are removed now.
    env, root = env_dir
    fenv = FaultEnv(env)
    log = open_log(fenv, root)
    last = log.append_many([payload(s, 2000) for s in range(1, 201)])
    assert len(segments(env, f"{root}/log")) >= 4
    fenv.inject("map", errno.ENOSPC, times=None)
    with pytest.raises(DiskFullError):
        log.append_many([payload(s, 2000) for s in range(last + 1, last + 200)])
    assert log.failure is not None
    kept_from = log.last_seq - 10
    assert log.truncate_before(kept_from) >= 3
    with pytest.raises(StorageIOError):
        log.rotate()  # writes: still refused
    log.close()
    fenv.clear()
    with open_log(env, root) as again:
        assert again.first_seq <= kept_from and len(segments(env, f"{root}/log")) <= 2
        assert [r for _, r in again.read()] == [payload(s, 2000) for s in range(again.first_seq,
                                                                               again.last_seq + 1)]
        assert again.last_seq >= last


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
def test_sync_modes_roundtrip(env_dir, mode):
    env, root = env_dir
    with open_log(env, root, options=SMALL.replace(wal_sync=mode, wal_sync_interval_ms=5)) as log:
        for i in range(1, 201):
            log.append(payload(i), sync=(i % 50 == 0) or None)
        assert log.durable_seq >= 200 if mode == "always" else log.durable_seq >= 150
        assert log.sync() == 200
    with open_log(env, root) as log:
        assert [r for _, r in log.read()] == [payload(i) for i in range(1, 201)]


def test_interval_mode_syncs_in_background(env_dir):
    env, root = env_dir
    with open_log(env, root, options=SMALL.replace(wal_sync="interval", wal_sync_interval_ms=2)) as log:
        log.append(b"a")
        deadline = threading.Event()
        for _ in range(500):
            if log.durable_seq == 1:
                break
            deadline.wait(0.01)
        assert log.durable_seq == 1


def test_an_empty_synced_append_many_returns_a_durable_seq(env_dir):
    # append_many([], sync=True) returned last_seq -- another call's record, not yet
    # durable -- without syncing (append_many_async waited for it): a caller keeping
    # "durable up to" from the returned seq could lose those records at a power loss.
    env, root = env_dir
    with open_log(env, root, wal_sync="never") as log:
        log.append(b"a")
        assert log.durable_seq == 0
        assert log.append_many([], sync=True) == 1
        assert log.durable_seq >= 1
        log.append(b"b")
        assert log.append_many([]) == 2 and log.durable_seq == 1  # not asked: no sync


def test_read_only(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        log.append_many([b"a", b"b"])
    with open_log(env, root, read_only=True) as ro:
        assert list(ro.read()) == [(1, b"a"), (2, b"b")]
        assert ro.stats()["read_only"] is True
        for call in (lambda: ro.append(b"x"), lambda: ro.append_many([b"x"]),
                     lambda: ro.truncate_before(2), lambda: ro.rotate()):
            with pytest.raises(ReadOnlyError):
                call()
        with open_log(env, root) as writer:  # read-only takes no lock
            writer.append(b"c")
            # What docs/api.md says of a read-only log beside an unsynced writer: it cannot
            # see what the writer synced, so durable_seq is last_seq, wait_durable returns.
            assert writer.durable_seq == 2 and ro.refresh() == 3
            assert ro.durable_seq == 3
            ro.wait_durable(3)


def test_read_survives_concurrent_appends(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        log.append_many([payload(s) for s in range(1, 501)])
        stop = threading.Event()

        def writer() -> None:
            s = 501
            while not stop.is_set() and s < 5000:
                assert log.append(payload(s)) == s
                s += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(3):
                seen = [s for s, r in log.read() if r == payload(s)]
                assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 500
                last = log.last_seq
                assert log.get(last) == payload(last)
        finally:
            stop.set()
            t.join()


def test_stats(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        log.append_many([b"a" * 100] * 10, sync=True)
        st = log.stats()
    assert st["first_seq"] == 1 and st["last_seq"] == 10 and st["durable_seq"] == 10
    assert st["segments"] == 1 and st["bytes"] >= 10 * 115
    assert st["syncs"] >= 1 and st["torn_tail_repairs"] == 0
    assert st["io_mode"] == env.describe()["io_mode"]


def test_open_log_entry_point_and_options(tmp_path):
    import banyanstore
    with banyanstore.open_log(tmp_path / "l", io_mode="sync", wal_sync="never") as log:
        assert isinstance(log, Log) and log.append(b"a") == 1
        assert log.stats()["io_mode"] == "sync"


@pytest.mark.parametrize("interval", [1, 7, 64])
def test_get_every_seq_through_the_sparse_index(interval):
    from banyanstore.io.memory import MemoryEnv
    env = MemoryEnv()
    opts = SMALL.replace(log_index_interval=interval)
    sizes = {s: (40_000 if s % 37 == 0 else None) for s in range(1, 601)}
    with Log.open("/g/log", env=env, options=opts) as log:
        for s in range(1, 601):
            log.append(payload(s, sizes[s]))
        assert all(log.get(s) == payload(s, sizes[s]) for s in range(1, 601))  # index built while writing
    with Log.open("/g/log", env=env, options=opts) as log:  # index built lazily, on first use
        assert all(log.get(s) == payload(s, sizes[s]) for s in range(600, 0, -1))


def test_reserved_space_while_writing_is_cut_at_rotation_and_close(env_dir):
    """The active segment is written through a window of reserved, zero-filled space;
    a sealed segment and the last one at close end exactly at their last record."""
    env, root = env_dir
    d = f"{root}/log"
    with open_log(env, root) as log:
        log.append_many([payload(s) for s in range(1, 40)])
        active = [f"{d}/{n}" for n in env.listdir(d) if n.endswith(".log")][-1]
        assert env.file_size(active) > log.stats()["bytes"]  # the reserved window
        assert log.rotate() == 40
        assert env.file_size(active) == log.stats()["bytes"] - 28  # minus the new header
        log.append_many([payload(s, 40_000) for s in range(40, 50)])  # multi-block records
    sizes = sum(env.file_size(f"{d}/{n}") for n in env.listdir(d) if n.endswith(".log"))
    with open_log(env, root) as log:
        assert sizes == log.stats()["bytes"]
        assert [r for _, r in log.read()] == ([payload(s) for s in range(1, 40)]
                                              + [payload(s, 40_000) for s in range(40, 50)])


BIG_RECORD_CHILD = r"""
import os, sys
import banyanstore
from banyanstore import accel

def status(field):
    with open("/proc/self/status") as fh:
        return int(fh.read().split(field + ":")[1].split()[0]) << 10

record = os.urandom(1 << 20) * 32
with banyanstore.open_log(sys.argv[1], segment_size=1 << 30) as log:
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM from here
    log.append(record)
    peak = (status("VmHWM") - before) / len(record)
    assert log.get(1) == record
print(accel.IMPLEMENTATION, peak)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("pure", ["1", "0"], ids=["pure", "native"])
def test_appending_a_big_record_copies_it_once(tmp_path: Path, pure: str) -> None:
    """A record of 32 MiB is framed into the mapped segment (one copy: the file's pages).
    The pure-Python framing first joined the seq and the record -- a second copy, so a
    peak of 2.0 records over the start, against 1.0 in the compiled core.  Run in a
    child process, whose peak memory is this append's alone."""
    from banyanstore import accel
    if pure == "0" and accel.load_native() is None:
        pytest.skip("the compiled core is not built")
    env = {**os.environ, "BANYANSTORE_PURE_PYTHON": pure}
    out = subprocess.run([sys.executable, "-c", BIG_RECORD_CHILD, str(tmp_path / "log")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    implementation, peak = out.stdout.split()
    assert implementation == ("python" if pure == "1" else "native")
    assert float(peak) < 1.5, peak


def test_a_ctrl_c_as_the_open_returns_leaves_the_log_closed(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt after the Log was built and before ``Log.open`` returned it (a
    Ctrl-C landing there) dropped an open writer: its sync thread ran, its segment and
    LOCK stayed open, and every later open in the process raised StoreLockedError until
    the exit hook closed the dropped one at exit.  The open now closes it."""
    path = tmp_path / "log"
    with Log.open(path, wal_sync="interval") as log:
        log.append(b"a")
    real_init = Log.__init__

    def init_then_interrupt(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_init(self, *args, **kwargs)
        raise KeyboardInterrupt  # as if at the first check after the constructor returned

    def syncers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name == "banyanstore-log-sync"]

    before = syncers()
    monkeypatch.setattr(Log, "__init__", init_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        Log.open(path, wal_sync="interval")
    monkeypatch.undo()
    assert syncers() == before, "the dropped log's sync thread still runs"
    with Log.open(path) as again:  # not StoreLockedError
        assert list(again.read()) == [(1, b"a")]
