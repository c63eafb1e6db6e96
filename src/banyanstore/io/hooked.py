"""``HookedEnv``: an :class:`~banyanstore.io.base.Env` that passes every call to an
inner Env through one hook -- the shared shape of the test envs that fail or
"crash" chosen operations (:class:`~banyanstore.io.faults.FaultEnv`, the crash
simulator of the store's tests), in the spirit of Pebble's ``errorfs``.

Every operation, on the env or on a file it handed out, runs inside
``self.passing(op, paths, nbytes)``, which first calls ``self.hook(op, paths,
nbytes)``; raising there fails the operation before it reaches the inner env.
``op`` is one of :data:`HOOKED_OPS`; ``paths`` names the file(s) involved
(``rename``/``link``: source then destination); ``nbytes`` is the size of a
``write`` (or of a ``map`` window).  A mapped file
(:class:`~banyanstore.io.base.MappedFile`) is opened as ``open_writable`` and its calls
are ``map`` (which reserves space: where a full disk shows), ``sync`` and ``truncate``;
stores into its window are no calls at all, so nothing can fail or count them -- as
with a real shared mapping.  The stat-like calls (``exists``/``file_size`` as
``stat``, ``free_space`` as ``statvfs``) go through the hook too, so a subclass
may decide about them, though :class:`FaultEnv` never fails them.

>>> from banyanstore.io.memory import MemoryEnv
>>> class Spy(HookedEnv):
...     def hook(self, op, paths, nbytes=0):
...         seen.append((op, paths))
>>> seen = []
>>> env = Spy(MemoryEnv())
>>> f = env.open_writable("/x"); f.write(b"abc"); f.sync()
>>> seen
[('open_writable', ('/x',)), ('write', ('/x',)), ('sync', ('/x',))]
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

from .base import Env, FileLock, MappedFile, RandomAccessFile, ReadRequest, Window, WritableFile

__all__ = ["HookedEnv", "HookedWritable", "HookedMapped", "HookedReadable", "HOOKED_OPS",
           "MUTATING_OPS"]

MUTATING_OPS = frozenset({"open_writable", "write", "map", "sync", "truncate", "mkdir", "remove",
                          "rmdir", "rename", "link", "sync_dir"})
"""Operations that change what is (or will be) on disk."""
HOOKED_OPS = MUTATING_OPS | {"open_readable", "read", "read_batch", "listdir", "lock", "stat", "statvfs"}
_NOTHING = nullcontext()


class HookedWritable(WritableFile):
    """A writable file of a :class:`HookedEnv`: each call passes the env's hook first."""

    def __init__(self, env: HookedEnv, inner: WritableFile) -> None:
        self.path, self.env, self.inner = inner.path, env, inner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        with self.env.passing("write", (self.path,), len(data)):
            self.inner.write(data)

    def sync(self) -> None:
        with self.env.passing("sync", (self.path,)):
            self.inner.sync()

    def truncate(self, size: int) -> None:
        with self.env.passing("truncate", (self.path,)):
            self.inner.truncate(size)

    @property
    def size(self) -> int:
        return self.inner.size

    def close(self) -> None:
        self.inner.close()


class HookedMapped(MappedFile):
    """A mapped file of a :class:`HookedEnv`: ``map``, ``sync`` and ``truncate`` pass the hook."""

    def __init__(self, env: HookedEnv, inner: MappedFile) -> None:
        self.path, self.env, self.inner = inner.path, env, inner

    def map(self, start: int, length: int) -> tuple[Window, int]:
        with self.env.passing("map", (self.path,), length):
            return self.inner.map(start, length)

    def sync(self) -> None:
        with self.env.passing("sync", (self.path,)):
            self.inner.sync()

    def truncate(self, size: int) -> None:
        with self.env.passing("truncate", (self.path,)):
            self.inner.truncate(size)

    @property
    def size(self) -> int:
        return self.inner.size

    def close(self) -> None:
        self.inner.close()


