"""Table files behind a cap on open descriptors: the store option ``max_open_files``.

A store keeps each live table's file open, so a store of many keyspaces needs many
descriptors, and past the process's limit (``ulimit -n``) flushes and merges fail with
EMFILE.  With ``max_open_files`` set, a store's tables are :class:`CappedFile` objects
sharing one :class:`OpenFileCap`: at most that many of them hold a descriptor at a
time; a read of one that holds none opens it again, first closing the least recently
read idle one (LevelDB's table cache, keyed by file).

Rules the cap keeps:

* A descriptor is never closed under a read in flight: each read counts itself in and
  out under the cap's lock, and only files with no read in flight are closed.  (When
  every open file is being read, the cap is exceeded until reads finish.)
* A file that is about to be deleted while readers may still hold it (a merge's inputs
  under an open iterator or snapshot) is *pinned* first (:meth:`CappedFile.pin`): it is
  opened if need be and kept open, outside the cap's count, until the file object is
  freed -- an unlinked file cannot be opened again.
* A live table missing when it is opened again is damage: CorruptionError naming it.
* A file object freed without ``close()`` is forgotten without waiting for the lock:
  the garbage collector frees it at any allocation, also one made under the lock on
  the same thread (which would wait for itself).  It is queued, and forgotten at once
  when the lock is free, else by the next call that opens, pins or counts files.

Reads of capped files go through Python (the compiled core reads plain posix files
itself): a cache miss costs about a microsecond more, which is why the cap is an option.

>>> import os, tempfile
>>> from banyanstore.io.posix import PosixEnv
>>> with tempfile.TemporaryDirectory() as d:
...     for name in "abc":
...         with open(os.path.join(d, name), "wb") as fh:
...             _ = fh.write(name.encode() * 3)
...     cap = OpenFileCap(PosixEnv(), 2)
...     files = [cap.open(os.path.join(d, name)) for name in "abc"]
...     reads = [f.read(0, 3) for f in files + files]
...     stats = cap.stats()
...     for f in files:
...         f.close()
>>> reads, stats["open"], stats["limit"], stats["reopens"]
([b'aaa', b'bbb', b'ccc', b'aaa', b'bbb', b'ccc'], 2, 2, 6)
"""

from __future__ import annotations

import errno
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from ..errors import CorruptionError, StorageIOError
from .base import Env, RandomAccessFile

__all__ = ["OpenFileCap", "CappedFile"]


@dataclass
class _Slot:
    """The cap's record of one capped file.  REQUIRES: the cap's lock."""

    inner: RandomAccessFile | None  # its descriptor, if it holds one now
    busy: int = 0  # reads in flight
    pinned: bool = False  # kept open until the file object is freed


