"""``FaultEnv``: wraps any :class:`~banyanstore.io.base.Env` and injects IO errors.

Injected errors surface exactly like real ones: the wrapper builds
``OSError(errno, strerror, path)`` and raises ``errors.from_oserror(op, path, exc)``
from it, so ENOSPC/EDQUOT become :class:`~banyanstore.errors.DiskFullError` and
``__cause__`` is the OSError.  ``open_readable``/``remove`` with ENOENT raise the
plain ``FileNotFoundError``, as the real backends do.

Operations: see :data:`OPS`.  ``read`` is ``RandomAccessFile.read``; ``map`` is
``MappedFile.map`` (where a mapped file reserves space, so ENOSPC shows there); ``read_batch``
is the batch call as a whole (it matches if any request's path matches).

**Failed syncs are sticky** (``sticky_sync=True``, the default).  After a failed
fsync Linux may have dropped the dirty pages or marked them clean
("fsyncgate"), so a retry can report success for data that is gone.  To keep
the engine honest, once a ``sync`` of a path has failed every later ``sync`` of
that path fails too (EIO): through the same handle (even after a rename) for good, and
through handles opened later on that path until it is removed, re-created by
``open_writable`` without ``append``, or :meth:`FaultEnv.clear` is called.
Wrapped around :class:`~banyanstore.io.memory.MemoryEnv`, a failed sync never
reaches the inner file, so a later ``crash()`` loses the unsynced bytes.

>>> import errno
>>> from banyanstore.io.memory import MemoryEnv
>>> env = FaultEnv(MemoryEnv())
>>> rule = env.inject("write", errno.ENOSPC, path_contains="wal")
>>> f = env.open_writable("/wal-1")
>>> f.write(b"x")
Traceback (most recent call last):
...
banyanstore.errors.DiskFullError: write failed on /wal-1: [Errno 28] No space left on device: '/wal-1'
>>> env.fired["write"], rule.fired
(1, 1)
"""

from __future__ import annotations

import errno as _errno
import os
import random
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from ..errors import StorageIOError, from_oserror
from .base import Env, MappedFile, WritableFile
from .hooked import HookedEnv, HookedMapped, HookedWritable

__all__ = ["FaultEnv", "FaultRule", "OPS"]

OPS = ("open_writable", "open_readable", "write", "map", "sync", "sync_dir", "rename", "remove",
       "read", "read_batch", "link", "truncate", "mkdir", "rmdir", "listdir", "lock")
_PLAIN_ENOENT = ("open_readable", "remove", "listdir")
_NEVER_FAULTED = frozenset({"stat", "statvfs"})  # stat-like calls are never faulted


@dataclass
class FaultRule:
    """One :meth:`FaultEnv.inject` rule.  ``times=None``: fire on every match."""

    op: str
    errno: int
    path_contains: str | None = None
    after: int = 0
    times: int | None = 1
    short_write: bool | int = False
    seen: int = 0  # matching calls so far
    fired: int = 0

    def matches(self, op: str, paths: Iterable[str]) -> bool:
        return op == self.op and (self.path_contains is None
                                  or any(self.path_contains in p for p in paths))


def _fail(op: str, path: str, code: int) -> NoReturn:
    exc = OSError(code, os.strerror(code), path)
    if code == _errno.ENOENT and op in _PLAIN_ENOENT:
        raise exc
    raise from_oserror(op, path, exc) from exc


class _Writable(HookedWritable):
    """Adds short writes and sticky sync failures to the hooked file."""

    env: FaultEnv

    def __init__(self, env: FaultEnv, inner: WritableFile, poisoned: bool = False) -> None:
        super().__init__(env, inner)
        self.sync_failed = poisoned  # sticky: this handle's data may already be lost

    def write(self, data: bytes | bytearray | memoryview) -> None:
        fault = self.env.check_fault("write", (self.path,), len(data))
        if fault is not None:
            code, prefix = fault
            if prefix:  # a partial write that reached the file before the error
                self.inner.write(memoryview(data)[:prefix])
            _fail("write", self.path, code)
        self.inner.write(data)

    def sync(self) -> None:
        try:
            self.env.check_sync(self.path, self.sync_failed)
        except StorageIOError:
            self.sync_failed = self.env.sticky_sync
            raise
        self.inner.sync()


class _Mapped(HookedMapped):
    """Adds sticky sync failures to the hooked mapped file."""

    env: FaultEnv

    def __init__(self, env: FaultEnv, inner: MappedFile, poisoned: bool = False) -> None:
        super().__init__(env, inner)
        self.sync_failed = poisoned

    def sync(self) -> None:
        try:
            self.env.check_sync(self.path, self.sync_failed)
        except StorageIOError:
            self.sync_failed = self.env.sticky_sync
            raise
        self.inner.sync()


