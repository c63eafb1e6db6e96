"""The MANIFEST: which tables are live, the version counters, the WAL position.

Changes are appended as *version edits*; replaying every edit of the current
manifest file from the start rebuilds the :class:`ManifestState`.  ``CURRENT``
names the manifest file in use and is replaced crash-atomically (write temp,
fsync, rename, fsync dir).  A new manifest starts with one edit holding the
whole state, so old files can be dropped.

Byte grammar (little endian)::

    manifest    := file_header record*
    file_header := magic:8 = "BNYMANI\\0"  format:u32 = 1  crc32c(magic..format):u32   # 16 bytes
    record      := length:u32  crc32c(payload):u32  payload:length            # one edit
    payload     := UTF-8 JSON object; its keys are the edit *tags* below
    CURRENT     := "BANYANSTORE-CURRENT 1 " manifest_name " " crc32c_hex8 "\\n"

Tags (never reused, unknown tags are an error: a newer store wrote the file):
``format`` store format version, ``add_keyspace`` [id, name], ``next_file``,
``last_version``, ``flushed_version`` (every version <= it is in tables),
``wal_seq`` (first WAL sequence still needed), ``add_tables`` [table...],
``remove_tables`` [[keyspace, file]...], ``history_floor`` (oldest readable
version), ``time_map`` [[version, second]...] samples of the coarse version->time map
(lsm/timemap.py),
``keyspace_ttl`` [id, seconds-or-null].

Crash states: a torn or missing last record was never acknowledged (edits are
synced before anything depends on them) and is ignored; a bad record followed
by more data is :class:`CorruptionError`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import crc32c

from ..errors import CorruptionError
from ..io.base import Env, WritableFile
from .timemap import TimeMap

__all__ = ["ManifestState", "TableInfo", "Manifest", "ManifestRecord", "STORE_FORMAT", "replay",
           "walk_manifest", "apply_edits", "current_text", "parse_current"]

STORE_FORMAT: Final = 1
MAGIC: Final = b"BNYMANI\0"
FILE_HEADER = struct.Struct("<8sII")
RECORD_HEADER = struct.Struct("<II")
assert FILE_HEADER.size == 16 and RECORD_HEADER.size == 8
CURRENT_PREFIX: Final = "BANYANSTORE-CURRENT 1 "
ROLL_BYTES: Final = 4 << 20
KNOWN_TAGS: Final = frozenset({"format", "add_keyspace", "next_file", "last_version",
                               "flushed_version", "wal_seq", "add_tables", "remove_tables",
                               "history_floor", "time_map", "keyspace_ttl"})


@dataclass(frozen=True)
class TableInfo:
    """What the manifest records about one live table."""

    keyspace: int
    file_no: int
    file_size: int
    smallest: bytes
    largest: bytes
    min_version: int
    max_version: int
    entries: int
    tombstones: int

    def to_json(self) -> dict[str, Any]:
        return {"ks": self.keyspace, "file": self.file_no, "size": self.file_size,
                "smallest": self.smallest.hex(), "largest": self.largest.hex(),
                "min_v": self.min_version, "max_v": self.max_version,
                "entries": self.entries, "tombstones": self.tombstones}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TableInfo:
        return cls(d["ks"], d["file"], d["size"], bytes.fromhex(d["smallest"]),
                   bytes.fromhex(d["largest"]), d["min_v"], d["max_v"], d["entries"],
                   d["tombstones"])


@dataclass
class ManifestState:
    """The state a manifest describes (rebuilt by replaying edits)."""

    keyspaces: dict[int, str] = field(default_factory=lambda: {0: "default"})
    keyspace_ttl: dict[int, float | None] = field(default_factory=dict)
    tables: dict[int, dict[int, TableInfo]] = field(default_factory=lambda: {0: {}})
    next_file: int = 1
    last_version: int = 0
    flushed_version: int = 0
    wal_seq: int = 1
    history_floor: int = 0
    time_map: TimeMap = field(default_factory=TimeMap)

    def apply(self, edit: dict[str, Any], where: str = "MANIFEST") -> None:
        unknown = set(edit) - KNOWN_TAGS
        if unknown:
            raise CorruptionError(f"manifest edit has unknown tags {sorted(unknown)} "
                                  "(written by a newer banyanstore?)", path=where)
        if "format" in edit and edit["format"] > STORE_FORMAT:
            raise CorruptionError(f"store format {edit['format']} is newer than this "
                                  f"banyanstore supports ({STORE_FORMAT})", path=where)
        if "add_keyspace" in edit:
            ks_id, name = edit["add_keyspace"]
            self.keyspaces[ks_id] = name
            self.tables.setdefault(ks_id, {})
        if "keyspace_ttl" in edit:
            ks_id, ttl = edit["keyspace_ttl"]
            self.keyspace_ttl[ks_id] = ttl
        for key in ("next_file", "last_version", "flushed_version", "wal_seq", "history_floor"):
            if key in edit:
                setattr(self, key, max(getattr(self, key), edit[key]))
        for ks_id, file_no in edit.get("remove_tables", ()):
            self.tables.get(ks_id, {}).pop(file_no, None)
        for d in edit.get("add_tables", ()):
            info = TableInfo.from_json(d)
            self.tables.setdefault(info.keyspace, {})[info.file_no] = info
        for v, second in edit.get("time_map", ()):
            self.time_map.add(v, second)

    def snapshot_edit(self) -> dict[str, Any]:
        """One edit that rebuilds this whole state (first record of a new manifest)."""
        edit: dict[str, Any] = {
            "format": STORE_FORMAT, "next_file": self.next_file, "last_version": self.last_version,
            "flushed_version": self.flushed_version, "wal_seq": self.wal_seq,
            "history_floor": self.history_floor, "time_map": [list(p) for p in self.time_map.samples],
            "add_tables": [t.to_json() for ts in self.tables.values() for t in ts.values()],
        }
        # Keyspaces go in separate edits' worth of data: fold them into one list here.
        edit["_keyspaces"] = [[i, n] for i, n in sorted(self.keyspaces.items())]
        edit["_ttls"] = [[i, t] for i, t in sorted(self.keyspace_ttl.items())]
        return edit


def _encode(edit: dict[str, Any]) -> bytes:
    payload = json.dumps(edit, separators=(",", ":")).encode()
    return RECORD_HEADER.pack(len(payload), crc32c.crc32c(payload)) + payload


def _expand_snapshot(edit: dict[str, Any]) -> list[dict[str, Any]]:
    """Split the keyspace lists of a snapshot edit into ordinary tagged edits."""
    edits = [{"add_keyspace": ks} for ks in edit.pop("_keyspaces", [])]
    edits += [{"keyspace_ttl": t} for t in edit.pop("_ttls", [])]
    return edits + [edit]


class Manifest:
    """The open manifest file of a store.  REQUIRES: callers serialise ``append``."""

    def __init__(self, env: Env, dirname: str, name: str, fh: WritableFile,
                 state: ManifestState) -> None:
        self.env, self.dirname, self.name, self._fh, self.state = env, dirname, name, fh, state
        self._needs_roll = False

    @property
    def path(self) -> str:
        return f"{self.dirname}/{self.name}"

    # -- creation and loading -------------------------------------------------------
    @classmethod
    def create(cls, env: Env, dirname: str, state: ManifestState) -> Manifest:
        """Write a new manifest holding ``state`` and point CURRENT at it."""
        file_no = state.next_file
        state.next_file += 1
        name = f"MANIFEST-{file_no:06d}"
        fh = env.open_writable(f"{dirname}/{name}")
        try:
            header = MAGIC + struct.pack("<I", STORE_FORMAT)
            fh.write(FILE_HEADER.pack(MAGIC, STORE_FORMAT, crc32c.crc32c(header)))
            edit = state.snapshot_edit()
            edit["next_file"] = state.next_file
            fh.write(_encode(edit))
            fh.sync()
        except BaseException:
            fh.close()
            # CURRENT does not name this file yet: remove it, or a failed roll leaves a
            # stray manifest behind until the next open (tests/lsm/test_faults.py).
            try:
                env.remove(f"{dirname}/{name}")
            except OSError:  # includes StorageIOError; remove_orphans retries at open
                pass
            raise
        env.sync_dir(dirname)
        env.write_file_atomic(f"{dirname}/CURRENT", current_text(name).encode())
        return cls(env, dirname, name, fh, state)

    @staticmethod
    def current_name(env: Env, dirname: str) -> str:
        path = f"{dirname}/CURRENT"
        return parse_current(env.read_file(path), path)

    @classmethod
    def load(cls, env: Env, dirname: str) -> ManifestState:
        """Replay the manifest CURRENT names.  Missing manifest: CorruptionError."""
        name = cls.current_name(env, dirname)
        path = f"{dirname}/{name}"
        try:
            data = env.read_file(path)
        except FileNotFoundError as exc:
            raise CorruptionError(f"CURRENT names {name}, which is missing", path=path) from exc
        return replay(data, path)

    @classmethod
    def open_for_append(cls, env: Env, dirname: str, state: ManifestState) -> Manifest:
        """Start a fresh manifest for a writer (keeps each file short and clean)."""
        old = cls.current_name(env, dirname) if env.exists(f"{dirname}/CURRENT") else None
        m = cls.create(env, dirname, state)
        if old is not None and old != m.name:
            try:
                env.remove(f"{dirname}/{old}")
            except FileNotFoundError:
                pass
        return m

    # -- appending ----------------------------------------------------------------------
    def append(self, edit: dict[str, Any]) -> None:
        """Durably record ``edit`` and apply it to :attr:`state`.

        If the write or sync fails, whether the edit reached the disk is unknown
        (and a partial record may sit at the end of the file), so the next
        append first moves to a fresh manifest holding only the applied state:
        the failed edit is then void either way.
        """
        if self._needs_roll or self._fh.size > ROLL_BYTES:
            self.roll()
        try:
            self._fh.write(_encode(edit))
            self._fh.sync()
        except BaseException:
            self._needs_roll = True
            raise
        self.state.apply(edit, self.path)

    def roll(self) -> None:
        """Move to a new manifest file holding the whole state."""
        old_fh, old_name = self._fh, self.name
        fresh = Manifest.create(self.env, self.dirname, self.state)
        self._fh, self.name = fresh._fh, fresh.name
        self._needs_roll = False
        old_fh.close()
        try:
            self.env.remove(f"{self.dirname}/{old_name}")
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self._fh.close()


def current_text(manifest_name: str) -> str:
    """The exact contents of a CURRENT file naming ``manifest_name``."""
    return f"{CURRENT_PREFIX}{manifest_name} {crc32c.crc32c(manifest_name.encode()):08x}\n"


def parse_current(raw: bytes, path: str) -> str:
    """The manifest name a CURRENT file holds; CorruptionError if it is malformed."""
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


@dataclass
class ManifestRecord:
    """One record of a manifest file: where it is and the edit it holds (None if torn)."""

    offset: int
    length: int
    edit: dict[str, Any] | None
    torn: str | None = None  # why the record is a torn tail


def walk_manifest(data: bytes, path: str, start: int = FILE_HEADER.size) -> Iterator[ManifestRecord]:
    """The records of a manifest file (from offset ``start``, a record boundary).  A
    torn last record (never acknowledged) is yielded with ``torn`` set; damage
    followed by more data, a bad header or bad JSON raise CorruptionError."""
    if len(data) < FILE_HEADER.size:
        raise CorruptionError("manifest shorter than its header", path=path, offset=0)
    magic, fmt, crc = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC or crc != crc32c.crc32c(data[:12]):
        raise CorruptionError("not a banyanstore manifest (bad magic or header checksum)",
                              path=path, offset=0)
    if fmt > STORE_FORMAT:
        raise CorruptionError(f"manifest format {fmt} is newer than supported ({STORE_FORMAT})",
                              path=path, offset=0)
    pos, n = start, len(data)
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


def replay(data: bytes, path: str) -> ManifestState:
    """Rebuild the state from the bytes of a manifest file."""
    state = ManifestState()
    if apply_edits(state, data, path, FILE_HEADER.size) == FILE_HEADER.size:
        raise CorruptionError("manifest holds no complete edit", path=path, offset=FILE_HEADER.size)
    return state


def apply_edits(state: ManifestState, data: bytes, path: str, start: int) -> int:
    """Apply to ``state`` the complete edits of a manifest file from offset ``start``;
    return the offset after the last one applied.  A torn tail is not applied: it was
    never acknowledged -- or, for a reader beside a live writer, it is still being
    written, and a later call from the returned offset picks it up."""
    end = start
    for rec in walk_manifest(data, path, start):
        if rec.edit is None:
            break
        for e in _expand_snapshot(rec.edit):
            state.apply(e, path)
        end = rec.offset + RECORD_HEADER.size + rec.length
    return end
