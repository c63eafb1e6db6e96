"""Bad input and damaged files: each case raises its specific, documented error (naming
the argument or the file), never a wrong answer and never an unrelated exception."""

from __future__ import annotations

import array
import asyncio
import mmap
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import (
    ConfigError,
    CorruptionError,
    EntryTooLargeError,
    ReadOnlyError,
    StoreClosedError,
    StoreLockedError,
    StoreNotFoundError,
    VersionUnavailableError,
)
from banyanstore.lsm.manifest import Manifest, TableInfo

OPTS: dict[str, Any] = dict(io_mode="sync", memtable_size=64 * 1024, block_size=1024,
                            compression="none", wal_sync="never", compaction=False)


def key(i: int) -> bytes:
    return b"key%05d" % i


def value(i: int) -> bytes:
    return b"value-%05d-" % i * 8


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A closed store with 300 keys in one table per keyspace (and nothing in the WAL)."""
    path = tmp_path / "db"
    with banyanstore.open(path, **OPTS) as store:
        idx = store.keyspace("index")
        for i in range(300):
            store.put(key(i), value(i))
            if i % 3 == 0:
                idx.put(key(i), b"%d" % i)
        store.flush()
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    s = banyanstore.open(tmp_path / "s", **OPTS, max_key_size=16, max_value_size=100)
    yield s
    s.close()


def tables(path: Path) -> list[Path]:
    return sorted((path / "tables").glob("*.sst"))


# -- types -----------------------------------------------------------------------------------

@pytest.mark.parametrize("call, argname", [
    (lambda s: s.put("k", b"v"), "key"),
    (lambda s: s.put(b"k", "v"), "value"),
    (lambda s: s.put(b"k", None), "value"),
    (lambda s: s.put(1, b"v"), "key"),
    (lambda s: s.delete(["k"]), "key"),
    (lambda s: s.get("k"), "key"),
    (lambda s: s.multi_get([b"a", "b"]), "key"),
    (lambda s: s.history("k"), "key"),
    (lambda s: list(s.scan(start="a")), "start"),
    (lambda s: list(s.scan(end=5)), "end"),
    (lambda s: list(s.scan(prefix="p")), "prefix"),
    (lambda s: s.get(b"k", version="1"), "version"),
    (lambda s: s.keyspace("index").put("k", b"v"), "key"),
    (lambda s: s.batch().put("k", b"v"), "key"),
    (lambda s: s.batch().put(b"k", 7), "value"),
    (lambda s: s.batch().delete(3.5), "key"),
    (lambda s: s.batch().put(b"k", b"v", keyspace=3), "keyspace"),
    (lambda s: s.keyspace(7), "keyspace"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_wrong_types_raise_type_error_naming_the_argument(store: Any, call: Callable[[Any], Any],
                                                          argname: str) -> None:
    """Non-bytes keys/values (and other wrong argument types) raise TypeError naming the
    argument, and write nothing."""
    before = store.version
    with pytest.raises(TypeError, match=argname):
        call(store)
    assert store.version == before


def test_bytes_like_arguments_are_copied(store: Any) -> None:
    """bytearray / memoryview keys and values are accepted and copied: changing the
    caller's buffer afterwards does not change what was stored."""
    k, v = bytearray(b"key"), bytearray(b"val")
    store.put(k, memoryview(v))
    k[0] = v[0] = ord("X")
    assert store.get(b"key") == b"val" and store.get(b"Xey") is None
    store.keyspace("index")
    with store.batch() as b:
        b.put(memoryview(b"bk"), bytearray(b"bv"), keyspace="index")
    assert store.keyspace("index").get(bytearray(b"bk")) == b"bv"


def _array(data: bytes) -> array.array:
    return array.array("B", data)


def _mmap(data: bytes) -> mmap.mmap:
    m = mmap.mmap(-1, len(data))
    m.write(data)
    return m


@pytest.mark.parametrize("make", [_array, _mmap, bytearray, memoryview, lambda d: memoryview(_array(d))],
                         ids=["array", "mmap", "bytearray", "memoryview", "memoryview-of-array"])
