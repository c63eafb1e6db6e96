"""The MANIFEST file: framing, appending, rolling, CURRENT, and reading it back.

Changes are appended as *version edits* (their schema and the state they build:
edits.py); replaying every edit of the current manifest file from the start
rebuilds the :class:`ManifestState`.  ``CURRENT`` names the manifest file in use and
is replaced crash-atomically (write temp, fsync, rename, fsync dir).  A new
manifest starts with one edit holding the whole state, so old files can be dropped.

Byte grammar (little endian)::

    manifest    := file_header record*
    file_header := magic:8 = "BNYMANI\\0"  format:u32 = 1  crc32c(magic..format):u32   # 16 bytes
    record      := length:u32  crc32c(payload):u32  payload:length            # one edit
    payload     := UTF-8 JSON object, ASCII only (never a NUL byte); its keys are tags
    CURRENT     := "BANYANSTORE-CURRENT 1 " manifest_name " " crc32c_hex8 "\\n"

What a crash can leave (docs/format/manifest.md has the reasoning): every append is
written and fsynced before the next one starts, so only the *last* record can be
unsynced at a crash, and of its bytes a crash keeps, per 512-byte sector, either what
was written or zeros (a sector never written), possibly cut short.  So a torn tail is
(1) a last record cut short, (2) zeros where its header should be, or (3) a complete
last record failing its checksum *with a zero-filled sector* in it -- and never a
record followed by an intact one.  Anything else is :class:`CorruptionError` naming
the file and offset.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from ..crc import crc32c
from ..errors import CorruptionError
from ..io.base import Env, WritableFile
from .edits import STORE_FORMAT, EditError, ManifestState, TableInfo, expand_snapshot

__all__ = ["ManifestState", "TableInfo", "Manifest", "ManifestRecord", "STORE_FORMAT", "replay",
           "walk_manifest", "apply_edits", "current_text", "parse_current", "SECTOR"]

MAGIC: Final = b"BNYMANI\0"
FILE_HEADER = struct.Struct("<8sII")
RECORD_HEADER = struct.Struct("<II")
assert FILE_HEADER.size == 16 and RECORD_HEADER.size == 8
CURRENT_PREFIX: Final = "BANYANSTORE-CURRENT 1 "
ROLL_BYTES: Final = 4 << 20
SECTOR: Final = 512  # the unit a power loss writes or loses (the smallest sector in use)


def _encode(edit: dict[str, Any]) -> bytes:
    payload = json.dumps(edit, separators=(",", ":"), allow_nan=False).encode()
    return RECORD_HEADER.pack(len(payload), crc32c(payload)) + payload


class Manifest:
    """The open manifest file of a store.  REQUIRES: callers serialise ``append``."""

    def __init__(self, env: Env, dirname: str, name: str, fh: WritableFile,
                 state: ManifestState) -> None:
        self.env, self.dirname, self.name, self._fh, self.state = env, dirname, name, fh, state
        self._needs_roll = False
        self._base = fh.size  # the whole-state edit that starts the file

    @property
    def path(self) -> str:
        return f"{self.dirname}/{self.name}"

    # -- creation and loading -------------------------------------------------------
    @classmethod
    def create(cls, env: Env, dirname: str, state: ManifestState) -> Manifest:
        """Write a new manifest holding ``state`` and point CURRENT at it."""
        name, fh = cls._write_new(env, dirname, state)
        return cls(env, dirname, name, fh, state)

    @staticmethod
    def _write_new(env: Env, dirname: str, state: ManifestState) -> tuple[str, WritableFile]:
        """Write a new manifest file holding ``state``, point CURRENT at it, and return
        its name and open handle (the edits that follow are appended there)."""
        file_no = state.next_file
        state.next_file += 1
        name = f"MANIFEST-{file_no:06d}"
        fh = env.open_writable(f"{dirname}/{name}")
        try:
            header = MAGIC + struct.pack("<I", STORE_FORMAT)
            fh.write(FILE_HEADER.pack(MAGIC, STORE_FORMAT, crc32c(header)))
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
        try:
            env.sync_dir(dirname)
            env.write_file_atomic(f"{dirname}/CURRENT", current_text(name).encode())
        except BaseException:
            fh.close()  # CURRENT may name the file by now: it stays
            raise
        return name, fh

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
        commit = self.state.prepare(edit)  # EditError before anything is written
        if self._needs_roll or self._roll_due():
            self.roll()
        try:
            self._fh.write(_encode(edit))
            self._fh.sync()
        except BaseException:
            self._needs_roll = True
            raise
        commit()

    def _roll_due(self) -> bool:
        """Whether the edits appended since the whole-state edit call for a new file.

        Measured from the whole-state edit, not from the start of the file, and at least
        that edit's size: a state larger than ROLL_BYTES (tens of thousands of tables)
        would otherwise roll -- rewrite and fsync the whole state -- on every append.
        So a file holds at most twice the larger of the state and ROLL_BYTES, and a roll
        costs at most as many bytes as the edits it replaces.
        """
        return self._fh.size - self._base >= max(ROLL_BYTES, self._base)

    def roll(self) -> None:
        """Move to a new manifest file holding the whole state."""
        old_fh, old_name = self._fh, self.name
        self.name, self._fh = self._write_new(self.env, self.dirname, self.state)
        self._needs_roll = False
        self._base = self._fh.size
        old_fh.close()
        try:
            self.env.remove(f"{self.dirname}/{old_name}")
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self._fh.close()


def current_text(manifest_name: str) -> str:
    """The exact contents of a CURRENT file naming ``manifest_name``."""
    return f"{CURRENT_PREFIX}{manifest_name} {crc32c(manifest_name.encode()):08x}\n"


def parse_current(raw: bytes, path: str) -> str:
    """The manifest name a CURRENT file holds; CorruptionError if it is malformed."""
    try:
        text = raw.decode()
        if not text.startswith(CURRENT_PREFIX) or not text.endswith("\n"):
            raise ValueError
        name, crc_hex = text[len(CURRENT_PREFIX):-1].split(" ")
        if int(crc_hex, 16) != crc32c(name.encode()) or not name.startswith("MANIFEST-"):
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
    """The records of a manifest file from offset ``start`` (a record boundary).  A torn
    tail (see the module docstring) is yielded last, with ``torn`` set; anything else
    that does not parse raises CorruptionError naming ``path`` and the record's offset."""
    _check_file_header(data, path)
    pos, n = start, len(data)
    while pos < n:
        if pos + RECORD_HEADER.size <= n:
            length, crc = RECORD_HEADER.unpack_from(data, pos)
            end = pos + RECORD_HEADER.size + length
            payload = data[pos + RECORD_HEADER.size:end]
            if length and end <= n and crc32c(payload) == crc:
                yield ManifestRecord(pos, length, _decode(payload, path, pos))
                pos = end
                continue
        torn = _torn_tail(data, pos, path)
        yield ManifestRecord(pos, n - pos, None, torn)
        return