class HookedReadable(RandomAccessFile):
    """A readable file of a :class:`HookedEnv`."""

    def __init__(self, env: HookedEnv, inner: RandomAccessFile) -> None:
        self.path, self.env, self.inner = inner.path, env, inner

    def read(self, offset: int, length: int) -> bytes:
        with self.env.passing("read", (self.path,)):
            return self.inner.read(offset, length)

    @property
    def size(self) -> int:
        return self.inner.size

    def close(self) -> None:
        self.inner.close()

    def retire(self) -> None:
        self.inner.retire()


class HookedEnv(Env):
    """Delegates to ``inner``; override :meth:`hook` (and, for per-handle state,
    :meth:`_writable`) to decide what fails."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "_hook" in vars(cls):  # the old name: overriding it would silently do nothing
            raise TypeError(f"{cls.__name__} defines _hook; the method to override is hook")

    def __init__(self, inner: Env) -> None:
        self.inner = inner
        self.mode = inner.mode

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        """Called before every operation; raise to fail it.  The default lets all pass."""

    def passing(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> AbstractContextManager[object]:
        """Pass :meth:`hook`, then hold what the operation needs while the inner env runs
        it: nothing here.  A subclass that changes the inner env's state from another
        thread (the crash simulator's power loss) holds a lock, so the change never
        falls between the hook and the operation."""
        self.hook(op, paths, nbytes)
        return _NOTHING

    def _writable(self, inner: WritableFile, *, append: bool) -> WritableFile:
        """Wrap a file ``inner`` just opened for writing (subclasses add per-handle state)."""
        return HookedWritable(self, inner)

    def _mapped(self, inner: MappedFile, *, create: bool) -> MappedFile:
        """Wrap a file ``inner`` just opened for mapping (subclasses add per-handle state)."""
        return HookedMapped(self, inner)

    def open_writable(self, path: str, *, append: bool = False) -> WritableFile:
        with self.passing("open_writable", (path,)):
            return self._writable(self.inner.open_writable(path, append=append), append=append)

    def open_mapped(self, path: str, *, create: bool = False) -> MappedFile:
        with self.passing("open_writable", (path,)):
            return self._mapped(self.inner.open_mapped(path, create=create), create=create)

    def open_readable(self, path: str) -> RandomAccessFile:
        with self.passing("open_readable", (path,)):
            return HookedReadable(self, self.inner.open_readable(path))

    def read_batch(self, requests: Sequence[ReadRequest]) -> list[bytes]:
        inner = [(f.inner if isinstance(f, HookedReadable) else f, off, n) for f, off, n in requests]
        if not requests:
            return self.inner.read_batch(inner)
        with self.passing("read_batch", tuple(f.path for f, _, _ in requests)):
            return self.inner.read_batch(inner)

    def exists(self, path: str) -> bool:
        with self.passing("stat", (path,)):
            return self.inner.exists(path)

    def file_size(self, path: str) -> int:
        with self.passing("stat", (path,)):
            return self.inner.file_size(path)

    def listdir(self, path: str) -> list[str]:
        with self.passing("listdir", (path,)):
            return self.inner.listdir(path)

    def mkdir(self, path: str) -> None:
        with self.passing("mkdir", (path,)):
            self.inner.mkdir(path)

    def remove(self, path: str) -> None:
        with self.passing("remove", (path,)):
            self.inner.remove(path)

    def rmdir(self, path: str) -> None:
        with self.passing("rmdir", (path,)):
            self.inner.rmdir(path)

    def rename(self, src: str, dst: str) -> None:
        with self.passing("rename", (src, dst)):
            self.inner.rename(src, dst)

    def link(self, src: str, dst: str) -> None:
        with self.passing("link", (src, dst)):
            self.inner.link(src, dst)

    def sync_dir(self, path: str) -> None:
        with self.passing("sync_dir", (path,)):
            self.inner.sync_dir(path)

    def lock(self, path: str) -> FileLock:
        with self.passing("lock", (path,)):
            return self.inner.lock(path)

    def free_space(self, path: str) -> int:
        with self.passing("statvfs", (path,)):
            return self.inner.free_space(path)

    def describe(self) -> dict[str, object]:
        return dict(self.inner.describe())

    def close(self) -> None:
        self.inner.close()
