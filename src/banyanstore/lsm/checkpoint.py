"""Checkpoints: a consistent on-disk copy of a store, openable with ``open()``.

Memtables are flushed first, so the copy holds *every* write committed before
the call (BanyanDB's hard-link snapshots missed the writes still in memory).
Tables are immutable, so they are hard-linked (copied across filesystems);
the copy gets its own manifest and an empty WAL.  Table installs and removals
are held off while the links are made, so the set is consistent.
A checkpoint that fails removes what it wrote to its destination, so a retry
finds it absent or empty again (a Ctrl-C once the copy is complete, as the call
returns, leaves the whole copy); one killed part-way leaves its marker
(``CHECKPOINT-INCOMPLETE``, written first and removed last), which open() refuses
and the next checkpoint to that destination clears.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable

from ..errors import NotAStoreError, StoreLockedError
from ..io.base import Env, FileLock
from .layout import CHECKPOINT_MARKER, directory_names, is_store_name
from .manifest import Manifest
from .tree import Tree

__all__ = ["write_checkpoint", "check_destination", "check_outside_store", "clear_interrupted"]

logger = logging.getLogger(__name__)

_ONE_AT_A_TIME = threading.Lock()
"""Held by each checkpoint of the process: two at once to one destination both found it
empty, and the loser's clean-up removed the winner's files (checkpoints are rare; this
also serializes those of different stores)."""


def write_checkpoint(tree: Tree, dest: str, flush: Callable[[], None]) -> int:
    """Write the checkpoint of ``tree`` (``flush`` writes its memtables to tables and
    waits); returns the version it holds (every write up to it).  A failure (or an
    interrupt) removes what was written to ``dest``, so a retry finds it as it was."""
    env = tree.env
    check_outside_store(tree.path, dest)
    with _ONE_AT_A_TIME:  # the destination is checked empty and filled by one checkpoint
        if clear_interrupted(env, dest):
            logger.warning("cleared what an interrupted checkpoint left in %s", dest)
        check_destination(env, dest)
        # Every write up to this version is in a table once flush() returns -- or was in a
        # keyspace dropped since, whose memtable no flush writes: then the tables' newest
        # version (flushed_version) is older, and a copy ending there lacked versions the
        # store had given out (reads at them refused, its next write reusing one).
        covered = tree.version
        flush()
        written = _Written(env, dest)
        try:
            return _write(tree, dest, written, covered)
        except BaseException:
            written.remove()
            raise


def _write(tree: Tree, dest: str, written: _Written, covered: int) -> int:
    env = tree.env
    env.mkdir(dest)  # (the missing parents _Written noted)
    marker_lock: FileLock | None = None
    try:
        marker_lock = _write_marker(env, dest)
        return _fill(tree, dest, written, covered)
    except BaseException as exc:
        if marker_lock is not None or not isinstance(exc, StoreLockedError):
            # Ours -- also when an interrupt came after the lock was taken but before
            # it reached marker_lock (the lock, dropped, closes itself); a marker
            # another checkpoint holds locked is not.
            written.note_marker(f"{dest}/{CHECKPOINT_MARKER}")
        # Under the marker's lock: released first, another checkpoint could clear dest
        # and start in it, and these names would then be its files.
        written.remove()
        raise
    finally:
        if marker_lock is not None:
            marker_lock.release()  # (the marker is gone by now: removed as complete, or above)


def _fill(tree: Tree, dest: str, written: _Written, covered: int) -> int:
    """:func:`_write` after the marker: link the tables, write the manifest, remove the
    marker.  REQUIRES: the marker's lock held."""
    env = tree.env
    written.make_dir(f"{dest}/tables")
    written.make_dir(f"{dest}/wal")
    with tree.frozen_state() as state:
        for tables in state.tables.values():
            for info in tables.values():
                name = f"tables/{info.file_no:06d}.sst"
                # Noted before the link: an interrupt between the two left a name no one
                # removed (tables/ is ours, made above under the marker's lock, so every
                # name in it is ours too; one the link never made is skipped as absent).
                written.note_file(f"{dest}/{name}")
                env.link(f"{tree.path}/{name}", f"{dest}/{name}")
    env.sync_dir(f"{dest}/tables")
    env.sync_dir(f"{dest}/wal")
    state.wal_seq = 1
    state.flushed_version = state.last_version = max(state.flushed_version, covered)
    state.obsolete.clear()  # the source's leftovers and outputs in flight are not in the copy
    state.in_flight.clear()
    for name in (f"MANIFEST-{state.next_file:06d}", "CURRENT.tmp", "CURRENT"):
        written.note_file(f"{dest}/{name}")  # the names Manifest.create writes
    Manifest.create(env, dest, state).close()
    written.sync_parents()
    env.remove(f"{dest}/{CHECKPOINT_MARKER}")  # complete: CURRENT is durable
    env.sync_dir(dest)
    return state.flushed_version