def test_every_bytes_like_object_is_a_key_and_a_value(store: Any, make: Callable[[bytes], Any]) -> None:
    """Any object with a C-contiguous buffer (array.array and mmap too, not only bytearray
    and memoryview) is accepted wherever a key, a bound or a value is, in both engines,
    and copied: the store keeps no reference to (no export of) the caller's buffer."""
    idx = store.keyspace("index")
    store.put(make(b"k1"), make(b"v1"))
    idx.put(make(b"k1"), make(b"i1"))
    with store.batch() as b:
        b.put(make(b"k2"), make(b"v2"))
        b.put(make(b"k3"), make(b"v3"), keyspace="index")
        b.delete(make(b"k3"))
        b.delete_range(make(b"x"), make(b"y"))
    store[make(b"k4")] = make(b"v4")
    assert store.get(make(b"k1")) == b"v1" and idx.get(make(b"k1")) == b"i1"
    assert make(b"k2") in store and store[make(b"k4")] == b"v4"
    assert store.multi_get([make(b"k1"), make(b"k2"), make(b"k3")]) == [b"v1", b"v2", None]
    assert list(store.scan(make(b"k2"), make(b"k4"))) == [(b"k2", b"v2")]
    assert list(store.scan(prefix=make(b"k"), keys_only=True)) == [b"k1", b"k2", b"k4"]
    assert [v for _, v in store.history(make(b"k1"))] == [b"v1"]
    assert store.approximate_count(make(b"k2")) == store.approximate_count(b"k2") == 3
    with store.snapshot() as snap:
        assert snap.get(make(b"k2")) == b"v2" and snap.multi_get([make(b"k4")]) == [b"v4"]
        assert list(snap.scan(start=make(b"k4"))) == [(b"k4", b"v4")]
        assert snap.get(make(b"k3"), keyspace="index") == b"v3"
    assert store.delete(make(b"k4")) and store.get(b"k4") is None
    assert store.delete_range(make(b"k1"), make(b"k2")) and store.get(b"k1") is None
    store.compact(start=make(b"a"), end=make(b"z"))
    assert list(store.items()) == [(b"k2", b"v2")]
    buffers = [make(b"k5"), make(b"v5")]
    store.put(*buffers)
    for buf in buffers:  # no export left behind: the caller may resize or close it
        if isinstance(buf, mmap.mmap):
            buf.close()
        elif isinstance(buf, bytearray):
            buf.extend(b"!")
    assert store.get(b"k5") == b"v5"


def test_a_strided_view_is_the_bytes_it_shows(store: Any) -> None:
    """A strided (non-contiguous) memoryview is taken as ``bytes(view)``, as before."""
    store.put(memoryview(b"abcdef")[::2], memoryview(b"xyz!")[::-1])
    assert store.get(b"ace") == b"!zyx" and store.get(memoryview(b"e-c-a")[::-2]) == b"!zyx"
    assert store.multi_get([memoryview(b"a-c-e")[::2]]) == [b"!zyx"]
    assert list(store.scan(memoryview(b"aXcXe")[::2])) == [(b"ace", b"!zyx")]


@pytest.mark.parametrize("call, argname", [
    (lambda s: s.put(b"k", object()), "value"),
    (lambda s: s.put(b"k", 3), "value"),
    (lambda s: s.multi_get(array.array("B", b"ab")), "keys"),
    (lambda s: s.multi_get(_mmap(b"ab")), "keys"),
], ids=["object", "int", "multi_get-array", "multi_get-mmap"])
def test_non_buffer_arguments_are_refused(store: Any, call: Callable[[Any], Any], argname: str) -> None:
    """An object without a buffer is refused, naming the argument; a single buffer where
    an iterable of keys belongs is refused as ``bytes`` is."""
    before = store.version
    with pytest.raises(TypeError, match=argname):
        call(store)
    assert store.version == before


def test_log_records_follow_the_same_rule(tmp_path: Path) -> None:
    with banyanstore.open_log(tmp_path / "log", io_mode="sync", wal_sync="never") as log:
        assert log.get(log.append(_mmap(b"m"))) == b"m"
        assert log.append_many([_array(b"a"), _mmap(b"b")]) == 3
        assert log.get(log.append(memoryview(b"abcdef")[::2])) == b"ace"
        with pytest.raises(TypeError, match="records"):
            log.append_many(_array(b"ab"))
        assert list(log.read()) == [(1, b"m"), (2, b"a"), (3, b"b"), (4, b"ace")]


def test_empty_key_and_value_round_trip(store: Any) -> None:
    """The empty key and the empty value are allowed (not rejected) and survive a flush."""
    store.put(b"", b"")
    store.put(b"\x00", b"zero")
    store.flush()
    assert store.get(b"") == b"" and list(store.scan()) == [(b"", b""), (b"\x00", b"zero")]


# -- sizes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda s: s.put(b"k" * 17, b"v"),
    lambda s: s.put(b"k", b"v" * 101),
    lambda s: s.delete(b"k" * 17),
    lambda s: s.keyspace("index").put(b"k" * 17, b"v"),
    lambda s: s.batch().put(b"k" * 17, b"v"),
    lambda s: s.batch().put(b"k", b"v" * 101, keyspace="index"),
], ids=["put-key", "put-value", "delete-key", "keyspace-key", "batch-key", "batch-value"])
def test_oversized_entries_raise_entry_too_large(store: Any, call: Callable[[Any], Any]) -> None:
    """A key over max_key_size or a value over max_value_size is EntryTooLargeError (a
    ValueError), and nothing is written; the limits themselves are allowed."""
    before = store.version
    with pytest.raises(EntryTooLargeError, match="max_(key|value)_size"):
        call(store)
    assert store.version == before
    store.put(b"k" * 16, b"v" * 100)
    assert store.get(b"k" * 16) == b"v" * 100


