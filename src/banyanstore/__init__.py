"""banyanstore: BanyanDB's persistence storage design, in Python.

Two storage kinds behind concise interfaces:

* :func:`open_log` -- an append-only, segmented, crash-safe **Log**;
* :func:`open` -- an LSM **Store** with MVCC versions, keyspaces, snapshots
  and checkpoints.

>>> import banyanstore, tempfile
>>> with tempfile.TemporaryDirectory() as d, banyanstore.open_log(d, io_mode="sync") as log:
...     log.append(b"hello"), log.append_many([b"a", b"b"]), log.get(2)
(1, 3, b'a')
"""

from __future__ import annotations

from . import errors
from .errors import (
    BanyanStoreError,
    ConfigError,
    CorruptionError,
    DiskFullError,
    IOModeUnavailableError,
    LogRangeError,
    ReadOnlyError,
    StorageIOError,
    StoreClosedError,
    StoreLockedError,
    VersionUnavailableError,
)
from .options import Options

__version__ = "0.1.0"

__all__ = [
    "open", "open_log", "Options", "errors", "BanyanStoreError", "ConfigError", "CorruptionError",
    "DiskFullError", "IOModeUnavailableError", "LogRangeError", "ReadOnlyError", "StorageIOError",
    "StoreClosedError", "StoreLockedError", "VersionUnavailableError", "__version__",
]


def open_log(path, *, options=None, env=None, **kwargs):  # type: ignore[no-untyped-def]
    """Open (or create) the append-only log in directory ``path``."""
    from .log.log import Log
    return Log.open(path, options=options, env=env, **kwargs)


def open(path, *, options=None, env=None, **kwargs):  # type: ignore[no-untyped-def]  # noqa: A001
    """Open (or create) the LSM store in directory ``path``."""
    from .lsm.store import Store
    return Store.open(path, options=options, env=env, **kwargs)
