"""The backup manifest: what one backup holds, in a checksummed envelope.

A backup is complete exactly when its manifest exists at the destination: the
manifest is written last, after every object it names.  It is also *untrusted
input* at restore time (anyone who can write the bucket can write it), so
:func:`decode_manifest` validates every field, and object names must have the
one shape this module writes -- ``objects/`` and 64 lower-case hex digits --
so a name can never climb out of the destination's prefix.

Byte grammar (little endian)::

    backup_manifest := magic:8 = "BNYBKUP\\0"  format:u32 = 1  length:u32  crc:u32
                       payload:length                                     # 20-byte header
                       crc = crc32c(magic || format || length || payload)
    payload         := UTF-8 JSON object:

    {"backup_id": ID, "created": "2026-12-02T11:22:33.123456Z",
     "banyanstore": "0.1.0", "store_format": 1,
     "source": {"path": "/abs/store", "host": "name"},
     "version": V,                  # every write with version <= V is in the backup
     "flushed_version": F,          # every write <= F is in the tables; the WAL tail holds (F, V]
     "history_floor": H, "next_file": N,
     "keyspaces": [{"id": 0, "name": "default"}, {"id": 1, "name": "idx", "ttl": 3600}, ...],
                                    # "ttl" only where the store's manifest sets one (null: none)
     "time_map": [[version, second], ...],
     "expiry_time": T,              # only where the store's manifest records one: the
                                    # latest time it judged TTL expiry at (seconds)
     "tables": [{"object": "objects/<sha256>", "sha256": "<sha256>",
                 "table": {lsm manifest table object: ks, file, size, smallest, ...}}, ...],
     "wal_tail": null | {"object": "objects/<sha256>", "sha256": "<sha256>", "size": n,
                         "records": k, "first_version": a, "last_version": b},
     "uploaded": {"files": n, "bytes": n}}   # what this backup had to upload

``ID`` is ``YYYYMMDDTHHMMSS.ffffffZ-`` and 8 hex digits (UTC creation time, then
random): ids sort by creation time.  The manifest lives at ``backups/<ID>.manifest``.

>>> m = BackupManifest(backup_id="20261202T112233.000001Z-0123abcd",
...     created="2026-12-02T11:22:33.000001Z", banyanstore="0.1.0", store_format=1,
...     source_path="/data/s", source_host="h", version=3, flushed_version=3,
...     history_floor=0, next_file=2, keyspaces=[KeyspaceEntry(0, "default")],
...     time_map=[], tables=[], wal_tail=None, uploaded_files=0, uploaded_bytes=0)
>>> decode_manifest(encode_manifest(m), "x") == m
True
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from ..arguments import is_finite_number
from ..crc import crc32c
from ..errors import CorruptionError
from ..lsm.edits import MAX_KEYSPACE_ID, MAX_U64, STORE_FORMAT
from ..lsm.manifest import TableInfo

__all__ = ["BackupManifest", "KeyspaceEntry", "ObjectEntry", "TableEntry", "WalTailEntry",
           "encode_manifest", "decode_manifest", "manifest_key", "object_key", "check_backup_id",
           "check_object_name", "BACKUP_ID", "MANIFEST_NAME", "OBJECT_NAME", "CREATED_FORMAT",
           "ID_TIME_FORMAT", "parse_created"]

MAGIC: Final = b"BNYBKUP\0"
FORMAT: Final = 1
HEADER = struct.Struct("<8sIII")
assert HEADER.size == 20
MAX_MANIFEST: Final = 1 << 30  # far above any real manifest; a bigger length field is damage

BACKUP_ID: Final = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}$")
MANIFEST_NAME: Final = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8})\.manifest$")
OBJECT_NAME: Final = re.compile(r"^[0-9a-f]{64}$")
_SHA256: Final = OBJECT_NAME
CREATED_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
ID_TIME_FORMAT: Final = "%Y%m%dT%H%M%S.%fZ"


def check_backup_id(backup_id: object, name: str = "backup_id") -> str:
    """``backup_id`` if it has the shape this module writes; TypeError/ValueError naming
    the argument otherwise (ids become object keys, so nothing else may pass)."""
    if not isinstance(backup_id, str):
        raise TypeError(f"{name} must be a str, not {type(backup_id).__name__}")
    if not BACKUP_ID.match(backup_id):
        raise ValueError(f"{name} {backup_id!r} is not a backup id (YYYYMMDDTHHMMSS.ffffffZ-xxxxxxxx)")
    return backup_id


def manifest_key(backup_id: str) -> str:
    """Where the manifest of ``backup_id`` lives, relative to the destination."""
    return f"backups/{check_backup_id(backup_id)}.manifest"


def object_key(sha256: str) -> str:
    """Where the object with this SHA-256 lives, relative to the destination."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return f"objects/{sha256}"


