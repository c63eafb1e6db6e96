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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from banyanstore.errors import BanyanStoreError, from_oserror
from banyanstore.io.hooked import MUTATING_OPS, HookedEnv
from banyanstore.io.memory import MemoryEnv

__all__ = ["CrashEnv", "abandon", "soak"]


def _dead(op: str, path: str) -> BaseException:
    exc = OSError(errno.EIO, "simulated crash: the process is dead", path)
    err = from_oserror(op, path, exc)
    err.__cause__ = exc
    return err


class CrashEnv(HookedEnv):
    """A MemoryEnv view that crashes at mutating operation ``crash_at`` (None: never).

    ``ops`` counts the mutating operations that took effect; ``trace`` lists them as
    ``(op, path)`` so a test can say which step of the protocol a crash point is.
    """

    inner: MemoryEnv

    def __init__(self, inner: MemoryEnv, crash_at: int | None = None) -> None:
        super().__init__(inner)
        self.crash_at = crash_at
        self.ops = 0
        self.dead = False
        self.trace: list[tuple[str, str]] = []
        self._mu = threading.RLock()

    @contextmanager
    def passing(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> Iterator[None]:
        """Hold the lock while the operation runs: a power loss another thread's operation
        raises falls before or after this one, never between its hook and the disk (where
        it ran on the rebooted disk: a read of a table the crash had just lost raised a
        plain FileNotFoundError, a write could land after the power loss)."""
        with self._mu:
            self.hook(op, paths, nbytes)
            yield

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        """Count one mutating operation; crash instead of doing it when its turn comes.
        Any operation of a dead env fails."""
        path = " -> ".join(paths)
        with self._mu:
            if self.dead:
                raise _dead(op, path)
            if op not in MUTATING_OPS:
                return
            if self.crash_at is not None and self.ops >= self.crash_at:
                self.dead = True
                self.inner.crash()
                raise _dead(op, path)
            self.ops += 1
            self.trace.append((op, path))


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
