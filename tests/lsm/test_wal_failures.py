"""What a failed WAL write, a full disk and a failed open leave behind (fault injection).

* After a WAL append or sync fails, the store refuses writes with one clear error
  ("read-only after a failed WAL write ... reopen") -- even once space is back --
  while reads go on; ``close()`` succeeds and a reopen recovers every acknowledged
  write and writes again.
* Every :class:`DiskFullError` carries its ``OSError`` (ENOSPC) as ``__cause__``.
* An open that fails closes every descriptor it opened at once, not when the
  exception's traceback is collected (counted in ``/proc/self/fd`` with the garbage
  collector off and the exception still referenced).
"""

from __future__ import annotations

import errno
import gc
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import (
    BanyanStoreError,
    CorruptionError,
    DiskFullError,
    ReadOnlyError,
    StorageIOError,
    StoreLockedError,
)
from banyanstore.io.faults import FaultEnv
from banyanstore.io.memory import MemoryEnv
from banyanstore.io.posix import PosixEnv
from banyanstore.io.testing import available_real_modes
from banyanstore.lsm import flush

ROOT = "/db"
OPTS: dict[str, Any] = dict(wal_sync="never", segment_size=64 * 1024, compaction=False,
                            memtable_size=1 << 20, compression="none")


def key(i: int) -> bytes:
    return b"key%06d" % i


def value(i: int) -> bytes:
    return b"value of %d|" % i * 8


@pytest.fixture
def disk() -> MemoryEnv:
    env = MemoryEnv()
    env.mkdir(ROOT)
    return env


def _assert_refuses_writes(store: Any, first_error: BaseException) -> None:
    """Every kind of write gets the one clear error, caused by the WAL failure."""
    attempts: list[Callable[[], Any]] = [
        lambda: store.put(b"after", b"x"), lambda: store.delete(key(0)),
        lambda: store.put(b"after", b"x", sync=True), store.batch, store.flush, store.sync,
        lambda: store.keyspace("new-keyspace")]
    for attempt in attempts:
        with pytest.raises(ReadOnlyError, match=r"read-only after a failed WAL write.*reopen") as info:
            attempt()
        assert info.value.__cause__ is first_error


def test_disk_full_on_the_wal_makes_the_store_read_only_until_reopened(disk: MemoryEnv) -> None:
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **OPTS)
    rule = env.inject("map", errno.ENOSPC, path_contains="/wal/", times=None)
    acked: dict[bytes, bytes] = {}
    with pytest.raises(DiskFullError) as full:
        for i in range(100_000):
            store.put(key(i), value(i))
            acked[key(i)] = value(i)
    assert rule.fired == 1 and len(acked) > 100
    cause = full.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC
    env.clear()  # space is back: the store still refuses, the WAL's state is unknown
    _assert_refuses_writes(store, full.value)
    assert dict(store.scan()) == acked  # reads go on
    assert store.get(key(len(acked))) is None  # the failed put is nowhere
    store.close()  # succeeds
    assert store.closed
    with banyanstore.open(ROOT, env=disk, **OPTS) as store:
        assert dict(store.scan()) == acked
        store.put(b"after", b"reopened")
    with banyanstore.open(ROOT, env=disk, **OPTS) as store:
        assert store.get(b"after") == b"reopened" and len(dict(store.scan())) == len(acked) + 1


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENOSPC])
def test_a_memtable_switch_that_cannot_open_a_wal_segment_fails_only_that_call(
        disk: MemoryEnv, code: int) -> None:
    """No descriptor (EMFILE: a store of many tables past ``ulimit -n``) or no room for
    a new name when a memtable switch opens the WAL's next segment: the call that
    switched raises, and once the cause is gone writes and flushes go on without a
    reopen.  Before, the store turned read-only until reopened (every write:
    ReadOnlyError)."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **OPTS)
    acked = {key(i): value(i) for i in range(100)}
    for k, v in acked.items():
        store.put(k, v)
    rule = env.inject("open_writable", code, path_contains="/wal/", times=None)
    with pytest.raises(StorageIOError) as failed:
        store.flush()
    cause = failed.value.__cause__
    assert rule.fired >= 1 and isinstance(cause, OSError) and cause.errno == code
    assert not store.stats()["read_only"] and store.stats()["write_error"] is None
    for i in range(100, 200):  # the memtable is not full: no switch, the WAL takes them
        store.put(key(i), value(i), sync=i == 199)
        acked[key(i)] = value(i)
    env.clear()  # the descriptor or the space is back
    store.flush()
    store.put(b"after", b"x")
    acked[b"after"] = b"x"
    assert dict(store.scan()) == acked
    store.close()
    with banyanstore.open(ROOT, env=disk, **OPTS) as again:
        assert dict(again.scan()) == acked


@pytest.mark.parametrize("after", [0, 1], ids=["segment-header", "segment-window"])
def test_a_full_disk_at_a_memtable_switch_after_the_wal_segment_was_created_passes(
        disk: MemoryEnv, after: int) -> None:
    """ENOSPC reserving space for the WAL's next segment -- its header, or its first
    window after the old one was sealed -- once its file exists: the switching call and
    the writes after it raise DiskFullError (nothing of them acknowledged) while the
    disk stays full; once space is back the next write finishes the switch and writes
    and flushes go on without a reopen.  Before, the store turned read-only until
    reopened (every write: ReadOnlyError) though space came back."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **OPTS)
    acked = {key(i): value(i) for i in range(100)}
    for k, v in acked.items():
        store.put(k, v)
    rule = env.inject("map", errno.ENOSPC, path_contains="/wal/", after=after, times=None)
    with pytest.raises(DiskFullError):
        store.flush()
    for attempt in (lambda: store.put(b"refused", b"x"), lambda: store.put(b"refused", b"x", sync=True),
                    lambda: store.delete(key(0)), store.flush):
        with pytest.raises(DiskFullError):
            attempt()
    assert rule.fired >= 2
    st = store.stats()
    assert not st["read_only"] and st["write_error"] is None
    assert dict(store.scan()) == acked  # reads go on; no refused write is visible
    env.clear()  # space is back
    for i in range(100, 200):
        store.put(key(i), value(i), sync=i == 199)
        acked[key(i)] = value(i)
    store.flush()
    store.put(b"after", b"x")
    acked[b"after"] = b"x"
    assert dict(store.scan()) == acked
    store.close()
    with banyanstore.open(ROOT, env=disk, **OPTS) as again:
        assert dict(again.scan()) == acked