def test_failed_batch_put_leaves_the_batch_usable(store: Any) -> None:
    """An oversized op rejected by batch.put does not poison the batch: the other ops
    commit atomically under one version."""
    store.keyspace("index")
    with store.batch() as b:
        b.put(b"a", b"1")
        with pytest.raises(EntryTooLargeError):
            b.put(b"b", b"x" * 101)
        b.put(b"c", b"3", keyspace="index")
    assert store.get(b"a") == b"1" and store.get(b"b") is None
    assert store.keyspace("index").get(b"c") == b"3" and b.version == store.version


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_lower_size_limits_after_reopen_still_flush_and_merge(tmp_path: Path, mode: str) -> None:
    """max_key_size and max_value_size limit new writes only: a store written with higher
    limits and reopened with lower ones still flushes what its WAL replays and merges its
    tables (none quarantined), and every entry reads back."""
    path = tmp_path / "db"
    opts = dict(OPTS, compaction_mode=mode)
    big_key, big_value = b"k" * 40, b"v" * 300
    child = _child(f"""
        import os, banyanstore
        store = banyanstore.open({str(path)!r}, **{opts!r}, max_key_size=64, max_value_size=512)
        store.put({big_key!r}, b"1")
        store.put(b"a", {big_value!r})
        store.flush()  # a table holding them
        store.put({big_key + b"2"!r}, {big_value!r})
        store.delete_range({big_key + b"3"!r}, {big_key + b"4"!r})
        os._exit(0)  # the last writes only in the WAL
        """)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    with banyanstore.open(path, **opts, max_key_size=16, max_value_size=100) as store:
        store.flush()
        assert store.compact()["tables_after"] == 1
        assert store.stats()["compaction"]["quarantined"] == []
        assert store.get(big_key) == b"1" and store.get(b"a") == big_value
        assert store.get(big_key + b"2") == big_value
    with banyanstore.open(path, **opts, max_key_size=16, max_value_size=100) as store:
        assert list(store.keys()) == [b"a", big_key, big_key + b"2"]


def _batch_of_one(store: Any) -> None:
    batch = store.batch()
    batch.put(b"c", b"3")
    batch.commit()


def test_a_write_past_the_last_version_is_refused_saying_so(tmp_path: Path) -> None:
    """A store whose manifest says 2**64 - 3 versions were used (hand-made: no store
    writes that many) takes writes up to version 2**64 - 1; the next one raised a bare
    struct.error (pure Python) or "int too big to convert" (compiled core).  Both
    engines now raise OverflowError saying the versions are used up, write nothing, and
    keep what they have."""
    import json
    import struct as structs

    import crc32c
    path = tmp_path / "db"
    with banyanstore.open(path, **OPTS) as store:
        store.put(b"a", b"1")
    manifest = path / (path / "CURRENT").read_text().split()[2]
    top = (1 << 64) - 3
    edit = json.dumps({"last_version": top, "flushed_version": top}).encode()
    with manifest.open("ab") as fh:
        fh.write(structs.pack("<II", len(edit), crc32c.crc32c(edit)) + edit)
    with banyanstore.open(path, **OPTS) as store:
        assert store.put(b"b", b"2") == top + 1 and store.delete(b"a") == top + 2
        for write in (lambda: store.put(b"c", b"3"), lambda: store.delete(b"b"),
                      lambda: store.delete_range(b"a", b"z"),
                      lambda: _batch_of_one(store)):
            with pytest.raises(OverflowError, match="used every version"):
                write()
        assert store.version == (1 << 64) - 1
        assert list(store.scan()) == [(b"b", b"2")]
    with banyanstore.open(path, **OPTS) as store:
        assert list(store.scan()) == [(b"b", b"2")] and store.version == (1 << 64) - 1


# -- damaged files ------------------------------------------------------------------------------

def test_flipped_byte_in_a_data_block_is_corruption_naming_the_file(db: Path) -> None:
    """A flipped byte in a table's first data block: open succeeds (blocks are checked
    when read), and every read touching the block raises CorruptionError naming the file
    -- never a wrong value."""
    victim = tables(db)[0]
    data = bytearray(victim.read_bytes())
    data[20] ^= 0x40
    victim.write_bytes(bytes(data))
    with banyanstore.open(db, **OPTS) as store:
        for read in (lambda: store.get(key(0)), lambda: list(store.scan()),
                     lambda: store.multi_get([key(0), key(1)]),
                     lambda: list(store.scan(reverse=True))):
            with pytest.raises(CorruptionError) as info:
                read()
            assert info.value.path is not None and victim.name in info.value.path
        assert store.get(key(299)) == value(299)  # other blocks still read fine


def test_truncated_table_is_corruption_at_open(db: Path) -> None:
    """A table cut short: open raises CorruptionError naming it."""
    victim = tables(db)[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptionError, match=victim.name) as info:
        banyanstore.open(db, **OPTS)
    assert victim.name in str(info.value.path)


