"""The nodes and handles of :class:`~banyanstore.io.memory.MemoryEnv` (see there).

An inode keeps its live bytes and the bytes of its last ``sync()``; a directory
keeps its live namespace and the namespace of its last ``sync_dir()``.  Handles
die when the env crashes: each remembers the env's crash generation.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import NoReturn

from ..errors import from_oserror
from .base import FileLock, MappedFile, RandomAccessFile, Window, WritableFile

__all__ = ["Shared", "Inode", "Dir", "raise_oserror", "MemWritable", "MemMapped", "MemReadable", "MemLock"]


class Shared:
    """What a :class:`~banyanstore.io.memory.MemoryEnv` and the handles it opens share:
    the env's one lock, its crash generation (a handle of an older generation is dead)
    and the inodes locked by :meth:`~banyanstore.io.memory.MemoryEnv.lock`.  Every
    field is used under ``mu``."""

    __slots__ = ("mu", "generation", "locked")

    def __init__(self) -> None:
        self.mu = threading.RLock()
        self.generation = 0
        self.locked: set[Inode] = set()  # inodes (identity-hashed), like flock


class Inode:
    """A file: its live bytes and its bytes as of the last sync.  Hashed by identity."""

    __slots__ = ("data", "durable")

    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = b""  # contents as of the last sync()

    def append(self, more: bytes | bytearray | memoryview) -> None:
        try:
            self.data += more
        except BufferError:
            self.data = self.data + more  # see resize()

    def resize(self, size: int) -> None:
        """Cut or zero-extend the live bytes to ``size``."""
        data = self.data
        try:
            if size < len(data):
                del data[size:]
            else:
                data.extend(bytes(size - len(data)))
        except BufferError:
            # Another handle's mapped window pins the bytearray: the file gets new bytes
            # and that window no longer reaches them.  Only two writers mapping one file
            # at once (which the engine never is) can tell this from a real mapping.
            grown = bytearray(data[:size])
            grown.extend(bytes(size - len(grown)))
            self.data = grown


class Dir:
    """A directory: its live namespace and its namespace as of the last sync_dir."""

    __slots__ = ("live", "durable")

    def __init__(self) -> None:
        self.live: dict[str, Inode | Dir] = {}
        self.durable: dict[str, Inode | Dir] = {}  # namespace as of the last sync_dir()


def raise_oserror(op: str, path: str, code: int, plain: bool = False) -> NoReturn:
    """Raise like a real backend: the plain OSError (``plain``) or its StorageIOError."""
    exc = OSError(code, os.strerror(code), path)  # OSError picks FileNotFoundError etc.
    if plain:
        raise exc
    raise from_oserror(op, path, exc) from exc


class _Handle:
    """Shared checks of the two file classes: closed, or killed by a crash."""

    def __init__(self, shared: Shared, path: str, inode: Inode) -> None:
        self.path, self._shared, self._inode = path, shared, inode
        self._generation = shared.generation
        self._closed = False

    def _live(self, op: str) -> Inode:
        """REQUIRES: ``shared.mu`` held."""
        if self._closed:
            raise_oserror(op, self.path, errno.EBADF)
        if self._generation != self._shared.generation:
            exc = OSError(errno.EIO, "handle invalidated by a simulated crash", self.path)
            raise from_oserror(op, self.path, exc) from exc
        return self._inode

    def close(self) -> None:
        self._closed = True


class MemWritable(_Handle, WritableFile):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        with self._shared.mu:
            self._live("write").append(data)

    def sync(self) -> None:
        with self._shared.mu:
            inode = self._live("fdatasync")
            inode.durable = bytes(inode.data)

    def truncate(self, size: int) -> None:
        with self._shared.mu:
            self._live("truncate").resize(size)

    @property
    def size(self) -> int:
        with self._shared.mu:
            return len(self._inode.data)


class MemMapped(_Handle, MappedFile):
    """The window is a ``memoryview`` of the inode's live bytes: stores are seen by every
    reader at once and become durable with :meth:`sync`, like a shared mapping.  A
    crash gives the inode new bytes, so the dead writer's window no longer reaches them."""

    def __init__(self, shared: Shared, path: str, inode: Inode) -> None:
        super().__init__(shared, path, inode)
        self._view: memoryview | None = None

    def _release(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            view.release()  # the bytearray may be resized again

    def map(self, start: int, length: int) -> tuple[Window, int]:
        with self._shared.mu:
            self._release()
            inode = self._live("map")
            if len(inode.data) < start + length:
                inode.resize(start + length)
            self._view = memoryview(inode.data)[start:start + length]
            return self._view, start

    def sync(self) -> None:
        with self._shared.mu:
            inode = self._live("fdatasync")
            inode.durable = bytes(inode.data)

    def truncate(self, size: int) -> None:
        with self._shared.mu:
            self._release()
            self._live("truncate").resize(size)

    @property
    def size(self) -> int:
        with self._shared.mu:
            return len(self._inode.data)

    def close(self) -> None:
        with self._shared.mu:
            self._release()
        super().close()


class MemReadable(_Handle, RandomAccessFile):
    def __init__(self, shared: Shared, path: str, inode: Inode) -> None:
        super().__init__(shared, path, inode)
        self._size = len(inode.data)

    def read(self, offset: int, length: int) -> bytes:
        with self._shared.mu:
            return bytes(self._live(f"pread({length} bytes at {offset})").data[offset:offset + length])

    @property
    def size(self) -> int:
        return self._size


class MemLock(FileLock):
    def __init__(self, shared: Shared, inode: Inode) -> None:
        self._shared, self._inode, self._generation = shared, inode, shared.generation

    def release(self) -> None:
        with self._shared.mu:
            if self._generation == self._shared.generation:
                self._shared.locked.discard(self._inode)
            self._generation = -1

    def disown(self) -> None:
        # A forked child's copy of the in-memory filesystem is its own; still, like a
        # real lock's, a disowned lock is never released by this handle.
        self._generation = -1