def test_failed_wal_sync_makes_the_store_read_only_and_close_succeeds(disk: MemoryEnv) -> None:
    """EIO on the WAL's fdatasync: the synced write raises, later writes get the clear
    refusal (never the raw "log is unusable" error), close() does not raise, and after
    a power loss every write acknowledged as durable is there."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **OPTS)
    for i in range(50):
        store.put(key(i), value(i), sync=True)
    env.inject("sync", errno.EIO, path_contains="/wal/")
    with pytest.raises(StorageIOError) as failed:
        store.put(key(50), value(50), sync=True)
    env.clear()
    _assert_refuses_writes(store, failed.value)
    assert store.get(key(49)) == value(49)
    store.close()
    disk.crash()
    with banyanstore.open(ROOT, env=disk, **OPTS) as store:
        got = dict(store.scan())
        assert {k: got[k] for k in map(key, range(50))} == {key(i): value(i) for i in range(50)}
        store.put(b"after", b"crash")


def test_stats_report_a_store_refusing_writes_after_a_failed_wal_write(disk: MemoryEnv) -> None:
    """stats() tells an operator what every write now hears: the store is read-only, and
    why -- not ``read_only: False`` and no error anywhere while writes are refused."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **OPTS)
    store.put(key(0), value(0), sync=True)
    assert store.stats()["read_only"] is False and store.stats()["write_error"] is None
    env.inject("sync", errno.EIO, path_contains="/wal/")
    with pytest.raises(StorageIOError) as failed:
        store.put(key(1), value(1), sync=True)
    st = store.stats()
    assert st["read_only"] is True
    assert st["write_error"] == repr(failed.value)
    store.close()
    with banyanstore.open(ROOT, env=disk, **OPTS) as store:  # reopened: writable again
        assert store.stats()["read_only"] is False and store.stats()["write_error"] is None


def test_merge_refused_for_lack_of_space_is_a_disk_full_error_with_its_oserror(disk: MemoryEnv) -> None:
    store = banyanstore.open(ROOT, env=disk, **OPTS)
    for t in range(3):
        for i in range(200):
            store.put(key(i), value(i + t))
        store.flush()
    disk.capacity = sum(len(v) for v in disk.snapshot_state().values()) + 100  # nearly full
    with pytest.raises(DiskFullError) as info:
        store.compact()
    cause = info.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC
    disk.capacity = 1 << 40
    store.close()


# -- descriptors of failed opens --------------------------------------------------------------

def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Descriptors must be closed by the failing open itself, not by a collection."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _store_with_tables(path: Path, io_mode: str = "sync") -> None:
    with banyanstore.open(path, io_mode=io_mode, **OPTS) as store:
        for t in range(3):
            for i in range(300):
                store.put(key(i), value(i + t))
            store.flush()
        store.put(b"in the wal", b"only")


def _newest_table(path: Path) -> Path:
    return max((path / "tables").glob("*.sst"))


def _fails_and_leaks_nothing(expected: type[BaseException], opener: Callable[[], Any]) -> None:
    before = _open_fds()
    for _ in range(3):
        with pytest.raises(expected) as info:
            opener()
        # ``info`` keeps the traceback -- and so every frame of the failed open -- alive
        assert _open_fds() == before, f"{_open_fds() - before} descriptors left open by {info.value!r}"


@pytest.mark.parametrize("io_mode", available_real_modes())
def test_failed_open_on_a_damaged_table_closes_the_tables_it_opened(tmp_path: Path, io_mode: str,
                                                                     no_gc: None) -> None:
    path = tmp_path / "db"
    _store_with_tables(path, io_mode)
    table = _newest_table(path)  # opened after the older ones
    data = bytearray(table.read_bytes())
    data[-10] ^= 0xFF  # the footer
    table.write_bytes(bytes(data))
    _fails_and_leaks_nothing(CorruptionError, lambda: banyanstore.open(path, io_mode=io_mode, **OPTS))