def check_object_name(name: object, sha256: str, where: str) -> str:
    """An object name from an untrusted manifest: refuse anything that is not exactly
    ``objects/<sha256>`` -- ``..``, absolute paths, backslashes, other folders."""
    if not isinstance(name, str):
        raise CorruptionError(f"object name {name!r} is not a string", path=where)
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or "" in parts or "\\" in name or ":" in name:
        raise CorruptionError(f"unsafe object name {name!r}: it would leave the backup's prefix",
                              path=where)
    if name != f"objects/{sha256}":
        raise CorruptionError(f"object name {name!r} is not objects/<its sha256>", path=where)
    return name


@dataclass(frozen=True)
class KeyspaceEntry:
    """A keyspace; ``has_ttl``: the store's manifest sets its TTL (``ttl``, None
    meaning none), else the TTL comes from the options the store is opened with."""

    id: int
    name: str
    ttl: float | None = None
    has_ttl: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.has_ttl:
            out["ttl"] = self.ttl
        return out


@dataclass(frozen=True)
class ObjectEntry:
    """A content-addressed object: its SHA-256 names it (``objects/<sha256>``)."""

    sha256: str
    size: int

    @property
    def key(self) -> str:
        return object_key(self.sha256)


@dataclass(frozen=True)
class TableEntry(ObjectEntry):
    """A table of the store: the object holding its bytes and the store manifest's record."""

    table: TableInfo


@dataclass(frozen=True)
class WalTailEntry(ObjectEntry):
    """The WAL records a backup holds beyond its tables (see waltail.py)."""

    records: int
    first_version: int
    last_version: int


@dataclass(frozen=True)
class BackupManifest:
    backup_id: str
    created: str
    banyanstore: str
    store_format: int
    source_path: str
    source_host: str
    version: int
    flushed_version: int
    history_floor: int
    next_file: int
    keyspaces: list[KeyspaceEntry]
    time_map: list[tuple[int, int]]
    tables: list[TableEntry]
    wal_tail: WalTailEntry | None
    uploaded_files: int
    uploaded_bytes: int
    expiry_time: float = 0.0  # the store's ``expiry_time`` (0: none recorded)

    @property
    def objects(self) -> list[ObjectEntry]:
        """Every object the backup needs (tables, then the WAL tail)."""
        out: list[ObjectEntry] = list(self.tables)
        if self.wal_tail is not None:
            out.append(self.wal_tail)
        return out

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)


# -- encoding -------------------------------------------------------------------------------

def _to_json(m: BackupManifest) -> dict[str, Any]:
    tail = m.wal_tail
    out: dict[str, Any] = {
        "backup_id": m.backup_id, "created": m.created, "banyanstore": m.banyanstore,
        "store_format": m.store_format, "source": {"path": m.source_path, "host": m.source_host},
        "version": m.version, "flushed_version": m.flushed_version,
        "history_floor": m.history_floor, "next_file": m.next_file,
        "keyspaces": [k.to_json() for k in m.keyspaces],
        "time_map": [list(p) for p in m.time_map],
        "tables": [{"object": t.key, "sha256": t.sha256, "table": t.table.to_json()}
                   for t in m.tables],
        "wal_tail": None if tail is None else {
            "object": tail.key, "sha256": tail.sha256, "size": tail.size, "records": tail.records,
            "first_version": tail.first_version, "last_version": tail.last_version},
        "uploaded": {"files": m.uploaded_files, "bytes": m.uploaded_bytes},
    }
    if m.expiry_time:  # only then: other backups stay readable by older code
        out["expiry_time"] = m.expiry_time
    return out


def encode_manifest(m: BackupManifest) -> bytes:
    payload = json.dumps(_to_json(m), separators=(",", ":"), sort_keys=True).encode()
    head = struct.pack("<8sII", MAGIC, FORMAT, len(payload))
    return head + struct.pack("<I", crc32c(head + payload)) + payload


# -- decoding (untrusted input) ---------------------------------------------------------------

