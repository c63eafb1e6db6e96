"""Fault injection (``FaultEnv``): failing flushes, merges and manifest syncs.

Each test proves that an IO failure in a background protocol step is contained:
partial files are removed, the step is retried, readers and writers go on (writers
see the error only when they would otherwise wait for the failing step forever),
nothing acknowledged is lost -- checked after a clean reopen *and* after a simulated
power loss -- and ``stats()`` reports what happened.
"""

from __future__ import annotations

import errno
import posixpath
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import DiskFullError, NotAStoreError, StorageIOError
from banyanstore.io.faults import FaultEnv
from banyanstore.io.hooked import HookedEnv
from banyanstore.io.memory import MemoryEnv
from banyanstore.lsm import compaction, flush

ROOT = "/db"
BASE: dict[str, Any] = dict(memtable_size=64 * 1024, block_size=1024, wal_sync="never",
                            compression="none", compaction_min_width=2, history_retention=1e9)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short back-off so retry loops run in milliseconds (the schedule is not under test)."""
    monkeypatch.setattr(flush, "BACKOFF_START", 0.005)
    monkeypatch.setattr(flush, "BACKOFF_MAX", 0.02)
    monkeypatch.setattr(compaction, "BACKOFF_START", 0.005)
    monkeypatch.setattr(compaction, "BACKOFF_MAX", 0.02)


class ThreadFaultEnv(FaultEnv):
    """A FaultEnv whose rules fire only for calls made on threads named ``only_thread``
    (so a merge's table writes can fail while a flush's, also ``.sst``, succeed)."""

    def __init__(self, inner: Any, only_thread: str) -> None:
        super().__init__(inner)
        self.only_thread = only_thread

    def check_fault(self, op: str, paths: Sequence[str], nbytes: int = 0) -> tuple[int, int] | None:
        if threading.current_thread().name != self.only_thread:
            return None
        return super().check_fault(op, paths, nbytes)


@pytest.fixture
def disk() -> Iterator[MemoryEnv]:
    env = MemoryEnv()
    env.mkdir(ROOT)
    yield env


def value(i: int, size: int = 600) -> bytes:
    """The value written for key ``i``: derived from ``i`` so a reader can check it."""
    return (b"%08d|" % i) * (size // 9 + 1)


def key(i: int) -> bytes:
    return b"key%06d" % i


def unnamed_tables(store: Any, env: Any) -> set[str]:
    """Files in tables/ the store's manifest does not name (must stay empty)."""
    named = {f"{t['file']:06d}.sst" for ks in store.stats()["keyspaces"].values()
             for t in ks["table_list"]}
    return set(env.listdir(f"{ROOT}/tables")) - named


def unnamed_after_close(disk: MemoryEnv) -> set[str]:
    """Files in tables/ that the durable manifest does not name, read once the store is
    closed (while a background merge runs, its unfinished output is legitimately unnamed)."""
    from banyanstore.lsm.manifest import Manifest
    state = Manifest.load(disk, ROOT)
    named = {f"{f:06d}.sst" for tables in state.tables.values() for f in tables}
    return set(disk.listdir(f"{ROOT}/tables")) - named


def check_all(store: Any, n: int, versions: dict[int, int] | None = None) -> None:
    """Keys ``0..n-1`` hold their values (and, with ``versions``, at their versions)."""
    assert store.multi_get([key(i) for i in range(n)]) == [value(i) for i in range(n)]
    for i, v in (versions or {}).items():
        assert store.get(key(i), version=v) == value(i)
    idx = store.keyspace("index")
    assert [k for k, _ in idx.scan()] == [key(i) for i in range(n) if i % 5 == 0]


