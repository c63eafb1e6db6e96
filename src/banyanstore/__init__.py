"""banyanstore: BanyanDB's persistence storage design, in Python.

Two storage kinds behind concise interfaces:

* :func:`open_log` -- an append-only, segmented, crash-safe **Log**;
* :func:`open` -- an LSM **Store** with MVCC versions, keyspaces, snapshots
  and checkpoints;

and incremental backups of a store to a directory or object storage
(:func:`backup`, :func:`restore`, :func:`list_backups`, :func:`verify_backup`,
:func:`prune_backups`; see ``docs/backup.md``).

>>> import banyanstore, tempfile
>>> with tempfile.TemporaryDirectory() as d, banyanstore.open_log(d, io_mode="sync") as log:
...     log.append(b"hello"), log.append_many([b"a", b"b"]), log.get(2)
(1, 3, b'a')
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import (
    BanyanStoreError,
    ConfigError,
    ConfigTypeError,
    CorruptionError,
    DiskFullError,
    EntryTooLargeError,
    IOModeUnavailableError,
    KeyspaceNotFoundError,
    LogRangeError,
    NegativeVersionError,
    NotAStoreError,
    ReadOnlyError,
    StorageIOError,
    StoreClosedError,
    StoreLockedError,
    StoreNotFoundError,
    VersionUnavailableError,
)
from .options import Options
from .version import __version__

if TYPE_CHECKING:
    from .backups import BackupInfo, backup, list_backups, prune_backups, restore, verify_backup
    from .io.base import Env
    from .log.log import Log
    from .lsm.batch import Batch
    from .lsm.keyspace import Keyspace
    from .lsm.snapshot import Snapshot
    from .lsm.store import Store


__all__ = [
    "open", "open_log", "Options", "errors", "BanyanStoreError", "ConfigError", "ConfigTypeError",
    "CorruptionError",
    "DiskFullError", "EntryTooLargeError", "IOModeUnavailableError", "KeyspaceNotFoundError",
    "LogRangeError", "NotAStoreError", "ReadOnlyError", "StorageIOError", "StoreClosedError",
    "StoreLockedError", "StoreNotFoundError", "VersionUnavailableError", "NegativeVersionError",
    "__version__",
    "Store", "Keyspace", "Snapshot", "Batch", "Log",
    "backup", "restore", "list_backups", "verify_backup", "prune_backups", "BackupInfo",
]


def open_log(path: str | bytes | os.PathLike[Any], *, options: Options | None = None,
             env: Env | None = None, **kwargs: Any) -> Log:
    """Open (or create) the append-only log in directory ``path`` (a str, bytes --
    decoded like :func:`os.fsdecode` -- or os.PathLike; anything else is a
    TypeError); options as keyword arguments or ``options=`` (see :class:`Options`)."""
    from .log.log import Log
    return Log.open(path, options=options, env=env, **kwargs)


def open(path: str | bytes | os.PathLike[Any], *, options: Options | None = None,  # noqa: A001
         env: Env | None = None, **kwargs: Any) -> Store:
    """Open (or create) the LSM store in directory ``path`` (a str, bytes -- decoded
    like :func:`os.fsdecode` -- or os.PathLike; anything else is a TypeError); options
    as keyword arguments or ``options=`` (see :class:`Options`).  A store is created
    only in an absent or empty directory (else :class:`NotAStoreError`)."""
    from .lsm.opening import open_store
    return open_store(path, options=options, env=env, **kwargs)


# Names imported on first use, so that ``import banyanstore`` stays light (the engine's
# modules load with the first open): name -> the module that defines it.
_LAZY = {
    "Store": ".lsm.store", "Keyspace": ".lsm.keyspace", "Batch": ".lsm.batch",
    "Snapshot": ".lsm.snapshot", "Log": ".log.log",
    **{name: ".backups" for name in ("backup", "restore", "list_backups", "verify_backup",
                                     "prune_backups", "BackupInfo")},
}


def __getattr__(name: str) -> Any:
    """The classes (for type hints: ``def f(store: banyanstore.Store)``) and the backup
    functions, imported on first use.

    >>> import banyanstore
    >>> banyanstore.Store.__name__, banyanstore.Log.__module__
    ('Store', 'banyanstore.log.log')
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'banyanstore' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