class OpenFileCap:
    """At most ``limit`` of the files it opened hold a descriptor (pinned ones aside).
    Thread-safe."""

    def __init__(self, env: Env, limit: int) -> None:
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit must be an int >= 1, not {limit!r}")
        self._env = env
        self._limit = limit
        self._lock = threading.Lock()
        self._slots: dict[int, _Slot] = {}  # CappedFile.key -> its slot
        self._lru: OrderedDict[int, None] = OrderedDict()  # open, unpinned: least recent first
        self._next_key = 0
        self._reopens = 0
        self._freed: list[int] = []  # keys of files freed, not forgotten yet (see above)

    def open(self, path: str) -> CappedFile:
        """``path`` opened for reads under the cap (FileNotFoundError if it is missing)."""
        with self._lock:
            self._make_room_locked()
            inner = self._env.open_readable(path)
            self._next_key += 1
            key = self._next_key
            self._slots[key] = _Slot(inner)
            self._lru[key] = None
        file = CappedFile(self, path, inner.size, key)
        weakref.finalize(file, self._forget_freed, key)  # a file never closed: at its end
        return file

    # -- what CappedFile asks ----------------------------------------------------------
    def acquire(self, file: CappedFile) -> RandomAccessFile:
        """The open file behind ``file``, counted busy until :meth:`release`."""
        key = file.key
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                raise StorageIOError(f"read of closed table file {file.path}", path=file.path,
                                     op="read", errno=errno.EBADF)
            if slot.inner is None:
                slot.inner = self._reopen_locked(file.path)
            if not slot.pinned:
                self._lru[key] = None
                self._lru.move_to_end(key)
            slot.busy += 1
            return slot.inner

    def release(self, file: CappedFile) -> None:
        with self._lock:
            slot = self._slots.get(file.key)
            if slot is not None:  # (retired under the read: gone)
                slot.busy -= 1

    def pin(self, file: CappedFile) -> None:
        """Keep ``file`` open until it is freed (opened now if it holds no descriptor)."""
        with self._lock:
            self._drop_freed_locked()
            slot = self._slots.get(file.key)
            if slot is None or slot.pinned:
                return
            if slot.inner is None:
                slot.inner = self._reopen_locked(file.path)
            slot.pinned = True
            self._lru.pop(file.key, None)

    def close(self, file: CappedFile, *, retire: bool) -> None:
        self._forget(file.key, retire)

    def stats(self) -> dict[str, int]:
        """``limit``; ``open``: descriptors held under the cap; ``pinned``: held for
        files awaiting deletion; ``reopens``: files opened again after being closed."""
        with self._lock:
            self._drop_freed_locked()
            pinned = sum(1 for s in self._slots.values() if s.pinned and s.inner is not None)
            return {"limit": self._limit, "open": len(self._lru), "pinned": pinned,
                    "reopens": self._reopens}

    # -- inside ------------------------------------------------------------------------
    def _forget(self, key: int, retire: bool) -> None:
        with self._lock:
            slot = self._slots.pop(key, None)
            self._lru.pop(key, None)
        if slot is not None and slot.inner is not None:
            (slot.inner.retire if retire else slot.inner.close)()

    def _forget_freed(self, key: int) -> None:
        """File ``key``'s object was freed: forget it now if the lock is free, else leave
        it to the next call that takes the lock (never wait: see the module docstring)."""
        self._freed.append(key)
        if self._lock.acquire(blocking=False):
            try:
                self._drop_freed_locked()
            finally:
                self._lock.release()

    def _drop_freed_locked(self) -> None:
        """Forget the files whose objects were freed, closing their descriptors (no read
        can be in flight through a freed object).  REQUIRES: the lock."""
        while self._freed:
            key = self._freed.pop()
            slot = self._slots.pop(key, None)
            self._lru.pop(key, None)
            if slot is not None and slot.inner is not None:
                slot.inner.close()

    def _reopen_locked(self, path: str) -> RandomAccessFile:
        """REQUIRES: the lock (the open is short; holding it keeps the count exact)."""
        self._make_room_locked()
        try:
            inner = self._env.open_readable(path)
        except FileNotFoundError as exc:
            raise CorruptionError("table file is missing (it was open before)", path=path) from exc
        self._reopens += 1
        return inner

    def _make_room_locked(self) -> None:
        """Close least recently read idle files until one more fits.  REQUIRES: the lock."""
        self._drop_freed_locked()
        while len(self._lru) >= self._limit:
            idle = next((k for k in self._lru if self._slots[k].busy == 0), None)
            if idle is None:
                return  # every open file is being read: over the cap until reads end
            del self._lru[idle]
            slot = self._slots[idle]
            inner, slot.inner = slot.inner, None
            if inner is not None:
                inner.close()  # no read in flight (busy == 0 under the lock)


class CappedFile(RandomAccessFile):
    """A table file whose descriptor :class:`OpenFileCap` may close between reads."""

    direct = False  # reads go through read(), which the inner file aligns itself

    def __init__(self, cap: OpenFileCap, path: str, size: int, key: int) -> None:
        self.path = path
        self.key = key  # the cap's name for it
        self._cap = cap
        self._size = size

    def read(self, offset: int, length: int) -> bytes:
        inner = self._cap.acquire(self)
        try:
            return inner.read(offset, length)
        finally:
            self._cap.release(self)

    @property
    def size(self) -> int:
        return self._size

    def pin(self) -> None:
        """Keep the descriptor until this object is freed (the file is being deleted)."""
        self._cap.pin(self)

    def close(self) -> None:
        self._cap.close(self, retire=False)

    def retire(self) -> None:
        self._cap.close(self, retire=True)

    def __repr__(self) -> str:
        return f"CappedFile({self.path!r})"