def write(store: Any, lo: int, hi: int, versions: dict[int, int] | None = None) -> None:
    """Keys ``lo..hi-1`` (every 5th also in the ``index`` keyspace, in the same batch)."""
    store.keyspace("index")
    for i in range(lo, hi):
        with store.batch(sync=True) as b:
            b.put(key(i), value(i))
            if i % 5 == 0:
                b.put(key(i), b"%d" % i, keyspace="index")
        if versions is not None:
            versions[i] = b.version


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def reopen_after_power_loss(disk: MemoryEnv, n: int, versions: dict[int, int], **opts: Any) -> None:
    """Every acknowledged (synced) write survives a crash of the disk, then a clean reopen
    (without the compaction thread, whose unfinished output would be unnamed)."""
    disk.crash()
    opts["compaction"] = False
    store = banyanstore.open(ROOT, env=disk, **BASE, **opts)
    try:
        check_all(store, n, versions)
        assert not unnamed_tables(store, disk)
    finally:
        store.close()


# -- flushes -------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC], ids=["EIO", "ENOSPC"])
@pytest.mark.parametrize("short", [False, True], ids=["whole", "short-write"])
def test_failing_flush_is_cleaned_up_and_retried(disk: MemoryEnv, code: int, short: bool) -> None:
    """A flush whose table writes fail: partial table files are removed, the flush is
    retried with back-off, failures show in stats(), reads and writes go on, and once
    the fault clears the data reaches tables; nothing acknowledged is lost."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **BASE, compaction=False)
    versions: dict[int, int] = {}
    write(store, 0, 40, versions)
    rule = env.inject("write", code, path_contains=".sst", times=None, short_write=short)
    expected = DiskFullError if code == errno.ENOSPC else StorageIOError
    with pytest.raises(expected) as info:
        store.flush()  # waits for the flush, which keeps failing: gets its error
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == code
    assert rule.fired >= 3
    st = store.stats()["flush"]
    assert st["failures"] >= 3 and st["pending"] == 1 and st["last_error"]
    # reads and writes go on meanwhile (the memtable is not full)
    write(store, 40, 60, versions)
    check_all(store, 60, versions)
    env.clear()
    store.flush()
    st = store.stats()
    assert st["flush"]["failures"] == 0 and st["flush"]["pending"] == 0
    assert st["keyspaces"]["default"]["tables"] >= 1
    check_all(store, 60, versions)
    assert not unnamed_tables(store, disk), "a failed flush attempt left a partial table"
    store.close()
    reopen_after_power_loss(disk, 60, versions, compaction=False)


def test_writers_stall_then_get_the_flush_error_and_resume(disk: MemoryEnv) -> None:
    """With flushes failing (disk full), writers keep going until
    ``max_immutable_memtables`` memtables wait, then get DiskFullError instead of
    hanging; when space returns the same writes succeed and nothing is lost."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **BASE, compaction=False, max_immutable_memtables=1)
    env.inject("write", errno.ENOSPC, path_contains=".sst", times=None)
    versions: dict[int, int] = {}
    i = 0
    with pytest.raises(DiskFullError):
        while True:
            write(store, i, i + 1, versions)
            i += 1
            assert i < 2000, "writers never stalled"
    # one memtable (about 64 KiB of 600-byte values) was accepted before the stall
    assert i > 64 * 1024 // 700
    assert store.stats()["stalls"]["count"] >= 1
    check_all(store, i, versions)  # everything acknowledged is still readable
    env.clear()
    write(store, i, i + 150, versions)  # past another memtable switch
    store.flush()
    check_all(store, i + 150, versions)
    assert not unnamed_tables(store, disk)
    store.close()
    reopen_after_power_loss(disk, i + 150, versions, compaction=False)


# -- merges --------------------------------------------------------------------------------

def _tables(store: Any) -> list[int]:
    return [t["file"] for t in store.stats()["keyspaces"]["default"]["table_list"]]


def _make_tables(store: Any, count: int, per: int, versions: dict[int, int]) -> int:
    n = 0
    for _ in range(count):
        write(store, n, n + per, versions)
        store.flush()
        n += per
    return n


