"""Which names a store directory may hold, and the check that keeps a store from
being created among somebody else's files.

A store directory holds ``CURRENT``, ``LOCK``, ``MANIFEST-NNNNNN``, ``wal/`` and
``tables/`` (see lsm/store.py); an interrupted creation may leave any of them
but ``CURRENT`` (plus ``CURRENT.tmp``).  A directory without ``CURRENT`` that
holds any *other* name is not a store: opening it raises
:class:`~banyanstore.errors.NotAStoreError` instead of adding ``LOCK``,
``wal/`` and ``tables/`` among the user's files (``create_if_missing`` is for
an absent or empty directory).

>>> is_store_name("MANIFEST-000003"), is_store_name("wal"), is_store_name("notes.txt")
(True, True, False)
"""

from __future__ import annotations

import errno
import re

from ..errors import NotAStoreError
from ..io.base import Env

__all__ = ["is_store_name", "is_manifest_name", "directory_names", "refuse_foreign_directory",
           "refuse_interrupted_checkpoint", "CHECKPOINT_MARKER"]

CHECKPOINT_MARKER = "CHECKPOINT-INCOMPLETE"
"""Written first into a checkpoint's destination and removed last (lsm/checkpoint.py):
a directory holding it is what a checkpoint killed part-way left -- also with a
``CURRENT``, which the checkpoint writes just before it removes the marker."""

_STORE_NAME = re.compile(r"^(CURRENT|CURRENT\.tmp|LOCK|wal|tables|MANIFEST-\d{6,})$")
_MANIFEST_NAME = re.compile(r"^MANIFEST-\d{6,}$")


def is_store_name(name: str) -> bool:
    """True for the names a store (or its interrupted creation) puts in its directory."""
    return _STORE_NAME.match(name) is not None


def is_manifest_name(name: str) -> bool:
    """True for a name the store gives a manifest (``MANIFEST-`` and six or more digits):
    ``MANIFEST-000001.bak`` is somebody's copy, never removed as a stale manifest."""
    return _MANIFEST_NAME.match(name) is not None


def directory_names(env: Env, path: str, is_file: str) -> list[str]:
    """The names in directory ``path`` ([] if it is absent); NotAStoreError with the
    message ``is_file`` if ``path`` is a file."""
    if not env.exists(path):
        return []
    try:
        return env.listdir(path)
    except OSError as exc:  # StorageIOError is an OSError too
        if exc.errno == errno.ENOTDIR:
            raise NotAStoreError(is_file, path=path) from exc
        raise


def refuse_foreign_directory(env: Env, path: str) -> None:
    """Raise NotAStoreError if ``path`` is a file, or a directory holding names that
    are not a store's.  An absent or empty directory passes."""
    names = directory_names(env, path, f"{path} is a file, not a store directory")
    foreign = [n for n in names if not is_store_name(n)]
    if CHECKPOINT_MARKER in foreign:
        _refuse_marked(path)
    if foreign:
        shown = ", ".join(map(repr, foreign[:3])) + (", ..." if len(foreign) > 3 else "")
        raise NotAStoreError(
            f"{path} is not empty and is not a banyanstore store (it holds {shown} and no "
            "CURRENT); a store is only created in an absent or empty directory", path=path)


def refuse_interrupted_checkpoint(env: Env, path: str) -> None:
    """NotAStoreError if ``path`` holds a checkpoint's marker, CURRENT or not: the next
    checkpoint to it clears it, so a store opened (and written) there would be lost."""
    if env.exists(f"{path}/{CHECKPOINT_MARKER}"):
        _refuse_marked(path)


def _refuse_marked(path: str) -> None:
    raise NotAStoreError(
        f"{path} holds what an interrupted checkpoint left ({CHECKPOINT_MARKER}), not a "
        "store: remove it, or write a checkpoint to it again", path=path)