def check_outside_store(store_path: str, dest: str) -> None:
    """ValueError naming ``dest`` if it lies inside the store's own directory: a copy in
    its wal/ made the store unopenable (a log directory holding a foreign name), and one
    anywhere in it mixes another store's files with its own.  (``dest`` being the store
    itself is a non-empty directory, refused by :func:`check_destination`.)"""
    store = os.path.realpath(store_path)
    target = os.path.realpath(dest)
    if target != store and os.path.commonpath([store, target]) == store:
        raise ValueError(f"checkpoint destination dest={dest} lies inside the store {store_path} "
                         "being copied; write it outside the store's directory")


def _write_marker(env: Env, dest: str) -> FileLock:
    """Mark ``dest`` as a checkpoint in progress, durably, before anything else is in
    it: killed part-way, it is then refused by open() (not taken for a store that lost
    its CURRENT) and cleared by the next checkpoint to it.  The marker is locked from
    its creation until the checkpoint ends (the lock returned): a clear in another
    process sees it is being written."""
    lock = _lock_marker(env, dest)
    try:
        f = env.open_writable(f"{dest}/{CHECKPOINT_MARKER}")
        try:
            f.write(b"banyanstore checkpoint in progress; if no process writes it, it was "
                    b"interrupted: remove this directory or checkpoint to it again\n")
            f.sync()
        finally:
            f.close()
        env.sync_dir(dest)
    except BaseException:
        try:
            env.remove(f"{dest}/{CHECKPOINT_MARKER}")  # ours (locked): what a retry must not meet
        except OSError:
            pass  # (then a retry clears it: a marker nobody holds)
        finally:
            lock.release()
        raise
    return lock


def clear_interrupted(env: Env, dest: str) -> bool:
    """Remove what a checkpoint killed part-way left in ``dest`` (its marker -- with a
    CURRENT too when the kill came just before the marker's removal, its last step --
    and nothing but the names a checkpoint writes), the marker last; whether it did.

    A checkpoint holds its marker locked while it writes, so a marker found locked is
    one still being written -- by another process, which this one's lock cannot keep
    out: StoreLockedError, and nothing removed (clearing it would take the files from
    under that checkpoint, which would then finish as a copy missing tables)."""
    names = directory_names(env, dest, f"checkpoint destination {dest} is a file, not a directory")
    if CHECKPOINT_MARKER not in names:
        return False
    if not all(is_store_name(n) or n == CHECKPOINT_MARKER for n in names):
        return False  # somebody else's files too: check_destination refuses it
    lock = _lock_marker(env, dest)
    try:
        _remove_leftovers(env, dest, names)
    finally:
        lock.release()
    return True


def _lock_marker(env: Env, dest: str) -> FileLock:
    """The lock of ``dest``'s marker (created empty if absent); StoreLockedError naming
    ``dest`` while another checkpoint writes it."""
    try:
        return env.lock(f"{dest}/{CHECKPOINT_MARKER}")
    except StoreLockedError:
        raise StoreLockedError(f"checkpoint destination {dest} is being written by another "
                               f"checkpoint (its {CHECKPOINT_MARKER} is locked)") from None