def test_failing_merge_is_cleaned_up_retried_and_quarantined(disk: MemoryEnv) -> None:
    """``compact()`` whose output writes fail (EIO): the partial output is removed, the
    error reaches the caller, reads and writes go on; after ``merge_max_failures``
    failures the inputs are quarantined (stats), and later merges skip them."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **BASE, compaction=False, merge_max_failures=3)
    versions: dict[int, int] = {}
    n = _make_tables(store, 3, 20, versions)
    inputs = _tables(store)
    assert len(inputs) == 3
    env.inject("write", errno.EIO, path_contains=".sst", times=None, short_write=True)
    for attempt in range(3):
        with pytest.raises(StorageIOError) as info:
            store.compact()
        assert isinstance(info.value.__cause__, OSError)
        assert not unnamed_tables(store, disk), f"partial merge output left (attempt {attempt})"
        assert _tables(store) == inputs
        check_all(store, n, versions)
    st = store.stats()["compaction"]
    assert st["failed_merges"] == 3 and sorted(st["quarantined"]) == sorted(inputs)
    env.clear()
    write(store, n, n + 20, versions)
    store.flush()
    summary = store.compact()  # only the new table is eligible: quarantined ones stay
    assert set(inputs) <= set(_tables(store))
    assert summary["tables_after"] == sum(ks["tables"] for ks in store.stats()["keyspaces"].values())
    check_all(store, n + 20, versions)
    store.close()
    reopen_after_power_loss(disk, n + 20, versions, compaction=False)


def test_stats_name_the_failure_of_an_explicit_compact(disk: MemoryEnv) -> None:
    """A failed ``compact()`` shows in ``stats()["compaction"]["last_error"]`` as a failed
    background merge does (it stayed None while ``failed_merges`` counted the failure);
    the next merge done clears it."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **BASE, compaction=False)
    versions: dict[int, int] = {}
    n = _make_tables(store, 2, 20, versions)
    env.inject("write", errno.EIO, path_contains=".sst", times=None)
    with pytest.raises(StorageIOError):
        store.compact()
    st = store.stats()["compaction"]
    assert st["failed_merges"] == 1 and st["last_error"] and "StorageIOError" in st["last_error"]
    env.clear()
    summary = store.compact()
    st = store.stats()["compaction"]
    assert st["merges"] == summary["merges"] >= 1 and st["last_error"] is None
    check_all(store, n, versions)
    store.close()


def test_background_merge_failures_quarantine_while_serving(disk: MemoryEnv) -> None:
    """The compaction thread's merges fail (EIO on its writes only): it retries with
    back-off and quarantines the inputs after ``merge_max_failures``; meanwhile
    flushes, reads and writes all succeed."""
    env = ThreadFaultEnv(disk, "banyanstore-compact")
    env.inject("write", errno.EIO, path_contains=".sst", times=None)
    store = banyanstore.open(ROOT, env=env, **BASE, merge_max_failures=2)
    versions: dict[int, int] = {}
    n = _make_tables(store, 2, 20, versions)
    wait_for(lambda: len(store.stats()["compaction"]["quarantined"]) >= 2)
    st = store.stats()["compaction"]
    assert st["failed_merges"] >= 2 and st["merges"] == 0 and st["last_error"]
    write(store, n, n + 30, versions)  # writers and flushes unaffected
    store.flush()
    check_all(store, n + 30, versions)
    store.close()
    assert not unnamed_after_close(disk), "a failed merge left its partial output"
    reopen_after_power_loss(disk, n + 30, versions)


def test_quarantined_tables_do_not_stall_writers_for_ever(disk: MemoryEnv) -> None:
    """Tables quarantined after failed merges are never merged again: a keyspace whose
    count stays at ``max_tables_before_stall`` only because of them must not stall the
    writer (it used to wait for ever, holding the write lock); where merges can still
    help, the writer waits for them as before."""
    env = ThreadFaultEnv(disk, "banyanstore-compact")
    env.inject("write", errno.EIO, path_contains=".sst", times=None)
    store = banyanstore.open(ROOT, env=env, **BASE, merge_max_failures=1,
                             max_tables_before_slowdown=2, max_tables_before_stall=3)
    versions: dict[int, int] = {}
    n = _make_tables(store, 2, 20, versions)
    wait_for(lambda: len(store.stats()["compaction"]["quarantined"]) >= 2)
    env.clear()  # later merges succeed; the quarantined tables stay as they are
    done = threading.Event()

    def writes() -> None:
        _make_tables_from(store, n, 4, 20, versions)
        done.set()
    writer = threading.Thread(target=writes, daemon=True)
    writer.start()
    assert done.wait(30), "the writer stalled for ever behind quarantined tables"
    check_all(store, n + 80, versions)
    assert store.stats()["compaction"]["merges"] >= 1  # the new tables were merged
    store.close()
    reopen_after_power_loss(disk, n + 80, versions)


