"""The compiled core's one-call put and delete (src/banyanstore/native/putpath.c).

``Keyspace.put``/``delete`` hand the common case to ``PutPath`` and everything else to
``Writer.write_one``.  Here: the one-call path is really taken (``stats()`` counts its
writes); a workload that alternates between both paths -- memtable switches, WAL
rotations, records crossing WAL blocks, batches, ``sync=True``, bytes-like keys,
several keyspaces -- leaves the same WAL segments and tables, byte for byte, as the same
workload written by the Python path alone; every case the C path declines raises what
the Python path raises; writers in threads get unique, gap-free versions; the commit
time is the wall clock's.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore import accel
from banyanstore.errors import (
    EntryTooLargeError,
    KeyspaceNotFoundError,
    ReadOnlyError,
    StoreClosedError,
)
from banyanstore.lsm import wal as wal_mod
from banyanstore.lsm import writer as writer_mod

native_only = pytest.mark.skipif(accel.native is None, reason="the compiled core is not in use")


class FakeClock:
    """A deterministic wall clock: 1.7 ms per reading, starting mid-second."""

    def __init__(self) -> None:
        self.t = 1_767_225_600.4567

    def __call__(self) -> float:
        self.t += 0.0017
        return self.t


OPTS: dict[str, Any] = dict(memtable_size=64 << 10, segment_size=256 << 10, wal_sync="never",
                            compaction=False)


def workload(store: Any, seed: int) -> list[int]:
    """Writes of every kind, in an order fixed by ``seed``; returns the versions."""
    rng = random.Random(seed)
    index = store.keyspace("index")
    versions = []
    for i in range(6000):
        ks = index if i % 7 == 0 else store
        key = b"k%05d" % rng.randrange(2000)
        r = rng.random()
        if r < 0.06:
            versions.append(ks.delete(key))
        elif r < 0.08:
            versions.append(ks.put(bytearray(key), b"ba"))  # not bytes: the Python path
        elif r < 0.09:
            versions.append(ks.put(key, b"s", sync=False))  # sync given: the Python path
        elif r < 0.10:
            with store.batch() as b:
                b.put(key, b"batch")
                b.delete(key + b"x")
            versions.append(store.version)
        else:
            # sizes around a WAL block (32 KiB): records that cross blocks are declined
            n = rng.choice([0, 1, 100, 3000, 32_700, 32_760, 40_000]) if r < 0.2 else 80
            versions.append(ks.put(key, rng.randbytes(n)))
    return versions


def store_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes()
            for sub in ("wal", "tables") for p in sorted((path / sub).iterdir())}


@native_only
def test_puts_and_deletes_take_the_one_call_path(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "db", wal_sync="never") as store:
        assert store.stats()["writes_in_one_call"] == 0
        for i in range(50):
            store.put(b"k%d" % i, b"v")
        store.delete(b"k1")
        store.keyspace("other").put(b"a", b"b")
        assert store.stats()["writes_in_one_call"] == 52
        store.put(bytearray(b"x"), b"v")  # declined: bytes-like keys go through as_bytes
        store.put(b"y", b"v", sync=True)  # declined: sync waits on the Python path
        assert store.stats()["writes_in_one_call"] == 52
        assert store.get(b"x") == b"v" and store.get(b"y") == b"v" and store.get(b"k1") is None
        assert store.version == 54


def test_pure_python_engine_counts_no_one_call_writes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_mod, "NativeMemtable", None)  # no PutPath for this writer
    with banyanstore.open(tmp_path / "db") as store:
        store.put(b"k", b"v")
        assert store.stats()["writes_in_one_call"] == 0
        assert store.get(b"k") == b"v"


@native_only
def test_both_paths_write_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same workload through the one-call path (switching to the Python path and back
    thousands of times) and through the Python path alone: the same WAL segments and
    tables, byte for byte, the same versions and contents."""
    results = {}
    for name in ("one_call", "python"):
        path = tmp_path / name
        with monkeypatch.context() as m:
            if name == "python":
                m.setattr(writer_mod, "NativeMemtable", None)
            store = banyanstore.open(path, clock=FakeClock(), **OPTS)
            versions = workload(store, seed=5)
            one_call = store.stats()["writes_in_one_call"]
            contents = {ks: list(store.keyspace(ks).scan()) for ks in ("default", "index")}
            store.flush()
            store.close()
        results[name] = (versions, contents, store_files(path), one_call)
    (v1, c1, f1, n1), (v2, c2, f2, n2) = results["one_call"], results["python"]
    assert n2 == 0 and n1 > 4000  # both paths really ran
    assert v1 == v2 == list(range(1, len(v1) + 1))
    assert c1 == c2
    assert sorted(f1) == sorted(f2) and len([f for f in f1 if f.startswith("tables")]) > 5
    for name in f1:
        assert f1[name] == f2[name], name


@native_only
@pytest.mark.parametrize("call, error", [
    (lambda s: s.put(b"k", None), TypeError),
    (lambda s: s.put("k", b"v"), TypeError),
    (lambda s: s.put(b"k", "v"), TypeError),
    (lambda s: s.delete(7), TypeError),
    (lambda s: s.put(b"k" * 70_000, b"v"), EntryTooLargeError),
    (lambda s: s.put(b"k", b"v" * (9 << 20)), EntryTooLargeError),
    (lambda s: s.put(b"k", b"v", sync="yes"), TypeError),
    (lambda s: s.delete(b"k", sync=1), TypeError),
], ids=["put-None", "str-key", "str-value", "int-key", "long-key", "long-value", "sync-str",
        "sync-int"])
