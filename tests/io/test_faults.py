"""FaultEnv: injected errors look exactly like real ones."""

from __future__ import annotations

import errno
import posixpath

import pytest

from banyanstore.errors import DiskFullError, StorageIOError
from banyanstore.io.base import Env
from banyanstore.io.faults import OPS, FaultEnv
from banyanstore.io.memory import MemoryEnv


@pytest.fixture
def fenv() -> FaultEnv:
    mem = MemoryEnv()
    mem.mkdir("/db")
    mem.write_file_atomic("/db/existing", b"0123456789")
    return FaultEnv(mem, seed=7)


# op -> a call that performs it once on the FaultEnv
def _call(env: FaultEnv, op: str) -> None:
    inner = env.inner
    if op in ("write", "sync", "truncate"):
        w = env.open_writable("/db/w")
        {"write": lambda: w.write(b"abc"), "sync": w.sync, "truncate": lambda: w.truncate(0)}[op]()
    elif op in ("read", "read_batch"):
        r = env.open_readable("/db/existing")
        assert (r.read(0, 4) == b"0123" if op == "read"
                else env.read_batch([(r, 0, 2), (r, 2, 2)]) == [b"01", b"23"])
    elif op == "map":
        m = env.open_mapped("/db/m", create=True)
        try:
            view, base = m.map(0, 4)
            view[:4] = b"abcd"
        finally:
            m.close()
    elif op == "rename":
        inner.write_file_atomic("/db/r", b"r")
        env.rename("/db/r", "/db/r2")
    elif op == "remove":
        inner.write_file_atomic("/db/gone", b"g")
        env.remove("/db/gone")
    elif op == "link":
        if inner.exists("/db/linked"):
            inner.remove("/db/linked")
        env.link("/db/existing", "/db/linked")
    elif op == "rmdir":
        inner.mkdir("/db/empty")
        env.rmdir("/db/empty")
    elif op == "lock":
        env.lock("/db/LOCK").release()
    else:
        calls = {"open_writable": lambda: env.open_writable("/db/w"),
                 "open_readable": lambda: env.open_readable("/db/existing"),
                 "sync_dir": lambda: env.sync_dir("/db"), "mkdir": lambda: env.mkdir("/db/sub"),
                 "listdir": lambda: env.listdir("/db")}
        calls[op]()


@pytest.mark.parametrize("op", OPS)
def test_each_op_fails_like_a_real_error(fenv: FaultEnv, op: str) -> None:
    _call(fenv, op)  # works before injection
    fenv.inject(op, errno.ENOSPC)
    with pytest.raises(DiskFullError) as info:
        _call(fenv, op)
    cause = info.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC
    assert info.value.errno == errno.ENOSPC
    assert fenv.fired[op] == 1
    _call(fenv, op if op != "sync" else "write")  # times=1: the next call works
    assert fenv.log[-1][0] == op


def test_eio_is_storage_error_and_enoent_stays_plain(fenv: FaultEnv) -> None:
    fenv.inject("rename", errno.EIO)
    with pytest.raises(StorageIOError) as info:
        fenv.rename("/db/existing", "/db/x")
    assert not isinstance(info.value, DiskFullError)
    assert fenv.inner.exists("/db/existing")  # the operation did not happen
    fenv.inject("open_readable", errno.ENOENT)
    with pytest.raises(FileNotFoundError):
        fenv.open_readable("/db/existing")


def test_after_times_and_path_filter(fenv: FaultEnv) -> None:
    rule = fenv.inject("write", errno.EIO, path_contains="wal", after=2, times=2)
    other = fenv.open_writable("/db/sst")
    wal = fenv.open_writable("/db/wal")
    for _ in range(5):
        other.write(b"x")  # never matches
    wal.write(b"1")
    wal.write(b"2")
    for _ in range(2):
        with pytest.raises(StorageIOError):
            wal.write(b"!")
    wal.write(b"3")
    assert (rule.seen, rule.fired) == (5, 2)
    assert fenv.inner.read_file("/db/wal") == b"123"
    fenv.clear()
    forever = fenv.inject("write", times=None)
    for _ in range(3):
        with pytest.raises(StorageIOError):
            wal.write(b"x")
    assert forever.fired == 3