def test_a_min_width_above_the_stall_limit_does_not_stall_writers_for_ever(
        disk: MemoryEnv) -> None:
    """``compaction_min_width`` above ``max_tables_before_stall`` (both valid): at the
    stall limit the compactor merges a narrower window rather than none (it used to
    pick none, and the writer waited for ever)."""
    store = banyanstore.open(ROOT, env=disk, **{**BASE, "compaction_min_width": 8},
                             compaction_max_width=8, max_tables_before_slowdown=2,
                             max_tables_before_stall=4)
    versions: dict[int, int] = {}
    done = threading.Event()

    def writes() -> None:
        _make_tables_from(store, 0, 8, 20, versions)
        done.set()
    writer = threading.Thread(target=writes, daemon=True)
    writer.start()
    assert done.wait(30), "the writer stalled for ever: no window of compaction_min_width"
    check_all(store, 160, versions)
    assert store.stats()["compaction"]["merges"] >= 1
    store.close()
    reopen_after_power_loss(disk, 160, versions)


def _make_tables_from(store: Any, n: int, count: int, per: int, versions: dict[int, int]) -> None:
    for _ in range(count):
        write(store, n, n + per, versions)
        store.flush()
        n += per


@pytest.mark.parametrize("how", ["write-enospc", "free-space-check"])
def test_disk_full_during_merges_stalls_writers_then_resumes(disk: MemoryEnv, how: str) -> None:
    """Merges fail for lack of space (ENOSPC on their writes, or the free-space check
    before a merge): writers are not disturbed until the table count reaches
    ``max_tables_before_stall``, then get DiskFullError; inputs are not quarantined
    (a full disk is not their fault); when space returns merges resume and writes go on."""
    env = ThreadFaultEnv(disk, "banyanstore-compact")
    store = banyanstore.open(ROOT, env=env, **BASE, max_tables_before_slowdown=2,
                             max_tables_before_stall=4, merge_max_failures=1)
    if how == "write-enospc":
        env.inject("write", errno.ENOSPC, path_contains=".sst", times=None)
    else:
        disk.capacity = 1  # free_space() reports 0 bytes
    versions: dict[int, int] = {}
    i = 0
    with pytest.raises(DiskFullError):
        while True:
            write(store, i, i + 1, versions)
            i += 1
            assert i < 5000, "writers never stalled"
    assert len(_tables(store)) >= 4, "DiskFullError before the writer was stalled"
    st = store.stats()
    assert st["compaction"]["quarantined"] == [] and st["compaction"]["failed_merges"] >= 1
    assert st["stalls"]["count"] >= 1
    check_all(store, i, versions)
    env.clear()
    disk.capacity = 1 << 40
    write(store, i, i + 200, versions)  # resumes: merges catch up, the stall ends
    wait_for(lambda: store.stats()["compaction"]["merges"] >= 1)
    store.flush()
    check_all(store, i + 200, versions)
    store.close()
    assert not unnamed_after_close(disk), "a failed merge left its partial output"
    reopen_after_power_loss(disk, i + 200, versions)


