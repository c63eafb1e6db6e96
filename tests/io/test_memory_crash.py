"""MemoryEnv: what survives ``crash()`` and what does not."""

from __future__ import annotations

import errno
import threading

import pytest

from banyanstore.errors import StorageIOError, StoreLockedError
from banyanstore.io.faults import FaultEnv
from banyanstore.io.memory import MemoryEnv


@pytest.fixture
def mem() -> MemoryEnv:
    env = MemoryEnv()
    env.mkdir("/db")
    return env


def test_unsynced_bytes_are_dropped(mem: MemoryEnv) -> None:
    f = mem.open_writable("/db/wal")
    mem.sync_dir("/db")
    f.write(b"synced|")
    f.sync()
    f.write(b"lost")
    assert mem.read_file("/db/wal") == b"synced|lost"
    mem.crash()
    assert mem.read_file("/db/wal") == b"synced|"


def test_never_synced_file_is_empty_after_crash(mem: MemoryEnv) -> None:
    f = mem.open_writable("/db/f")
    f.write(b"data")
    mem.sync_dir("/db")  # the name is durable, the bytes are not
    mem.crash()
    assert mem.listdir("/db") == ["f"]
    assert mem.read_file("/db/f") == b""


def test_truncate_not_durable_until_sync(mem: MemoryEnv) -> None:
    f = mem.open_writable("/db/f")
    mem.sync_dir("/db")
    f.write(b"0123456789")
    f.sync()
    f.truncate(3)
    mem.crash()
    assert mem.read_file("/db/f") == b"0123456789"


def test_synced_file_in_unsynced_dir_disappears(mem: MemoryEnv) -> None:
    f = mem.open_writable("/db/new.sst")
    f.write(b"table")
    f.sync()
    f.close()
    mem.crash()
    assert mem.listdir("/db") == []
    assert not mem.exists("/db/new.sst")


def test_unsynced_rename_is_undone(mem: MemoryEnv) -> None:
    mem.write_file_atomic("/db/CURRENT", b"v1")
    f = mem.open_writable("/db/CURRENT.tmp")
    f.write(b"v2")
    f.sync()
    f.close()
    mem.sync_dir("/db")
    mem.rename("/db/CURRENT.tmp", "/db/CURRENT")
    assert mem.read_file("/db/CURRENT") == b"v2"
    mem.crash()
    assert mem.read_file("/db/CURRENT") == b"v1"
    assert mem.read_file("/db/CURRENT.tmp") == b"v2"
    mem.rename("/db/CURRENT.tmp", "/db/CURRENT")
    mem.sync_dir("/db")
    mem.crash()
    assert mem.listdir("/db") == ["CURRENT"]
    assert mem.read_file("/db/CURRENT") == b"v2"


def test_unsynced_remove_and_link_are_undone(mem: MemoryEnv) -> None:
    mem.write_file_atomic("/db/a", b"A")
    mem.remove("/db/a")
    mem.crash()
    assert mem.read_file("/db/a") == b"A"
    mem.link("/db/a", "/db/b")
    mem.crash()
    assert mem.listdir("/db") == ["a"]
    mem.link("/db/a", "/db/b")
    mem.sync_dir("/db")
    f = mem.open_writable("/db/b", append=True)
    f.write(b"+")
    f.sync()  # one inode: the sync covers both names
    mem.crash()
    assert mem.read_file("/db/a") == b"A+"


def test_directories_are_durable_once_created(mem: MemoryEnv) -> None:
    mem.mkdir("/db/sub/deeper")
    mem.crash()
    assert mem.exists("/db/sub/deeper")


def test_handles_die_and_locks_release(mem: MemoryEnv) -> None:
    w = mem.open_writable("/db/f")
    mem.sync_dir("/db")
    r = mem.open_readable("/db/f")
    lock = mem.lock("/db/LOCK")
    with pytest.raises(StoreLockedError):
        mem.lock("/db/LOCK")
    mem.crash()
    for call in (lambda: w.write(b"x"), w.sync, lambda: w.truncate(0), lambda: r.read(0, 1)):
        with pytest.raises(StorageIOError) as info:
            call()
        assert isinstance(info.value.__cause__, OSError)
    w.close()
    r.close()
    lock.release()  # harmless after a crash
    mem.lock("/db/LOCK").release()  # the crash released it
    f = mem.open_writable("/db/f")  # the env works again
    f.write(b"ok")
    f.close()
    assert mem.read_file("/db/f") == b"ok"
    assert mem.crashes == 1