class FaultEnv(HookedEnv):
    """Delegates to ``inner``, failing the operations chosen with :meth:`inject`."""

    def __init__(self, inner: Env, seed: int | None = None, *, sticky_sync: bool = True) -> None:
        super().__init__(inner)
        self.sticky_sync = sticky_sync
        self._mu = threading.Lock()
        self._rules: list[FaultRule] = []
        self._random: tuple[float, frozenset[str], tuple[int, ...]] | None = None
        self._rng = random.Random(seed)
        self._poisoned: set[str] = set()  # paths whose sync failed (sticky)
        self.calls: Counter[str] = Counter()  # op -> calls seen
        self.fired: Counter[str] = Counter()  # op -> faults raised
        self.log: list[tuple[str, str, int]] = []  # (op, path, errno) of each fault

    # -- configuration ---------------------------------------------------------------
    def inject(self, op: str, errno: int = _errno.EIO, *, path_contains: str | None = None,
               after: int = 0, times: int | None = 1, short_write: bool | int = False) -> FaultRule:
        """Fail ``op`` with ``errno``: skip the first ``after`` matching calls, then fail
        ``times`` of them (None: all).  ``short_write`` (``write`` only): first write a
        prefix of the data (True: half; an int: that many bytes), then fail."""
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
        rule = FaultRule(op, errno, path_contains, after, times, short_write)
        with self._mu:
            self._rules.append(rule)
        return rule

    def inject_random(self, probability: float, ops: Iterable[str] = OPS,
                      errnos: Sequence[int] = (_errno.EIO, _errno.ENOSPC), seed: int | None = None) -> None:
        """Fail each call of ``ops`` with ``probability`` (errno drawn from ``errnos``).
        The same ``seed`` and the same sequence of calls give the same faults;
        a faulted ``write`` first writes a random prefix half of the time."""
        ops = frozenset(ops)
        if not ops <= set(OPS):
            raise ValueError(f"unknown ops {sorted(ops - set(OPS))}")
        with self._mu:
            self._random = (probability, ops, tuple(errnos))
            if seed is not None:
                self._rng = random.Random(seed)

    def clear(self) -> None:
        """Remove every rule and random fault and forget failed syncs (counters stay)."""
        with self._mu:
            self._rules.clear()
            self._random = None
            self._poisoned.clear()

    # -- the decision -----------------------------------------------------------------
    def check_fault(self, op: str, paths: Sequence[str], nbytes: int = 0) -> tuple[int, int] | None:
        """``(errno, prefix bytes to write first)`` if this call must fail, else None."""
        with self._mu:
            self.calls[op] += 1
            fault: tuple[int, int] | None = None
            for rule in self._rules:
                if not rule.matches(op, paths):
                    continue
                rule.seen += 1
                if rule.seen > rule.after and (rule.times is None or rule.fired < rule.times):
                    rule.fired += 1
                    prefix = 0
                    if rule.short_write and nbytes:
                        want = nbytes // 2 if rule.short_write is True else int(rule.short_write)
                        prefix = max(0, min(want, nbytes - 1))
                    fault = (rule.errno, prefix)
                    break
            if fault is None and self._random is not None:
                probability, ops, errnos = self._random
                if op in ops and self._rng.random() < probability:
                    code = self._rng.choice(errnos)
                    short = nbytes > 1 and self._rng.random() < 0.5
                    fault = (code, self._rng.randrange(1, nbytes) if short else 0)
            if fault is not None:
                self.fired[op] += 1
                self.log.append((op, paths[0] if paths else "", fault[0]))
                if op == "sync" and self.sticky_sync:
                    self._poisoned.update(paths)
            return fault

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        """Fail ``op`` with the fault :meth:`check_fault` picks, if any."""
        if op in _NEVER_FAULTED:
            return
        fault = self.check_fault(op, paths, nbytes)
        if fault is not None:
            _fail(op, paths[0], fault[0])

    def check_sync(self, path: str, handle_failed: bool) -> None:
        """Decide a file's ``sync``: fails (EIO) once an earlier sync of ``path`` -- or of
        this handle, ``handle_failed`` -- failed, else as :meth:`hook` decides."""
        with self._mu:
            poisoned = handle_failed or path in self._poisoned
        if poisoned:  # fsyncgate: an earlier failure means the data may be gone
            with self._mu:
                self.calls["sync"] += 1
                self.fired["sync"] += 1
                self.log.append(("sync", path, _errno.EIO))
            _fail("sync", path, _errno.EIO)
        self.hook("sync", (path,))

    def _forget(self, path: str) -> None:
        with self._mu:
            self._poisoned.discard(path)
    # -- Env: where failing changes more than the call ----------------------------------
    def _writable(self, inner: WritableFile, *, append: bool) -> WritableFile:
        if not append:  # a new file: an old failed sync of this path no longer matters
            self._forget(inner.path)
        with self._mu:
            poisoned = inner.path in self._poisoned
        return _Writable(self, inner, poisoned)

    def _mapped(self, inner: MappedFile, *, create: bool) -> MappedFile:
        if create:
            self._forget(inner.path)
        with self._mu:
            poisoned = inner.path in self._poisoned
        return _Mapped(self, inner, poisoned)

    def remove(self, path: str) -> None:
        super().remove(path)
        self._forget(path)

    def rename(self, src: str, dst: str) -> None:
        super().rename(src, dst)
        with self._mu:  # the failed-sync mark follows the data
            if src in self._poisoned:
                self._poisoned.discard(src)
                self._poisoned.add(dst)
            else:
                self._poisoned.discard(dst)

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["faults_fired"] = sum(self.fired.values())
        return info
