"""Reading a store that a writer (in another process) keeps changing: the state of a
read-only store, and how it catches up.

A read-only store is built from three things the writer leaves on disk, read in
this order:

1. the manifest CURRENT names (live tables, ``flushed_version``, ``wal_seq``);
2. the tables it names;
3. the WAL from ``wal_seq`` on: every write newer than ``flushed_version``.

The writer changes them in an order this relies on (docs/store.md): a table is
complete before an edit names it; an edit is durable before the WAL it covers
is cut and before a merge's inputs are deleted; a new manifest is complete
before CURRENT names it, and the old one is deleted after.  So every file the
writer deletes was dropped by a manifest change first, and a file that
vanishes under a reader means one of two things:

* **the writer moved on** -- CURRENT names another manifest, or the manifest
  has grown since this reader read it.  The reader reads the newer edits
  (which no longer need the file) and tries again: incrementally, keeping
  what it already holds, a bounded number of times;
* **the file is missing** -- nothing changed since the reader looked: that is
  damage, a :class:`CorruptionError` naming the file.

What was read is pinned: tables and WAL segments are opened as soon as they are
named and kept open, so a later deletion by the writer does not matter (POSIX
keeps unlinked files readable).

Memtables: WAL records are added to an *active* generation of memtables (one per
keyspace) -- each record whole, before the version that covers it is published,
so no reader sees half a batch.  When the writer has flushed since the active
generation began, it is sealed; a sealed generation is dropped once
``flushed_version`` reaches its newest version (the tables hold all of it).
Entries at or below ``flushed_version`` that are still in memtables are copies of
table entries, so reading memtables first stays exact.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptionError, LogRangeError, StorageIOError
from ..io.base import Env, RandomAccessFile
from ..log.log import Log
from ..log.opening import LogNotFoundError
from ..options import Options
from ..sstable.cache import BlockCache
from ..sstable.reader import TableReader
from .manifest import FILE_HEADER, Manifest, ManifestState, apply_edits
from .memtable import Memtable
from .recovery import check_table, lost_manifest_edits, missing_table_hint
from .timemap import TimeMap
from .wal import check_version_order, decode

__all__ = ["CatchUp", "Vanished", "MAX_ATTEMPTS"]

logger = logging.getLogger("banyanstore.follower")

MAX_ATTEMPTS = 200
"""Catch-up attempts while the writer keeps moving on under the reader.  Each
attempt only reads what changed since the last, so in practice the second one
succeeds; the bound turns a pathological race into an error instead of a hang."""


class Vanished(Exception):
    """Something the state read so far needs is gone: the writer moved on, or damage."""

    def __init__(self, message: str, path: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.message, self.path, self.offset = message, path, offset


@dataclass
class _ManifestMark:
    """Which manifest was read, and how much of it."""

    name: str = ""
    seen: int = 0  # its size when last read
    used: int = 0  # offset after the last edit applied
    head: int = 0  # CRC-32 of its first head_len bytes: its first edits, as first read
    head_len: int = 0

    def note_head(self, data: bytes) -> None:
        self.head_len = min(self.used, HEAD_BYTES)
        self.head = zlib.crc32(memoryview(data)[:self.head_len])

    def same_head(self, data: bytes) -> bool:
        """Whether ``data`` starts as the file first read did.  A manifest is only
        appended to, so the same file under the same name always does."""
        return len(data) >= self.seen and zlib.crc32(memoryview(data)[:self.head_len]) == self.head


HEAD_BYTES = 4096
"""How much of a manifest's start a reader compares to tell its file from another one
given the same name (a store deleted and created again at the path, or restored over)."""


def _later_second_first(sample: tuple[int, int]) -> tuple[int, int]:
    """Order of samples merged from two time maps: by version, and of two for one
    version the later second first -- TimeMap keeps the first.  Either map dates every
    version no earlier than it was written, but one thinned (lsm/timemap.py) dates a
    version later than one that was not, and only the later second covers the versions
    after it that the other map lacks: keeping the earlier one dated those early."""
    return sample[0], -sample[1]


class CatchUp:
    """The state of a read-only store and the code that brings it up to date.

    REQUIRES: one caller at a time (the store's refresh lock).  The objects it hands
    out (tables, memtables) are shared with readers, which never see an entry newer
    than the version they read at.
    """

    def __init__(self, env: Env, path: str, options: Options, cache: BlockCache) -> None:
        self._env, self._path, self._options, self._cache = env, path, options, cache
        self.state = ManifestState()
        self._mark = _ManifestMark()
        self._current = ""  # the manifest name CURRENT held when last read
        self.tables: dict[int, TableReader] = {}  # pinned, by file number
        self.wal: Log | None = None
        self._next_wal_seq = 1
        self.version = 0  # every write up to it is in tables or memtables
        self.timemap = TimeMap()
        self._merged_sample: tuple[int, int] | None = None
        self._active: dict[int, Memtable] = {}
        self._active_since = 0  # flushed_version when the active generation began
        self._sealed: list[tuple[int, dict[int, Memtable]]] = []  # (newest version, memtables)
        self.attempts = 0  # catch-up attempts that had to be repeated (stats)
        # A run that raised may have changed the state (edits applied, tables pinned)
        # without reporting it: the next run reports a change, so the store publishes.
        self._unreported = False

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> bool:
        """Catch up with the writer; True if anything changed since the last run that
        returned.  Raises CorruptionError for damage, never because the writer moved on."""
        changed, self._unreported = self._unreported, True
        for attempt in range(MAX_ATTEMPTS):
            try:
                changed |= self._read_manifest()
                changed |= self._pin_tables()
                changed |= self._read_wal()
                self._unreported = False
                return changed
            except Vanished as gone:
                if not self._writer_moved_on():
                    raise CorruptionError(gone.message, path=gone.path,
                                          offset=gone.offset) from gone.__cause__
                self.attempts += 1
                changed = True
                time.sleep(min(0.05, 0.001 * attempt))
        raise StorageIOError(f"store {self._path} kept changing under this reader: gave up after "
                             f"{MAX_ATTEMPTS} attempts to catch up", path=self._path, op="refresh")

    def _writer_moved_on(self) -> bool:
        """Has CURRENT or the manifest changed since the reader read them?"""
        try:
            name = Manifest.current_name(self._env, self._path)
        except FileNotFoundError:
            return False
        if name != self._current:
            return True
        if name != self._mark.name:  # CURRENT still names the manifest that was missing
            return False
        try:
            return self._env.file_size(f"{self._path}/{name}") != self._mark.seen
        except FileNotFoundError:
            return False

    # -- 1. the manifest ---------------------------------------------------------------------
    def _read_manifest(self) -> bool:
        env, mark = self._env, self._mark
        current = f"{self._path}/CURRENT"
        try:
            name = Manifest.current_name(env, self._path)
        except FileNotFoundError as exc:  # replaced by rename, so never absent while a writer runs
            raise CorruptionError("CURRENT is missing", path=current) from exc
        self._current = name
        mpath = f"{self._path}/{name}"
        try:
            if name == mark.name and env.file_size(mpath) == mark.seen:
                return False
            data = env.read_file(mpath)
        except FileNotFoundError as exc:
            raise Vanished(f"CURRENT names {name}, which is missing", mpath) from exc
        if name != mark.name:  # a new manifest (rolled, or a new writer): it holds the whole state
            state = ManifestState()
            used = apply_edits(state, data, mpath, FILE_HEADER.size)
            if used == FILE_HEADER.size:  # complete before CURRENT named it
                raise CorruptionError("manifest holds no complete edit", path=mpath,
                                      offset=FILE_HEADER.size)
            self._check_successor(state, mpath)
            self.state, self._mark = state, _ManifestMark(name, len(data), used)
            self._mark.note_head(data)
        else:
            if not mark.same_head(data):
                raise self._replaced(f"{name} is not the file of that name read before", mpath)
            mark.used = apply_edits(self.state, data, mpath, mark.used)
            mark.seen = len(data)
        return True

    def _check_successor(self, state: ManifestState, mpath: str) -> None:
        """A new manifest continues the state read so far: a writer carries
        ``next_file`` and ``flushed_version`` over to every manifest it writes (a roll,
        a reopen, a repair), and never lowers them.  Lower ones come from another
        store put at the path -- deleted and created again, or restored from a backup
        (or a repair that had no manifest to go by) -- whose file numbers and WAL seqs
        this reader's pinned tables and memtables do not belong to: reading on would
        mix the two stores' data."""
        old = self.state
        for what, was, now in (("next_file", old.next_file, state.next_file),
                               ("flushed_version", old.flushed_version, state.flushed_version)):
            if now < was:
                raise self._replaced(f"its {what} went back from {was} to {now}", mpath)

    def _replaced(self, why: str, mpath: str) -> CorruptionError:
        # Raised before anything of the new store is applied: the reader keeps its last
        # state, and every later refresh finds the same and raises again.
        return CorruptionError(f"the store was replaced under this reader ({why}; restored, "
                               "created again or rebuilt by a repair): open it again to read "
                               "the store now at the path", path=mpath)

    # -- 2. the tables ---------------------------------------------------------------------------
    def _pin_tables(self) -> bool:
        """Open every table the state names that is not open yet; forget the others
        (not closed: readers of older views may still use them; the descriptor goes
        with the last reference)."""
        live = {info.file_no: info for ts in self.state.tables.values() for info in ts.values()}
        gone = [n for n in self.tables if n not in live]
        for n in gone:
            del self.tables[n]
        new = [info for n, info in live.items() if n not in self.tables]
        # Open every new file before parsing any: the window in which the writer may
        # delete one after a merge is as short as it can be.
        files: list[tuple[Any, str, RandomAccessFile]] = []
        try:
            for info in new:
                tpath = f"{self._path}/tables/{info.file_no:06d}.sst"
                try:
                    files.append((info, tpath, self._env.open_readable(tpath)))
                except FileNotFoundError as exc:
                    hint = missing_table_hint(self._env, self._path, self.state)
                    raise Vanished("table named by the manifest is missing" + hint, tpath) from exc
            while files:
                info, tpath, f = files.pop(0)
                if f.size != info.file_size:
                    f.close()
                    raise CorruptionError(f"table is {f.size} bytes, the manifest says "
                                          f"{info.file_size}", path=tpath)
                try:
                    reader = TableReader(self._env, tpath, f, self._cache, True)
                except BaseException:
                    f.close()
                    raise
                try:
                    check_table(reader, info, tpath)
                except BaseException:
                    reader.close()
                    raise
                reader.file_no = info.file_no
                self.tables[info.file_no] = reader
        finally:
            for _info, _tpath, f in files:
                f.close()
        return bool(gone or new)

    def tables_of(self, ks_id: int) -> tuple[TableReader, ...]:
        """The open tables of a keyspace, newest (highest versions) first."""
        readers = [self.tables[n] for n in self.state.tables.get(ks_id, {}) if n in self.tables]
        readers.sort(key=lambda r: r.max_version, reverse=True)
        return tuple(readers)

    # -- 3. the WAL ----------------------------------------------------------------------------
    def _open_wal(self) -> Log:
        wal_dir = f"{self._path}/wal"
        opts = self._options.replace(read_only=True, create_if_missing=False, error_if_exists=False)
        try:
            return Log.open(wal_dir, options=opts, env=self._env, lock=False)
        except LogNotFoundError as exc:
            raise Vanished("the store has no wal/ directory", wal_dir) from exc

    def _read_wal(self) -> bool:
        state = self.state
        flushed = state.flushed_version
        if self.wal is None:
            self.wal = self._open_wal()
            self.timemap = TimeMap(state.time_map.samples)
        else:
            self.wal.refresh()
            self._merge_time_samples()
        wal = self.wal
        changed = self._retire_memtables(flushed)
        start = max(self._next_wal_seq, state.wal_seq)
        if start == state.wal_seq < wal.first_seq:
            self._check_manifest_edits(wal.first_seq)
        if start < wal.first_seq:
            self._missing(f"the WAL starts at seq {wal.first_seq}, but the manifest needs records "
                          f"from seq {start}", wal.path)
            start = wal.first_seq
        if start > wal.last_seq + 1:
            self._missing(f"the WAL ends at seq {wal.last_seq}, before seq {start} where the "
                          "manifest says replay starts", wal.path)
            start = state.wal_seq = self._next_wal_seq = wal.last_seq + 1
        if start <= wal.last_seq:
            changed |= self._apply_records(wal, start, flushed)
        if flushed > self.version:
            self.version, changed = flushed, True
        return changed

    def _apply_records(self, wal: Log, start: int, flushed: int) -> bool:
        """Add the WAL records from seq ``start`` on, newer than ``flushed``, to the
        active memtables; True if there were any."""
        changed = False
        where = f"{self._path}/wal"
        known, dropped = self.state.keyspaces, self.state.dropped
        gaps_allowed = self._options.skip_damaged_records  # damaged records were skipped
        try:
            expected = start
            previous = 0  # the version of the record before (wal.check_version_order)
            for seq, record in wal.read(start, check_gaps=False):
                if seq != expected and not gaps_allowed:  # a segment in the middle is gone
                    self._missing(f"WAL records {expected}..{seq - 1} are missing", where)
                expected = seq + 1
                rec = decode(record, f"{where} (record {seq})")
                version, ms = rec.version, rec.commit_ms
                check_version_order(version, previous, f"{where} (record {seq})")
                previous = version
                if version > self.version and version > flushed:
                    for ks_id in rec.keyspaces():  # a batch goes in whole or not at all
                        if ks_id not in known and ks_id not in dropped:
                            raise Vanished(f"WAL record {seq} writes to keyspace {ks_id}, which "
                                           "the manifest does not name", where)
                    for ks_id, key, value in rec.ops:
                        if ks_id in dropped:
                            continue  # written before the keyspace was dropped
                        mem = self._active.get(ks_id)
                        if mem is None:
                            mem = self._active[ks_id] = Memtable()
                        mem.add(key, version, value)
                    for ks_id, lo, hi in rec.ranges:
                        if ks_id in dropped:
                            continue
                        mem = self._active.get(ks_id)
                        if mem is None:
                            mem = self._active[ks_id] = Memtable()
                        mem.add_range(lo, hi, version)
                    self.version = version
                    self.timemap.note(version, ms)
                    changed = True
                self._next_wal_seq = seq + 1
        except LogRangeError as exc:  # pinned segments make this unexpected; treat it like a gap
            raise Vanished(f"WAL records went away while being read: {exc}", where) from exc
        return changed

    def _check_manifest_edits(self, wal_first_seq: int) -> None:
        """The WAL starts after the manifest's ``wal_seq``: Vanished naming the manifest
        when it lost edits (recovery.lost_manifest_edits) -- retried if the writer moved
        on, else CorruptionError even with ``skip_missing``: the tables its lost edits
        added hold the records, and reading on would give a store shorter than its files."""
        mpath = f"{self._path}/{self._mark.name}"
        lost = lost_manifest_edits(self._env, self._path, self.state, mpath, wal_first_seq)
        if lost is not None:
            raise Vanished(lost.message, mpath, lost.offset)

    def _missing(self, message: str, path: str) -> None:
        """WAL records this state needs are not there: Vanished (retried if the writer
        moved on, else CorruptionError) -- or, with ``wal_recovery="skip_missing"`` and a
        writer that did not move on, a warning, and the records are skipped."""
        if self._options.wal_recovery != "skip_missing" or self._writer_moved_on():
            raise Vanished(f"{message}; the records in it are lost (open with "
                           "wal_recovery='skip_missing' to open without them)", path)
        logger.warning("%s (%s): skipped, wal_recovery='skip_missing'", message, path)

    def _retire_memtables(self, flushed: int) -> bool:
        """Seal the active generation if the writer flushed since it began; drop the
        sealed generations the tables now hold entirely."""
        changed = False
        if flushed > self._active_since:
            if any(m.entries for m in self._active.values()):
                self._sealed.append((self.version, self._active))
                self._active = {}
                changed = True
            self._active_since = flushed
        kept = [(newest, mems) for newest, mems in self._sealed if newest > flushed]
        if len(kept) != len(self._sealed):
            self._sealed, changed = kept, True
        return changed

    def _merge_time_samples(self) -> None:
        """Samples the manifest holds that this reader never saw in the WAL (their
        records were flushed before it read them) join the time map: a new object,
        readers keep using the old one meanwhile."""
        theirs = self.state.time_map.samples
        if theirs and theirs[-1] != self._merged_sample:
            self._merged_sample = theirs[-1]
            ours = set(self.timemap.samples)
            if not ours.issuperset(theirs):
                self.timemap = TimeMap(sorted(ours.union(theirs), key=_later_second_first))

    def memtables_of(self, ks_id: int) -> tuple[Memtable, tuple[Memtable, ...]]:
        """The active memtable of a keyspace and its sealed ones, newest first."""
        mem = self._active.get(ks_id)
        if mem is None:
            mem = self._active[ks_id] = Memtable()
        sealed = tuple(m for _newest, mems in reversed(self._sealed)
                       if (m := mems.get(ks_id)) is not None and m.entries)
        return mem, sealed

    def close(self, *, in_use: bool = False) -> None:
        """Close the WAL and every pinned table; ``in_use``: reads on other threads may
        still be using the tables (a store's close), so they are retired instead
        (``TableReader.retire``: no read reaches another file that reuses a number)."""
        for t in self.tables.values():
            if in_use:
                t.retire()
            else:
                t.close()
        self.tables.clear()
        if self.wal is not None:
            self.wal.close()