def test_writer_gets_no_stale_disk_full_error_after_space_returns(disk: MemoryEnv) -> None:
    """Once space returns, a stalled writer waits for the compactor's retry instead of
    failing with the error of a merge attempted while the disk was full.  (The merge
    lock is held for a moment so the retry cannot have happened before the write.)"""
    env = ThreadFaultEnv(disk, "banyanstore-compact")
    store = banyanstore.open(ROOT, env=env, **BASE, max_tables_before_slowdown=2,
                             max_tables_before_stall=4)
    env.inject("write", errno.ENOSPC, path_contains=".sst", times=None)
    versions: dict[int, int] = {}
    i = 0
    try:
        with pytest.raises(DiskFullError):
            while True:
                write(store, i, i + 1, versions)
                i += 1
        env.clear()
        held = threading.Event()

        def hold_merges() -> None:
            with store._compactor._merge_lock:
                held.set()
                time.sleep(0.3)
        holder = threading.Thread(target=hold_merges)
        holder.start()
        held.wait()
        try:
            write(store, i, i + 1, versions)  # must wait for the retry, not raise
        finally:
            holder.join()
        check_all(store, i + 1, versions)
    finally:
        store.close()


# -- the manifest --------------------------------------------------------------------------

def _current(disk: MemoryEnv) -> bytes:
    return disk.read_file(f"{ROOT}/CURRENT")


@pytest.mark.parametrize("fault", ["sync", "short-write", "sync-twice"])
def test_failing_manifest_edit_rolls_to_a_fresh_manifest(disk: MemoryEnv, fault: str) -> None:
    """A manifest edit whose write or sync fails (so a partial or unsynced record may sit
    at its end): the flush is retried, the next edit goes to a fresh manifest (CURRENT
    switches), and reopening -- cleanly or after a power loss -- raises no
    CorruptionError and loses nothing acknowledged."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **BASE, compaction=False)
    versions: dict[int, int] = {}
    write(store, 0, 30, versions)
    before = _current(disk)
    if fault == "sync":
        env.inject("sync", errno.EIO, path_contains="MANIFEST")
    elif fault == "sync-twice":  # the edit's sync, then the fresh manifest's sync, fail
        env.inject("sync", errno.EIO, path_contains="MANIFEST", times=2)
    else:
        env.inject("write", errno.EIO, path_contains="MANIFEST", short_write=True)
    store.flush()  # fails once (or twice), then succeeds on retry
    assert _current(disk) != before, "the edit after a failed one did not roll the manifest"
    manifests = [n for n in disk.listdir(ROOT) if n.startswith("MANIFEST-")]
    assert len(manifests) == 1
    write(store, 30, 50, versions)
    store.flush()
    check_all(store, 50, versions)
    assert not unnamed_tables(store, disk)
    store.close()
    store = banyanstore.open(ROOT, env=disk, **BASE, compaction=False)
    check_all(store, 50, versions)
    store.close()
    reopen_after_power_loss(disk, 50, versions, compaction=False)


def test_failed_manifest_sync_then_power_loss(disk: MemoryEnv) -> None:
    """Power loss right after a manifest sync failed (before any later edit could roll
    the file): the unsynced edit is dropped, its tables are orphans that reopen removes,
    and the WAL still has the data."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **BASE, compaction=False)
    versions: dict[int, int] = {}
    write(store, 0, 30, versions)
    env.inject("sync", errno.EIO, path_contains="MANIFEST", times=None)
    with pytest.raises(StorageIOError):
        store.flush()
    disk.crash()
    try:
        store.close()
    except StorageIOError:
        pass
    store = banyanstore.open(ROOT, env=disk, **BASE, compaction=False)
    check_all(store, 30, versions)
    assert not unnamed_tables(store, disk)
    store.close()