def _remove_leftovers(env: Env, dest: str, names: list[str]) -> None:
    """:func:`clear_interrupted`'s removals.  REQUIRES: the marker's lock held."""
    for sub in ("tables", "wal"):
        if sub in names:
            for name in env.listdir(f"{dest}/{sub}"):
                env.remove(f"{dest}/{sub}/{name}")
            env.rmdir(f"{dest}/{sub}")
    for name in names:
        if name not in ("tables", "wal", CHECKPOINT_MARKER):
            env.remove(f"{dest}/{name}")
    env.remove(f"{dest}/{CHECKPOINT_MARKER}")
    env.sync_dir(dest)


class _Written:
    """The names a checkpoint added under its destination, removed again if it fails.
    Only these go: the destination was absent or empty, and the source's tables are
    reached only through their own names (removing a link leaves the source's file)."""

    def __init__(self, env: Env, dest: str) -> None:
        self._env = env
        self._files: list[str] = []
        self._subdirs: list[str] = []  # made in the destination, newest first
        self._marker: str | None = None
        self._created = _missing_ancestors(env, dest)  # by the first mkdir, deepest first
        self._dirs = list(self._created)

    def make_dir(self, path: str) -> None:
        self._subdirs.insert(0, path)  # removed before its parents
        self._env.mkdir(path)

    def note_file(self, path: str) -> None:
        self._files.append(path)

    def note_marker(self, path: str) -> None:
        """The marker: removed after everything else in the destination, so a removal cut
        short (a second Ctrl-C) leaves it, and the next checkpoint clears the rest."""
        self._marker = path

    def sync_parents(self) -> None:
        """Make the names of the destination and its parents created here durable: a
        new directory's name is in its parent, which only a sync of the parent keeps."""
        for path in self._created:
            self._env.sync_dir(os.path.dirname(path) or ".")

    def remove(self) -> None:
        """Remove the noted names, newest first; what cannot go stays (logged), and
        the error that failed the checkpoint is the one raised.  Once: a second call
        (the caller's, after the one under the marker's lock) removes nothing."""
        files, subdirs, marker = self._files, self._subdirs, self._marker
        dirs, self._files, self._subdirs, self._marker, self._dirs = self._dirs, [], [], None, []
        for path in reversed(files):
            self._quietly(self._env.remove, path)
        self._remove_dirs(subdirs)
        if marker is not None:
            self._quietly(self._env.remove, marker)
        self._remove_dirs(dirs)

    def _remove_dirs(self, dirs: list[str]) -> None:
        for path in dirs:
            if self._env.exists(path):  # not if the failure kept it from being made
                self._quietly(self._env.rmdir, path)

    @staticmethod
    def _quietly(remove: Callable[[str], None], path: str) -> None:
        try:
            remove(path)
        except OSError as exc:  # StorageIOError too, which rmdir raises for ENOENT
            if exc.errno != errno.ENOENT:  # (never made: the failure came first)
                logger.warning("could not remove %s of a failed checkpoint: %s", path, exc)


def _missing_ancestors(env: Env, path: str) -> list[str]:
    """``path`` and its parents that do not exist, deepest first."""
    missing: list[str] = []
    while path and path != os.path.dirname(path) and not env.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def check_destination(env: Env, dest: str) -> None:
    """Refuse ``dest`` as ``open()`` refuses a path it will not create a store in: a
    file, or a directory holding anything (another store too), raises
    :class:`~banyanstore.errors.NotAStoreError` (a ``FileExistsError``).  An absent or
    empty directory passes."""
    names = directory_names(env, dest, f"checkpoint destination {dest} is a file, not a directory")
    if names:
        shown = ", ".join(map(repr, sorted(names)[:3])) + (", ..." if len(names) > 3 else "")
        raise NotAStoreError(f"checkpoint destination {dest} is not empty (it holds {shown}); "
                             "a checkpoint is only written to an absent or empty directory",
                             path=dest)