def _check_file_header(data: bytes, path: str) -> None:
    if len(data) < FILE_HEADER.size:
        raise CorruptionError("manifest shorter than its header", path=path, offset=0)
    magic, fmt, crc = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC or crc != crc32c(data[:12]):
        raise CorruptionError("not a banyanstore manifest (bad magic or header checksum)",
                              path=path, offset=0)
    if fmt > STORE_FORMAT:
        raise CorruptionError(f"manifest format {fmt} is newer than supported ({STORE_FORMAT})",
                              path=path, offset=0)


def _decode(payload: bytes, path: str, pos: int) -> dict[str, Any]:
    try:
        edit = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CorruptionError("manifest edit is not valid JSON", path=path, offset=pos) from exc
    if not isinstance(edit, dict):
        raise CorruptionError("manifest edit is not a JSON object", path=path, offset=pos)
    return edit


def _torn_tail(data: bytes, pos: int, path: str) -> str:
    """Why the bytes from ``pos`` (where no intact record starts) are what a crash of the
    last append can leave; CorruptionError naming ``pos`` if they are not."""
    n = len(data)
    if _intact_record_after(data, pos):
        raise CorruptionError("damaged manifest record followed by intact records (not a torn "
                              "write: only the last append can be unsynced at a crash)",
                              path=path, offset=pos)
    if pos + RECORD_HEADER.size > n:
        return "partial record header"
    length, crc = RECORD_HEADER.unpack_from(data, pos)
    end = pos + RECORD_HEADER.size + length
    if length == 0:
        # The payload is never empty: zeros here are a header whose sector was never written.
        if not any(data[pos:min(n, (pos // SECTOR + 1) * SECTOR)]):
            return "zero-filled record header (never written)"
        raise CorruptionError("manifest record of length 0", path=path, offset=pos)
    if end > n:
        if crc32c(data[pos + RECORD_HEADER.size:]) == crc:
            raise CorruptionError(f"manifest record length {length} is damaged: the {n - pos} "
                                  "bytes present are the whole record", path=path, offset=pos)
        return f"record of {length} bytes cut short at {n - pos - RECORD_HEADER.size}"
    if end < n:
        raise CorruptionError("manifest edit fails its checksum and more data follows",
                              path=path, offset=pos)
    if _has_zeroed_sector(data, pos + 4, end):
        return "last record fails its checksum in a zero-filled (never written) sector"
    raise CorruptionError("last manifest edit is complete but fails its checksum: damage, not "
                          "a torn write (a crash leaves zeros, not other bytes)",
                          path=path, offset=pos)


def _has_zeroed_sector(data: bytes, start: int, end: int) -> bool:
    """Whether some 512-byte sector's share of ``data[start:end]`` is all zeros."""
    lo = start
    while lo < end:
        hi = min(end, (lo // SECTOR + 1) * SECTOR)
        if not any(data[lo:hi]):
            return True
        lo = hi
    return False


def _intact_record_after(data: bytes, pos: int) -> bool:
    """Whether a well-formed record (non-empty JSON object payload, right CRC) starts
    anywhere after ``pos``: then the damage at ``pos`` is not a torn tail."""
    n = len(data)
    at = data.find(b"{", pos + 1 + RECORD_HEADER.size)
    while at != -1:
        start = at - RECORD_HEADER.size
        length, crc = RECORD_HEADER.unpack_from(data, start)
        end = at + length
        if 2 <= length and end <= n and data[end - 1:end] == b"}" \
                and crc32c(data[at:end]) == crc:
            return True
        at = data.find(b"{", at + 1)
    return False


def replay(data: bytes, path: str) -> ManifestState:
    """Rebuild the state from the bytes of a manifest file.  Every edit is checked
    (edits.py); a bad one is CorruptionError naming the file and its offset."""
    state = ManifestState()
    if apply_edits(state, data, path, FILE_HEADER.size) == FILE_HEADER.size:
        raise CorruptionError("manifest holds no complete edit", path=path, offset=FILE_HEADER.size)
    try:
        state.check_tables()
    except EditError as exc:
        raise CorruptionError(f"manifest: {exc}", path=path, offset=FILE_HEADER.size) from None
    return state


def apply_edits(state: ManifestState, data: bytes, path: str, start: int) -> int:
    """Check and apply to ``state`` the complete edits of a manifest file from offset
    ``start`` (the file's first edit, the whole state, when ``start`` is the header's
    end); return the offset after the last one applied.  A torn tail is not applied: it
    was never acknowledged -- or, for a reader beside a live writer, it is still being
    written, and a later call from the returned offset picks it up."""
    end = start
    for rec in walk_manifest(data, path, start):
        if rec.edit is None:
            break
        try:
            edits = expand_snapshot(rec.edit, state) if rec.offset == FILE_HEADER.size else [rec.edit]
            for e in edits:
                state.apply(e)
        except EditError as exc:
            raise CorruptionError(f"manifest edit: {exc}", path=path, offset=rec.offset) from None
        end = rec.offset + RECORD_HEADER.size + rec.length
    state.edits_end, state.torn_tail = end, end < len(data)
    return end
