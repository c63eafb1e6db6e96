"""The ``sync`` backend: plain blocking POSIX calls on the caller's thread.

Also the base of the ``nonblocking`` and ``io_uring`` backends, which only
override :meth:`Env.read_batch` (and the file classes they need).

Mapped files (:class:`PosixMappedFile`, the Log's segments) reserve their space
with ``posix_fallocate`` before mapping it: a store into a shared mapping over
a hole of a full filesystem would kill the process with SIGBUS, where the
fallocate reports ENOSPC (:class:`~banyanstore.errors.DiskFullError`).  Pages
fault in on their first store, one 4 KiB page at a time: faulting a whole
window in at once (``MADV_POPULATE_WRITE``) measured no faster, and it dirties
pages ahead of the records, so every sync would write their zeros out
(``benchmarks/bench_wal_designs.py``).  ``fdatasync`` covers pages dirtied
through the mapping: Linux write-protects a page when it is written back, so
every later store marks it dirty again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import shutil
import threading
import weakref

from ..errors import StoreLockedError, from_oserror
from .base import Env, FileLock, MappedFile, RandomAccessFile, Window, WritableFile
from .pread import PosixRandomAccessFile

__all__ = ["PosixEnv", "PosixWritableFile", "PosixMappedFile", "PosixRandomAccessFile"]

_FDATASYNC = getattr(os, "fdatasync", os.fsync)
_PAGE = mmap.ALLOCATIONGRANULARITY


def _copy_durably(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` and sync the copy's data: a link's data is the source's,
    synced already, but a copy's is new, and only ``sync_dir`` follows (the name)."""
    if os.path.lexists(dst):  # as os.link: never replace a name
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    try:
        shutil.copyfile(src, dst)
        fd = os.open(dst, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(dst)  # a part of a copy is nobody's file
        raise


class _ClosesWhenDropped:
    """A descriptor (``_fd``, -1 once closed) closed by ``__del__`` if the object is
    dropped without close(): a Ctrl-C between an open returning and its caller keeping
    the object (or entering the ``try`` that closes it) leaves no cleanup that can reach
    it, and the descriptor stayed open until the process exited.  Only the descriptor: a
    window mapped from it stays valid for whoever still holds it."""

    _fd: int

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


class PosixWritableFile(WritableFile, _ClosesWhenDropped):
    def __init__(self, path: str, fd: int, size: int) -> None:
        self.path = path
        self._fd = fd
        self._size = size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                self._size += n
                view = view[n:]
        except OSError as exc:
            raise from_oserror("write", self.path, exc) from exc

    def sync(self) -> None:
        try:
            _FDATASYNC(self._fd)
        except OSError as exc:
            raise from_oserror("fdatasync", self.path, exc) from exc

    def truncate(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            os.lseek(self._fd, size, os.SEEK_SET)
        except OSError as exc:
            raise from_oserror("truncate", self.path, exc) from exc
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class PosixMappedFile(MappedFile, _ClosesWhenDropped):
    """A file written through one ``MAP_SHARED`` window at a time (see the module docstring)."""

    def __init__(self, path: str, fd: int, size: int) -> None:
        self.path = path
        self._fd = fd
        self._size = size
        self._mm: mmap.mmap | None = None

    def map(self, start: int, length: int) -> tuple[Window, int]:
        self._unmap()
        base = start - start % _PAGE
        end = start + length
        try:
            # Reserve the whole window, not just the part past the end: the file may
            # have holes (a test's zero-extension), and a store into a hole can SIGBUS.
            os.posix_fallocate(self._fd, base, end - base)
            self._size = max(self._size, end)
            mm = mmap.mmap(self._fd, end - base, flags=mmap.MAP_SHARED,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
        except OSError as exc:
            raise from_oserror("map", self.path, exc) from exc
        self._mm = mm
        return mm, base

    def _unmap(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            mm.close()  # a stale window now raises ValueError instead of writing

    def sync(self) -> None:
        try:
            _FDATASYNC(self._fd)
        except OSError as exc:
            raise from_oserror("fdatasync", self.path, exc) from exc

    def truncate(self, size: int) -> None:
        self._unmap()
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            raise from_oserror("truncate", self.path, exc) from exc
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self._unmap()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _open_sized(path: str, flags: int, op: str, *, plain_enoent: bool = False) -> tuple[int, int]:
    """``(fd, size)`` of ``path`` opened with ``flags``; the descriptor never leaks.
    ``plain_enoent``: a missing file raises the plain ``FileNotFoundError``."""
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if plain_enoent and isinstance(exc, FileNotFoundError):
            raise
        raise from_oserror(op, path, exc) from exc
    try:
        return fd, os.fstat(fd).st_size
    except OSError as exc:
        os.close(fd)
        raise from_oserror(op, path, exc) from exc


class _FlockLock(FileLock, _ClosesWhenDropped):
    """An flock on its own descriptor.  Dropped unreleased (a Ctrl-C between env.lock()
    returning and its caller keeping it), its ``__del__`` closes the descriptor, which
    releases the flock: the store is not locked until the process exits."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._mu = threading.Lock()
        _held_locks.add(self)  # disowned in a forked child (below)

    def release(self) -> None:
        with self._mu:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def disown(self) -> None:
        # An flock belongs to the open file, which a forked child shares with its
        # parent: LOCK_UN here would unlock the parent's store.  Closing only this
        # copy keeps the parent's lock, and a child that outlives the parent does not
        # hold it.  (No _mu: the child has one thread, and a thread of the parent may
        # have held it at the fork.)
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


_held_locks: weakref.WeakSet[_FlockLock] = weakref.WeakSet()
"""Every flock taken in this process and not yet collected."""


def _disown_locks_after_fork() -> None:
    """In a forked child: close its copy of every lock's descriptor (see disown).  The
    stores and logs disown theirs too (shutdown.py), but only once registered: one
    another thread of the parent was opening at the fork -- its LOCK taken, the handle
    not yet built -- left the child holding the flock, which kept the store locked after
    the parent ended for as long as the child lived (a multiprocessing worker)."""
    for lock in list(_held_locks):  # (no lock: the child has one thread)
        try:
            lock.disown()
        except Exception:  # noqa: BLE001, S110 - a fork hook must not fail; the next lock still goes
            pass


os.register_at_fork(after_in_child=_disown_locks_after_fork)


class PosixEnv(Env):
    """Blocking calls on the caller's thread (``io_mode="sync"``)."""

    mode = "sync"

    def __init__(self, *, direct_io: bool = False) -> None:
        """``direct_io=True``: ``open_readable`` uses O_DIRECT (see ``io/direct.py``)."""
        self.direct_io = direct_io
        # Set by io/select.py when "auto" chose this backend (reported by describe()).
        self.io_mode_requested: str | None = None
        self.io_mode_fallback_reason: str | None = None

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = {"io_mode": self.mode, "direct_io": self.direct_io}
        if self.io_mode_requested is not None:
            info["io_mode_requested"] = self.io_mode_requested
            info["io_mode_fallback_reason"] = self.io_mode_fallback_reason
        return info

    def open_writable(self, path: str, *, append: bool = False) -> WritableFile:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
        return PosixWritableFile(path, *_open_sized(path, flags, "open for writing"))

    def open_mapped(self, path: str, *, create: bool = False) -> MappedFile:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if create else 0)
        return PosixMappedFile(path, *_open_sized(path, flags, "open for mapping"))

    def open_readable(self, path: str) -> RandomAccessFile:
        if self.direct_io:
            from .direct import open_direct
            return open_direct(path)
        fd, size = _open_sized(path, os.O_RDONLY | os.O_CLOEXEC, "open for reading", plain_enoent=True)
        return PosixRandomAccessFile(path, fd, size)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def file_size(self, path: str) -> int:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise from_oserror("stat", path, exc) from exc

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise from_oserror("listdir", path, exc) from exc

    def mkdir(self, path: str) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise from_oserror("mkdir", path, exc) from exc

    def remove(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise from_oserror("remove", path, exc) from exc

    def rmdir(self, path: str) -> None:
        try:
            os.rmdir(path)
        except OSError as exc:
            raise from_oserror("rmdir", path, exc) from exc

    def rename(self, src: str, dst: str) -> None:
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise from_oserror(f"rename to {dst}", src, exc) from exc

    def link(self, src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise from_oserror(f"link to {dst}", src, exc) from exc
            try:
                _copy_durably(src, dst)
            except OSError as exc2:
                raise from_oserror(f"copy to {dst}", src, exc2) from exc2

    def sync_dir(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise from_oserror("fsync directory", path, exc) from exc

    def lock(self, path: str) -> FileLock:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise from_oserror("open lock file", path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLockedError(
                    f"{path} is locked by another writer (process or open handle); "
                    "open with read_only=True to read concurrently") from exc
            raise from_oserror("lock", path, exc) from exc
        return _FlockLock(fd)

    def free_space(self, path: str) -> int:
        try:
            st = os.statvfs(path)
        except OSError as exc:
            raise from_oserror("statvfs", path, exc) from exc
        return st.f_bavail * st.f_frsize