@pytest.mark.parametrize("op", ["remove", "sync_dir"])
def test_failed_wal_cut_after_a_flush_does_not_repeat_the_flush(disk: MemoryEnv, op: str) -> None:
    """Cutting the WAL after a flush's edit is durable fails: the flush is done all the
    same (its tables are named and in the views), so it must not be retried -- a retry
    installed the same entries a second time and every later merge of them failed with
    ``ValueError: out of order`` (found by tests/torture/faults.py)."""
    env = FaultEnv(disk)
    store = banyanstore.open(ROOT, env=env, **BASE, compaction=False)
    versions: dict[int, int] = {}
    write(store, 0, 40, versions)
    # (sync_dir: the first one is the new segment's at the switch, the second the cut's)
    rule = env.inject(op, errno.EIO, path_contains="/wal", after=1 if op == "sync_dir" else 0)
    store.flush()
    assert rule.fired == 1
    assert len(_tables(store)) == 1, "the flush was repeated: its entries are in two tables"
    write(store, 40, 80, versions)
    store.flush()
    store.compact()
    check_all(store, 80, versions)
    assert not unnamed_tables(store, disk)
    store.close()
    reopen_after_power_loss(disk, 80, versions, compaction=False)


@pytest.mark.parametrize("op", ["mkdir", "link", "sync_dir", "open_writable", "write", "sync",
                                "rename"])
def test_failed_checkpoint_leaves_no_partial_destination(op: str) -> None:
    """A checkpoint whose destination fails an IO step removes what it wrote there, so
    a retry works; the source's tables are untouched."""
    env = FaultEnv(MemoryEnv())
    store = banyanstore.open("/mem/src", env=env, memtable_size=64 * 1024,
                             compaction=False)  # the source's tables stay as they are
    for i in range(3000):
        store.put(b"k%05d" % i, b"v" * 30)
    store.keyspace("idx", ttl=1000).put(b"x", b"y")
    store.flush()
    source_tables = env.listdir("/mem/src/tables")
    rule = env.inject(op, errno.EIO, path_contains="/mem/parent/dst")
    with pytest.raises(StorageIOError):
        store.checkpoint("/mem/parent/dst")
    assert rule.fired == 1
    assert not env.exists("/mem/parent")  # the missing parent it created went too
    env.clear()
    version = store.checkpoint("/mem/parent/dst")
    assert env.listdir("/mem/src/tables") == source_tables
    with banyanstore.open("/mem/parent/dst", env=env) as copy:
        assert copy.version == version and copy.get(b"k02999") == b"v" * 30
        assert copy.keyspace_info()["idx"]["ttl"] == 1000
    store.close()


def test_failed_checkpoint_cleans_up_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """What the failure kept from being made is not "could not remove"d in the log."""
    env = FaultEnv(MemoryEnv())
    store = banyanstore.open("/mem/src", env=env)
    store.put(b"k", b"v")
    env.inject("mkdir", errno.EIO, path_contains="/mem/a/dst")
    with caplog.at_level("WARNING"), pytest.raises(StorageIOError):
        store.checkpoint("/mem/a/dst")
    assert not [r for r in caplog.records if "could not remove" in r.getMessage()]
    assert not env.exists("/mem/a")
    env.clear()
    env.write_file_atomic("/mem/afile", b"x")
    with caplog.at_level("WARNING"), pytest.raises(StorageIOError):
        store.checkpoint("/mem/afile/dst")  # ENOTDIR, as open() raises there
    assert not [r for r in caplog.records if "could not remove" in r.getMessage()]
    store.close()


def test_failed_checkpoint_keeps_the_empty_directory_it_was_given() -> None:
    env = FaultEnv(MemoryEnv())
    store = banyanstore.open("/mem/src", env=env)
    store.put(b"k", b"v")
    env.mkdir("/mem/dst")
    env.inject("sync_dir", errno.EIO, path_contains="/mem/dst")
    with pytest.raises(StorageIOError):
        store.checkpoint("/mem/dst")
    assert env.listdir("/mem/dst") == []
    env.clear()
    store.checkpoint("/mem/dst")
    with banyanstore.open("/mem/dst", env=env) as copy:
        assert copy.get(b"k") == b"v"
    store.close()