def test_table_with_same_size_but_damaged_footer_is_corruption_at_open(db: Path) -> None:
    """A table whose footer is damaged (size unchanged): CorruptionError at open."""
    victim = tables(db)[0]
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=victim.name):
        banyanstore.open(db, **OPTS)


def test_deleted_table_is_corruption_at_open(db: Path) -> None:
    """A table file the manifest names was deleted: CorruptionError naming it (the
    store never silently opens without it); read-only opens refuse too."""
    victim = tables(db)[-1]
    victim.unlink()
    for ro in (False, True):
        with pytest.raises(CorruptionError, match=victim.name):
            banyanstore.open(db, **OPTS, read_only=ro)


def test_manifest_naming_a_missing_file_is_corruption(db: Path) -> None:
    """A manifest naming a table that never existed: CorruptionError naming that file,
    and the other tables are left alone (no deletion on a failed open)."""
    from banyanstore.io.posix import PosixEnv
    env = PosixEnv()
    state = Manifest.load(env, str(db))
    state.tables[0][999] = TableInfo(0, 999, 4096, b"a", b"b", 1, 1, 1, 0)
    state.next_file = max(state.next_file, 1000)
    Manifest.create(env, str(db), state).close()
    before = tables(db)
    with pytest.raises(CorruptionError, match="000999.sst"):
        banyanstore.open(db, **OPTS)
    assert tables(db) == before


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"BANYANSTORE-CURRENT 1 MANIFEST-000001 00000000\n",
                                     "BANYANSTORE-CURRENT 1 MANIFEST-999999 {crc}\n"],
                         ids=["empty", "garbage", "bad-crc", "missing-manifest"])
def test_garbage_current_is_corruption(db: Path, content: bytes | str) -> None:
    """CURRENT empty, garbage, failing its checksum, or naming a missing manifest:
    CorruptionError naming the file -- for writers and read-only opens alike."""
    import crc32c
    if isinstance(content, str):
        content = content.format(crc=f"{crc32c.crc32c(b'MANIFEST-999999'):08x}").encode()
    (db / "CURRENT").write_bytes(content)
    for ro in (False, True):
        with pytest.raises(CorruptionError) as info:
            banyanstore.open(db, **OPTS, read_only=ro)
        assert "CURRENT" in str(info.value.path) or "MANIFEST" in str(info.value.path)


def test_damaged_manifest_record_is_corruption(db: Path) -> None:
    """A flipped byte inside the manifest's (only, complete) record is not mistaken for
    a torn tail when more follows: CorruptionError naming the manifest."""
    with banyanstore.open(db, **OPTS) as store:
        store.put(b"x", b"y")
        store.flush()  # a second record after the snapshot record
    name = (db / "CURRENT").read_text().split()[2]
    manifest = db / name
    data = bytearray(manifest.read_bytes())
    data[30] ^= 0x01  # inside the first record's payload
    manifest.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=name):
        banyanstore.open(db, **OPTS)


# -- locking, read-only, versions, closed stores ------------------------------------------------

