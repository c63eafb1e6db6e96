"""Checkpoints: a consistent on-disk copy of a store, openable with ``open()``.

Memtables are flushed first, so the copy holds *every* write committed before
the call (BanyanDB's hard-link snapshots missed the writes still in memory).
Tables are immutable, so they are hard-linked (copied across filesystems);
the copy gets its own manifest and an empty WAL.  Table installs and removals
are held off while the links are made, so the set is consistent.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .manifest import Manifest
from .tree import Tree

__all__ = ["write_checkpoint"]


def write_checkpoint(tree: Tree, dest: str, flush: Callable[[], None]) -> int:
    """Write the checkpoint of ``tree`` (``flush`` writes its memtables to tables and
    waits); returns the version it holds (every write up to it)."""
    env = tree.env
    if env.exists(dest) and env.listdir(dest):
        raise ConfigError(f"checkpoint destination {dest} exists and is not empty")
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