def test_two_checkpoints_to_one_destination_at_once() -> None:
    """Both find the destination empty; one writes it, the other is refused -- and
    cleaning up after the refused one does not remove the other's files."""
    env = MemoryEnv()
    store = banyanstore.open("/mem/src", env=env, memtable_size=64 * 1024, compaction=False)
    for i in range(5000):
        store.put(b"k%05d" % i, b"v" * 30)
    store.flush()
    link = env.link

    def slow_link(src: str, dst: str) -> None:  # both checks pass before either links
        time.sleep(0.005)
        link(src, dst)

    env.link = slow_link  # type: ignore[method-assign]
    outcomes: list[object] = []
    start = threading.Barrier(2)

    def checkpoint() -> None:
        start.wait()
        try:
            outcomes.append(store.checkpoint("/mem/dst"))
        except NotAStoreError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=checkpoint) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["NotAStoreError", "int"]
    with banyanstore.open("/mem/dst", env=env, read_only=True) as copy:
        assert sum(1 for _ in copy.scan(keys_only=True)) == 5000
    store.close()


@pytest.mark.parametrize("dest", ["/mem/dst", "/mem/a/b/dst"])
def test_checkpoint_makes_the_directories_it_created_durable(dest: str) -> None:
    """A new directory's name is durable once its parent is synced (ext4, XFS): a
    checkpoint syncs the parent of every directory it created, or a power loss after it
    returned could take the whole copy away."""
    synced: list[str] = []

    class Spy(HookedEnv):
        def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
            if op == "sync_dir":
                synced.extend(paths)

    env = Spy(MemoryEnv())
    store = banyanstore.open("/mem/src", env=env)
    store.put(b"k", b"v")
    synced.clear()
    store.checkpoint(dest)
    parents = [dest]
    while parents[-1] != "/mem":
        parents.append(posixpath.dirname(parents[-1]))
    assert set(parents) <= set(synced)  # each created directory's parent, /mem included
    store.close()


def test_a_checkpoint_whose_marker_another_checkpoint_locked_first_removes_none_of_it() -> None:
    """Another process's checkpoint starts in the destination after this one found it
    empty (here: its marker made and locked as this one makes the directory): this one
    is refused with StoreLockedError, and its clean-up leaves that marker alone (it used
    to note the marker as its own before taking its lock, and removed it)."""
    from banyanstore.errors import StoreLockedError
    env = MemoryEnv()
    store = banyanstore.open("/mem/src", env=env, compaction=False)
    store.put(b"k", b"v")
    mkdir, held = env.mkdir, []

    def other_starts(path: str) -> None:
        mkdir(path)
        if path == "/mem/dst":
            held.append(env.lock("/mem/dst/CHECKPOINT-INCOMPLETE"))

    env.mkdir = other_starts  # type: ignore[method-assign]
    with pytest.raises(StoreLockedError, match="being written by another checkpoint"):
        store.checkpoint("/mem/dst")
    assert env.listdir("/mem/dst") == ["CHECKPOINT-INCOMPLETE"]
    held[0].release()
    env.mkdir = mkdir  # type: ignore[method-assign]
    store.checkpoint("/mem/dst")  # nobody holds it now: cleared as a killed one's, and written
    with banyanstore.open("/mem/dst", env=env, read_only=True) as copy:
        assert copy.get(b"k") == b"v"
    store.close()


class VanishingTables(HookedEnv):
    """Deletes the next ``vanish`` new tables just before the store opens them for reading
    (another process removing files in the store's directory)."""

    def __init__(self, inner: MemoryEnv) -> None:
        super().__init__(inner)
        self.vanish = 0

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if self.vanish and op == "open_readable" and paths[0].endswith(".sst"):
            self.vanish -= 1
            self.inner.remove(paths[0])


def test_a_table_removed_before_it_is_opened_is_retried_at_close_and_loses_nothing() -> None:
    disk = MemoryEnv()
    env = VanishingTables(disk)
    store = banyanstore.open(ROOT, env=env, compaction=False, **BASE)
    store.put(b"k", b"v")
    env.vanish = 1
    store.close()  # its flush's table vanished once: built again
    assert env.vanish == 0
    with banyanstore.open(ROOT, env=disk, **BASE) as store:
        assert store.get(b"k") == b"v"