class _Fields:
    """Typed access to one JSON object of the manifest; every miss is a CorruptionError."""

    def __init__(self, obj: object, what: str, where: str) -> None:
        if not isinstance(obj, dict):
            raise CorruptionError(f"{what} is not a JSON object", path=where)
        self.obj, self.what, self.where = obj, what, where

    def _bad(self, key: str, want: str) -> CorruptionError:
        return CorruptionError(f"{self.what}.{key} must be {want}, got {self.obj.get(key)!r}",
                               path=self.where)

    def integer(self, key: str, minimum: int = 0, maximum: int = MAX_U64) -> int:
        """An int in ``[minimum, maximum]``: the store keeps versions, file numbers and
        seconds as u64 (keyspace ids as u32), so a larger one would pass here and fail
        only in the restored store's own manifest, under a scratch file's name."""
        v = self.obj.get(key)
        if type(v) is not int or not minimum <= v <= maximum:
            raise self._bad(key, f"an integer >= {minimum}" if maximum == MAX_U64
                            else f"an integer in [{minimum}, {maximum}]")
        return v

    def text(self, key: str) -> str:
        v = self.obj.get(key)
        if not isinstance(v, str) or not v:
            raise self._bad(key, "a non-empty string")
        return v

    def items(self, key: str) -> list[Any]:
        v = self.obj.get(key)
        if not isinstance(v, list):
            raise self._bad(key, "a list")
        return v

    def sha256(self, key: str = "sha256") -> str:
        v = self.obj.get(key)
        if not isinstance(v, str) or not _SHA256.match(v):
            raise self._bad(key, "64 lower-case hex digits")
        return v

    def sub(self, key: str) -> _Fields:
        return _Fields(self.obj.get(key), f"{self.what}.{key}", self.where)


def decode_manifest(data: bytes, where: str) -> BackupManifest:
    """Parse and validate a manifest; CorruptionError naming ``where`` and the offset
    or field on any damage or inconsistency."""
    if len(data) < HEADER.size:
        raise CorruptionError(f"backup manifest of {len(data)} bytes is shorter than its header",
                              path=where, offset=0)
    magic, fmt, length, crc = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise CorruptionError("not a banyanstore backup manifest (bad magic)", path=where, offset=0)
    if length != len(data) - HEADER.size or length > MAX_MANIFEST:
        raise CorruptionError(f"backup manifest says {length} payload bytes, the file has "
                              f"{len(data) - HEADER.size}", path=where, offset=12)
    if crc32c(data[:16] + data[HEADER.size:]) != crc:
        raise CorruptionError("backup manifest fails its checksum", path=where, offset=16)
    if fmt != FORMAT:
        raise CorruptionError(f"backup manifest format {fmt} is not supported (this banyanstore "
                              f"reads format {FORMAT})", path=where, offset=8)
    try:
        obj = json.loads(data[HEADER.size:], parse_constant=_refuse_constant)
    except ValueError as exc:
        raise CorruptionError("backup manifest payload is not JSON", path=where,
                              offset=HEADER.size) from exc
    return _from_json(_Fields(obj, "manifest", where), where)


def _refuse_constant(name: str) -> Any:
    """JSON has no Infinity or NaN (Python's parser accepts them): damage, not a value."""
    raise ValueError(f"{name} is not a JSON number")


def _from_json(f: _Fields, where: str) -> BackupManifest:
    source = f.sub("source")
    version, flushed = f.integer("version"), f.integer("flushed_version")
    if flushed > version:
        raise CorruptionError(f"flushed_version {flushed} is above version {version}", path=where)
    keyspaces = _keyspaces(f, where)
    next_file = f.integer("next_file", 1)
    tables = [_table(_Fields(t, "table entry", where), keyspaces, version, next_file, where)
              for t in f.items("tables")]
    files = [t.table.file_no for t in tables]
    if len(set(files)) != len(files):
        raise CorruptionError("two table entries share a file number", path=where)
    uploaded = f.sub("uploaded")
    return BackupManifest(
        backup_id=_backup_id(f, where), created=_created(f, where), banyanstore=f.text("banyanstore"),
        store_format=_store_format(f, where), source_path=source.text("path"),
        source_host=source.text("host"), version=version, flushed_version=flushed,
        history_floor=_history_floor(f, version, where), next_file=next_file,
        keyspaces=keyspaces, time_map=_time_map(f, where), tables=tables,
        wal_tail=_wal_tail(f, flushed, version, where),
        uploaded_files=uploaded.integer("files"), uploaded_bytes=uploaded.integer("bytes"),
        expiry_time=_expiry_time(f, where))


def _expiry_time(f: _Fields, where: str) -> float:
    when = f.obj.get("expiry_time", 0.0)
    if not is_finite_number(when) or when < 0:
        raise CorruptionError(f"expiry_time must be a finite number >= 0, got {when!r:.80}",
                              path=where)
    return when