def test_short_write_leaves_a_prefix(fenv: FaultEnv) -> None:
    f = fenv.open_writable("/db/wal")
    fenv.inject("write", errno.ENOSPC, short_write=True)
    with pytest.raises(DiskFullError):
        f.write(b"abcdefgh")
    assert fenv.inner.read_file("/db/wal") == b"abcd"
    fenv.inject("write", errno.EIO, short_write=3)
    with pytest.raises(StorageIOError):
        f.write(b"XYZWV")
    assert f.size == 7
    assert fenv.inner.read_file("/db/wal") == b"abcdXYZ"


def test_failed_sync_is_sticky_and_loses_data(fenv: FaultEnv) -> None:
    mem = fenv.inner
    assert isinstance(mem, MemoryEnv)
    f = fenv.open_writable("/db/wal")
    fenv.sync_dir("/db")
    f.write(b"acknowledged?")
    fenv.inject("sync", errno.EIO)
    with pytest.raises(StorageIOError):
        f.sync()
    with pytest.raises(StorageIOError):  # a retry must not "succeed" (fsyncgate)
        f.sync()
    fenv.rename("/db/wal", "/db/wal2")  # the mark follows the file
    with pytest.raises(StorageIOError):
        f.sync()
    assert fenv.fired["sync"] == 3
    mem.crash()
    assert mem.read_file("/db/wal") == b""  # the unsynced bytes are gone
    g = fenv.open_writable("/db/wal2")  # re-created: a new file, no longer poisoned
    g.write(b"x")
    g.sync()


def test_sticky_can_be_disabled() -> None:
    env = FaultEnv(MemoryEnv(), sticky_sync=False)
    f = env.open_writable("/f")
    env.inject("sync")
    with pytest.raises(StorageIOError):
        f.sync()
    f.sync()


def _random_run(seed: int) -> list[tuple[str, str, int]]:
    env = FaultEnv(MemoryEnv())
    env.inject_random(0.2, ops=("write", "sync", "rename"), seed=seed)
    for i in range(200):
        try:
            f = env.open_writable(f"/f{i % 5}")
            f.write(b"x" * 10)
            f.sync()
            env.rename(f"/f{i % 5}", f"/g{i % 5}")
        except StorageIOError as exc:
            assert isinstance(exc.__cause__, OSError)
            assert exc.errno in (errno.EIO, errno.ENOSPC)
            assert isinstance(exc, DiskFullError) == (exc.errno == errno.ENOSPC)
        env.clear()
        env.inject_random(0.2, ops=("write", "sync", "rename"))
    return env.log


def test_random_faults_are_reproducible() -> None:
    a, b, c = _random_run(1), _random_run(1), _random_run(2)
    assert a == b
    assert a != c
    assert 40 < len(a) < 200
    assert {op for op, _, _ in a} == {"write", "sync", "rename"}


def test_read_batch_unwraps_to_the_inner_backend(real_env_dir: tuple[Env, str]) -> None:
    inner, root = real_env_dir
    env = FaultEnv(inner)
    path = posixpath.join(root, "data")
    env.write_file_atomic(path, bytes(range(256)) * 64)
    f = env.open_readable(path)
    reqs = [(f, i * 7, 9) for i in range(300)]
    assert env.read_batch(reqs) == [(bytes(range(256)) * 64)[i * 7:i * 7 + 9] for i in range(300)]
    env.inject("read_batch", errno.EIO, path_contains="data")
    with pytest.raises(StorageIOError):
        env.read_batch(reqs)
    env.inject("read", errno.EIO)
    with pytest.raises(StorageIOError):
        f.read(0, 1)
    assert env.describe()["faults_fired"] == 2
    f.close()


def test_unknown_op_rejected(fenv: FaultEnv) -> None:
    with pytest.raises(ValueError):
        fenv.inject("fsync")
    with pytest.raises(ValueError):
        fenv.inject_random(0.1, ops=("bogus",))


def test_a_subclass_overriding_the_old_hook_name_is_refused() -> None:
    """``hook`` is the extension point; a subclass still defining ``_hook`` (its old,
    private name) would silently never be called, so defining it is a TypeError."""
    from banyanstore.io.hooked import HookedEnv

    class Counter(HookedEnv):
        def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
            self.seen = getattr(self, "seen", 0) + 1

    env = Counter(MemoryEnv())
    env.mkdir("/d")
    assert env.seen == 1
    with pytest.raises(TypeError, match="_hook"):
        type("Old", (HookedEnv,), {"_hook": lambda self, op, paths, nbytes=0: None})