def test_tables_that_keep_vanishing_fail_close_with_a_storage_error() -> None:
    """The flush's error a writer or close() gets is the store's StorageIOError naming the
    table -- it was the env's plain FileNotFoundError -- and the WAL keeps the write."""
    disk = MemoryEnv()
    env = VanishingTables(disk)
    store = banyanstore.open(ROOT, env=env, compaction=False, **BASE)
    store.put(b"k", b"v")
    env.vanish = 1_000_000
    with pytest.raises(StorageIOError, match=r"open for reading failed on /db/tables/\d+\.sst") as info:
        store.close()
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with banyanstore.open(ROOT, env=disk, **BASE) as store:
        assert store.get(b"k") == b"v"


def test_a_checkpoint_failing_at_any_call_to_its_destination_leaves_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    """An IO error at the n-th call of each kind to the destination, for every n: the
    checkpoint raises, all it wrote goes (nothing "could not remove"d) and a retry to the
    same destination writes the copy."""
    env = FaultEnv(MemoryEnv())
    store = banyanstore.open("/mem/src", env=env, compaction=False)
    for table in range(3):
        store.put(b"k%d" % table, b"v")
        store.flush()
    failures = 0
    for op in ("mkdir", "lock", "open_writable", "write", "sync", "sync_dir", "link", "rename",
               "remove", "listdir"):
        for after in range(100):
            rule = env.inject(op, errno.EIO, path_contains="/mem/parent/dst", after=after)
            failed = False
            with caplog.at_level("WARNING"):
                try:
                    store.checkpoint("/mem/parent/dst")
                except StorageIOError:
                    failed = True
            env.clear()
            if not rule.fired:
                break
            assert failed, (op, after)  # (no fault at the destination is let pass)
            assert not env.exists("/mem/parent"), (op, after)
            failures += 1
            store.checkpoint("/mem/parent/dst")  # the retry
            _remove_tree(env, "/mem/parent")
        _remove_tree(env, "/mem/parent")
    assert failures > 20
    assert not [r.getMessage() for r in caplog.records if "could not remove" in r.getMessage()]
    store.close()


def _remove_tree(env: FaultEnv, path: str) -> None:
    for name in env.listdir(path):
        try:
            env.remove(f"{path}/{name}")
        except OSError:  # a directory
            _remove_tree(env, f"{path}/{name}")
    env.rmdir(path)


def test_a_ctrl_c_in_the_cleanup_of_a_failed_checkpoint_leaves_what_a_retry_clears(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint fails (EIO linking its second table) and a Ctrl-C then cuts its
    clean-up short at the n-th removal, for every n: what is left is nothing, an empty
    directory, or the marker with what it marks -- never files without the marker,
    which a retry refuses as somebody else's -- so a retry to the same destination
    writes the copy."""
    env = FaultEnv(MemoryEnv())
    store = banyanstore.open("/mem/src", env=env, compaction=False)
    for table in range(3):
        store.put(b"k%d" % table, b"v")
        store.flush()
    removals = {"left": 0}

    def interrupting(remove: Callable[[str], None]) -> Callable[[str], None]:
        def call(path: str) -> None:
            removals["left"] -= 1
            if removals["left"] < 0:
                raise KeyboardInterrupt
            remove(path)
        return call

    monkeypatch.setattr(env, "remove", interrupting(env.remove))
    monkeypatch.setattr(env, "rmdir", interrupting(env.rmdir))
    for at in range(100):
        env.inject("link", errno.EIO, path_contains="/mem/parent/dst", after=1)
        removals["left"] = at
        with pytest.raises((KeyboardInterrupt, StorageIOError)) as raised:
            store.checkpoint("/mem/parent/dst")
        env.clear()
        removals["left"] = 1 << 30
        store.checkpoint("/mem/parent/dst")  # the retry
        _remove_tree(env, "/mem/parent")
        if raised.type is StorageIOError:  # the clean-up ran to its end
            break
    assert at > 5
    store.close()
