"""The Store's public contract (docs/api.md, Store and Versions), over every IO mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import banyanstore
from banyanstore.errors import (
    ConfigError,
    EntryTooLargeError,
    NotAStoreError,
    ReadOnlyError,
    StoreClosedError,
    StoreLockedError,
    StoreNotFoundError,
    VersionUnavailableError,
)


@pytest.fixture
def store(env_dir):
    env, root = env_dir
    s = banyanstore.open(root, env=env, memtable_size=64 * 1024, block_size=1024,
                         history_retention=3600)
    yield s
    s.close()


def test_versions_updates_deletes_history(store):
    v1 = store.put(b"k", b"a")
    v2 = store.put(b"k", b"b")
    v3 = store.delete(b"k")
    assert (v1, v2, v3) == (1, 2, 3) and store.version == 3
    assert store.get(b"k") is None
    assert [store.get(b"k", version=v) for v in (0, 1, 2, 3)] == [None, b"a", b"b", None]
    assert list(store.history(b"k")) == [(3, None), (2, b"b"), (1, b"a")]
    with pytest.raises(VersionUnavailableError):
        store.get(b"k", version=4)
    with pytest.raises(TypeError):
        store.get(b"k", version="1")


def test_reads_identical_from_memtable_and_tables(store):
    for i in range(3000):
        store.put(b"key%05d" % i, b"v%d" % i)
    v_mid = store.version
    for i in range(0, 3000, 3):
        store.delete(b"key%05d" % i)
    before = (list(store.scan()), store.get(b"key00001"), store.get(b"key00003", version=v_mid),
              list(store.scan(b"key00100", b"key00200", reverse=True, limit=7)),
              store.multi_get([b"key00001", b"key00003", b"nope"]), list(store.history(b"key00003")))
    store.flush()
    after = (list(store.scan()), store.get(b"key00001"), store.get(b"key00003", version=v_mid),
             list(store.scan(b"key00100", b"key00200", reverse=True, limit=7)),
             store.multi_get([b"key00001", b"key00003", b"nope"]), list(store.history(b"key00003")))
    assert before == after
    assert len(after[0]) == 2000 and after[2] == b"v3" and after[4] == [b"v1", None, None]
    assert [k for k, _ in after[3]] == [b"key%05d" % i for i in (199, 197, 196, 194, 193, 191, 190)]
    assert store.stats()["keyspaces"]["default"]["tables"] >= 1


def test_batch_is_atomic_across_keyspaces(store):
    index = store.keyspace("index")
    with store.batch() as b:
        b.put(b"a", b"1")
        b.put(b"a", b"1", keyspace=index)
        b.delete(b"missing", keyspace="index")
    assert b.version == store.version == 1
    with pytest.raises(RuntimeError):
        with store.batch() as b2:
            b2.put(b"b", b"2")
            raise RuntimeError("abort")
    assert store.get(b"b") is None and store.version == 1
    with store.batch() as empty:
        pass
    assert empty.version is None and store.version == 1
    assert index.get(b"a") == b"1" and store.keyspaces() == ["default", "index"]



def test_a_batch_whose_commit_failed_does_not_say_it_was_committed(store):
    """A commit that raised (here: a keyspace dropped before it) left the batch refusing
    a retry and further operations with "this batch was already committed or
    discarded" -- a retry loop read that as "it was written".  The RuntimeError now says
    the commit failed, and which error it raised; the batch still commits at most once."""
    from banyanstore.errors import KeyspaceNotFoundError
    index = store.keyspace("index")
    b = store.batch()
    b.put(b"a", b"1")
    b.put(b"b", b"2", keyspace=index)
    store.drop_keyspace("index")
    before = store.version
    with pytest.raises(KeyspaceNotFoundError):
        b.commit()
    for again in (b.commit, lambda: b.put(b"c", b"3"), lambda: b.delete(b"a")):
        with pytest.raises(RuntimeError, match="commit failed.*KeyspaceNotFoundError") as info:
            again()
        assert "already committed" not in str(info.value)
    assert b.version is None and store.version == before and store.get(b"a") is None

def test_scan_arguments(store):
    for k in (b"a", b"ab", b"abc", b"b", b"\xff", b"\xff\xff"):
        store.put(k, k)
    assert [k for k, _ in store.scan(prefix=b"ab")] == [b"ab", b"abc"]
    assert [k for k, _ in store.scan(prefix=b"\xff")] == [b"\xff", b"\xff\xff"]
    assert [k for k, _ in store.scan(start=b"ab", end=b"b")] == [b"ab", b"abc"]
    assert [k for k, _ in store.scan(reverse=True, limit=2)] == [b"\xff\xff", b"\xff"]
    assert list(store.scan(limit=0)) == []
    assert [k for k, _ in store.scan(start=bytearray(b"b"))] == [b"b", b"\xff", b"\xff\xff"]
    with pytest.raises(TypeError):
        list(store.scan(start="a"))


def test_a_limit_larger_than_any_count_reads_like_no_limit(store):
    """``limit`` is any int >= 0 (docs/api.md): one past what a C integer holds, read by the
    compiled core's merge, returns every key as ``limit=None`` does, in both directions, from
    the memtable and from tables alike."""
    for i in range(40):
        store.put(b"k%02d" % i, b"v%d" % i)
    store.flush()
    store.put(b"k05", b"new")
    for reverse in (False, True):
        want = list(store.scan(b"k03", b"k30", reverse=reverse))
        for limit in (2**63 - 1, 2**63, 2**64, 10**30):
            assert list(store.scan(b"k03", b"k30", reverse=reverse, limit=limit)) == want
            assert list(store.scan(reverse=reverse, limit=limit, keys_only=True)) == \
                [k for k, _ in store.scan(reverse=reverse)]


def test_type_and_size_errors(store):
    with pytest.raises(TypeError, match="key"):
        store.put("k", b"v")
    with pytest.raises(TypeError, match="value"):
        store.put(b"k", 1)
    with pytest.raises(EntryTooLargeError):
        store.put(b"k" * (64 * 1024 + 1), b"v")
    assert store.put(memoryview(b"k"), bytearray(b"v")) == 1 and store.get(b"k") == b"v"


def test_snapshot_and_checkpoint(store, env_dir):
    env, root = env_dir
    store.put(b"k", b"1")
    snap = store.snapshot()
    store.put(b"k", b"2")
    store.keyspace("idx").put(b"x", b"y")
    assert snap.get(b"k") == b"1" and list(snap.scan()) == [(b"k", b"1")]
    snap.close()
    with pytest.raises(StoreClosedError):
        snap.get(b"k")
    dest = f"{root}-ckpt"
    version = store.checkpoint(dest)
    assert version == store.version
    store.put(b"k", b"3")
    with banyanstore.open(dest, env=env) as copy:
        assert copy.get(b"k") == b"2" and copy.version == version
        assert copy.keyspace("idx").get(b"x") == b"y"
        copy.put(b"k", b"independent")
    assert store.get(b"k") == b"3"


def test_reopen_keeps_everything(env_dir):
    env, root = env_dir
    with banyanstore.open(root, env=env, memtable_size=64 * 1024) as s:
        for i in range(2000):
            s.put(b"%06d" % i, b"x" * 50)
        s.keyspace("other").put(b"o", b"p")
        last = s.version
    with banyanstore.open(root, env=env) as s:
        assert s.version == last and s.get(b"001999") == b"x" * 50
        assert s.keyspace("other").get(b"o") == b"p"
        assert s.put(b"n", b"v") == last + 1


def test_closed_read_only_and_locked(tmp_path):
    path = tmp_path / "db"
    s = banyanstore.open(path)
    s.put(b"k", b"v")
    s.sync()
    with pytest.raises(StoreLockedError):
        banyanstore.open(path)
    code = ("import banyanstore, sys\n"
            "try:\n    banyanstore.open(sys.argv[1])\n"
            "except banyanstore.StoreLockedError:\n    sys.exit(7)\n")
    assert subprocess.run([sys.executable, "-c", code, str(path)]).returncode == 7
    with banyanstore.open(path, read_only=True) as ro:
        assert ro.get(b"k") == b"v"
        with pytest.raises(ReadOnlyError):
            ro.put(b"k", b"w")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreClosedError):
        s.put(b"k", b"v")
    with pytest.raises(StoreNotFoundError):
        banyanstore.open(tmp_path / "missing", create_if_missing=False)


def test_options_precedence_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("BANYANSTORE_BLOCK_SIZE", "4096")
    monkeypatch.setenv("BANYANSTORE_IO_MODE", "nonblocking")
    with banyanstore.open(tmp_path / "a", io_mode="sync") as s:
        assert s.options.block_size == 4096 and s.options.io_mode == "sync"
        assert s.stats()["io_mode"] == "sync"
    cfg = tmp_path / "opts.toml"
    cfg.write_text('memtable_size = 1048576\ncompression = "zstd"\n')
    opts = banyanstore.Options.from_file(cfg)
    with banyanstore.open(tmp_path / "b", options=opts) as s:
        assert s.options.memtable_size == 1 << 20 and s.options.compression == "zstd"
        assert s.stats()["io_mode"] == "nonblocking"
    with pytest.raises(ConfigError, match="memtable_sise"):
        banyanstore.open(tmp_path / "c", memtable_sise=1)
    with pytest.raises(ConfigError, match="compression"):
        banyanstore.open(tmp_path / "c", compression="gzip")
    monkeypatch.setenv("BANYANSTORE_WAL_SYNC", "sometimes")
    with pytest.raises(ConfigError, match="wal_sync"):
        banyanstore.open(tmp_path / "c")


def test_auto_io_mode_falls_back_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("BANYANSTORE_TEST_DISABLE_IO_URING", "1")
    with banyanstore.open(tmp_path / "db", io_mode="auto") as s:
        io = s.stats()["io"]
        assert io["io_mode"] == "sync" and io["io_mode_requested"] == "auto"
        assert io["io_mode_fallback_reason"]


def test_stats_report_what_operators_need(store):
    for i in range(500):
        store.put(b"%04d" % i, b"v" * 200)
    store.flush()
    store.get(b"0001")
    st = store.stats()
    for key in ("version", "keyspaces", "memtable_bytes", "block_cache", "bloom", "io_mode",
                "wal_bytes", "flush", "stalls"):
        assert key in st, key
    assert st["version"] == 500 and st["keyspaces"]["default"]["table_bytes"] > 0


def test_dbm_and_shelve(tmp_path):
    import shelve

    import banyanstore.dbm as bdbm
    path = str(tmp_path / "db")
    with pytest.raises(bdbm.error):
        bdbm.open(path, "r")
    with bdbm.open(path, "c") as db:
        db["a"] = "1"
        db[b"b"] = b"2"
        assert db["a"] == b"1" and len(db) == 2 and sorted(db.keys()) == [b"a", b"b"]
        del db["a"]
        assert "a" not in db and db.get("a", b"d") == b"d"
        with pytest.raises(KeyError):
            del db["a"]
    with bdbm.open(path, "r") as db:
        assert db["b"] == b"2"
        with pytest.raises(bdbm.error):
            db["c"] = "3"
    with bdbm.open(path, "n") as db:
        assert len(db) == 0
    assert issubclass(bdbm.error, OSError)
    with shelve.Shelf(bdbm.open(os.path.join(tmp_path, "s"), "c")) as sh:
        sh["obj"] = {"spans": [1, 2]}
    with shelve.Shelf(bdbm.open(os.path.join(tmp_path, "s"), "w")) as sh:
        assert sh["obj"] == {"spans": [1, 2]}


def test_merges_do_not_leak_file_descriptors(tmp_path):
    """Tables dropped by merges release their descriptors once no view holds them."""
    import gc

    def open_fds():
        return len(os.listdir("/proc/self/fd"))

    with banyanstore.open(tmp_path / "db", memtable_size=64 * 1024, compaction_min_width=2) as s:
        for i in range(400):  # one merge first, so worker processes (if any) are running
            s.put(b"%05d" % i, b"first" * 40)
        s.flush()
        s.compact()
        gc.collect()
        before = open_fds()
        for round_ in range(30):
            for i in range(400):
                s.put(b"%05d" % i, b"r%d" % round_ * 40)
            s.flush()
        s.compact()
        gc.collect()
        assert s.stats()["compaction"]["merges"] >= 10
        assert open_fds() <= before + 6


def test_multi_get_reads_all_table_blocks_in_one_batch(tmp_path):
    """multi_get over several tables issues exactly one read_batch for its misses."""
    from banyanstore.io.faults import FaultEnv
    from banyanstore.io.posix import PosixEnv

    env = FaultEnv(PosixEnv())
    with banyanstore.open(str(tmp_path / "db"), env=env, block_cache_size=0, block_size=1024,
                          compaction=False) as s:
        for round_ in range(3):
            for i in range(round_, 600, 3):
                s.put(b"%05d" % i, b"round%d-%d" % (round_, i))
            s.flush()
        s.put(b"00001", b"in-memtable")
        keys = [b"%05d" % i for i in range(0, 600, 7)] + [b"00001", b"missing"]
        before = env.calls["read_batch"]
        got = s.multi_get(keys)
        assert env.calls["read_batch"] - before == 1
        assert got == [s.get(k) for k in keys]
        assert got[-2:] == [b"in-memtable", None] and got[0] == b"round0-0"


def test_every_read_after_close_raises(tmp_path):
    s = banyanstore.open(tmp_path / "db")
    s.put(b"k", b"v")
    s.flush()
    idx = s.keyspace("idx")
    s.close()
    for call in (lambda: s.get(b"k"), lambda: s.multi_get([b"k"]), lambda: list(s.scan()),
                 lambda: list(s.history(b"k")), lambda: idx.get(b"k"), lambda: s.snapshot(),
                 lambda: s.put(b"k", b"v"), lambda: s.flush(), lambda: s.sync()):
        with pytest.raises(StoreClosedError):
            call()



@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "read-only"])
def test_a_closed_store_hands_out_no_keyspace_and_still_describes_itself(tmp_path, read_only):
    """After close(), store.keyspace() raises StoreClosedError for an existing keyspace as
    for a new name (it handed out a handle for an existing one, whose every use then
    raised); what docs/api.md lists as answering after close still answers."""
    path = tmp_path / "db"
    with banyanstore.open(path) as w:
        w.keyspace("idx").put(b"k", b"v")
    s = banyanstore.open(path, read_only=read_only)
    s.close()
    for name in ("idx", "default", "new"):
        with pytest.raises(StoreClosedError):
            s.keyspace(name)
    assert s.closed and s.keyspaces() == ["default", "idx"]
    assert s.keyspace_info() == {"default": {"id": 0, "ttl": None}, "idx": {"id": 1, "ttl": None}}
    assert s.version == 1 and s.history_floor == 0 and s.oldest_version == 0
    assert s.stats()["closed"] is True and s.path == str(path) and s.options is not None

def test_bloom_counters_and_cache_hit_rate_in_stats(tmp_path):
    with banyanstore.open(tmp_path / "db", compaction=False) as s:
        for i in range(5000):
            s.put(b"key%05d" % i, b"v")
        s.flush()
        for i in range(2000):
            assert s.get(b"key%05dx" % i) is None  # inside the fences: the filter decides
            assert s.get(b"key%05d" % i) == b"v"
        st = s.stats()
        assert st["bloom"]["useful"] >= 1900  # 12 bits/key: ~1% false positives
        assert st["bloom"]["passed_but_missed"] <= 100
        assert st["block_cache"]["hits"] > 0 and 0 < st["block_cache"]["hit_rate"] <= 1


def test_multi_get_counts_the_filters_answers_as_get_does(tmp_path):
    """multi_get's lookups count in stats()["bloom"] as the same gets do, in both engines
    (the pure-Python multi_get counted none of them; the compiled core's counted each)."""
    def bloom_after(read) -> dict:
        path = tmp_path / f"db{len(list(tmp_path.iterdir()))}"
        with banyanstore.open(path, compaction=False) as s:
            for t in range(3):  # three tables, each holding every third key
                for i in range(t, 1500, 3):
                    s.put(b"key%05d" % i, b"v")
                s.flush()
            keys = [b"key%05d" % i for i in range(0, 1500, 2)] + [b"key%05dx" % i for i in range(300)]
            read(s, keys)
            return s.stats()["bloom"]

    by_get = bloom_after(lambda s, keys: [s.get(k) for k in keys])
    by_multi_get = bloom_after(lambda s, keys: s.multi_get(keys))
    assert by_get["useful"] > 1000 and by_get["passed_but_missed"] > 0
    assert by_multi_get == by_get


def _cache_counts(s):
    bc = s.stats()["block_cache"]
    return bc["hits"], bc["misses"]


@pytest.mark.parametrize("read", [
    pytest.param(lambda s: list(s.scan(b"k001000", b"k001100")), id="short-range"),
    pytest.param(lambda s: list(s.scan(b"k001000", b"k004000")), id="long-range"),
    pytest.param(lambda s: list(s.scan(b"k001000", limit=60)), id="limited"),
    pytest.param(lambda s: list(s.scan(b"k001000", b"k001100", reverse=True)), id="reverse"),
    pytest.param(lambda s: s.multi_get([b"k001000", b"k001050", b"k009000"]), id="multi_get"),
])
def test_every_block_a_read_finds_cached_counts_as_a_cache_hit(tmp_path, read):
    """Reading what an identical read just cached misses nothing and hits every block it
    missed before: a scan's blocks past its first (and, in the pure-Python engine, every
    block of a scan or a multi_get) were served from the cache without being counted, so
    ``hit_rate`` under-reported the cache a range workload used."""
    with banyanstore.open(tmp_path / "db", compaction=False) as s:
        for i in range(20000):
            s.put(b"k%06d" % i, b"v" * 100)
        s.flush()
    with banyanstore.open(tmp_path / "db", compaction=False) as s:
        hits0, misses0 = _cache_counts(s)
        read(s)
        hits1, misses1 = _cache_counts(s)
        read(s)
        hits2, misses2 = _cache_counts(s)
        assert misses1 - misses0 >= 2  # the read spans several blocks
        assert misses2 == misses1
        assert hits2 - hits1 == (misses1 - misses0) + (hits1 - hits0)


def test_compact_one_keyspace_and_range_with_progress(tmp_path):
    with banyanstore.open(tmp_path / "db", compaction=False, memtable_size=1 << 20) as s:
        idx = s.keyspace("idx")
        for round_ in range(4):
            for i in range(300):
                s.put(b"a%04d" % i, b"r%d" % round_ * 30)
                idx.put(b"b%04d" % i, b"r%d" % round_ * 30)
            s.flush()
        tables = lambda: {k: v["tables"] for k, v in s.stats()["keyspaces"].items()}  # noqa: E731
        assert tables() == {"default": 4, "idx": 4}
        seen = []
        summary = s.compact("idx", progress=seen.append)
        assert tables() == {"default": 4, "idx": 1} and summary["merges"] == 1
        assert seen and seen[-1]["keyspace"] == "idx"
        s.compact(start=b"a0100", end=b"a0200")  # every table spans the range: all merge
        assert tables()["default"] == 1
        assert s.get(b"a0005") == b"r3" * 30 and idx.get(b"b0299") == b"r3" * 30


@pytest.mark.parametrize("start, end", [(b"a0200", b"a0100"), (b"a0100", b"a0100")],
                         ids=["reversed", "zero-width"])
def test_compact_of_an_empty_range_merges_nothing(tmp_path, start, end):
    """[start, end) with end <= start holds no key, so no table overlaps it: compact()
    merges nothing (as a scan of it reads nothing), even where tables span both bounds."""
    with banyanstore.open(tmp_path / "db", compaction=False, memtable_size=1 << 20) as s:
        for round_ in range(2):
            for i in range(300):
                s.put(b"a%04d" % i, b"r%d" % round_)
            s.flush()
        before = s.stats()["keyspaces"]["default"]["tables"]
        summary = s.compact(start=start, end=end)
        assert summary == {"merges": 0, "tables_before": before, "tables_after": before}
        assert s.stats()["compaction"]["merges"] == 0 and list(s.scan(start, end)) == []


def test_a_killed_worker_process_is_replaced(tmp_path):
    """Process mode: a worker that dies (here: SIGKILL) fails one flush or merge, which
    is retried on a fresh worker; nothing is lost and no worker outlives the store."""
    import signal
    import time

    # (values large enough that each memtable is over INLINE_FLUSH_BYTES: a smaller one is
    # flushed in this process when the worker is not running)
    with banyanstore.open(tmp_path / "db", compaction_mode="process", compaction=False) as s:
        for i in range(1000):
            s.put(b"a%04d" % i, b"1" * 1200)
        s.flush()
        pids = s._workers.pids()
        assert len(pids) == 1
        os.kill(pids[0], signal.SIGKILL)
        time.sleep(0.2)
        for i in range(1000):
            s.put(b"b%04d" % i, b"2" * 1200)
        s.flush()  # the first attempt meets the dead worker, the retry a new one
        s.compact()
        assert s._workers.pids() and pids[0] not in s._workers.pids()
        assert len(list(s.scan())) == 2000
        live = s._workers.pids()
    for pid in live:  # closed store: its workers are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_in_is_a_point_lookup_on_store_keyspace_and_snapshot(store, monkeypatch):
    """``key in store`` (and in a keyspace or snapshot) answers like ``get(key) is not
    None`` without iterating: scans are disabled here and ``in`` still works."""
    from banyanstore.lsm.view import View
    idx = store.keyspace("idx")
    for i in range(300):
        store.put(b"%04d" % i, b"v")
        idx.put(b"%04d" % i, b"i")
    store.flush()
    store.put(b"0007", b"newer")
    store.delete(b"0008")
    snap = store.snapshot()
    store.delete(b"0009")

    def no_scans(*args, **kwargs):
        raise AssertionError("`in` must not scan")
    monkeypatch.setattr(View, "scan", no_scans)
    assert b"0001" in store and b"0007" in store and bytearray(b"0002") in store
    assert b"0008" not in store and b"0009" not in store and b"zzzz" not in store
    assert b"0001" in idx and b"0300" not in idx
    assert b"0009" in snap and b"0008" not in snap
    snap.close()


def test_compact_outlives_a_merge_worker_killed_mid_call(tmp_path, monkeypatch):
    """Process mode: a merge worker killed from outside during compact() (the OOM killer,
    an operator) does not fail compact(): as a flush does, it tries again on a fresh
    worker.  A second death in a row is raised."""
    import signal
    import time

    from banyanstore.errors import StorageIOError
    from banyanstore.lsm.workers import Worker

    with banyanstore.open(tmp_path / "db", compaction_mode="process", compaction=False) as s:
        for round_ in range(3):
            for i in range(500):
                s.put(b"k%04d" % i, b"%d" % round_ * 40)
            s.flush()
        deaths = [1]
        real_call = Worker.call_streamed

        def dying_call(self, *args):
            if deaths[0] > 0:
                deaths[0] -= 1
                os.kill(self.pid, signal.SIGKILL)
                while self.alive:
                    time.sleep(0.01)
            return real_call(self, *args)
        monkeypatch.setattr(Worker, "call_streamed", dying_call)
        summary = s.compact()
        assert summary["merges"] == 1 and s.stats()["keyspaces"]["default"]["tables"] == 1
        assert s.get(b"k0499") == b"2" * 40
        for i in range(500):
            s.put(b"k%04d" % i, b"x")
        s.flush()
        deaths[0] = 2
        with pytest.raises(StorageIOError, match="died"):
            s.compact()
        assert len(list(s.scan())) == 500


_KILLED_CHECKPOINT = """
import os, signal, sys
import banyanstore
from banyanstore.io.hooked import HookedEnv
from banyanstore.io.posix import PosixEnv

class KillAtFifthLink(HookedEnv):
    links = 0

    def hook(self, op, paths, nbytes=0):
        if op == "link":
            self.links += 1
            if self.links == 5:
                os.kill(os.getpid(), signal.SIGKILL)

store = banyanstore.open(sys.argv[1], env=KillAtFifthLink(PosixEnv()), compaction=False)
store.checkpoint(sys.argv[2])
"""


def test_a_killed_checkpoint_is_refused_by_open_and_replaced_by_a_retry(tmp_path):
    """SIGKILL part-way through a checkpoint: the destination is not taken for a damaged
    store (no "repair" it), open() refuses it, and a new checkpoint to it replaces it."""
    src, dest = str(tmp_path / "src"), str(tmp_path / "ck")
    with banyanstore.open(src, memtable_size=64 * 1024, compaction=False) as s:
        for i in range(20000):
            s.put(b"k%05d" % i, b"v" * 40)
        s.keyspace("idx", ttl=99).put(b"x", b"y")
    assert len(os.listdir(f"{src}/tables")) > 5
    child = subprocess.run([sys.executable, "-c", _KILLED_CHECKPOINT, src, dest], timeout=120)
    assert child.returncode == -9 and os.listdir(f"{dest}/tables")
    with pytest.raises(NotAStoreError, match="interrupted checkpoint"):
        banyanstore.open(dest)
    with banyanstore.open(src) as s:
        version = s.checkpoint(dest)
    with banyanstore.open(dest, read_only=True) as copy:
        assert copy.version == version and copy.get(b"k19999") == b"v" * 40
        assert copy.keyspace_info()["idx"]["ttl"] == 99


_KILLED_AT_MARKER_REMOVAL = """
import os, signal, sys
import banyanstore
from banyanstore.io.hooked import HookedEnv
from banyanstore.io.posix import PosixEnv

class KillRemovingTheMarker(HookedEnv):
    def hook(self, op, paths, nbytes=0):
        if op == "remove" and paths[0].endswith("CHECKPOINT-INCOMPLETE"):
            os.kill(os.getpid(), signal.SIGKILL)

store = banyanstore.open(sys.argv[1], env=KillRemovingTheMarker(PosixEnv()), compaction=False)
store.checkpoint(sys.argv[2])
"""


def test_a_checkpoint_killed_after_its_current_is_still_incomplete(tmp_path):
    """SIGKILL after the checkpoint's CURRENT but before its marker is removed (the last
    step): the destination still says "incomplete", so open() refuses it and a retry
    replaces it -- it was refused as "not empty" and opened as a store."""
    src, dest = str(tmp_path / "src"), str(tmp_path / "ck")
    with banyanstore.open(src, memtable_size=64 * 1024, compaction=False) as s:
        for i in range(3000):
            s.put(b"k%05d" % i, b"v" * 40)
    child = subprocess.run([sys.executable, "-c", _KILLED_AT_MARKER_REMOVAL, src, dest], timeout=120)
    assert child.returncode == -9
    assert {"CURRENT", "CHECKPOINT-INCOMPLETE"} <= set(os.listdir(dest))
    for read_only in (False, True):
        with pytest.raises(NotAStoreError, match="interrupted checkpoint"):
            banyanstore.open(dest, read_only=read_only)
    with banyanstore.open(src) as s:
        s.put(b"later", b"x")
        version = s.checkpoint(dest)
    assert "CHECKPOINT-INCOMPLETE" not in os.listdir(dest)
    with banyanstore.open(dest, read_only=True) as copy:
        assert copy.version == version and copy.get(b"later") == b"x"
        assert copy.get(b"k02999") == b"v" * 40


_CHECKPOINT_HELD_AT_ITS_LINKS = """
import sys, time
import banyanstore
from banyanstore.io.hooked import HookedEnv
from banyanstore.io.posix import PosixEnv

class HoldAtTheLinks(HookedEnv):
    def hook(self, op, paths, nbytes=0):
        if op == "link":
            print("linking", flush=True)
            time.sleep(120)

store = banyanstore.open(sys.argv[1], env=HoldAtTheLinks(PosixEnv()), compaction=False)
store.checkpoint(sys.argv[2])
"""


def test_a_checkpoint_into_a_destination_another_process_writes_is_refused(tmp_path):
    """Two processes checkpointing to one destination: the second took the first's
    files for what a killed checkpoint leaves (marker and store names) and removed them
    from under it -- the first would then finish a copy missing tables.  The marker is
    locked while its checkpoint writes: the second is refused (StoreLockedError naming
    the destination) and removes nothing."""
    first, second, dest = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "ck")
    for path in (first, second):
        with banyanstore.open(path, compaction=False) as s:
            s.put(b"k", path.encode())
            s.flush()
    child = subprocess.Popen([sys.executable, "-c", _CHECKPOINT_HELD_AT_ITS_LINKS, first, dest],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"linking\n"
        before = sorted(str(p.relative_to(dest)) for p in Path(dest).rglob("*"))
        assert "CHECKPOINT-INCOMPLETE" in before
        with banyanstore.open(second) as s:
            with pytest.raises(StoreLockedError, match="being written by another checkpoint"):
                s.checkpoint(dest)
        assert sorted(str(p.relative_to(dest)) for p in Path(dest).rglob("*")) == before
    finally:
        child.kill()
        child.wait()
    with banyanstore.open(second) as s:  # the first was killed: its leftovers are cleared
        s.checkpoint(dest)
    with banyanstore.open(dest, read_only=True) as copy:
        assert copy.get(b"k") == second.encode()


def test_compact_counts_the_expired_tables_it_drops(tmp_path):
    """compact() of a keyspace whose tables are all past its TTL drops them unread: its
    summary counts them in tables_before (they were there when it began), rather than
    reporting a keyspace that had no table (tables_before 0)."""
    now = [1000.0]
    with banyanstore.open(tmp_path / "db", clock=lambda: now[0], compaction=False,
                          memtable_size=1 << 20) as s:
        hot = s.keyspace("hot", ttl=10)
        for round_ in range(2):
            for i in range(50):
                hot.put(b"k%03d" % i, b"r%d" % round_)
            s.flush()
        assert s.stats()["keyspaces"]["hot"]["tables"] == 2
        now[0] = 1012.0
        assert s.compact("hot") == {"merges": 0, "tables_before": 2, "tables_after": 0}
        assert s.stats()["keyspaces"]["hot"]["tables"] == 0 and list(hot) == []
