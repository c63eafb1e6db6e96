"""Test helpers for crash simulation: a :class:`CrashEnv` that simulates power loss at
the N-th mutating IO operation, and :func:`abandon` to retire the crashed store.

How a simulated crash works (the clean way to stop a crashed Store's threads):

1. ``CrashEnv`` wraps a :class:`~banyanstore.io.memory.MemoryEnv` and counts every
   mutating operation (create, write, sync, directory sync, rename, remove, link,
   truncate, mkdir).  At operation number ``crash_at`` -- *before* it takes effect --
   it calls ``inner.crash()`` (every byte not fsynced and every directory change not
   dir-synced is lost) and marks itself *dead*.
2. A dead ``CrashEnv`` is the crashed process's view of the disk: every later call
   through it (and through any handle it gave out) raises ``StorageIOError(EIO)``.
   So the crashed Store's writer and background threads fail at their next IO and can
   never touch the "rebooted" disk, which the next Store opens through a fresh env.
3. :func:`abandon` then closes the crashed Store, swallowing the errors its close
   reports; close stops the flush and compaction threads (they fail fast because
   every IO fails), so no thread of the dead Store outlives the test.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from typing import Any

from banyanstore.errors import BanyanStoreError, from_oserror
from banyanstore.io.base import Env, FileLock, RandomAccessFile, ReadRequest, WritableFile
from banyanstore.io.memory import MemoryEnv

__all__ = ["CrashEnv", "abandon", "soak"]


def _dead(op: str, path: str) -> BaseException:
    exc = OSError(errno.EIO, "simulated crash: the process is dead", path)
    err = from_oserror(op, path, exc)
    err.__cause__ = exc
    return err


class _W(WritableFile):
    def __init__(self, env: CrashEnv, inner: WritableFile) -> None:
        self.path, self._env, self._inner = inner.path, env, inner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._env._step("write", self.path)
        self._inner.write(data)

    def sync(self) -> None:
        self._env._step("sync", self.path)
        self._inner.sync()

    def truncate(self, size: int) -> None:
        self._env._step("truncate", self.path)
        self._inner.truncate(size)

    @property
    def size(self) -> int:
        return self._inner.size

    def close(self) -> None:
        self._inner.close()


class _R(RandomAccessFile):
    def __init__(self, env: CrashEnv, inner: RandomAccessFile) -> None:
        self.path, self._env, self.inner = inner.path, env, inner

    def read(self, offset: int, length: int) -> bytes:
        self._env._check_alive("read", self.path)
        return self.inner.read(offset, length)

    @property
    def size(self) -> int:
        return self.inner.size

    def close(self) -> None:
        self.inner.close()


class CrashEnv(Env):
    """A MemoryEnv view that crashes at mutating operation ``crash_at`` (None: never).

    ``ops`` counts the mutating operations that took effect; ``trace`` lists them as
    ``(op, path)`` so a test can say which step of the protocol a crash point is.
    """

    mode = "memory"

    def __init__(self, inner: MemoryEnv, crash_at: int | None = None) -> None:
        self.inner = inner
        self.crash_at = crash_at
        self.ops = 0
        self.dead = False
        self.trace: list[tuple[str, str]] = []
        self._mu = threading.Lock()

    # -- the crash decision ------------------------------------------------------------
    def _check_alive(self, op: str, path: str) -> None:
        if self.dead:
            raise _dead(op, path)

    def _step(self, op: str, path: str) -> None:
        """Count one mutating operation; crash instead of doing it when its turn comes."""
        with self._mu:
            if self.dead:
                raise _dead(op, path)
            if self.crash_at is not None and self.ops >= self.crash_at:
                self.dead = True
                self.inner.crash()
                raise _dead(op, path)
            self.ops += 1
            self.trace.append((op, path))

    # -- Env -------------------------------------------------------------------------------
    def open_writable(self, path: str, *, append: bool = False) -> WritableFile:
        self._step("open_writable", path)
        return _W(self, self.inner.open_writable(path, append=append))

    def open_readable(self, path: str) -> RandomAccessFile:
        self._check_alive("open_readable", path)
        return _R(self, self.inner.open_readable(path))

    def read_batch(self, requests: Sequence[ReadRequest]) -> list[bytes]:
        if requests:
            self._check_alive("read_batch", requests[0][0].path)
        return self.inner.read_batch([(f.inner if isinstance(f, _R) else f, o, n)
                                      for f, o, n in requests])

    def exists(self, path: str) -> bool:
        self._check_alive("stat", path)
        return self.inner.exists(path)

    def file_size(self, path: str) -> int:
        self._check_alive("stat", path)
        return self.inner.file_size(path)

    def listdir(self, path: str) -> list[str]:
        self._check_alive("listdir", path)
        return self.inner.listdir(path)

    def mkdir(self, path: str) -> None:
        self._step("mkdir", path)
        self.inner.mkdir(path)

    def remove(self, path: str) -> None:
        self._step("remove", path)
        self.inner.remove(path)

    def rmdir(self, path: str) -> None:
        self._step("rmdir", path)
        self.inner.rmdir(path)

    def rename(self, src: str, dst: str) -> None:
        self._step("rename", f"{src} -> {dst}")
        self.inner.rename(src, dst)

    def link(self, src: str, dst: str) -> None:
        self._step("link", f"{src} -> {dst}")
        self.inner.link(src, dst)

    def sync_dir(self, path: str) -> None:
        self._step("sync_dir", path)
        self.inner.sync_dir(path)

    def lock(self, path: str) -> FileLock:
        self._check_alive("lock", path)
        return self.inner.lock(path)

    def free_space(self, path: str) -> int:
        self._check_alive("statvfs", path)
        return self.inner.free_space(path)


def abandon(store: Any) -> None:
    """Retire a Store whose env crashed: close it (stopping its threads), ignoring the
    IO errors the dead env makes it report."""
    try:
        store.close()
    except BanyanStoreError:
        pass


def soak() -> bool:
    """True when the long forms of the crash tests were asked for (BANYANSTORE_SOAK=1)."""
    return os.environ.get("BANYANSTORE_SOAK", "") not in ("", "0")
