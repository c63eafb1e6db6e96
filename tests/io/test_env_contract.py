"""The Env contract, run over every backend (sync, nonblocking, io_uring, memory)."""

from __future__ import annotations

import errno
import gc
import os
import posixpath
import random
import time

import pytest

from banyanstore.errors import StorageIOError, StoreLockedError
from banyanstore.io.base import Env
from banyanstore.io.testing import TEST_URING_ENTRIES


def _write(env: Env, path: str, data: bytes, *, sync: bool = True) -> None:
    f = env.open_writable(path)
    try:
        f.write(data)
        if sync:
            f.sync()
    finally:
        f.close()


def test_write_append_size_and_read(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    path = posixpath.join(root, "a.log")
    f = env.open_writable(path)
    assert f.size == 0
    f.write(b"hello ")
    f.write(bytearray(b"world"))
    f.write(memoryview(b"!!"))
    assert f.size == 13
    f.sync()
    f.close()
    f.close()  # idempotent
    g = env.open_writable(path, append=True)
    assert g.size == 13
    g.write(b"+more")
    g.close()
    assert env.file_size(path) == 18
    r = env.open_readable(path)
    assert r.size == 18
    assert r.read(0, 5) == b"hello"
    assert r.read(6, 5) == b"world"
    assert r.read(13, 100) == b"+more"  # short only at end of file
    assert r.read(18, 10) == b""
    assert r.read(1000, 10) == b""
    r.close()
    assert env.read_file(path) == b"hello world!!+more"
    h = env.open_writable(path)  # without append: truncates
    assert h.size == 0
    h.close()
    assert env.file_size(path) == 0


def test_truncate(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    path = posixpath.join(root, "t")
    f = env.open_writable(path)
    f.write(b"0123456789")
    f.truncate(4)
    assert f.size == 4
    f.write(b"XY")  # later writes go to the new end
    f.truncate(8)  # growing pads with zeros
    f.sync()
    f.close()
    assert env.read_file(path) == b"0123XY\0\0"


def test_large_write(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    data = random.Random(1).randbytes(3 << 20)
    path = posixpath.join(root, "big")
    _write(env, path, data)
    assert env.read_file(path) == data


@pytest.mark.parametrize("count", [0, 1, 7, 100, 1000])
def test_read_batch_order(env_dir: tuple[Env, str], count: int) -> None:
    env, root = env_dir
    rng = random.Random(count)
    blobs = [rng.randbytes(rng.randrange(1, 40_000)) for _ in range(4)]
    files = []
    for i, blob in enumerate(blobs):
        _write(env, posixpath.join(root, f"f{i}"), blob)
        files.append(env.open_readable(posixpath.join(root, f"f{i}")))
    reqs, want = [], []
    for _ in range(count):
        k = rng.randrange(len(files))
        off = rng.randrange(len(blobs[k]) + 50)  # some start past EOF
        n = rng.choice([0, 1, 100, 4096, 9000, 50_000])  # some run past EOF
        reqs.append((files[k], off, n))
        want.append(blobs[k][off:off + n])
    assert count < 1000 or count > 4 * TEST_URING_ENTRIES  # the ring wraps many times
    assert env.read_batch(reqs) == want
    assert env.read_batch(reqs) == want  # the same env serves batch after batch
    for f in files:
        f.close()


def test_read_batch_error_is_storage_error(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    path = posixpath.join(root, "x")
    _write(env, path, b"x" * 100)
    good, bad = env.open_readable(path), env.open_readable(path)
    bad.close()
    reqs = [(good, 0, 10)] * 20 + [(bad, 0, 10)] + [(good, 5, 5)] * 20
    with pytest.raises(StorageIOError) as info:
        env.read_batch(reqs)
    assert info.value.path == path
    assert isinstance(info.value.__cause__, OSError)
    assert env.read_batch([(good, 0, 3)] * 50) == [b"xxx"] * 50  # still usable afterwards
    good.close()


def test_listdir_mkdir_exists(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    assert env.listdir(root) == []
    env.mkdir(posixpath.join(root, "d/e/f"))
    env.mkdir(posixpath.join(root, "d/e"))  # exists: no error
    for name in ("b", "a", "c"):
        _write(env, posixpath.join(root, name), name.encode(), sync=False)
    assert env.listdir(root) == ["a", "b", "c", "d"]
    assert env.listdir(posixpath.join(root, "d")) == ["e"]
    assert env.exists(posixpath.join(root, "a"))
    assert env.exists(posixpath.join(root, "d/e/f"))
    assert not env.exists(posixpath.join(root, "zz"))
    assert env.file_size(posixpath.join(root, "b")) == 1
    with pytest.raises(StorageIOError):
        env.mkdir(posixpath.join(root, "a/sub"))  # a is a file
    env.rmdir(posixpath.join(root, "d/e/f"))
    assert env.listdir(posixpath.join(root, "d/e")) == []
    with pytest.raises(StorageIOError):
        env.rmdir(posixpath.join(root, "d"))  # not empty


def test_missing_files(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    missing = posixpath.join(root, "nope")
    with pytest.raises(FileNotFoundError):
        env.open_readable(missing)
    with pytest.raises(FileNotFoundError):
        env.remove(missing)
    with pytest.raises(FileNotFoundError):
        env.file_size(missing)
    with pytest.raises(FileNotFoundError):
        env.listdir(missing)
    with pytest.raises(StorageIOError) as info:
        env.rename(missing, posixpath.join(root, "x"))
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(StorageIOError):
        env.open_writable(posixpath.join(root, "nodir/f"))
    with pytest.raises(StorageIOError):
        env.sync_dir(posixpath.join(root, "nodir"))
    with pytest.raises(StorageIOError):
        env.link(missing, posixpath.join(root, "y"))


def test_rename_replaces_and_remove(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    a, b = posixpath.join(root, "a"), posixpath.join(root, "b")
    _write(env, a, b"new")
    _write(env, b, b"old")
    env.rename(a, b)
    env.sync_dir(root)
    assert env.listdir(root) == ["b"]
    assert env.read_file(b) == b"new"
    env.remove(b)
    assert env.listdir(root) == []
    assert not env.exists(b)


def test_open_reader_survives_remove(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    path = posixpath.join(root, "f")
    _write(env, path, b"still here")
    r = env.open_readable(path)
    env.remove(path)
    assert r.read(0, 100) == b"still here"
    r.close()


def test_retired_reader_fails_reads_and_keeps_its_number(env_dir: tuple[Env, str]) -> None:
    """retire(): a close other threads' reads may race -- later reads raise, and a
    descriptor's number is not handed to another file while the object lives."""
    env, root = env_dir
    path = posixpath.join(root, "f")
    _write(env, path, b"abc")
    r = env.open_readable(path)
    assert r.read(0, 3) == b"abc"
    r.retire()
    r.retire()
    for _ in range(2):
        with pytest.raises(StorageIOError):
            r.read(0, 3)
        with pytest.raises(StorageIOError):
            env.read_batch([(r, 0, 1), (r, 1, 1)] * 8)
        r.close()  # changes nothing after retire()
    fd = getattr(r, "fd", -1)
    if fd < 0:
        return  # no descriptor numbers (memory)
    opened = [os.open(path, os.O_RDONLY) for _ in range(16)]
    try:
        assert fd not in opened
    finally:
        for o in opened:
            os.close(o)
    os.fstat(fd)  # still taken (by the dead descriptor)
    del r
    for _ in range(200):  # (a worker thread lets go of its last batch a moment after it)
        gc.collect()
        try:
            os.fstat(fd)
        except OSError:
            return  # released with the object
        time.sleep(0.01)
    pytest.fail("a retired descriptor outlived its object")


def test_link(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    a, b = posixpath.join(root, "a"), posixpath.join(root, "b")
    _write(env, a, b"shared")
    env.link(a, b)
    env.sync_dir(root)
    env.remove(a)
    assert env.read_file(b) == b"shared"
    _write(env, a, b"other")
    with pytest.raises(StorageIOError):
        env.link(a, b)  # destination exists


def test_write_file_atomic(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    path = posixpath.join(root, "MANIFEST")
    env.write_file_atomic(path, b"v1")
    env.write_file_atomic(path, b"v2")
    assert env.read_file(path) == b"v2"
    assert env.listdir(root) == ["MANIFEST"]


def test_lock_conflict_same_process(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    path = posixpath.join(root, "LOCK")
    lock = env.lock(path)
    assert env.exists(path)
    with pytest.raises(StoreLockedError):
        env.lock(path)
    lock.release()
    lock.release()  # idempotent
    again = env.lock(path)
    again.release()


def test_free_space(env_dir: tuple[Env, str]) -> None:
    env, root = env_dir
    assert env.free_space(root) > 0


def test_describe_and_close(env_dir: tuple[Env, str]) -> None:
    env, _root = env_dir
    assert env.describe()["io_mode"] == env.mode
    env.close()
    env.close()  # idempotent (the fixture closes a third time)


def test_mapped_file_stores_are_the_files_bytes(env_dir: tuple[Env, str]) -> None:
    """A store into a mapped window is read back through another handle at once, the
    window is zero-filled space the file now has, and sync/truncate/reopen behave."""
    env, root = env_dir
    path = posixpath.join(root, "seg")
    m = env.open_mapped(path, create=True)
    assert m.size == 0
    view, base = m.map(10, 100)
    assert base <= 10 and base + len(view) >= 110 and m.size >= 110
    view[10 - base:15 - base] = b"hello"
    r = env.open_readable(path)
    assert r.read(0, 15) == bytes(10) + b"hello"  # no write(), no sync: already the file's bytes
    m.sync()
    m.truncate(15)
    assert m.size == 15 and env.file_size(path) == 15
    with pytest.raises(ValueError):
        view[0:1] = b"x"  # the released window never reaches memory again
    view2, base2 = m.map(15, 5000)  # the next window, further on
    view2[15 - base2:18 - base2] = b"!!!"
    m.sync()
    m.truncate(18)
    m.close()
    m.close()  # idempotent
    r.close()
    assert env.read_file(path) == bytes(10) + b"hello!!!"
    again = env.open_mapped(path)  # an existing file keeps its bytes
    assert again.size == 18
    view3, base3 = again.map(18, 10)
    view3[18 - base3:19 - base3] = b"?"
    again.truncate(19)
    again.close()
    assert env.read_file(path) == bytes(10) + b"hello!!!?"
    with pytest.raises(StorageIOError):
        env.open_mapped(posixpath.join(root, "missing"))


def test_mapped_stores_survive_a_crash_only_once_synced() -> None:
    """The crash simulator treats a mapped window like any write: durable after sync()."""
    from banyanstore.io.memory import MemoryEnv
    env = MemoryEnv()
    env.mkdir("/d")
    m = env.open_mapped("/d/f", create=True)
    env.sync_dir("/d")
    view, base = m.map(0, 8)
    view[0:4] = b"sync"
    m.sync()
    view[4:8] = b"lost"
    assert env.read_file("/d/f") == b"synclost"
    env.crash()
    assert env.read_file("/d/f") == b"sync" + bytes(4)
    with pytest.raises(StorageIOError):
        m.sync()  # the crashed process's handle is dead


def test_link_across_filesystems_copies_durably(real_env_dir: tuple[Env, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a hard link is impossible (another filesystem: EXDEV) ``link`` copies, and
    the copy's data is synced: a checkpoint's tables must outlive a power loss as the
    linked ones, already synced, do."""
    env, root = real_env_dir
    a, b = posixpath.join(root, "a"), posixpath.join(root, "b")
    _write(env, a, b"table bytes")

    def cross_device(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src)

    synced: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def noting(sync):  # type: ignore[no-untyped-def]
        def call(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            sync(fd)
        return call

    monkeypatch.setattr(os, "link", cross_device)
    monkeypatch.setattr(os, "fsync", noting(real_fsync))
    monkeypatch.setattr(os, "fdatasync", noting(real_fdatasync))
    env.link(a, b)
    assert env.read_file(b) == b"table bytes"
    assert os.path.realpath(b) in synced
    c = posixpath.join(root, "c")
    _write(env, c, b"somebody's")
    with pytest.raises(StorageIOError):
        env.link(a, c)  # as a hard link: an existing name is never replaced
    assert env.read_file(c) == b"somebody's"
