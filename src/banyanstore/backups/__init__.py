"""Incremental backups of a store to a local directory or object storage.

The functions are also :func:`banyanstore.backup`, :func:`banyanstore.restore`,
:func:`banyanstore.list_backups`, :func:`banyanstore.verify_backup` and
:func:`banyanstore.prune_backups`, and the ``banyanstore backup|restore|backups|prune``
commands.  Format, consistency and checks: ``docs/backup.md``.

=================  ==================================================================
module             role
=================  ==================================================================
``capture.py``     a consistent copy of a running store's files (hard links + WAL tail)
``waltail.py``     the WAL tail object: records newer than the tables
``manifest.py``    the backup manifest: envelope, fields, validation of untrusted input
``destination.py`` local directories and fsspec URLs, atomic writes
``transfer.py``    the bounded pool, checksums, progress reports
``create.py``      taking a backup
``restoring.py``   restoring and verifying one (not ``restore.py``: it would shadow :func:`restore`)
``catalog.py``     listing, in-progress markers, pruning
``scratch.py``     working directories beside the store, and their cleanup
=================  ==================================================================

>>> import banyanstore, tempfile, os
>>> with tempfile.TemporaryDirectory() as d:
...     with banyanstore.open(os.path.join(d, "store"), compaction_mode="thread") as store:
...         _ = store.put(b"k", b"v")
...         info = banyanstore.backup(store, os.path.join(d, "backups"))
...     _ = banyanstore.restore(os.path.join(d, "backups"), os.path.join(d, "copy"))
...     with banyanstore.open(os.path.join(d, "copy"), read_only=True) as copy:
...         copy.get(b"k"), copy.version == info.version
(b'v', True)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import BanyanStoreError, from_oserror
from .catalog import PENDING_TIMEOUT, BackupInfo, PruneResult
from .destination import DEFAULT_STALL_TIMEOUT
from .transfer import DEFAULT_PARALLEL, Progress, ProgressCallback

__all__ = ["backup", "restore", "list_backups", "verify_backup", "prune_backups", "BackupInfo",
           "PruneResult", "Progress", "ProgressCallback", "DEFAULT_PARALLEL", "DEFAULT_STALL_TIMEOUT"]

logger = logging.getLogger("banyanstore.backups")


@contextmanager
def _io_errors(op: str, where: object) -> Iterator[None]:
    """A bare OSError of a plain file call -- a local destination, a staged or restored
    file, a scratch directory -- raised as every IO failure of the engine is: a
    StorageIOError (DiskFullError for ENOSPC) naming the file, the OSError as cause."""
    try:
        yield
    except BanyanStoreError:
        raise
    except OSError as exc:
        raise from_oserror(op, exc.filename if exc.filename is not None else str(where), exc) from exc


def backup(store_or_path: Any, url: Any, *, parallel: int = DEFAULT_PARALLEL,
           progress: ProgressCallback | None = None,
           stall_timeout: float | None = DEFAULT_STALL_TIMEOUT, verify_reused: bool = False,
           **storage_options: Any) -> BackupInfo:
    """Back up a store to ``url``; returns the new backup's :class:`BackupInfo`.

    ``store_or_path``: an open :class:`~banyanstore.lsm.store.Store` (its acknowledged
    writes are synced first, so the backup holds all of them), or the path of a store,
    which may be open in a writer process (its files are read; nothing is locked).
    ``url``: a local directory or any fsspec URL (``s3://bucket/prefix``...);
    ``storage_options`` go to fsspec (e.g. ``key=``, ``secret=``, ``client_kwargs=``).
    Only objects the destination lacks are uploaded, at most ``parallel`` at once;
    ``progress(Progress)`` is called as the work advances (from worker threads, one
    call at a time).  The backup holds every write up to ``info.version``, in every
    keyspace, and appears complete or not at all.  While a :func:`prune_backups` of
    ``url`` runs, the backup waits for it before it looks at what ``url`` holds.
    ``stall_timeout``: seconds a request to an fsspec URL may make no progress before
    it is cancelled and the call fails (StorageIOError naming the object); None waits
    for ever.  Every function here takes it.  ``verify_reused``: read every object the
    destination already holds and the backup would reuse through its SHA-256, and upload
    again each that fails it (damaged in place: this mends every backup naming it) --
    a download of those objects, so not the default."""
    from .create import create_backup
    with _io_errors("backup", url):
        return create_backup(store_or_path, url, parallel=parallel, progress=progress,
                             stall_timeout=stall_timeout, storage_options=storage_options,
                             verify_reused=verify_reused)


def restore(url: Any, dest: Any, *, backup_id: str | None = None, overwrite: bool = False,
            parallel: int = DEFAULT_PARALLEL, progress: ProgressCallback | None = None,
            stall_timeout: float | None = DEFAULT_STALL_TIMEOUT, **storage_options: Any) -> BackupInfo:
    """Restore backup ``backup_id`` (default: the newest one) from ``url`` into
    the directory ``dest``.  Every object's size and SHA-256 is checked and the new
    store opened before it appears at ``dest`` (one rename); on any failure nothing is
    left behind.  ``dest`` must not exist or be empty, unless ``overwrite=True`` and it
    holds a store no writer has open."""
    from .restoring import restore_backup
    with _io_errors("restore", dest):
        return restore_backup(url, dest, backup_id=backup_id, overwrite=overwrite,
                              parallel=parallel, progress=progress, stall_timeout=stall_timeout,
                              storage_options=storage_options)


def list_backups(url: Any, *, stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
                 **storage_options: Any) -> list[BackupInfo]:
    """The complete backups at ``url``, oldest first (damaged manifests are logged and
    left out; :func:`verify_backup` and ``prune`` report them)."""
    from .catalog import read_manifests
    from .destination import open_destination
    dest = open_destination(url, storage_options, stall_timeout)
    dest.check_location(creating=False)
    with _io_errors("list backups", url):
        good, damaged = read_manifests(dest)
    for _backup_id, exc in damaged:
        logger.warning("damaged backup manifest: %s", exc)
    return [BackupInfo.of(m, dest.url) for m in good]


def verify_backup(url: Any, backup_id: str | None = None, *, parallel: int = DEFAULT_PARALLEL,
                  progress: ProgressCallback | None = None,
                  stall_timeout: float | None = DEFAULT_STALL_TIMEOUT, **storage_options: Any) -> BackupInfo:
    """Check backup ``backup_id`` (default: the newest) without restoring it: the
    manifest, and every object's presence, size and SHA-256, the WAL tail record by
    record.  Raises :class:`~banyanstore.errors.CorruptionError` naming the first bad
    object."""
    from .restoring import verify
    with _io_errors("verify backup", url):
        return verify(url, backup_id, parallel=parallel, progress=progress,
                      stall_timeout=stall_timeout, storage_options=storage_options)


def prune_backups(url: Any, keep: int, *, pending_timeout: float = PENDING_TIMEOUT,
                  stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
                  **storage_options: Any) -> PruneResult:
    """Keep the ``keep`` newest complete backups at ``url``: delete the others'
    manifests, then every object no remaining backup needs.  While another backup is
    in progress (a ``pending/`` marker younger than ``pending_timeout`` seconds whose
    process is alive) no object is deleted; backups starting meanwhile wait for it."""
    from .catalog import prune
    from .destination import open_destination
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise TypeError(f"keep must be an int, not {type(keep).__name__}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if isinstance(pending_timeout, bool) or not isinstance(pending_timeout, (int, float)):
        raise TypeError(f"pending_timeout must be a number of seconds, not {type(pending_timeout).__name__}")
    if not pending_timeout >= 0:  # NaN too: no marker would ever turn stale
        raise ValueError(f"pending_timeout must be a number of seconds >= 0, got {pending_timeout!r}")
    dest = open_destination(url, storage_options, stall_timeout)
    dest.check_location(creating=False)  # (its markers would create a mistyped directory)
    with _io_errors("prune backups", url):
        return prune(dest, keep, pending_timeout=float(pending_timeout))