def test_failed_wal_replay_closes_the_tables_and_the_wal(tmp_path: Path, no_gc: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "db"
    _store_with_tables(path)

    def broken_replay(*args: Any) -> int:
        raise StorageIOError("replay failed (injected)")
    monkeypatch.setattr("banyanstore.lsm.store.replay_wal", broken_replay)
    _fails_and_leaks_nothing(StorageIOError, lambda: banyanstore.open(path, **OPTS))


@pytest.mark.parametrize("op", ["map", "sync", "open_writable"])
def test_failed_open_of_the_wal_closes_everything(tmp_path: Path, no_gc: None, op: str) -> None:
    """The WAL's last segment cannot be mapped, synced or created (a full disk)."""
    path = tmp_path / "db"
    _store_with_tables(path)
    env = FaultEnv(PosixEnv())
    env.inject(op, errno.ENOSPC if op != "sync" else errno.EIO, path_contains="/wal/", times=None)
    _fails_and_leaks_nothing(BanyanStoreError, lambda: banyanstore.open(path, env=env, **OPTS))


def test_failed_open_of_a_locked_store_or_a_damaged_log_leaks_nothing(tmp_path: Path,
                                                                      no_gc: None) -> None:
    path = tmp_path / "db"
    _store_with_tables(path)
    with banyanstore.open(path, **OPTS):
        _fails_and_leaks_nothing(StoreLockedError, lambda: banyanstore.open(path, **OPTS))
    log_path = tmp_path / "log"
    with banyanstore.open_log(log_path, segment_size=1 << 20) as log:
        log.append_many([b"record %d" % i * 20 for i in range(3000)])
    segment = max(log_path.glob("*.log"))
    data = bytearray(segment.read_bytes())
    data[40_000] ^= 0xFF  # damage followed by intact records: not a torn tail
    segment.write_bytes(bytes(data))
    _fails_and_leaks_nothing(CorruptionError, lambda: banyanstore.open_log(log_path))


def test_a_flush_that_completes_after_the_wal_failed_is_not_repeated(
        disk: MemoryEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """A memtable waiting for its flush when the WAL fails is still flushed -- once: the
    WAL cut that ends a flush cannot run on the failed log, and must not make the
    flusher redo a flush whose manifest edit is already durable (each redo added the
    same data as new tables, forever)."""
    monkeypatch.setattr(flush, "BACKOFF_START", 0.3)  # time to fail the WAL in between
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **dict(OPTS, memtable_size=64 * 1024))
    env.inject("write", errno.EIO, path_contains=".sst")  # the first flush attempt fails
    i = 0
    while store.stats()["flush"]["pending"] == 0:  # up to the first memtable switch
        store.put(key(i), value(i))
        i += 1
    deadline = time.monotonic() + 30
    while store.stats()["flush"]["failures"] == 0:
        assert time.monotonic() < deadline, "the flush attempt never failed"
        time.sleep(0.01)
    # (A failed sync: a full disk at the switch's WAL rotation no longer fails the WAL.)
    env.inject("sync", errno.EIO, path_contains="/wal/")
    with pytest.raises(StorageIOError):
        store.put(key(i), value(i), sync=True)
    assert store.stats()["read_only"]
    deadline = time.monotonic() + 30
    while store.stats()["flush"]["pending"]:
        assert time.monotonic() < deadline, f"the flush never completed: {store.stats()['flush']}"
        time.sleep(0.05)
    time.sleep(0.5)  # a wrongly repeated flush would add its tables again by now
    tables = store.stats()["keyspaces"]["default"]["table_list"]
    assert len(tables) == 1, f"the flush was repeated: {tables}"
    store.close()


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_failed_flush_error_carries_its_oserror_in_every_compaction_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """A flush that fails in a worker process reports the error a thread's flush does:
    its errno, path and the OSError as ``__cause__`` (the worker's exception used to
    arrive through pickle with ``errno`` None and no cause)."""
    monkeypatch.setattr(flush, "BACKOFF_START", 0.005)
    monkeypatch.setattr(flush, "BACKOFF_MAX", 0.02)
    path = tmp_path / "db"
    store = banyanstore.open(path, compaction_mode=mode, **OPTS)
    try:
        store.put(key(1), value(1))
        (path / "tables").rmdir()  # the table's file cannot be created: ENOENT
        with pytest.raises(StorageIOError) as info:
            store.flush()
        failed = info.value
        assert failed.errno == errno.ENOENT and failed.op is not None
        assert failed.path is not None and failed.path.startswith(str(path / "tables"))
        assert isinstance(failed.__cause__, OSError) and failed.__cause__.errno == errno.ENOENT
        (path / "tables").mkdir()
        store.flush()
        assert store.get(key(1)) == value(1)
    finally:
        store.close()
