"""The IO abstraction every byte of the engine passes through (LevelDB's ``Env``).

An :class:`Env` opens files, lists and renames them, syncs files and
directories and takes the store lock.  Backends differ only in *how* they
move bytes (``sync``, ``nonblocking``, ``io_uring``, the in-memory crash
simulator, the fault injector); the engine never knows which one it has.

Contracts shared by every backend:

* Paths are ``str``.  Errors are raised as :class:`~banyanstore.errors.StorageIOError`
  (or :class:`~banyanstore.errors.DiskFullError` for ENOSPC) with the original
  ``OSError`` as ``__cause__``; a missing file raises ``FileNotFoundError``
  wrapped the same way *only* where noted (``open_readable``, ``remove``
  raise the plain ``FileNotFoundError`` so callers can tell "absent" apart).
* ``WritableFile.write`` writes all of ``data`` or raises.  Data is durable
  only after ``sync()``; a new or renamed file's *name* is durable only after
  ``sync_dir()`` of its directory.  The crash simulator drops everything else.
* A :class:`MappedFile` is written by storing into a shared memory mapping
  (the Log's segments): a store is in the kernel's page cache the moment it
  happens, so it survives the death of the process without a system call;
  like a write, it is durable only after ``sync()``.
* ``RandomAccessFile.read`` returns fewer bytes than asked only at end of file.
* ``read_batch`` is the one call through which a batch of reads may be served
  concurrently (thread pool, io_uring); results come back in request order.
"""

from __future__ import annotations

import mmap
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence

__all__ = ["Env", "WritableFile", "MappedFile", "Window", "RandomAccessFile", "FileLock",
           "ReadRequest"]

Window = memoryview | mmap.mmap
"""A writable window of a :class:`MappedFile`: slice assignment and ``struct.pack_into``
work on both kinds (an ``mmap`` object is returned as itself: one indirection less on
the Log's append path)."""


class WritableFile(ABC):
    """A file open for appending.  Not thread-safe: the owner serialises calls."""

    path: str

    @abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append all of ``data`` (at the current end of the file)."""

    @abstractmethod
    def sync(self) -> None:
        """Make every byte written so far durable (fdatasync)."""

    @abstractmethod
    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes; later writes go to the new end."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes in the file, including unsynced ones."""

    @abstractmethod
    def close(self) -> None:
        """Close without syncing.  Idempotent."""


class MappedFile(ABC):
    """A file written through a window of shared memory.  Not thread-safe: the owner
    serialises calls (stores into the window need no call at all).

    :meth:`map` returns a writable :data:`Window` over part of the file; bytes
    stored into it *are* the file's bytes (other handles read them at once) and
    reach the disk with :meth:`sync`.  Only one window is mapped at a time: the
    next :meth:`map`, :meth:`truncate` or :meth:`close` releases the previous
    one (any later use of it raises ``ValueError``, never touches memory).
    """

    path: str

    @abstractmethod
    def map(self, start: int, length: int) -> tuple[Window, int]:
        """Make file bytes ``[start, start + length)`` writable in memory.

        The file is first extended with zeros to at least ``start + length`` bytes,
        with its disk space reserved (so a full disk is a
        :class:`~banyanstore.errors.DiskFullError` here, never a signal at a store
        into the mapping).  Returns ``(window, base)``: ``window[i]`` is file byte
        ``base + i``, with ``base <= start`` (rounded down to a page) and
        ``base + len(window) >= start + length``.
        """

    @abstractmethod
    def sync(self) -> None:
        """Make every byte stored so far, through any window, durable (fdatasync)."""

    @abstractmethod
    def truncate(self, size: int) -> None:
        """Release the window and cut (or zero-extend) the file to ``size`` bytes."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes in the file, including the zero-filled space :meth:`map` reserved."""

    @abstractmethod
    def close(self) -> None:
        """Release the window and close without syncing.  Idempotent."""