def test_closed_handle_raises(mem: MemoryEnv) -> None:
    w = mem.open_writable("/db/f")
    w.close()
    with pytest.raises(StorageIOError):
        w.write(b"x")


def test_rename_directory_and_errors(mem: MemoryEnv) -> None:
    mem.mkdir("/db/tmp-ckpt")
    mem.write_file_atomic("/db/tmp-ckpt/x", b"1")
    mem.rename("/db/tmp-ckpt", "/db/ckpt")
    assert mem.read_file("/db/ckpt/x") == b"1"
    mem.crash()  # the directory rename was not synced
    assert mem.listdir("/db") == ["tmp-ckpt"]
    mem.write_file_atomic("/db/f", b"f")
    for src, dst in (("/db/f", "/db/tmp-ckpt"), ("/db/tmp-ckpt", "/db/tmp-ckpt/inner"),
                     ("/db/tmp-ckpt", "/db/f")):
        with pytest.raises(StorageIOError):
            mem.rename(src, dst)
    with pytest.raises(StorageIOError):
        mem.remove("/db/tmp-ckpt")
    with pytest.raises(StorageIOError):
        mem.open_writable("/db/tmp-ckpt")


def test_snapshot_state_and_clone(mem: MemoryEnv) -> None:
    mem.write_file_atomic("/db/a", b"durable")
    f = mem.open_writable("/db/b")
    f.write(b"volatile")
    assert mem.snapshot_state() == {"/db/a": b"durable", "/db/b": b"volatile"}
    assert mem.snapshot_state(durable=True) == {"/db/a": b"durable"}
    copy = mem.clone()
    copy.crash()
    assert copy.snapshot_state() == {"/db/a": b"durable"}
    assert mem.read_file("/db/b") == b"volatile"  # the original is untouched


# write_file_atomic's steps: open tmp, write, sync, rename, sync_dir.
_STEPS = [("open_writable", 0), ("write", 0), ("sync", 0), ("rename", 0), ("sync_dir", 0), (None, 0)]


@pytest.mark.parametrize("op", [s[0] for s in _STEPS])
def test_write_file_atomic_survives_crash_at_every_step(op: str | None) -> None:
    mem = MemoryEnv()
    mem.mkdir("/db")
    mem.write_file_atomic("/db/MANIFEST", b"old contents")
    env = FaultEnv(mem)
    if op is not None:  # the process "dies" when this step runs
        env.inject(op, errno.EIO, short_write=True)
        with pytest.raises(StorageIOError):
            env.write_file_atomic("/db/MANIFEST", b"new contents")
    else:
        env.write_file_atomic("/db/MANIFEST", b"new contents")
    mem.crash()
    got = mem.read_file("/db/MANIFEST")
    assert got == (b"new contents" if op is None else b"old contents")
    # Whatever happened, a retry after the crash (the tmp file may be left over) works.
    mem.write_file_atomic("/db/MANIFEST", b"retry")
    mem.crash()
    assert mem.read_file("/db/MANIFEST") == b"retry"


def test_crash_between_rename_and_sync_dir_gives_old_or_new() -> None:
    mem = MemoryEnv()
    mem.mkdir("/db")
    mem.write_file_atomic("/db/M", b"old")
    f = mem.open_writable("/db/M.tmp")
    f.write(b"new")
    f.sync()
    f.close()
    mem.rename("/db/M.tmp", "/db/M")
    mem.crash()
    assert mem.read_file("/db/M") == b"old"


def test_thread_safety() -> None:
    mem = MemoryEnv()
    mem.mkdir("/db")

    def writer(k: int) -> None:
        f = mem.open_writable(f"/db/f{k}")
        for i in range(300):
            f.write(b"%d," % i)
            if i % 50 == 0:
                f.sync()
                mem.sync_dir("/db")
        f.close()
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = b"".join(b"%d," % i for i in range(300))
    assert all(mem.read_file(f"/db/f{k}") == want for k in range(8))
    assert len(mem.listdir("/db")) == 8
