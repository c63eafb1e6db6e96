"""Opening a log directory (env, existence checks, the LOCK file).

* A missing directory is created (and its parent synced, so the name is
  durable) unless ``create_if_missing=False`` or ``read_only=True``: then
  :class:`LogNotFoundError` -- a :class:`~banyanstore.errors.StorageIOError`
  *and* a :class:`FileNotFoundError`, so both ``except`` styles work.  A
  directory holding no segment is no log either: ``create_if_missing=False``
  raises it there too (a read-only open reads it as empty until its writer
  creates the log).
* ``error_if_exists=True`` and segments present: :class:`LogExistsError` -- a
  :class:`~banyanstore.errors.ConfigError` (as for a store), a ``StorageIOError`` and a
  ``FileExistsError``; :class:`LogNotFoundError` is a
  :class:`~banyanstore.errors.StoreNotFoundError` too.
* A path that is a file, or a directory holding names other than segments and
  ``LOCK`` (somebody else's files, or a store): :class:`~banyanstore.errors.NotAStoreError`
  -- a log is only created in an absent or empty directory.
* Writers take ``<dir>/LOCK`` through ``env.lock`` (a second writer, in this
  process or another, gets :class:`~banyanstore.errors.StoreLockedError` at
  once) -- a store's ``wal/`` takes the store's ``LOCK`` instead, so a Log writer
  there and the store exclude each other; ``read_only`` opens and embedded logs
  (``lock=False``: the LSM store holds its own lock over the enclosing directory)
  take none.
* If the Log builds the env (``env=None``), it owns it and closes it on close.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ConfigError, NotAStoreError, StorageIOError, StoreNotFoundError
from ..io.base import Env, FileLock
from ..options import Options
from .segment import parse_segment_name, parse_staged_name

__all__ = ["LogNotFoundError", "LogExistsError", "opened_directory", "writer_lock_path"]


class LogNotFoundError(StoreNotFoundError, StorageIOError):
    """The log directory does not exist and ``create_if_missing=False`` (or ``read_only``).
    A :class:`~banyanstore.errors.StoreNotFoundError`, as for a missing store (docs/api.md:
    one except clause serves both opens), and still a ``StorageIOError`` and a
    ``FileNotFoundError`` for the except clauses written before."""


class LogExistsError(ConfigError, StorageIOError, FileExistsError):
    """The log already holds segments and ``error_if_exists=True``: a
    :class:`~banyanstore.errors.ConfigError`, as for an existing store, and still a
    ``StorageIOError`` and a ``FileExistsError`` for the except clauses written before."""


@contextmanager
def opened_directory(directory: str, opts: Options, env: Env | None, *,
                     lock: bool) -> Iterator[tuple[Env, bool, FileLock | None]]:
    """Yield ``(env, own_env, lock)`` ready for recovery; undo everything if the body raises."""
    own_env = env is None
    if env is None:
        from ..io import make_env
        env = make_env(opts)
    flock: FileLock | None = None
    try:
        if not env.exists(directory):
            if opts.read_only or not opts.create_if_missing:
                why = "read_only=True" if opts.read_only else "create_if_missing=False"
                raise LogNotFoundError(f"log directory {directory} does not exist ({why})",
                                       path=directory, op="open", errno=errno.ENOENT)
            env.mkdir(directory)
            env.sync_dir(os.path.dirname(os.path.abspath(directory)))
        elif not _refuse_foreign(env, directory) and not opts.create_if_missing \
                and not opts.read_only:
            # An empty directory (or one a writer left only its LOCK in) holds no log:
            # creating one there is what create_if_missing=False forbids, as open() of a
            # store refuses a directory without CURRENT.  (A reader may still open one
            # and refresh() as its writer creates the log.)
            raise LogNotFoundError(f"log directory {directory} holds no log "
                                   "(create_if_missing=False)",
                                   path=directory, op="open", errno=errno.ENOENT)
        if lock and not opts.read_only:
            flock = env.lock(writer_lock_path(env, directory))
        if opts.error_if_exists and any(n.endswith(".log") for n in env.listdir(directory)):
            raise LogExistsError(f"log {directory} already exists (error_if_exists=True)",
                                 path=directory, op="open", errno=errno.EEXIST)
        yield env, own_env, flock
    except BaseException:
        if flock is not None:
            flock.release()
        if own_env:
            env.close()
        raise


def writer_lock_path(env: Env, directory: str) -> str:
    """The LOCK a writer of ``directory`` takes: its own, but a store's ``wal/`` takes the
    store's (``<store>/LOCK``, which the store holds while open): a Log writer there is a
    second writer of the store, so the two must exclude each other."""
    path = os.path.abspath(directory)
    parent = os.path.dirname(path)
    if os.path.basename(path) == "wal" and env.exists(os.path.join(parent, "CURRENT")):
        return os.path.join(parent, "LOCK")
    return os.path.join(directory, "LOCK")


def _refuse_foreign(env: Env, directory: str) -> bool:
    """NotAStoreError unless ``directory`` holds a log (a segment) or only what a log puts
    there: somebody's file beside existing segments is left alone, as beside a store's
    CURRENT, rather than keeping the log (or the store whose wal/ it is) shut.  Returns
    whether it holds a log: a segment, or a staged one a crash left (recovery's)."""
    try:
        names = env.listdir(directory)
    except OSError as exc:  # StorageIOError is an OSError too
        if exc.errno == errno.ENOTDIR:
            raise NotAStoreError(f"{directory} is a file, not a log directory",
                                 path=directory) from exc
        raise
    if any(parse_segment_name(n) is not None for n in names):
        return True
    foreign = [n for n in names if n != "LOCK" and parse_staged_name(n) is None]  # (a crash
    if foreign:  # may leave a staged segment: recovery)
        shown = ", ".join(map(repr, foreign[:3])) + (", ..." if len(foreign) > 3 else "")
        raise NotAStoreError(f"{directory} is not empty and is not a banyanstore log (it holds "
                             f"{shown}); a log is only created in an absent or empty directory",
                             path=directory)
    return any(parse_staged_name(n) is not None for n in names)