def _store_format(f: _Fields, where: str) -> int:
    """The store format of the backup's tables and WAL records: a newer one than this
    banyanstore writes is refused, as the store's own open refuses it (a restore would
    file those bytes in a store of this format)."""
    fmt = f.integer("store_format", 1)
    if fmt > STORE_FORMAT:
        raise CorruptionError(f"backup is of store format {fmt}: store format {fmt} is newer than "
                              f"this banyanstore supports ({STORE_FORMAT})", path=where)
    return fmt


def _backup_id(f: _Fields, where: str) -> str:
    backup_id = f.text("backup_id")
    if not BACKUP_ID.match(backup_id):
        raise CorruptionError(f"backup id {backup_id!r} is malformed", path=where)
    return backup_id


def _created(f: _Fields, where: str) -> str:
    created = f.text("created")
    try:
        parse_created(created)
    except ValueError:
        raise CorruptionError(f"creation time {created!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ",
                              path=where) from None
    return created


def parse_created(text: str) -> datetime:
    """The UTC time of a manifest's ``created`` field."""
    return datetime.strptime(text, CREATED_FORMAT).replace(tzinfo=UTC)


def _history_floor(f: _Fields, version: int, where: str) -> int:
    floor = f.integer("history_floor")
    if floor > version + 1:
        raise CorruptionError(f"history_floor {floor} is above version {version} + 1", path=where)
    return floor


def _keyspaces(f: _Fields, where: str) -> list[KeyspaceEntry]:
    out: list[KeyspaceEntry] = []
    for raw in f.items("keyspaces"):
        k = _Fields(raw, "keyspace", where)
        ttl = k.obj.get("ttl")
        if ttl is not None and (not is_finite_number(ttl) or ttl < 0):
            raise CorruptionError(f"keyspace ttl must be null or a finite number >= 0, got {ttl!r:.80}",
                                  path=where)
        out.append(KeyspaceEntry(k.integer("id", 0, MAX_KEYSPACE_ID), k.text("name"), ttl, "ttl" in k.obj))
    ids, names = [k.id for k in out], [k.name for k in out]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise CorruptionError("keyspace ids or names repeat", path=where)
    if 0 not in ids or any((k.id == 0) != (k.name == "default") for k in out):
        raise CorruptionError("keyspace 0 must be 'default'", path=where)
    return out


def _time_map(f: _Fields, where: str) -> list[tuple[int, int]]:
    out = []
    for pair in f.items("time_map"):
        if not (isinstance(pair, list) and len(pair) == 2
                and all(type(x) is int and 0 <= x <= MAX_U64 for x in pair)):
            raise CorruptionError(f"time_map sample {pair!r} is not [version, second], each "
                                  "must be an integer in [0, 2**64-1]", path=where)
        out.append((pair[0], pair[1]))
    return out


def _table(t: _Fields, keyspaces: list[KeyspaceEntry], version: int, next_file: int,
           where: str) -> TableEntry:
    sha = t.sha256()
    check_object_name(t.obj.get("object"), sha, where)
    info_f = t.sub("table")
    for key in ("ks", "file", "size", "min_v", "max_v", "entries", "tombstones"):
        info_f.integer(key)
    try:
        info = TableInfo.from_json(info_f.obj)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptionError(f"table entry is malformed: {exc}", path=where) from None
    if info.keyspace not in {k.id for k in keyspaces}:
        raise CorruptionError(f"table {info.file_no} belongs to unknown keyspace {info.keyspace}",
                              path=where)
    if not 1 <= info.file_no < next_file:
        raise CorruptionError(f"table file number {info.file_no} is outside [1, next_file "
                              f"{next_file})", path=where)
    if info.min_version > info.max_version or info.max_version > version:
        raise CorruptionError(f"table {info.file_no} versions [{info.min_version}, "
                              f"{info.max_version}] do not fit below version {version}", path=where)
    return TableEntry(sha, info.file_size, info)


def _wal_tail(f: _Fields, flushed: int, version: int, where: str) -> WalTailEntry | None:
    if f.obj.get("wal_tail") is None:
        return None
    w = f.sub("wal_tail")
    sha = w.sha256()
    check_object_name(w.obj.get("object"), sha, where)
    first, last = w.integer("first_version", 1), w.integer("last_version", 1)
    if not flushed < first <= last <= version:
        raise CorruptionError(f"WAL tail versions [{first}, {last}] do not fit in "
                              f"({flushed}, {version}]", path=where)
    return WalTailEntry(sha, w.integer("size"), w.integer("records", 1), first, last)