def _child(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_second_writer_in_another_process_is_locked_out(db: Path) -> None:
    """While one process has the store open for writing, a writer in another process
    gets StoreLockedError at once (both ways round), while read-only opens work."""
    with banyanstore.open(db, **OPTS) as store:
        child = _child(f"""
            import banyanstore
            from banyanstore.errors import StoreLockedError
            try:
                banyanstore.open({str(db)!r}, io_mode="sync")
            except StoreLockedError:
                print("locked")
            with banyanstore.open({str(db)!r}, io_mode="sync", read_only=True) as s:
                print(s.get(b"key00001"))
            """)
        out, err = child.communicate(timeout=60)
        assert out.split("\n")[:2] == ["locked", repr(value(1))], err
        store.put(b"k", b"v")
    child = _child(f"""
        import banyanstore
        s = banyanstore.open({str(db)!r}, io_mode="sync")
        print("open", flush=True)
        input()
        s.close()
        """)
    try:
        assert child.stdout is not None and child.stdout.readline() == "open\n"
        with pytest.raises(StoreLockedError):
            banyanstore.open(db, **OPTS)
    finally:
        child.communicate("\n", timeout=60)
    banyanstore.open(db, **OPTS).close()  # released when the other process closed


@pytest.mark.parametrize("call", [
    lambda s: s.put(b"k", b"v"), lambda s: s.delete(b"k"), lambda s: s.batch(),
    lambda s: s.keyspace("index").put(b"k", b"v"), lambda s: s.keyspace("brand-new"),
    lambda s: s.flush(), lambda s: s.compact(), lambda s: s.set_history_floor(1),
    lambda s: s.checkpoint("/nonexistent/ckpt"), lambda s: s.__delitem__(key(5)),
    lambda s: s.__delitem__(b"absent"), lambda s: s.keyspace("index").__delitem__(b"absent"),
    lambda s: s.delete_range(b"a", b"b"),
], ids=["put", "delete", "batch", "ks-put", "new-keyspace", "flush", "compact", "floor", "checkpoint",
        "del-present", "del-absent", "ks-del-absent", "delete_range"])
def test_read_only_store_refuses_writes(db: Path, call: Callable[[Any], Any]) -> None:
    """A read-only store raises ReadOnlyError for every write and leaves files alone;
    its reads work."""
    listing = sorted(p.name for p in db.rglob("*"))
    with banyanstore.open(db, **OPTS, read_only=True) as store:
        with pytest.raises(ReadOnlyError):
            call(store)
        assert store.get(key(5)) == value(5)
    assert sorted(p.name for p in db.rglob("*")) == listing


def test_versions_out_of_range_raise_version_unavailable(store: Any) -> None:
    """Reads at a version above store.version or below oldest_version raise
    VersionUnavailableError (get, multi_get, scan, keyspaces, snapshots' store)."""
    vs = [store.put(b"a", b"%d" % i) for i in range(5)]
    store.flush()
    idx = store.keyspace("index")
    top = store.version
    for bad in (top + 1, top + 1000):
        for read in (lambda: store.get(b"a", version=bad), lambda: store.multi_get([b"a"], version=bad),
                     lambda: list(store.scan(version=bad)), lambda: idx.get(b"a", version=bad)):
            with pytest.raises(VersionUnavailableError):
                read()
    store.set_history_floor(vs[2])
    assert store.oldest_version == vs[2]
    for bad in (vs[1], vs[0], -1):
        for read in (lambda: store.get(b"a", version=bad), lambda: store.multi_get([b"a"], version=bad),
                     lambda: list(store.scan(version=bad)), lambda: idx.get(b"a", version=bad)):
            with pytest.raises(VersionUnavailableError):
                read()
    assert store.get(b"a", version=vs[2]) == b"2" and store.get(b"a", version=top) == b"4"
    store.compact()  # may reclaim (and raise the floor): retained answers stay exact
    for i, v in enumerate(vs):
        if v < store.oldest_version:
            with pytest.raises(VersionUnavailableError):
                store.get(b"a", version=v)
        else:
            assert store.get(b"a", version=v) == b"%d" % i


def test_missing_directory_without_create_is_store_not_found(tmp_path: Path) -> None:
    """create_if_missing=False (or read_only=True) on a missing store: StoreNotFoundError
    (also a FileNotFoundError), and nothing is created."""
    for kwargs in (dict(create_if_missing=False), dict(read_only=True)):
        with pytest.raises(StoreNotFoundError):
            banyanstore.open(tmp_path / "nope", **dict(OPTS, **kwargs))
        with pytest.raises(FileNotFoundError):
            banyanstore.open(tmp_path / "nope", **dict(OPTS, **kwargs))
    assert not (tmp_path / "nope").exists()


def test_writes_after_close_raise_store_closed(db: Path) -> None:
    """Writes, snapshots and flushes on a closed store raise StoreClosedError."""
    store = banyanstore.open(db, **OPTS)
    store.close()
    for call in (lambda: store.put(b"k", b"v"), lambda: store.delete(b"k"), lambda: store.batch(),
                 lambda: store.snapshot(), lambda: store.flush(), lambda: store.sync(),
                 lambda: store.compact()):
        with pytest.raises(StoreClosedError):
            call()


@pytest.mark.parametrize("read", [
    lambda s: s.get(key(1)), lambda s: s.multi_get([key(1)]), lambda s: list(s.scan()),
    lambda s: list(s.history(key(1))), lambda s: s.keyspace("index").get(key(3)),
], ids=["get", "multi_get", "scan", "history", "keyspace-get"])
def test_reads_after_close_raise_store_closed(db: Path, read: Callable[[Any], Any]) -> None:
    """Reads on a closed store raise StoreClosedError (API: reading after close)."""
    store = banyanstore.open(db, **OPTS)
    idx = store.keyspace("index")
    assert idx is not None
    store.close()
    with pytest.raises(StoreClosedError):
        read(store)


# -- flags, limits and other arguments at every entry point ----------------------------------------

@pytest.mark.parametrize("call, error, argname", [
    (lambda s: s.put(b"k", b"v", sync="yes"), TypeError, "sync"),
    (lambda s: s.put(b"k", b"v", sync=1), TypeError, "sync"),
    (lambda s: s.delete(b"k", sync="no"), TypeError, "sync"),
    (lambda s: s.keyspace("index").put(b"k", b"v", sync="yes"), TypeError, "sync"),
    (lambda s: s.batch(sync="yes"), TypeError, "sync"),
    (lambda s: _commit_batch(s, sync="yes"), TypeError, "sync"),
    (lambda s: list(s.scan(reverse="no")), TypeError, "reverse"),
    (lambda s: list(s.scan(reverse=1)), TypeError, "reverse"),
    (lambda s: list(s.keyspace("index").scan(reverse="no")), TypeError, "reverse"),
    (lambda s: list(s.scan(limit=-1)), ValueError, "limit"),
    (lambda s: list(s.scan(limit="3")), TypeError, "limit"),
    (lambda s: s.multi_get(None), TypeError, "keys"),
    (lambda s: s.multi_get(b"abc"), TypeError, "keys"),
    (lambda s: s.multi_get(5), TypeError, "keys"),
    (lambda s: s.keyspace(""), ValueError, "keyspace"),
    (lambda s: s.keyspace("index", ttl="x"), TypeError, "ttl"),
    (lambda s: s.keyspace("index", ttl=float("nan")), ValueError, "ttl"),
    (lambda s: s.compact(start="a"), TypeError, "start"),
    (lambda s: s.compact(end=1), TypeError, "end"),
    (lambda s: s.compact(progress=5), TypeError, "progress"),
    (lambda s: s.set_history_floor("1"), TypeError, "version"),
    (lambda s: "k" in s, TypeError, "key"),
    (lambda s: _snap(s).multi_get(None), TypeError, "keys"),
    (lambda s: list(_snap(s).scan(reverse="no")), TypeError, "reverse"),
    (lambda s: list(_snap(s).scan(limit=-2)), ValueError, "limit"),
    (lambda s: "k" in _snap(s), TypeError, "key"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_arguments_raise_naming_the_argument(store: Any, call: Callable[[Any], Any], error: type,
                                                 argname: str) -> None:
    """A wrong type is TypeError and a bad value ValueError, naming the argument --
    never accepted as truthy (``reverse="no"``, ``sync="yes"``) -- and nothing is written."""
    store.keyspace("index")
    store.put(b"k", b"v")
    before, keyspaces = store.version, store.keyspaces()
    with pytest.raises(error, match=argname):
        call(store)
    assert store.version == before and store.keyspaces() == keyspaces
    assert store.stats()["keyspaces"]["index"]["ttl"] is None


@pytest.mark.parametrize("puts, arg", [(0, True), (0, 1.0), (2, 3.0), (2, False), (2, 3.5), (2, "3"),
                                       (2, None)])
def test_set_history_floor_checks_the_type_of_every_version(store: Any, puts: int, arg: Any) -> None:
    """A version is an int and a bool is not one (as for ``get(version=)``), also when
    it equals ``store.version + 1`` -- the floor that makes every version unreadable,
    which the range check lets through."""
    for i in range(puts):
        store.put(b"k%d" % i, b"v")
    with pytest.raises(TypeError, match="version"):
        store.set_history_floor(arg)
    if arg is not None:  # get's version=None is the latest
        with pytest.raises(TypeError, match="version"):
            store.get(b"k0", version=arg)
    assert store.history_floor == 0 and store.version == puts
    store.set_history_floor(puts + 1)  # an int: accepted
    assert store.history_floor == puts + 1


def _commit_batch(store: Any, **kwargs: Any) -> None:
    b = store.batch()
    b.put(b"x", b"y")
    b.commit(**kwargs)


def _snap(store: Any) -> Any:
    return store.snapshot()


def test_a_batch_survives_a_commit_with_a_bad_sync_argument(store: Any) -> None:
    b = store.batch()
    b.put(b"x", b"y")
    with pytest.raises(TypeError, match="sync"):
        b.commit(sync="yes")
    assert b.commit(sync=False) == store.version and store.get(b"x") == b"y"


@pytest.mark.parametrize("call, error, argname", [
    (lambda log: log.append(b"x", sync="yes"), TypeError, "sync"),
    (lambda log: log.append(b"x", sync=0), TypeError, "sync"),
    (lambda log: log.append_many([b"x"], sync="yes"), TypeError, "sync"),
    (lambda log: log.append_many(None), TypeError, "records"),
    (lambda log: log.append_many(5), TypeError, "records"),
    (lambda log: list(log.read(start="1")), TypeError, "start"),
    (lambda log: log.get(True), TypeError, "seq"),
    (lambda log: log.get("1"), TypeError, "seq"),
    (lambda log: log.truncate_before("1"), TypeError, "seq"),
    (lambda log: log.sync(upto_seq="x"), TypeError, "upto_seq"),
    (lambda log: log.wait_durable(None), TypeError, "seq"),
    (lambda log: asyncio.run(log.append_async(b"x", sync="yes")), TypeError, "sync"),
    (lambda log: asyncio.run(log.append_many_async([b"x"], sync="no")), TypeError, "sync"),
    (lambda log: asyncio.run(log.wait_durable_async("1")), TypeError, "seq"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_log_arguments_raise_naming_the_argument(tmp_path: Path, call: Callable[[Any], Any],
                                                     error: type, argname: str) -> None:
    with banyanstore.open_log(tmp_path / "log", io_mode="sync", wal_sync="never") as log:
        log.append(b"first")
        with pytest.raises(error, match=argname):
            call(log)
        assert log.last_seq == 1 and list(log.read()) == [(1, b"first")]


@pytest.mark.parametrize("name, value", [
    ("ttl", float("nan")), ("ttl", float("inf")), ("history_retention", float("nan")),
    ("history_retention", float("inf")), ("compaction_size_ratio", float("nan")),
    pytest.param("ttl", 10 ** 400, id="ttl-10**400"),
    pytest.param("history_retention", -(10 ** 400), id="history_retention--10**400"),
    pytest.param("compaction_size_ratio", 10 ** 400, id="compaction_size_ratio-10**400"),
])
def test_options_refuse_non_finite_numbers(name: str, value: float) -> None:
    """nan passes every range check and inf breaks clock arithmetic: both are refused,
    as is an int no float holds (not an OverflowError that names no option)."""
    with pytest.raises(ConfigError, match=name):
        banyanstore.Options(**{name: value})


def test_dbm_open_checks_flag_and_mode_types(tmp_path: Path) -> None:
    import banyanstore.dbm
    with pytest.raises(TypeError, match="flag"):
        banyanstore.dbm.open(tmp_path / "db", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mode"):
        banyanstore.dbm.open(tmp_path / "db", "c", "0o600")  # type: ignore[arg-type]
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize("opener", [
    lambda path, env: banyanstore.open(path, env=env),
    lambda path, env: banyanstore.open(path, env=env, read_only=True),
    lambda path, env: banyanstore.open_log(path, env=env),
    lambda path, env: banyanstore.Log.open(path, env=env),
    lambda path, env: asyncio.run(_aio_open(path, env)),
], ids=["open", "open-read-only", "open_log", "Log.open", "aio.open"])
@pytest.mark.parametrize("env", [5, "posix", object()], ids=["int", "str", "object"])
def test_an_env_that_is_not_one_is_a_type_error_naming_env(tmp_path: Path, opener: Callable[..., Any],
                                                          env: Any) -> None:
    """``env=`` takes a banyanstore Env (or None); anything else is a TypeError naming it,
    raised before the directory is created -- not an AttributeError from deep inside."""
    path = tmp_path / "db"
    with pytest.raises(TypeError, match="env"):
        opener(path, env)
    assert not path.exists()


async def _aio_open(path: Path, env: Any) -> Any:
    import banyanstore.aio
    return await banyanstore.aio.open(path, env=env)


@pytest.mark.parametrize("call, argname", [
    (lambda log: log.sync(-3), "upto_seq"),
    (lambda log: log.sync(upto_seq=-1), "upto_seq"),
    (lambda log: log.wait_durable(-1), "seq"),
    (lambda log: asyncio.run(log.wait_durable_async(-2)), "seq"),
    (lambda log: log.truncate_before(-1), "seq"),
], ids=["sync", "sync-keyword", "wait_durable", "wait_durable_async", "truncate_before"])
def test_negative_log_seqs_are_a_value_error_naming_the_argument(tmp_path: Path, call: Callable[[Any], Any],
                                                                 argname: str) -> None:
    """Seqs start at 1 (0 is the ``last_seq`` of an empty log): a negative one is out of
    range -- a ValueError naming the argument -- not a sync that promises nothing."""
    with banyanstore.open_log(tmp_path / "log", io_mode="sync", wal_sync="never") as log:
        assert log.sync(0) == 0 and log.wait_durable(0) is None and log.truncate_before(0) == 0
        log.append(b"first")
        with pytest.raises(ValueError, match=argname):
            call(log)
        assert log.sync(1) == 1 and list(log.read()) == [(1, b"first")]


@pytest.mark.parametrize("dry_run", ["no", 1, 0, None], ids=["str", "one", "zero", "none"])
def test_repair_takes_dry_run_as_a_real_bool(db: Path, dry_run: Any) -> None:
    """``dry_run`` decides whether files are changed: ``"no"`` or ``0`` must not pick one
    by truthiness -- a TypeError naming it, with nothing changed."""
    from banyanstore.tools import repair
    listing = sorted(str(p) for p in db.rglob("*"))
    with pytest.raises(TypeError, match="dry_run"):
        repair(db, dry_run=dry_run)
    assert sorted(str(p) for p in db.rglob("*")) == listing


@pytest.mark.parametrize("limit", [2**63 - 1, 2**63, 2**64, 2**100])
@pytest.mark.parametrize("shape", ["one-table", "table-and-memtable"])
def test_a_limit_beyond_any_count_is_no_limit(tmp_path: Path, limit: int, shape: str) -> None:
    """``limit`` is an int >= 0, however large: one beyond what a C ssize_t holds (which
    the compiled core's scan and itertools.islice refuse) returns every key, in both
    engines and on every scan path (a compacted table alone, or merged with memtables)."""
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        for i in range(20):
            s.put(key(i), value(i))
        s.flush()
        if shape == "table-and-memtable":
            s.put(key(20), value(20))
        expect = [key(i) for i in range(21 if shape == "table-and-memtable" else 20)]
        with s.snapshot() as snap:
            for reverse in (False, True):
                want = expect[::-1] if reverse else expect
                assert [k for k, _ in s.scan(limit=limit, reverse=reverse)] == want
                assert list(s.scan(limit=limit, reverse=reverse, keys_only=True)) == want
                assert list(s.scan(prefix=b"key", limit=limit, reverse=reverse, keys_only=True)) == want
                assert [k for k, _ in snap.scan(limit=limit, reverse=reverse)] == want


@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "reader"])
@pytest.mark.parametrize("clock", [5, "now", 1.5], ids=["int", "str", "float"])
def test_open_refuses_a_clock_that_is_not_callable(tmp_path: Path, clock: Any, read_only: bool) -> None:
    """``clock=`` must be a ``time.time``-like callable: anything else is a TypeError
    naming ``clock`` at open, on both engines -- not a store that opens and then fails
    every write with "'int' object is not callable" (pure Python), nor an internal
    message of the compiled core's write path."""
    path = tmp_path / "db"
    banyanstore.open(path).close()
    with pytest.raises(TypeError, match="clock"):
        banyanstore.open(path, clock=clock, read_only=read_only)
    with banyanstore.open(path) as s:  # nothing held: the store opens again
        s.put(b"k", b"v")


@pytest.mark.parametrize("bad", [-5.0, float("nan"), float("inf"), 1e20, 10**30, "1000", None],
                         ids=["negative", "nan", "inf", "past-u64-ms", "huge-int", "str", "none"])
def test_a_clock_returning_what_no_commit_time_holds_is_named(tmp_path: Path, bad: Any) -> None:
    """An injected clock that returns no time a WAL record can hold (seconds >= 0 whose
    milliseconds fit a u64) fails the write, the batch and the TTL read with a TypeError
    or ValueError naming ``clock`` and the value, the same on both engines -- not
    struct.error 'argument out of range' (pure Python) against OverflowError "can't
    convert negative int to unsigned" (compiled), nor 'cannot convert float NaN to
    integer' -- and the store, writing nothing, takes writes once the clock is sane."""
    now: list[Any] = [1000.0]
    with banyanstore.open(tmp_path / "db", clock=lambda: now[0], **OPTS) as s:
        hot = s.keyspace("hot", ttl=60)
        hot.put(b"a", b"1")
        now[0] = bad
        error = TypeError if isinstance(bad, str) or bad is None else ValueError
        for attempt in (lambda: s.put(b"k", b"v"), lambda: s.delete(b"k"),
                        lambda: hot.put(b"k", b"v"), lambda: hot.get(b"a")):
            with pytest.raises(error, match=r"clock returned .*" + ("str" if isinstance(bad, str) else "")):
                attempt()
        with pytest.raises(error, match="clock returned"):
            with s.batch() as b:
                b.put(b"k", b"v")
        assert s.version == 1
        now[0] = Fraction(2002, 2)  # any real number is a time (numpy's, a Fraction)
        assert s.put(b"k", b"v") == 2
        assert hot.get(b"a") == b"1" and s.get(b"k") == b"v"


def test_keys_written_under_a_higher_max_key_size_can_be_deleted(tmp_path: Path) -> None:
    """A store reopened with a lower max_key_size still holds the longer keys written
    before: delete(key), a batch's delete and ``del store[key]`` of such a key raised
    EntryTooLargeError, so the user could not delete them one by one.  A delete of a
    key the store holds now writes its tombstone; a put of it, and a delete of an
    oversized key the store does not hold, still raise EntryTooLargeError naming the key."""
    path = tmp_path / "db"
    big = [b"k" * 40 + b"%d" % i for i in range(4)]
    with banyanstore.open(path, **OPTS, max_key_size=64) as store:
        idx = store.keyspace("index")
        store.put(big[0], b"in a table")
        idx.put(big[0], b"in a table")
        store.flush()
        for k in big[1:]:
            store.put(k, b"in the WAL")
    with banyanstore.open(path, **OPTS, max_key_size=16) as store:
        idx = store.keyspace("index")
        before = store.version
        store.delete(big[0])  # its entry in a table
        idx.delete(big[0])
        with store.batch() as b:
            b.delete(big[1])  # its entry in a memtable (replayed)
        del store[big[2]]
        assert store.version == before + 4
        assert [store.get(k) for k in big] == [None, None, None, b"in the WAL"]
        assert idx.get(big[0]) is None
        store.delete(big[0])  # deleted already: a tombstone again, as for any key
        for call in (lambda: store.put(big[3], b"v"), lambda: store.put(b"x" * 17, b"v"),
                     lambda: store.delete(b"x" * 17), lambda: idx.delete(big[1]),
                     lambda: store.batch().delete(b"x" * 17)):
            with pytest.raises(EntryTooLargeError, match="key of .* exceeds max_key_size"):
                call()
        assert store.delete_range(b"k", b"l") == store.version  # a range covering them
        assert list(store.keys()) == []
    with banyanstore.open(path, **OPTS, max_key_size=16) as store:
        assert list(store.keys()) == [] and store.get(big[3], version=before) == b"in the WAL"
