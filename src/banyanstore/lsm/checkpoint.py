"""Checkpoints: a consistent on-disk copy of a store, openable with ``open()``.

Memtables are flushed first, so the copy holds *every* write committed before
the call (BanyanDB's hard-link snapshots missed the writes still in memory).
Tables are immutable, so they are hard-linked (copied across filesystems);
the copy gets its own manifest and an empty WAL.  Table installs and removals
are held off while the links are made, so the set is consistent.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import NotAStoreError
from ..io.base import Env
from .layout import directory_names
from .manifest import Manifest
from .tree import Tree

__all__ = ["write_checkpoint", "check_destination", "check_outside_store"]


def write_checkpoint(tree: Tree, dest: str, flush: Callable[[], None]) -> int:
    """Write the checkpoint of ``tree`` (``flush`` writes its memtables to tables and
    waits); returns the version it holds (every write up to it)."""
    env = tree.env
    check_outside_store(tree.path, dest)
    check_destination(env, dest)
    flush()
    env.mkdir(f"{dest}/tables")
    env.mkdir(f"{dest}/wal")
    with tree.frozen_state() as state:
        for tables in state.tables.values():
            for info in tables.values():
                name = f"tables/{info.file_no:06d}.sst"
                env.link(f"{tree.path}/{name}", f"{dest}/{name}")
    env.sync_dir(f"{dest}/tables")
    env.sync_dir(f"{dest}/wal")
    state.wal_seq = 1
    state.last_version = state.flushed_version
    state.obsolete.clear()  # the source's leftovers and outputs in flight are not in the copy
    state.in_flight.clear()
    Manifest.create(env, dest, state).close()
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
