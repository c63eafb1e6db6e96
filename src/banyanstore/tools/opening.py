"""Opening a store for a command: read-only for reads (so they work beside a running
writer), for writing only where a command writes -- with the failure said the way
every command says it (:class:`~banyanstore.tools.common.Failure`, exit 2)."""

from __future__ import annotations

from typing import Any

import banyanstore

from ..errors import StoreLockedError
from .common import UsageError, detect_kind

__all__ = ["open_read_only", "open_for_writing", "try_open_for_writing", "keyspace_of", "check_version"]


def _check_is_store(path: str, kind: str, hint: str = "") -> None:
    if kind == "missing":
        raise UsageError(f"{path}: no such store (the path does not exist{hint})")
    if kind != "store":
        raise UsageError(f"{path} is not a store directory ({kind})")


def open_read_only(path: str) -> banyanstore.Store:
    """The store at ``path`` as it is now, beside any writer (see the README's readers)."""
    _check_is_store(path, detect_kind(path))
    return banyanstore.open(path, read_only=True)


def open_for_writing(path: str, command: str, *, create: bool = False) -> banyanstore.Store:
    """The store at ``path`` for writing; a store another process writes is a usage
    failure naming what to do instead.  A missing store is made only with ``create``
    (``put --create``): a mistyped path must not become a new, empty store."""
    kind = detect_kind(path)
    if not (create and kind == "missing"):
        _check_is_store(path, kind, "; put --create makes one" if command == "put" else "")
    try:
        # Threads, not worker processes, build the tables of a one-shot command: starting
        # a process pool costs more than the few tables such a command writes (an open
        # and close went from 0.65 s to 0.03 s), and nothing else runs beside it.
        return banyanstore.open(path, create_if_missing=create, compaction_mode="thread")
    except StoreLockedError:
        raise UsageError(f"cannot open {path} for writing: another process has it open "
                         f"(one writer at a time: stop it first, or {command} through its Store)") from None


def try_open_for_writing(path: str) -> banyanstore.Store | None:
    """Like :func:`open_for_writing`, but None when another process writes the store."""
    try:
        return open_for_writing(path, "")
    except UsageError:
        if detect_kind(path) != "store":
            raise
        return None


def keyspace_of(store: Any, name: str | None) -> Any:
    """``store`` itself (the default keyspace) or its keyspace ``name``, which must exist."""
    if name is None:
        return store
    if name not in store.keyspaces():
        from ..lsm.store import listed_names  # (loaded with the store it reads)
        raise UsageError(f"no keyspace {name!r} (the store has {listed_names(store.keyspaces())})")
    return store.keyspace(name)


def check_version(store: Any, version: int | None) -> None:
    """A ``--version`` the store can answer, refused in the command's terms: the
    library's message points a program at ``refresh()``, which the command's user
    cannot call -- and the command has just opened the store, so it holds every
    version there is."""
    if version is not None and version > store.version:
        raise UsageError(f"version {version} is above the store's latest version ({store.version})")
