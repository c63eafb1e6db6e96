"""Reading a store's files without opening the store: CURRENT, manifest records,
and the inventory of which files the manifest names and which are leftovers.

Everything here only reads.  The manifest walker follows the grammar of
:mod:`banyanstore.lsm.manifest` record by record, so tools can show offsets and
tell a torn last record (a crash leftover that recovery ignores) from damage
in the middle (which recovery refuses).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import crc32c

from ..errors import CorruptionError
from ..lsm.manifest import CURRENT_PREFIX, FILE_HEADER, MAGIC, RECORD_HEADER, STORE_FORMAT, ManifestState
from .common import SEGMENT_NAME, TABLE_NAME

__all__ = ["ManifestRecord", "walk_manifest", "read_current", "current_text", "Inventory",
           "take_inventory", "manifest_files", "table_file"]


@dataclass
class ManifestRecord:
    """One record of a manifest file: where it is and the edit it holds (None if torn)."""

    offset: int
    length: int
    edit: dict[str, Any] | None
    torn: str | None = None  # why the record is a torn tail


def walk_manifest(data: bytes, path: str) -> Iterator[ManifestRecord]:
    """The records of a manifest file.  A torn last record is yielded with ``torn``
    set; damage followed by more data, a bad header or bad JSON raise CorruptionError."""
    if len(data) < FILE_HEADER.size:
        raise CorruptionError("manifest shorter than its header", path=path, offset=0)
    magic, fmt, crc = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC or crc != crc32c.crc32c(data[:12]):
        raise CorruptionError("not a banyanstore manifest (bad magic or header checksum)",
                              path=path, offset=0)
    if fmt > STORE_FORMAT:
        raise CorruptionError(f"manifest format {fmt} is newer than supported ({STORE_FORMAT})",
                              path=path, offset=0)
    pos, n = FILE_HEADER.size, len(data)
    while pos < n:
        if pos + RECORD_HEADER.size > n:
            yield ManifestRecord(pos, n - pos, None, "partial record header")
            return
        length, crc = RECORD_HEADER.unpack_from(data, pos)
        end = pos + RECORD_HEADER.size + length
        if end > n:
            yield ManifestRecord(pos, n - pos, None, f"record of {length} bytes cut short")
            return
        payload = data[pos + RECORD_HEADER.size:end]
        if crc32c.crc32c(payload) != crc:
            if end == n:
                yield ManifestRecord(pos, n - pos, None, "last record fails its checksum")
                return
            raise CorruptionError("manifest edit fails its checksum", path=path, offset=pos)
        try:
            edit = json.loads(payload)
        except ValueError as exc:
            raise CorruptionError("manifest edit is not valid JSON", path=path, offset=pos) from exc
        if not isinstance(edit, dict):
            raise CorruptionError("manifest edit is not a JSON object", path=path, offset=pos)
        yield ManifestRecord(pos, length, edit)
        pos = end


def current_text(manifest_name: str) -> str:
    """The exact contents of a CURRENT file naming ``manifest_name``."""
    return f"{CURRENT_PREFIX}{manifest_name} {crc32c.crc32c(manifest_name.encode()):08x}\n"


def read_current(store: str) -> str:
    """The manifest name CURRENT holds; CorruptionError if malformed, FileNotFoundError if absent."""
    path = os.path.join(store, "CURRENT")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode()
        if not text.startswith(CURRENT_PREFIX) or not text.endswith("\n"):
            raise ValueError
        name, crc_hex = text[len(CURRENT_PREFIX):-1].split(" ")
        if int(crc_hex, 16) != crc32c.crc32c(name.encode()) or not name.startswith("MANIFEST-"):
            raise ValueError
    except ValueError:
        raise CorruptionError("CURRENT is malformed or fails its checksum", path=path,
                              offset=0) from None
    return name


def manifest_files(store: str) -> list[str]:
    """Names of the ``MANIFEST-*`` files of a store directory, sorted."""
    return sorted(n for n in os.listdir(store) if n.startswith("MANIFEST-"))


def table_file(store: str, file_no: int) -> str:
    return os.path.join(store, "tables", f"{file_no:06d}.sst")


@dataclass
class Inventory:
    """Files of a store directory, sorted by what the manifest says about them."""

    orphan_tables: list[str] = field(default_factory=list)  # NNNNNN.sst not named
    temp_files: list[str] = field(default_factory=list)  # *.tmp, CURRENT.tmp
    stale_manifests: list[str] = field(default_factory=list)  # MANIFEST-* other than CURRENT's
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
        if name in ("CURRENT", "LOCK", current) or (name in ("tables", "wal") and os.path.isdir(path)):
            continue
        if name.startswith("MANIFEST-"):
            inv.stale_manifests.append(path)
        elif name.endswith(".tmp"):
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
