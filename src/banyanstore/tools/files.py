"""Reading a store's files without opening the store: CURRENT, manifest records,
and the inventory of which files the manifest names and which are leftovers.

Everything here only reads.  The manifest walker follows the grammar of
:mod:`banyanstore.lsm.manifest` record by record, so tools can show offsets and
tell a torn last record (a crash leftover that recovery ignores) from damage
in the middle (which recovery refuses).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..lsm.layout import is_manifest_name
from ..lsm.manifest import (
    ManifestRecord,
    ManifestState,
    current_text,
    parse_current,
    walk_manifest,
)
from .common import SEGMENT_NAME, TABLE_NAME

LOST = "lost"

__all__ = ["ManifestRecord", "walk_manifest", "read_current", "current_text", "Inventory",
           "take_inventory", "manifest_files", "table_file"]


def read_current(store: str) -> str:
    """The manifest name CURRENT holds; CorruptionError if malformed, FileNotFoundError if absent."""
    path = os.path.join(store, "CURRENT")
    with open(path, "rb") as f:
        return parse_current(f.read(), path)


def manifest_files(store: str) -> list[str]:
    """Names of the manifests (``MANIFEST-NNNNNN``) of a store directory, sorted."""
    return sorted(n for n in os.listdir(store) if is_manifest_name(n))


def table_file(store: str, file_no: int) -> str:
    return os.path.join(store, "tables", f"{file_no:06d}.sst")


@dataclass
class Inventory:
    """Files of a store directory, sorted by what the manifest says about them."""

    orphan_tables: list[str] = field(default_factory=list)  # NNNNNN.sst not named
    temp_files: list[str] = field(default_factory=list)  # CURRENT.tmp, tables/*.tmp
    stale_manifests: list[str] = field(default_factory=list)  # MANIFEST-NNNNNN but CURRENT's
    unknown: list[str] = field(default_factory=list)  # not ours: never removed

    @property
    def removable(self) -> list[str]:
        return self.orphan_tables + self.temp_files + self.stale_manifests


def take_inventory(store: str, state: ManifestState, current: str) -> Inventory:
    """Classify every file not named by ``state`` (the replayed manifest ``current``)."""
    inv = Inventory()
    live = {info.file_no for tables in state.tables.values() for info in tables.values()}
    for name in sorted(os.listdir(store)):
        path = os.path.join(store, name)
        # lost/: what repair set aside (tools/salvage.py), the operator's to keep or delete
        if name in ("CURRENT", "LOCK", current) or (name in ("tables", "wal", LOST) and os.path.isdir(path)):
            continue
        # only the names the store writes: an open for writing removes these too
        if is_manifest_name(name) and os.path.isfile(path):
            inv.stale_manifests.append(path)
        elif name == "CURRENT.tmp" and os.path.isfile(path):
            inv.temp_files.append(path)
        else:
            inv.unknown.append(path)
    tdir = os.path.join(store, "tables")
    for name in sorted(os.listdir(tdir)) if os.path.isdir(tdir) else []:
        path = os.path.join(tdir, name)
        m = TABLE_NAME.match(name)
        if m:
            if int(m.group(1)) not in live:
                inv.orphan_tables.append(path)
        elif name.endswith(".tmp"):
            inv.temp_files.append(path)
        else:
            inv.unknown.append(path)
    wdir = os.path.join(store, "wal")
    for name in sorted(os.listdir(wdir)) if os.path.isdir(wdir) else []:
        if not SEGMENT_NAME.match(name) and name != "LOCK":
            inv.unknown.append(os.path.join(wdir, name))
    return inv
