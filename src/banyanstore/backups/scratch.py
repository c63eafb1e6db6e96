"""Private working directories beside a store, and the removal of abandoned ones.

A backup pins the store's files by hard-linking them into a scratch directory
next to the store (same file system, so links work and cost nothing); a
restore builds the new store in one next to its destination, then renames it
into place.  A process killed mid-way leaves its directory behind, so each
directory holds a ``LOCK`` file its owner keeps ``flock``-ed; the next backup
or restore beside the same path removes every such directory whose lock it
can take (its owner is gone).  A directory is created under a name the
cleaners ignore, locked, and only then renamed to the name they look for, so
a cleaner can never take a lock its owner is about to take.  The name alone
does not make a directory scratch: a user may keep a copy of the store as
``.store.backup-20261201``, and a store has a LOCK too.  So a scratch
directory's LOCK holds :data:`SCRATCH_MAGIC`, written before the rename, and
cleaners remove only directories whose LOCK holds it.

>>> import tempfile, os
>>> with tempfile.TemporaryDirectory() as d:
...     with ScratchDir(os.path.join(d, "store"), "backup") as s:
...         os.path.basename(s.path).startswith(".store.backup-")
...     os.listdir(d)
True
[]
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time

__all__ = ["ScratchDir", "SCRATCH_MAGIC"]

logger = logging.getLogger("banyanstore.backups")

SCRATCH_MAGIC = b"banyanstore scratch directory: removed when its owner is gone\n"
"""What a scratch directory's LOCK holds (a store's LOCK is empty)."""


class ScratchDir:
    """A directory ``.<name>.<purpose>-XXXX`` beside ``target``, locked by this process.

    ``fallback_to_tmp``: if the parent directory is not writable, use one in the
    system's temporary directory instead (files are then copied, not linked)."""

    def __init__(self, target: str, purpose: str, *, fallback_to_tmp: bool = False) -> None:
        target = os.path.abspath(target)
        parent, base = os.path.dirname(target), os.path.basename(target)
        self._prefix = f".{base}.{purpose}-"
        remove_abandoned(parent, self._prefix)
        try:
            fresh = tempfile.mkdtemp(prefix=f".{base}.{purpose}~", dir=parent)
        except OSError:
            if not fallback_to_tmp:
                raise
            remove_abandoned(tempfile.gettempdir(), self._prefix)
            fresh = tempfile.mkdtemp(prefix=f".{base}.{purpose}~")
        self._fd = -1
        self.path = fresh
        self._moved = self._closed = False
        try:
            self._claim(fresh)
        except BaseException:
            # Cleaners take a directory under its first name only an hour later (its
            # owner may be about to rename it): this one's owner is here to remove it.
            self.close()
            raise

    def _claim(self, fresh: str) -> None:
        """Lock the new directory ``fresh``, mark it as scratch and give it the name
        cleaners look for."""
        self._fd = os.open(os.path.join(fresh, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else can know the name yet
        os.write(self._fd, SCRATCH_MAGIC)  # before the rename: cleaners remove only these
        path = os.path.join(os.path.dirname(fresh), self._prefix + os.path.basename(fresh)[-8:])
        os.rename(fresh, path)
        self.path = path

    def moved_to(self, path: str) -> None:
        """The directory was renamed to ``path`` (it is no longer scratch: its LOCK, now
        the store's, is emptied, so no copy of the store is ever taken for scratch)."""
        self.path, self._moved = path, True
        os.ftruncate(self._fd, 0)

    def exchanged(self) -> None:
        """Its contents were swapped with another directory's (``RENAME_EXCHANGE``): this
        LOCK, now the other directory's, is emptied, and the one now here (the other's)
        says scratch, so a cleaner removes it if this process dies before :meth:`close`."""
        os.ftruncate(self._fd, 0)
        fd = os.open(os.path.join(self.path, "LOCK"), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, SCRATCH_MAGIC)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Remove the directory (unless it was moved into place) and release it."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._moved:
                with contextlib.suppress(OSError):
                    _remove_lock_last(self.path)
        finally:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ScratchDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


UNNAMED_STALE_SECONDS = 3600.0
"""Age after which a directory still under its first, ``~`` name is abandoned: its
owner renames it a few system calls after creating it, so only one killed in between
leaves it (cleaning a younger one could fail a live owner's rename)."""


def remove_abandoned(parent: str, prefix: str) -> list[str]:
    """Remove the directories in ``parent`` named ``prefix*`` whose owner is gone, and
    those a killed owner left under their first name (``~`` for the prefix's last
    character) at least :data:`UNNAMED_STALE_SECONDS` ago."""
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    unnamed = prefix[:-1] + "~"
    for name in names:
        path = os.path.join(parent, name)
        if not os.path.isdir(path):
            continue
        if name.startswith(prefix) or (name.startswith(unnamed) and _left_long_ago(path)):
            if _remove_if_owner_gone(path):
                removed.append(path)
    if removed:
        logger.info("removed %d abandoned scratch directories: %s", len(removed), ", ".join(removed))
    return removed


def _left_long_ago(path: str) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime > UNNAMED_STALE_SECONDS
    except OSError:
        return False


def _remove_if_owner_gone(path: str) -> bool:
    """Remove scratch directory ``path`` if no process holds its LOCK; whether it went."""
    try:
        fd = os.open(os.path.join(path, "LOCK"), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        # No lock file: an owner removes it last, so an empty directory is one whose
        # owner died just after (rmdir fails on anything else: not ours to judge).
        try:
            os.rmdir(path)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.pread(fd, len(SCRATCH_MAGIC) + 1, 0) != SCRATCH_MAGIC:
            return False  # named like scratch, not ours: a user's copy of a store, say
        _remove_lock_last(path)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _remove_lock_last(path: str) -> None:
    """Remove scratch directory ``path``, its LOCK last: a process killed part-way leaves
    the LOCK (the next cleaner takes it and removes the rest) or an empty directory --
    never files without the lock that marks them as scratch."""
    for name in os.listdir(path):
        if name != "LOCK":
            full = os.path.join(path, name)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.remove(full)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(path, "LOCK"))
    os.rmdir(path)