class RandomAccessFile(ABC):
    """A file open for positional reads.  Safe to share between threads."""

    path: str

    @abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (short only at end of file)."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Size of the file when it was opened (or refreshed)."""

    @abstractmethod
    def close(self) -> None:
        """Idempotent.  REQUIRES: no other thread is reading the file (else :meth:`retire`)."""

    def retire(self) -> None:
        """Close the file while other threads may still be reading it: each read either
        completes on this file or raises (StorageIOError) -- it never reaches another
        file that reuses the descriptor (io/pread.py says how).  Idempotent.  Here: a
        plain :meth:`close`, for files with no descriptor numbers to reuse."""
        self.close()


ReadRequest = tuple[RandomAccessFile, int, int]
"""``(file, offset, length)`` for :meth:`Env.read_batch`."""


class FileLock(ABC):
    """An exclusive advisory lock held until :meth:`release`."""

    @abstractmethod
    def release(self) -> None:
        """Idempotent."""

    @abstractmethod
    def disown(self) -> None:
        """In a forked child: let go of this process's copy of the lock without
        releasing the lock, which stays the parent's.  After it :meth:`release` does
        nothing."""


class Env(ABC):
    """Filesystem operations.  ``mode`` names the IO mode in effect."""

    mode: str = "abstract"

    # -- files -------------------------------------------------------------------
    @abstractmethod
    def open_writable(self, path: str, *, append: bool = False) -> WritableFile:
        """Create (or truncate) ``path`` for writing; with ``append=True`` keep the
        contents of an existing file and write after them."""

    @abstractmethod
    def open_mapped(self, path: str, *, create: bool = False) -> MappedFile:
        """Open ``path`` for writing through a shared memory mapping; ``create=True``
        creates it (or empties an existing file), otherwise it must exist."""

    @abstractmethod
    def open_readable(self, path: str) -> RandomAccessFile:
        """Open ``path`` for reads.  Missing file: plain ``FileNotFoundError``."""

    def read_batch(self, requests: Sequence[ReadRequest]) -> list[bytes]:
        """Serve several reads, possibly concurrently; results in request order."""
        return [f.read(off, n) for f, off, n in requests]

    def read_file(self, path: str) -> bytes:
        """The whole contents of a (small) file."""
        f = self.open_readable(path)
        try:
            return f.read(0, f.size)
        finally:
            f.close()

    def write_file_atomic(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` crash-atomically: write a temporary file,
        sync it, rename it over ``path``, sync the directory."""
        tmp = path + ".tmp"
        f = self.open_writable(tmp)
        try:
            f.write(data)
            f.sync()
        finally:
            f.close()
        self.rename(tmp, path)
        self.sync_dir(os.path.dirname(path) or ".")

    # -- names -------------------------------------------------------------------
    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def file_size(self, path: str) -> int: ...

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Names in directory ``path`` (sorted)."""

    @abstractmethod
    def mkdir(self, path: str) -> None:
        """Create ``path`` and missing parents; no error if it exists."""

    @abstractmethod
    def remove(self, path: str) -> None:
        """Remove a file.  Missing file: plain ``FileNotFoundError``."""

    @abstractmethod
    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Atomically rename, replacing ``dst``; durable after ``sync_dir``."""

    @abstractmethod
    def link(self, src: str, dst: str) -> None:
        """Hard-link ``src`` as ``dst`` (copy where links are impossible)."""

    @abstractmethod
    def sync_dir(self, path: str) -> None:
        """Make the names in directory ``path`` durable."""

    @abstractmethod
    def lock(self, path: str) -> FileLock:
        """Take an exclusive lock on ``path`` (created if missing), at once or
        raise :class:`~banyanstore.errors.StoreLockedError`."""

    @abstractmethod
    def free_space(self, path: str) -> int:
        """Bytes available to this user on the filesystem holding ``path``."""

    def describe(self) -> dict[str, object]:
        """What ``stats()`` reports about the IO layer."""
        return {"io_mode": self.mode}

    def close(self) -> None:  # noqa: B027 -- optional hook: most backends hold nothing
        """Release backend resources (threads, rings).  Idempotent."""