def test_what_the_one_call_path_declines_raises_as_before(tmp_path: Path, call: Callable[[Any], Any],
                                                          error: type[Exception]) -> None:
    with banyanstore.open(tmp_path / "db", max_value_size=8 << 20) as store:
        with pytest.raises(error):
            call(store)
        assert store.version == 0 and store.stats()["writes_in_one_call"] == 0


@native_only
def test_dropped_closed_and_read_only_stores_refuse_as_before(tmp_path: Path) -> None:
    store = banyanstore.open(tmp_path / "db")
    index = store.keyspace("index")
    index.put(b"a", b"1")
    store.drop_keyspace("index")
    with pytest.raises(KeyspaceNotFoundError):
        index.put(b"a", b"2")
    with pytest.raises(KeyspaceNotFoundError):
        index.delete(b"a")
    store.close()
    with pytest.raises(StoreClosedError):
        store.put(b"a", b"1")
    with pytest.raises(StoreClosedError):
        store.delete(b"a")
    with banyanstore.open(tmp_path / "db", read_only=True) as ro:
        with pytest.raises(ReadOnlyError):
            ro.put(b"a", b"1")


@native_only
def test_writers_in_threads_get_unique_gap_free_versions(tmp_path: Path) -> None:
    """Threads putting through the one-call path beside batches (the Python path) and a
    small memtable (switches): every version once, every key's last write readable."""
    with banyanstore.open(tmp_path / "db", memtable_size=64 << 10, wal_sync="never") as store:
        got: list[list[tuple[int, bytes, bytes | None]]] = [[] for _ in range(4)]

        def writer(t: int) -> None:
            rng = random.Random(t)
            for i in range(3000):
                key = b"t%d-%04d" % (t, rng.randrange(500))
                if t == 3 and i % 3 == 0:
                    with store.batch() as b:
                        b.put(key, b"b%d" % i)
                    got[t].append((store.version, key, b"b%d" % i))  # not exact: checked below
                elif i % 10 == 0:
                    got[t].append((store.delete(key), key, None))
                else:
                    value = b"%d-%d" % (t, i)
                    got[t].append((store.put(key, value), key, value))

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert store.version == 12_000
        single = [v for t in range(3) for v, _, _ in got[t]] + \
            [v for i, (v, _, _) in enumerate(got[3]) if i % 3]
        assert len(set(single)) == len(single)  # each put/delete its own version
        for t in range(4):
            last: dict[bytes, bytes | None] = {}
            for _, key, value in got[t]:
                last[key] = value
            for key, value in last.items():
                assert store.get(key) == value
        assert store.stats()["writes_in_one_call"] > 6000


@native_only
def test_commit_time_is_the_wall_clocks(tmp_path: Path) -> None:
    """With no clock given, the one-call path reads the system clock as time.time() does:
    the WAL record's commit time lies between readings taken around the put."""
    with banyanstore.open(tmp_path / "db", wal_sync="never") as store:
        before = int(time.time() * 1000)
        store.put(b"k", b"v")
        after = int(time.time() * 1000)
        assert store.stats()["writes_in_one_call"] == 1
        with banyanstore.open_log(tmp_path / "db" / "wal", read_only=True) as log:
            records = [wal_mod.decode(r) for _, r in log.read()]
    assert [r.version for r in records] == [1]
    assert before <= records[0].commit_ms <= after


@pytest.mark.parametrize("how", ["put", "delete"])
def test_a_single_write_is_published_only_once_its_entry_is_readable(tmp_path: Path, how: str) -> None:
    """Writer.write_one sets the published version in place (no publish_version call):
    a reader that sees the new version must find the write's entry.  A trace stops the
    writer at every bytecode of writer.py's frames and reads there, as another thread
    could between any two of them; publishing before the memtable entry fails here."""
    import sys

    store = banyanstore.open(tmp_path / "db", compaction=False)
    code_file = writer_mod.__file__
    for n in range(20):
        key = b"k%03d" % n
        store.put(key, b"old")
        before = store.version
        new = b"new%d" % n if how == "put" else None
        seen: list[bool] = []

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                now = store.version
                seen.append(now > before)
                if now > before:
                    assert store.get(key) == new and store.get(key, version=now) == new, (n, frame.f_lineno)
                else:
                    assert store.get(key) == b"old", (n, frame.f_lineno)
            return local

        def call(frame: Any, event: str, arg: Any) -> Any:
            if frame.f_code.co_filename != code_file:
                return None
            frame.f_trace_opcodes = True
            return local

        before_trace = sys.gettrace()  # coverage's tracer, when measured: put back after
        sys.settrace(call)
        try:
            if how == "put":
                store.put(key, new, sync=False)  # sync given: the Python path (write_one)
            else:
                store.delete(key, sync=False)
        finally:
            sys.settrace(before_trace)
        assert store.version == before + 1 and store.get(key) == new
        assert False in seen and True in seen  # read before and after the publication
    store.close()
