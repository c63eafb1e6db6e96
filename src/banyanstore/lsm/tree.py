"""The tree: the one owner of an LSM store's mutable state (LevelDB's ``VersionSet``).

What a :class:`Tree` owns, and nobody else changes:

* the **manifest** -- the open file, the :class:`ManifestState` its edits build, and
  the **file numbers** handed out from it;
* the **keyspaces** (id, name, TTL) and each one's **published view**
  (``KeyspaceState.view``: memtable, immutable memtables, tables);
* the **latest version** readers read at, and the **history floor**;
* the **version floors**: history retention, each keyspace's TTL floor, and the
  versions pinned by open snapshots;
* **deferred deletions**: table files whose removal waits until a durable manifest
  no longer names them;
* the **WAL cut points**: the WAL is truncated only here, after the edit that allows it.

Who calls what: the write path (lsm/writer.py) publishes versions and seals
memtables; the flusher (lsm/flush.py) and the compactor (lsm/compaction.py)
allocate file numbers, read the floors and :meth:`Tree.apply` their changes;
checkpoints, recovery and stats use the methods named for them.  Readers
(lsm/keyspace.py, lsm/snapshot.py) read ``version``, views and floors.

Locking -- the rules, in one place:

* ``Tree._lock`` (the *state lock*, reentrant) guards the manifest (appends, file
  numbers), the keyspace map, view publication, the history floor, deferred
  deletions and the pins.  Every public method that changes one of them takes it
  itself; the private helpers marked ``REQUIRES: _lock`` run under it; no caller
  outside holds it, except inside :meth:`frozen_state`.
* ``version`` is assigned only by :meth:`publish_version` -- or, to save a call, in
  place by the single put's path (``Writer.write_one``, the compiled core's put) under
  the same rule -- which REQUIRES the
  caller to hold the write path's write lock (one writer), after the version's
  entries are in the memtables and its commit time is noted -- so a reader at
  ``version`` never sees half a batch, nor a TTL floor that takes it for expired.
* Views are immutable; a new one replaces ``ks.view`` in one assignment, under the
  state lock.  Readers take no lock: one attribute read gives a consistent view.
* :meth:`seal_memtables` REQUIRES the write lock (the active memtables take no
  writes while they are replaced).

The order of durable steps, for every change of the live tables (:meth:`apply`):

1. the caller has written and synced the new tables and the ``tables/`` directory;
2. the manifest edit is appended and fsynced -- the commit point.  If the append
   fails, the new tables are deferred for deletion (the edit may be durable);
3. the change is published: views swapped, the history floor raised;
4. the WAL is cut before ``wal_cut`` (a failure only leaves segments replay skips);
5. the tables the change dropped are deleted (their cached blocks evicted).

docs/store.md ("Who owns what") lists the crash state after each step.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .. import heaptrim
from ..arguments import version_type_error
from ..errors import (
    BanyanStoreError,
    StoreClosedError,
    VersionUnavailableError,
    check_version_sign,
    from_oserror,
)
from ..io.base import Env
from ..io.capped import OpenFileCap
from ..log.log import Log
from ..options import Options, table_options
from ..sstable.cache import BlockCache
from ..sstable.reader import TableReader
from .manifest import Manifest, ManifestState, TableInfo
from .memtable import Memtable
from .pins import SnapshotPins
from .timemap import TimeMap
from .view import ClosedView, KeyspaceState, View

__all__ = ["Tree", "Change", "Floors", "table_path"]

logger = logging.getLogger("banyanstore.tree")


def table_path(store_path: str, file_no: int) -> str:
    """Where table ``file_no`` of the store at ``store_path`` lives."""
    return f"{store_path}/tables/{file_no:06d}.sst"


@dataclass
class Change:
    """One change of the live tables, applied by :meth:`Tree.apply`.

    ``edit`` is the manifest edit (``add_tables``, ``remove_tables``,
    ``flushed_version``, ``wal_seq``, ``history_floor``...); ``added`` the tables its
    ``add_tables`` names (their ``TableInfo`` and open reader), written and synced --
    those of a keyspace dropped meanwhile leave the edit and are closed and deleted,
    and if the edit fails the others are deleted once a later manifest that does not
    name them is durable; ``views`` maps a keyspace id to the
    function building its new view from the current one (run under the state lock,
    after the edit is durable; skipped for a dropped keyspace); ``dropped`` the table
    readers the change removes (deleted once it is published); ``wal_cut`` the WAL
    sequence the edit no longer needs records below; ``time_map`` adds the time
    samples not yet in the manifest (a flush persists them with the versions it
    covers)."""

    edit: dict[str, Any]
    added: list[tuple[TableInfo, Any]] = field(default_factory=list)
    views: dict[int, Callable[[View], View]] = field(default_factory=dict)
    dropped: tuple[Any, ...] = ()
    wal_cut: int | None = None
    history_floor: int | None = None
    time_map: bool = False


@dataclass(frozen=True)
class Floors:
    """What a merge of one keyspace must keep (see lsm/merge.py): every version at or
    above ``history``, what each pinned version below it sees, and nothing older than
    ``ttl`` (0: no TTL)."""

    history: int
    pinned: tuple[int, ...]
    ttl: int


class Tree:
    """The keyspaces, views, versions, floors and manifest of one open store (see the
    module docstring for what it owns and its locking rules)."""

    __slots__ = ("path", "env", "options", "table_options", "cache", "clock", "version",
                 "history_floor", "closed", "_closed_why", "_timemap", "_lock", "_manifest", "_wal",
                 "_by_name", "_by_id", "_pins", "_ttl_cache", "_expiry_now", "_deferred", "table_files",
                 "_steady", "_anchor", "_dropped_at")

    def __init__(self, path: str, env: Env, options: Options, cache: BlockCache,
                 clock: Callable[[], float], steady: Callable[[], float] | None = None) -> None:
        self.path, self.env, self.options, self.cache, self.clock = path, env, options, cache, clock
        self._steady = steady  # a clock no wall-clock step moves (time.monotonic), or None
        # The wall clock and the steady one read together at open: retention_clock
        # measures time passed from here by the steady clock.
        self._anchor = None if steady is None else (clock(), steady())
        self.table_options = table_options(options)
        """What flushes and merges build tables with: any entry the store holds fits."""
        self.version = 0
        """The latest committed version, what reads read at (see :meth:`publish_version`)."""
        self.history_floor = 0
        """Reads at every version from this one up to ``version`` answer."""
        self.closed = False
        """Set by :meth:`mark_closed`: reads raise StoreClosedError from then on."""
        self._closed_why = "is closed"  # the end of the StoreClosedError's message
        self._timemap = TimeMap()  # noted by the write path, persisted by flushes
        self._lock = threading.RLock()
        self._manifest: Manifest | None = None
        self._wal: Log | None = None
        self._by_name: dict[str, KeyspaceState] = {}
        self._by_id: dict[int, KeyspaceState] = {}
        self._pins = SnapshotPins()  # versions of live snapshots (taken and closed on any thread)
        self._ttl_cache: dict[int, tuple[int, int, int]] = {}
        self._expiry_now = 0.0  # the latest time expiry was judged at (see expiry_clock)
        self._deferred: list[str] = []
        # Dropped keyspace id -> a WAL seq above every record of the keyspace: the id is
        # forgotten once the WAL starts there (_forget_dropped).
        self._dropped_at: dict[int, int] = {}
        self.table_files = None if options.max_open_files is None else \
            OpenFileCap(env, options.max_open_files)
        """The cap on open table descriptors (``max_open_files``), or None."""

    # -- loading ------------------------------------------------------------------------------
    def load(self, state: ManifestState, tables: dict[int, list[Any]], manifest: Manifest | None,
             wal: Log | None) -> None:
        """Take over the state a writer open read: the manifest's keyspaces with their
        ``tables`` (newest first), its counters and time map; ``manifest`` (None: read
        only) takes the edits, ``wal`` is cut by flushes."""
        with self._lock:
            self._manifest, self._wal = manifest, wal
            for ks_id, name in sorted(state.keyspaces.items()):
                view = View(Memtable(), (), tuple(tables.get(ks_id, ())))
                self._add(KeyspaceState(ks_id, name, view, state.keyspace_ttl.get(ks_id, self.options.ttl)))
            self.version = max(state.last_version, state.flushed_version)
            self.history_floor = state.history_floor
            self._timemap = TimeMap(state.time_map.samples)
            self._expiry_now = state.expiry_time  # (see expiry_clock)
            if wal is not None and manifest is not None:  # dropped before: records up to now
                self._dropped_at = dict.fromkeys(state.dropped, wal.last_seq + 1)

    def attach(self, manifest: Manifest, wal: Log, dropped: set[int]) -> None:
        """A writer's open, once every check passed and the state was loaded (with
        neither): the manifest the edits go to, the WAL flushes cut, and the keyspaces
        ``dropped`` before (records up to now)."""
        with self._lock:
            self._manifest, self._wal = manifest, wal
            self._dropped_at = dict.fromkeys(dropped, wal.last_seq + 1)

    def adopt(self, state: ManifestState, views: dict[int, View], timemap: TimeMap, floor: int,
              version: int) -> None:
        """A read-only store's catch-up (lsm/follower.py) read ``state``: take its
        keyspaces (new ones added, dropped ones dropped, TTLs updated), ``views``, time
        map, floor and version."""
        with self._lock:
            for gone in [k for k in self._by_id.values() if k.id not in state.keyspaces]:
                self._forget(gone)
                gone.drop(f"keyspace {gone.name!r} of store {self.path} was dropped")
            for ks_id, name in sorted(state.keyspaces.items()):
                ks = self._by_id.get(ks_id) or self._add(
                    KeyspaceState(ks_id, name, views.get(ks_id, View(Memtable(), (), ()))))
                ks.ttl = state.keyspace_ttl.get(ks_id, self.options.ttl)
            for ks_id, view in views.items():
                live = self._by_id.get(ks_id)
                if live is not None:
                    live.view = view
            self._timemap = timemap
            self.history_floor = floor
            self.version = version
            self._expiry_now = max(self._expiry_now, state.expiry_time)

    def _add(self, ks: KeyspaceState) -> KeyspaceState:
        self._by_id[ks.id] = ks
        self._by_name[ks.name] = ks
        return ks

    def _forget(self, ks: KeyspaceState) -> None:
        self._by_id.pop(ks.id, None)
        if self._by_name.get(ks.name) is ks:
            del self._by_name[ks.name]
        self._ttl_cache.pop(ks.id, None)

    # -- keyspaces ----------------------------------------------------------------------------
    def keyspace(self, name: str) -> KeyspaceState | None:
        """The keyspace called ``name``, or None."""
        return self._by_name.get(name)

    def keyspace_by_id(self, ks_id: int) -> KeyspaceState | None:
        """The keyspace with id ``ks_id``, or None."""
        return self._by_id.get(ks_id)

    def keyspaces(self) -> list[KeyspaceState]:
        """Every keyspace, by id (a copy: safe while keyspaces are added)."""
        return list(self._by_id.values())

    def names(self) -> list[str]:
        """The keyspace names, sorted."""
        return sorted(self._by_name)

    def add_keyspace(self, name: str, ttl: float | None) -> KeyspaceState:
        """Create keyspace ``name`` durably (one edit: the keyspace and its ``ttl``; None:
        the ``ttl`` option) and return it; the existing one if another thread created
        it first."""
        with self._lock:
            ks = self._by_name.get(name)
            if ks is not None:
                return ks
            assert self._manifest is not None
            state = self._manifest.state
            for ks_id, known in state.keyspaces.items():
                if known == name:  # durable, but a call interrupted before it added it here
                    return self._add(KeyspaceState(ks_id, name, View(Memtable(), (), ()),
                                                   state.keyspace_ttl.get(ks_id, self.options.ttl)))
            ks_id = state.next_keyspace_id()  # never a dropped one's
            edit: dict[str, Any] = {"add_keyspace": [ks_id, name]}
            if ttl is not None:  # one edit: the keyspace never exists without its TTL
                edit["keyspace_ttl"] = [ks_id, ttl]
            self._append(edit)
            return self._add(KeyspaceState(ks_id, name, View(Memtable(), (), ()),
                                           ttl if ttl is not None else self.options.ttl))

    def drop_keyspace(self, ks: KeyspaceState) -> None:
        """Drop ``ks`` durably (one ``drop_keyspace`` edit), then delete its tables
        (readers holding them keep reading: unlinked files stay readable through open
        descriptors; a failed delete is retried after the next edit, and an open
        deletes what is left).  Its handles raise KeyspaceNotFoundError from then on.
        REQUIRES: no write and no merge runs (the caller holds them off)."""
        with self._lock:
            assert self._manifest is not None
            state = self._manifest.state
            old = ks.view
            try:
                if ks.id in state.keyspaces:  # (else a call interrupted after its edit)
                    self._log_edit({"drop_keyspace": ks.id})
            finally:
                # Once the edit is applied, the keyspace goes here too -- also when the
                # call is interrupted (a Ctrl-C) after it: writes to it would be lost at
                # the next open, and a flush naming it would fail.
                if ks.id not in state.keyspaces and ks.dropped is None:
                    self._forget(ks)
                    old = ks.drop(f"keyspace {ks.name!r} of store {self.path} was dropped")
                    if self._wal is not None:  # no write runs: its records are all below
                        self._dropped_at[ks.id] = self._wal.last_seq + 1
        for t in old.tables:
            self.cache.evict_table(t.table_id)
            if not self._keep_open_for_readers(t):
                continue
            path = table_path(self.path, t.file_no)
            try:
                self.env.remove(path)
            except FileNotFoundError:
                pass
            except (BanyanStoreError, OSError) as exc:
                logger.warning("could not remove %s (retried later): %s", path, exc)
                with self._lock:
                    self._deferred.append(path)
        if old.tables:
            self._forget_deleted_obsolete()

    def has_ttl(self, ks: KeyspaceState, ttl: float | None) -> bool:
        """Whether ``ks`` has the TTL ``ttl`` already, stored: a writer compares with the
        manifest, not ``ks.ttl`` -- a keyspace given no TTL of its own shows the ``ttl``
        option there, which no open after this one may pass.  A read-only store stores
        nothing: there, what the keyspace is judged by."""
        with self._lock:
            if self._manifest is None:
                return ks.ttl == ttl
            stored = self._manifest.state.keyspace_ttl
            return ks.id in stored and stored[ks.id] == ttl and ks.ttl == ttl

    def set_ttl(self, ks: KeyspaceState, ttl: float | None) -> bool:
        """Record keyspace ``ks``'s TTL durably, then use it; False (nothing recorded)
        when ``ks`` was dropped meanwhile -- the manifest knows its id no more."""
        with self._lock:
            if ks.dropped is not None:
                return False
            self._append({"keyspace_ttl": [ks.id, ttl]})
            ks.ttl = ttl
            self._ttl_cache.pop(ks.id, None)
            return True

    # -- versions and floors --------------------------------------------------------------------
    def publish_version(self, version: int) -> None:
        """Make ``version`` the one reads read at.  REQUIRES: the write lock, and every
        entry of ``version`` added to its memtable."""
        self.version = version

    def note_time(self, version: int, ms: int) -> None:
        """``version`` committed at wall-clock ``ms`` (for TTL and retention floors)."""
        self._timemap.note(version, ms)

    def check_version(self, version: object) -> int:
        """``version`` if reads may ask for it; else TypeError or VersionUnavailableError."""
        if type(version) is not int:
            raise version_type_error(version)
        check_version_sign(version)
        if version > self.version:
            raise VersionUnavailableError(f"version {version} is above the latest committed "
                                          f"version {self.version}")
        if version < self.history_floor and not self._pins.holds(version):
            # Below the floor only the versions of live snapshots are whole: merges keep
            # every entry a live snapshot sees (lsm/merge.py), so they stay readable.
            raise VersionUnavailableError(
                f"version {version} is below the oldest version this store retains "
                f"({self.history_floor}) and no live snapshot pins it")
        return version

    def oldest_version(self) -> int:
        """The oldest version reads may ask for: the oldest pinned version, or the
        history floor if that is older."""
        pinned = min(self._pins.versions(), default=self.history_floor)
        return min(pinned, self.history_floor)

    def set_history_floor(self, version: int) -> None:
        """Raise the history floor to ``version`` durably (a lower one changes nothing)."""
        with self._lock:
            if version > self.history_floor:
                self._append({"history_floor": version})
                self.history_floor = version

    def ttl_floor(self, ks: KeyspaceState, version: int) -> int:
        """Entries of ``ks`` below this version are past their TTL (0: no TTL)."""
        ttl = ks.ttl
        if ttl is None:
            return 0
        cutoff_second = int(self.expiry_clock() - ttl) // 1
        latest = self.version
        cached = self._ttl_cache.get(ks.id)
        if cached is not None and cached[0] == cutoff_second and cached[2] == latest:
            return cached[1]
        floor = self._timemap.first_version_since(cutoff_second, latest)
        self._ttl_cache[ks.id] = (cutoff_second, floor, latest)
        return floor

    def expiry_clock(self) -> float:
        """The time TTLs are judged at: the wall clock, but never before a time expiry
        was judged at already nor before the second of the latest commit (persisted
        with the time map).  A clock that steps back (an NTP correction, a reopen by an
        earlier clock) so brings no expired entry back: merges drop what has expired,
        and what they have not dropped yet must read alike.  The time judged at is
        persisted (``expiry_time``) with every manifest edit of a flush, merge or TTL
        drop -- a merge's edit so carries the time it dropped entries at -- and at
        :meth:`close`: a reopen, a reader and a checkpoint start from it."""
        # (a float: an injected clock may return any real number, a Fraction too, and
        # the time is persisted as JSON)
        now = float(max(self.clock(), self._expiry_now, self._timemap.last_second))
        if now > self._expiry_now:  # (racing readers: each keeps the later time)
            self._expiry_now = now
        return now

    def floors(self, ks: KeyspaceState) -> Floors:
        """What a merge of ``ks`` starting now must keep."""
        with self._lock:
            history = max(self._retention_floor(), self.history_floor)
            pinned = tuple(v for v in self._pins.versions() if v < history)
        return Floors(history, pinned, self.ttl_floor(ks, self.version))

    def _retention_floor(self) -> int:
        """The oldest version ``history_retention`` asks merges to keep whole."""
        retention = self.options.history_retention
        latest = self.version
        if retention is None:
            return latest
        first = self._timemap.first_version_since(int(self.retention_clock() - retention), latest)
        return min(latest, first)

    def retention_clock(self) -> float:
        """The time ``history_retention`` is judged at: the wall clock, but never later
        than the wall clock at open plus the time the steady clock says has passed since.
        A wall clock stepping forward (an NTP correction) would make the newest history
        look old, and the floor a merge raises on it never comes down: every version of
        that history would be gone for good.  So a forward step counts for nothing until
        the store is reopened (the history it keeps meanwhile is the step's length more
        than asked, never less); a step back keeps more history, as the wall clock says.
        Without a steady clock (an injected wall clock alone), the wall clock."""
        now = self.clock()
        if self._anchor is None:
            return now
        assert self._steady is not None
        wall_at_open, steady_at_open = self._anchor
        return min(now, wall_at_open + (self._steady() - steady_at_open))

    def pin(self, version: int | None = None) -> int:
        """Keep what ``version`` (None: the latest) sees through merges until
        :meth:`unpin` (a snapshot); returns the version pinned.  The latest is read
        and pinned under the state lock, the lock :meth:`floors` reads pins under, so
        a merge either sees the pin or started at a floor no higher than it."""
        with self._lock:
            if version is None:
                version = self.version
            self._pins.take(version)
            return version

    def unpin(self, version: int) -> None:
        """Release one :meth:`pin` of ``version`` (without the state lock: the garbage
        collector closes snapshots on whichever thread it runs)."""
        self._pins.release(version)

    def retained_points(self) -> tuple[int, tuple[int, ...]]:
        """``(history floor, pinned versions below it)``: below the floor, merges keep of
        each key what a read at a pinned version or just below the floor sees (View.history).
        Read after the view it applies to: the floor rises before a merge's view is
        published (:meth:`apply`)."""
        with self._lock:
            floor = self.history_floor
            return floor, tuple(v for v in self._pins.versions() if v < floor)

    def pinned(self) -> int:
        """How many pins (open snapshots) there are."""
        return self._pins.live()

    # -- memtables and tables -------------------------------------------------------------------
    def memtables_empty(self) -> bool:
        """Whether no keyspace's active memtable holds an entry."""
        return not any(ks.view.mem.entries for ks in self.keyspaces())

    def seal_memtables(self) -> dict[int, Memtable]:
        """Publish new views with a fresh active memtable for every keyspace; the
        non-empty old ones move to the front of the immutable memtables and are
        returned (by keyspace id) for flushing.  REQUIRES: the write lock."""
        sealed: dict[int, Memtable] = {}
        with self._lock:
            for ks in self._by_id.values():
                old = ks.view
                if old.mem.entries:
                    sealed[ks.id] = old.mem
                    ks.view = View(Memtable(), (old.mem,) + old.imms, old.tables)
                else:
                    ks.view = View(Memtable(), old.imms, old.tables)
        return sealed

    def most_tables(self) -> int:
        """The most tables any keyspace has (what write back-pressure watches)."""
        return max(len(ks.view.tables) for ks in self.keyspaces())

    def allocate_file_no(self) -> int:
        """A file number never handed out before (persisted with the next edit)."""
        with self._lock:
            assert self._manifest is not None
            return self._manifest.state.allocate_file_no()

    def apply(self, change: Change) -> None:
        """Make ``change`` durable, publish it, cut the WAL, delete what it dropped --
        in that order, and only here (see the module docstring)."""
        with self._lock:
            edit = dict(change.edit)
            added = [(info, r) for info, r in change.added if info.keyspace in self._by_id]
            for info, reader in change.added:
                if info.keyspace not in self._by_id:  # dropped while the table was built
                    reader.close()
                    self._remove_quietly(table_path(self.path, info.file_no))
            if len(added) < len(change.added):
                edit["add_tables"] = [info.to_json() for info, _ in added]
            if change.time_map:
                edit["time_map"] = [list(s) for s in self._unpersisted_time_samples()]
            try:
                self._log_edit(edit)
            except BaseException:
                # The edit may or may not be durable: delete its new tables only once a
                # later manifest that does not name them is.
                self._deferred.extend(table_path(self.path, info.file_no) for info, _ in added)
                raise
            # The floor rises before the views change: a read takes its view first and
            # checks its version against the floor second, so it never pairs a view that
            # lacks history with a version below the new floor.
            if change.history_floor is not None:
                self.history_floor = max(self.history_floor, change.history_floor)
            for ks_id, build in change.views.items():
                ks = self._by_id.get(ks_id)
                if ks is not None:  # else dropped: its view went with it
                    ks.view = build(ks.view)
        if change.wal_cut is not None:
            self._cut_wal(change.wal_cut)
            self._forget_dropped()
        for t in change.dropped:
            self.cache.evict_table(getattr(t, "table_id", id(t)))
            if self._keep_open_for_readers(t):
                self._remove_quietly(table_path(self.path, t.file_no))
        if change.dropped:
            self._forget_deleted_obsolete()
            # A merge just freed its inputs' cached blocks -- up to the whole block
            # cache, thousands of block-sized heap chunks -- which glibc keeps resident
            # until they lie at the top of its heap (heaptrim.py); the cache refills
            # only as reads miss, so they would stay a second copy of it meanwhile.
            heaptrim.return_free_memory()

    def open_table(self, path: str) -> TableReader:
        """The table at ``path`` opened for this store's reads (under ``max_open_files``).
        A missing file is a StorageIOError: the store made it or the manifest names it, so
        something else removed it -- the env's plain FileNotFoundError (which callers of an
        env may take for "nothing there") would reach writers and ``close()`` otherwise."""
        opener = None if self.table_files is None else self.table_files.open
        try:
            return TableReader.open(self.env, path, self.cache, opener=opener)
        except FileNotFoundError as exc:
            raise from_oserror("open for reading", path, exc) from exc

    def _keep_open_for_readers(self, table: Any) -> bool:
        """Whether ``table``, dropped from the views, may be deleted now: readers of older
        views may still read it, so under ``max_open_files`` its descriptor is kept (an
        unlinked file cannot be opened again).  If that fails it stays on disk, an
        obsolete table the next open removes."""
        keep = getattr(table, "keep_file_open", None)
        if keep is None:
            return True
        try:
            keep()
        except (BanyanStoreError, OSError) as exc:
            logger.warning("table %s stays on disk until the next open: could not keep it "
                           "open for its readers: %s", getattr(table, "path", "?"), exc)
            return False
        return True

    def _forget_deleted_obsolete(self) -> None:
        """Stop carrying the numbers of removed tables whose files are gone for good.

        Every merge input, expired table and dropped keyspace's table joins the
        manifest state's ``obsolete`` set, and the whole-state edit of each new manifest
        carries that set, so that a file whose deletion was lost comes back explained.
        Nothing but an open emptied it: a writer running for months carried every table
        number it ever removed, in memory and in every manifest roll.  A number may go
        once its file is missing *and* the directory was synced after that (an unlink is
        durable only then): so look first, sync second -- a file removed between the two
        is dropped at the next call.  If the sync fails, nothing is forgotten.
        """
        assert self._manifest is not None
        state = self._manifest.state
        with self._lock:
            candidates = list(state.obsolete)
        gone = [n for n in candidates if not self.env.exists(table_path(self.path, n))]
        if not gone:
            return
        try:
            self.env.sync_dir(f"{self.path}/tables")
        except (BanyanStoreError, OSError) as exc:
            logger.warning("could not sync %s/tables: %s", self.path, exc)
            return
        with self._lock:
            state.obsolete.difference_update(gone)

    def _forget_dropped(self) -> None:
        """Stop carrying the ids of dropped keyspaces none of whose WAL records is left
        (the WAL now starts past them): recovery, followers, backups, verify and repair
        can meet no record of them any more, so only the highest id must stay (ids are
        never reused: ``ManifestState.forget_dropped``)."""
        if not self._dropped_at or self._wal is None or self._manifest is None:
            return
        first = self._wal.first_seq
        with self._lock:
            gone = [i for i, at in self._dropped_at.items() if at <= first]
            if gone:
                state = self._manifest.state
                state.forget_dropped(gone)
                for i in gone:
                    if i not in state.dropped:  # (the highest stays, until a higher one)
                        del self._dropped_at[i]

    def _cut_wal(self, seq: int) -> None:
        # The change is complete: its edit is durable and the views hold its tables.
        # Cutting the WAL only reclaims space, so a failure here must not fail the
        # change -- a retried flush would install the same entries a second time.  The
        # segments left behind are skipped by replay (below wal_seq) and cut next time.
        assert self._wal is not None
        try:
            self._wal.truncate_before(seq)
        except BanyanStoreError as exc:
            logger.warning("could not cut the WAL before seq %d: %s", seq, exc)

    def _remove_quietly(self, path: str) -> None:
        try:
            self.env.remove(path)
        except FileNotFoundError:
            pass
        except (BanyanStoreError, OSError) as exc:
            logger.warning("could not remove %s: %s", path, exc)

    # -- the manifest (REQUIRES: _lock) ----------------------------------------------------------
    def _append(self, edit: dict[str, Any]) -> None:
        assert self._manifest is not None
        self._manifest.append(edit)

    def _log_edit(self, edit: dict[str, Any]) -> None:
        """Durably append ``edit`` (with the current counters) to the manifest, then
        delete files whose removal waited for a manifest that does not name them."""
        assert self._manifest is not None
        state = self._manifest.state
        edit.setdefault("next_file", state.next_file)
        edit.setdefault("unfinished_from", state.unfinished_floor(edit))
        edit.setdefault("last_version", self.version)
        if state.expiry_time_news(self._expiry_now):
            edit.setdefault("expiry_time", self._expiry_now)
        self._manifest.append(edit)
        if self._deferred:
            live = {table_path(self.path, i.file_no) for ts in state.tables.values() for i in ts.values()}
            for p in [p for p in self._deferred if p not in live]:
                try:
                    self.env.remove(p)
                except FileNotFoundError:
                    pass
                except (BanyanStoreError, OSError):
                    continue
                self._deferred.remove(p)

    def _unpersisted_time_samples(self) -> list[tuple[int, int]]:
        """The samples a flush edit persists: those above the manifest's last one -- led
        by the version after it when thinning merged that version's sample into one at
        or below the manifest's last (timemap.py): the manifest would date it, and the
        versions up to the next sample, at that last one's earlier second."""
        assert self._manifest is not None
        persisted = self._manifest.state.time_map.samples
        if not persisted:
            return self._timemap.since_version(0)
        last_version, last_second = persisted[-1]
        newer = self._timemap.since_version(last_version)
        following = last_version + 1
        second = self._timemap.second_of(following)
        if (following <= self.version and second > last_second
                and (not newer or newer[0][0] > following)):
            return [(following, second), *newer]
        return newer

    # -- open or closed ---------------------------------------------------------------------------
    def check_open(self) -> None:
        """Raise StoreClosedError once the store is closed (the guard of its iterators,
        see lsm/iterators.py)."""
        if self.closed:
            self.raise_closed()

    def raise_closed(self) -> None:
        """Raise the StoreClosedError of this store (reads call it when ``closed``)."""
        raise StoreClosedError(f"store {self.path} {self._closed_why}")

    def closed_meanwhile(self, exc: BaseException) -> None:
        """A read's error path: raise StoreClosedError (from ``exc``) if the store is
        closed -- the read failed because :meth:`close` retired the files it was reading
        (see :meth:`close_tables`); else return, and the caller re-raises ``exc``."""
        if self.closed:
            raise StoreClosedError(f"store {self.path} {self._closed_why}") from exc

    def mark_closed(self, why: str = "is closed") -> None:
        """From now on reads raise StoreClosedError, saying the store ``why`` (the files
        close in :meth:`close`)."""
        self._closed_why = why
        self.closed = True

    # -- checkpoints and closing ------------------------------------------------------------------
    @contextmanager
    def frozen_state(self) -> Iterator[ManifestState]:
        """A copy of the manifest state, with changes of the live tables held off until
        the ``with`` block ends (a checkpoint links the tables it names meanwhile).  Its
        ``expiry_time`` is the latest time expiry was judged at, also by reads since the
        last edit: a copy opened by an earlier clock shows nothing this store showed
        expired."""
        with self._lock:
            assert self._manifest is not None
            state = copy.deepcopy(self._manifest.state)
            state.expiry_time = max(state.expiry_time, self._expiry_now)
            yield state

    def close(self, *, in_use: bool = True) -> list[BaseException]:
        """Close the manifest and every table; returns the errors (after trying all).
        ``in_use``: reads on other threads may still be using the tables (see
        :meth:`close_tables`); False after a failed open, when no reader can."""
        self.closed = True
        errors: list[BaseException] = []
        with self._lock:
            if self._manifest is not None:
                self._persist_expiry_time()
                try:
                    self._manifest.close()
                except (BanyanStoreError, OSError) as exc:
                    errors.append(exc)
        self.close_tables(in_use=in_use)
        return errors

    def _persist_expiry_time(self) -> None:
        """At close: record the time expiry was last judged at, if no edit has (reads
        since the last flush): so a reopen by an earlier clock shows none of what
        this open showed expired.  A failure loses no data -- a warning.
        REQUIRES: _lock."""
        assert self._manifest is not None
        if not self._manifest.state.expiry_time_news(self._expiry_now):
            return
        try:
            self._append({"expiry_time": self._expiry_now})
        except (BanyanStoreError, OSError) as exc:
            logger.warning("could not record the time expiry was judged at in the manifest "
                           "of %s: %s", self.path, exc)

    def close_tables(self, *, in_use: bool = True) -> None:
        """Give every keyspace a :class:`ClosedView` and close the tables of the views
        it replaces (readers holding older views keep theirs until they let go).

        With ``in_use`` (a store's close), reads that checked ``closed`` a moment before
        may be using them: the tables are *retired* (``TableReader.retire``), never closed
        under a reader, so each such read either completes on its table or fails -- and
        its error path (:meth:`closed_meanwhile`, the iterators' guards) reports
        StoreClosedError; no read reaches another file that took a freed descriptor's
        number.  The numbers are released as the last reader lets go of the tables."""
        closed = ClosedView(f"store {self.path} is closed")
        with self._lock:
            old = [ks.view for ks in self._by_id.values()]
            for ks in self._by_id.values():
                ks.view = closed
        for view in old:
            for t in view.tables:
                (getattr(t, "retire", t.close) if in_use else t.close)()
