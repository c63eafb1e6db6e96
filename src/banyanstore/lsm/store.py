"""The LSM Store: WAL-backed memtables, sorted string tables, MVCC versions.

Directory layout::

    <path>/LOCK                 advisory lock of the one writer
    <path>/CURRENT              names the manifest in use (see manifest.py)
    <path>/MANIFEST-NNNNNN      version edits
    <path>/wal/                 the write-ahead log (a banyanstore Log)
    <path>/tables/NNNNNN.sst    sorted string tables (see sstable/)

Write path (one writer at a time, under ``_write_lock``): take the next
version, append the WAL record, add the entries to the active memtables,
*then* publish the version -- readers read at ``store.version`` and so never
see a half-applied batch.  ``sync=True`` writes wait for the WAL's group
commit *after* releasing the lock, so concurrent writers share fdatasyncs.

Memtables of all keyspaces are switched together when their total reaches
``memtable_size`` (the WAL is cut at the same point), and flushed to tables by
a background thread (lsm/flush.py).  Crash states are listed in
docs/format/manifest.md.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from .. import shutdown
from ..arguments import as_path, check_seconds, check_sync
from ..errors import (
    BanyanStoreError,
    ConfigError,
    CorruptionError,
    DiskFullError,
    EntryTooLargeError,
    KeyspaceNotFoundError,
    ReadOnlyError,
    StorageIOError,
    StoreClosedError,
    StoreNotFoundError,
    VersionUnavailableError,
)
from ..io import Env, FileLock, make_env
from ..log.log import Log
from ..options import Options, resolve_options
from ..sstable.cache import BlockCache
from .batch import Batch
from .flush import Flusher, table_path
from .keyspace import Keyspace, as_bytes
from .layout import refuse_foreign_directory
from .manifest import Manifest, ManifestState
from .memtable import Memtable
from .pins import SnapshotPins
from .recovery import check_orphans, open_tables, open_wal, remove_orphans, replay_wal
from .timemap import TimeMap
from .view import KeyspaceState, View
from .wal import encode_batch, encode_one
from .workers import WorkerPools

__all__ = ["Store"]

logger = logging.getLogger("banyanstore.store")


class Store(Keyspace):
    """An open store.  Use :func:`banyanstore.open`; the store is the handle of
    its ``"default"`` keyspace (``put``, ``get``, ``scan``... act on it)."""

    __slots__ = ("path", "options", "_env", "_own_env", "_lock", "_wal", "_manifest",
                 "_write_lock", "_state_lock", "_keyspaces", "_ks_by_id", "_version",
                 "_history_floor", "_snapshots", "_closed", "_read_only", "_mem_bytes",
                 "_cache", "_flusher", "_timemap", "_next_sample_ms", "_sync_default", "_clock",
                 "_compactor", "_ttl_cache", "_deferred_deletes", "_max_key", "_max_value",
                 "_memtable_size", "_wal_append", "_wal_sync", "_workers", "_exit_token", "_wal_error",
                 "_writes_refused", "__weakref__")

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Any, *, options: Options | None = None, env: Env | None = None,
             clock: Any = None, **kwargs: Any) -> Store:
        """See :func:`banyanstore.open`.  ``clock`` (a ``time.time``-like callable)
        replaces the wall clock behind commit times, TTL and history retention
        (for tests and simulations)."""
        path = as_path(path)
        opts = resolve_options(options, kwargs)
        if opts.read_only and cls is Store:  # a reader that can catch up with a writer
            from .follower import FollowerStore
            cls = FollowerStore
        own_env = env is None
        env = make_env(opts) if env is None else env
        try:
            return cls(path, opts, env, own_env, clock)
        except BaseException:
            if own_env:
                env.close()
            raise

    def __init__(self, path: str, opts: Options, env: Env, own_env: bool,
                 clock: Any = None) -> None:
        self.path, self.options, self._env, self._own_env = path, opts, env, own_env
        self._clock = time.time if clock is None else clock
        self._read_only = opts.read_only
        self._closed = True  # until fully open
        # Set once a WAL append or sync failed: the store then only serves reads.
        self._wal_error: BaseException | None = None
        # closed, read-only or failed WAL: the one flag the write fast path checks
        self._writes_refused = True
        self._lock: FileLock | None = None
        self._write_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._snapshots = SnapshotPins()  # versions of live snapshots (any thread)
        self._mem_bytes = 0
        self._timemap = TimeMap()
        self._next_sample_ms = 0
        self._ttl_cache: dict[int, tuple[int, int, int]] = {}
        self._deferred_deletes: list[str] = []
        self._sync_default = opts.wal_sync == "always"
        self._max_key, self._max_value = opts.max_key_size, opts.max_value_size
        self._memtable_size = opts.memtable_size
        self._cache = BlockCache(opts.block_cache_size)
        self._flusher: Flusher | None = None
        self._workers = WorkerPools()
        self._compactor: Any = None
        self._wal: Log | None = None
        self._manifest: Manifest | None = None
        self._exit_token: int | None = None
        try:
            self._load()
            if not self._read_only:
                self._start_background()
        except BaseException:
            self._abort_open()
            raise
        self._closed = False
        self._writes_refused = self._read_only
        if not self._read_only:  # an exit without close() still closes it (shutdown.py)
            self._exit_token = shutdown.track(self)

    def _load(self) -> None:
        """Read the store from disk: manifest, tables, WAL (lsm/follower.py overrides it)."""
        state = self._open_files()
        self._install_state(state)
        replay_wal(self, state)

    def _check_existence(self) -> bool:
        """Whether the store exists; the errors of ``error_if_exists``, and of a missing
        store that may not be created."""
        env, opts, path = self._env, self.options, self.path
        exists = env.exists(f"{path}/CURRENT")
        if exists and opts.error_if_exists:
            raise ConfigError(f"store {path} already exists (error_if_exists=True)")
        if not exists:
            refuse_foreign_directory(env, path)
            if self._read_only or not opts.create_if_missing:
                if env.exists(path) and env.listdir(path):
                    raise CorruptionError("directory is not a banyanstore store (no CURRENT)", path=path)
                raise StoreNotFoundError(f"no store at {path} (create_if_missing="
                                         f"{opts.create_if_missing}, read_only={self._read_only})")
        return exists

    def _open_files(self) -> ManifestState:
        env, opts, path = self._env, self.options, self.path
        exists = self._check_existence()
        if not exists:
            env.mkdir(f"{path}/tables")
            env.mkdir(f"{path}/wal")
        if not self._read_only:
            self._lock = env.lock(f"{path}/LOCK")
        if exists:
            state = Manifest.load(env, path)
        else:
            self._refuse_to_recreate()
            state = ManifestState()
            # CURRENT first: a crash before it leaves no WAL segment behind, so the
            # half-created store is still recognised as new on the next open.
            self._manifest = Manifest.open_for_append(env, path, state)
        self._wal = open_wal(env, path, opts, state, existing=exists)
        self._wal_append, self._wal_sync = self._wal.append, self._wal.sync
        if not self._read_only and self._manifest is None:
            check_orphans(env, path, state)  # before the new manifest: refuse, change nothing
            self._manifest = Manifest.open_for_append(env, path, state)
        return state

    def _refuse_to_recreate(self) -> None:
        """No CURRENT: a new store -- unless data files say a store was here, in which
        case starting empty would silently drop (and then delete) its data."""
        env, path = self._env, self.path
        tables = [n for n in env.listdir(f"{path}/tables") if n.endswith(".sst")]
        wal = [n for n in env.listdir(f"{path}/wal") if n.endswith(".log")]
        if tables or wal:
            raise CorruptionError(
                f"CURRENT is missing but the store has {len(tables)} table(s) and {len(wal)} WAL "
                "segment(s); refusing to start an empty store over them (see `banyanstore "
                "repair`)", path=f"{path}/CURRENT")

    def _install_state(self, state: ManifestState) -> None:
        tables = open_tables(self._env, self.path, state, self._cache)
        self._keyspaces: dict[str, KeyspaceState] = {}
        self._ks_by_id: dict[int, KeyspaceState] = {}
        for ks_id, name in sorted(state.keyspaces.items()):
            view = View(Memtable(), (), tuple(tables.get(ks_id, ())))
            ks = KeyspaceState(ks_id, name, view, state.keyspace_ttl.get(ks_id, self.options.ttl))
            self._keyspaces[name] = ks
            self._ks_by_id[ks_id] = ks
        self._ks = self._keyspaces["default"]
        self._store = self
        self._version = max(state.last_version, state.flushed_version)
        self._history_floor = state.history_floor
        self._timemap = TimeMap(state.time_map.samples)
        if not self._read_only:
            remove_orphans(self._env, self.path, state)

    def _start_background(self) -> None:
        self._flusher = Flusher(self)
        self._flusher.start()
        if self.options.compaction:
            from .compaction import Compactor
            self._compactor = Compactor(self)
            self._compactor.start()

    def _abort_open(self) -> None:
        self._workers.shutdown()
        for closer in (getattr(self._compactor, "stop", None),
                       getattr(self._flusher, "stop", None),
                       getattr(self._wal, "close", None),
                       getattr(self._manifest, "close", None),
                       getattr(self._lock, "release", None)):
            if closer is not None:
                try:
                    closer()
                except Exception:  # noqa: BLE001 - the original error matters more
                    logger.exception("cleanup after a failed open")
        for ks in getattr(self, "_ks_by_id", {}).values():  # tables opened before the failure
            for t in ks.view.tables:
                t.close()
        if self._own_env:
            self._env.close()

    # -- keyspaces -------------------------------------------------------------------------
    def keyspace(self, name: str, *, ttl: float | None = None) -> Keyspace:
        """The keyspace called ``name``, created (durably) on first use.

        ``ttl`` (seconds): entries older than this expire; it is stored with the
        keyspace (given at creation or later) and outlives reopening.  None leaves
        the keyspace's TTL as it is (a new keyspace gets the ``ttl`` option)."""
        if not isinstance(name, str):
            raise TypeError(f"keyspace name must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("keyspace name must not be empty")
        ttl = check_seconds(ttl, "ttl")
        ks = self._keyspaces.get(name)
        if ks is None:
            self._check_writable()
            with self._write_lock, self._state_lock:
                ks = self._keyspaces.get(name)
                if ks is None:
                    assert self._manifest is not None
                    ks_id = self._manifest.state.next_keyspace_id()  # never a dropped one's
                    edit: dict[str, Any] = {"add_keyspace": [ks_id, name]}
                    if ttl is not None:  # one edit: the keyspace never exists without its TTL
                        edit["keyspace_ttl"] = [ks_id, ttl]
                    self._manifest.append(edit)
                    ks = KeyspaceState(ks_id, name, View(Memtable(), (), ()),
                                       ttl if ttl is not None else self.options.ttl)
                    self._ks_by_id[ks_id] = ks
                    self._keyspaces[name] = ks
        if ttl is not None and ks.ttl != ttl:
            self._set_ttl(ks, ttl)
        return Keyspace(self, ks)

    def _set_ttl(self, ks: KeyspaceState, ttl: float | None) -> None:
        self._check_writable()
        with self._state_lock:
            assert self._manifest is not None
            self._manifest.append({"keyspace_ttl": [ks.id, ttl]})
            ks.ttl = ttl
            self._ttl_cache.pop(ks.id, None)

    def keyspaces(self) -> list[str]:
        """The names of the keyspaces, sorted (``"default"`` among them)."""
        return sorted(self._keyspaces)

    def keyspace_info(self) -> dict[str, dict[str, Any]]:
        """Every keyspace with its settings, by name: ``{"id": int, "ttl": seconds or None}``.

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     _ = store.keyspace("index", ttl=60)
        ...     store.keyspace_info()
        {'default': {'id': 0, 'ttl': None}, 'index': {'id': 1, 'ttl': 60}}
        """
        return {name: {"id": ks.id, "ttl": ks.ttl} for name, ks in sorted(self._keyspaces.items())}

    def drop_keyspace(self, name: str) -> None:
        """Drop keyspace ``name`` with everything in it: durable and atomic (one manifest
        edit), so after a crash it is either wholly there or wholly gone.

        Its tables are deleted once the edit is durable (reads already running keep
        the files they opened); its memtables are discarded, and recovery skips its
        WAL records.  Handles of it (and batches holding its operations) then raise
        KeyspaceNotFoundError; ``store.keyspace(name)`` creates a new, empty keyspace
        of that name.  A drop is not versioned: snapshots lose the keyspace too.  The
        ``"default"`` keyspace cannot be dropped (ValueError).  The drop waits for a
        merge in progress.

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     index = store.keyspace("index")
        ...     index[b"k"] = b"v"
        ...     store.drop_keyspace("index")
        ...     store.keyspaces(), list(store.keyspace("index"))
        (['default'], [])
        """
        if not isinstance(name, str):
            raise TypeError(f"keyspace name must be a str, not {type(name).__name__}")
        if name == "default":
            raise ValueError("the default keyspace cannot be dropped")
        self._check_writable()
        with self._write_lock, self._merges_paused():
            self._check_writable()
            ks = self._resolve_keyspace(name)
            with self._state_lock:
                self._log_edit({"drop_keyspace": ks.id})
                del self._keyspaces[name]
                del self._ks_by_id[ks.id]
                self._ttl_cache.pop(ks.id, None)
                old = ks.drop(f"keyspace {name!r} of store {self.path} was dropped")
        self._reclaim_tables(old.tables)

    def _merges_paused(self) -> Any:
        """No merge runs or installs while this is held (REQUIRES: the write lock first)."""
        c = self._compactor
        return c.paused() if c is not None else contextlib.nullcontext()

    def _reclaim_tables(self, tables: Iterable[Any]) -> None:
        """Delete the files of tables no manifest edit names any more (readers holding
        them keep reading: unlinked files stay readable through open descriptors).  A
        failed delete is retried after the next edit; an open deletes what is left."""
        for t in tables:
            self._cache.evict_table(t.table_id)
            path = table_path(self.path, t.file_no)
            try:
                self._env.remove(path)
            except FileNotFoundError:
                pass
            except (BanyanStoreError, OSError) as exc:
                logger.warning("could not remove %s (retried later): %s", path, exc)
                self._defer_delete([path])

    def _resolve_keyspace(self, keyspace: object) -> KeyspaceState:
        """The keyspace an argument names (None: default).  Never creates one: a
        misspelt name in a batch must not become a new keyspace."""
        if keyspace is None:
            return self._keyspaces["default"]
        if isinstance(keyspace, Keyspace):
            if keyspace._store is not self:
                raise ValueError(f"keyspace {keyspace.name!r} belongs to another store")
            if keyspace._ks.dropped is not None:
                raise KeyspaceNotFoundError(keyspace._ks.dropped)
            return keyspace._ks
        if isinstance(keyspace, str):
            ks = self._keyspaces.get(keyspace)
            if ks is None:
                raise KeyspaceNotFoundError(
                    f"store {self.path} has no keyspace {keyspace!r} (it has "
                    f"{', '.join(map(repr, sorted(self._keyspaces)))}); create it first with "
                    f"store.keyspace({keyspace!r})")
            return ks
        raise TypeError(f"keyspace must be a name or a Keyspace, not {type(keyspace).__name__}")

    # -- writes ----------------------------------------------------------------------------
    def _raise_closed(self) -> None:
        raise StoreClosedError(f"store {self.path} is closed")

    def _check_open(self) -> None:
        """The guard of this store's iterators (lsm/iterators.py)."""
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        if self._read_only:
            raise ReadOnlyError(f"store {self.path} was opened read-only")
        if self._wal_error is not None:
            raise ReadOnlyError(f"store {self.path} is read-only after a failed WAL write "
                                f"({self._wal_error}); reads still work: close and reopen it "
                                "to write again") from self._wal_error

    def _wal_failed(self, exc: StorageIOError) -> None:
        """A WAL append or sync failed: whether the record reached the disk is unknown
        and the Log refuses more appends, so the store turns read-only (reads go on,
        close() works, a reopen recovers the WAL)."""
        if self._wal_error is None:
            logger.error("store %s: WAL write failed, the store is read-only until reopened: %s",
                         self.path, exc)
            self._wal_error = exc
            self._writes_refused = True

    def _check_entry(self, key: object, value: bytes | None) -> bytes:
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if len(key) > self.options.max_key_size:
            raise EntryTooLargeError(f"key of {len(key)} bytes exceeds max_key_size "
                                     f"({self.options.max_key_size})")
        if value is not None and len(value) > self.options.max_value_size:
            raise EntryTooLargeError(f"value of {len(value)} bytes exceeds max_value_size "
                                     f"({self.options.max_value_size})")
        return key

    def _write_one(self, ks: KeyspaceState, key: object, value: bytes | None,
                   sync: bool | None) -> int:
        # The hottest path of the engine: keep it to a handful of C-level calls.
        if sync is not None and sync is not True and sync is not False:
            check_sync(sync)
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if len(key) > self._max_key or (value is not None and len(value) > self._max_value):
            self._check_entry(key, value)
        with self._write_lock:
            if self._writes_refused:
                self._check_writable()
            if self._mem_bytes >= self._memtable_size:
                self._switch_memtables()
            v = self._version + 1
            ms = int(self._clock() * 1000)
            try:
                seq = self._wal_append(encode_one(v, ms, ks.id, key, value), sync=False)
            except StorageIOError as exc:
                self._wal_failed(exc)
                raise
            self._mem_bytes += ks.view.mem.add(key, v, value)
            self._version = v
            if ms >= self._next_sample_ms:
                self._sample_time(v, ms)
        if sync or (sync is None and self._sync_default):
            self._sync_wal(seq)
        return v

    def _sync_wal(self, seq: int) -> None:
        try:
            self._wal_sync(upto_seq=seq)
        except StorageIOError as exc:
            self._wal_failed(exc)
            raise

    def _write_batch(self, ops: list[tuple[KeyspaceState, bytes, bytes | None]],
                     sync: bool | None) -> int | None:
        check_sync(sync)
        if not ops:
            return None
        with self._write_lock:
            self._check_writable()
            for ks, _k, _v in ops:  # a keyspace dropped since the batch named it
                if ks.dropped is not None:
                    raise KeyspaceNotFoundError(ks.dropped)
            if self._mem_bytes >= self._memtable_size:
                self._switch_memtables()
            v = self._version + 1
            ms = int(self._clock() * 1000)
            try:
                seq = self._wal_append(encode_batch(v, ms, [(ks.id, k, val) for ks, k, val in ops]),
                                       sync=False)
            except StorageIOError as exc:
                self._wal_failed(exc)
                raise
            for ks, k, val in ops:
                self._mem_bytes += ks.view.mem.add(k, v, val)
            self._version = v
            if ms >= self._next_sample_ms:
                self._sample_time(v, ms)
        if sync or (sync is None and self._sync_default):
            self._sync_wal(seq)
        return v

    def _sample_time(self, version: int, ms: int) -> None:
        """The first write of a wall-clock second: remember it (see timemap.py)."""
        self._timemap.note(version, ms)
        self._next_sample_ms = (ms // 1000 + 1) * 1000

    def batch(self, *, sync: bool | None = None) -> Batch:
        """An atomic batch: ``with store.batch() as b: b.put(...); b.delete(...)``.
        Keyspaces named in it must exist (see :meth:`keyspace`)."""
        check_sync(sync)
        self._check_writable()
        return Batch(self, sync)

    # -- memtable switching (REQUIRES: _write_lock held) -----------------------------------
    def _switch_memtables(self) -> None:
        assert self._flusher is not None
        self._flusher.wait_for_room()  # stalls while too many memtables await flushing
        self._wait_for_merges()
        if not any(ks.view.mem.entries for ks in self._keyspaces.values()):
            return
        assert self._wal is not None
        try:
            self._wal.rotate()
        except StorageIOError as exc:
            self._wal_failed(exc)
            raise
        wal_seq = self._wal.last_seq + 1
        mems: dict[int, Memtable] = {}
        with self._state_lock:
            for ks in self._ks_by_id.values():
                old = ks.view
                if old.mem.entries:
                    mems[ks.id] = old.mem
                    ks.view = View(Memtable(), (old.mem,) + old.imms, old.tables)
                else:
                    ks.view = View(Memtable(), old.imms, old.tables)
        self._mem_bytes = 0
        self._flusher.submit(mems, self._version, wal_seq)

    def _wait_for_merges(self) -> None:
        """Back-pressure from compaction (REQUIRES: _write_lock): with many unmerged
        tables, slow the writer down; with too many, stall it until merges catch up
        (or raise the merge error, e.g. DiskFullError, while it persists)."""
        c, opts = self._compactor, self.options
        if c is None:
            return
        def worst() -> int:
            return max(len(ks.view.tables) for ks in self._ks_by_id.values())
        n = worst()
        if n < opts.max_tables_before_slowdown:
            return
        f = self._flusher
        assert f is not None
        began = time.monotonic()
        f.stalls += 1
        c.wake()
        try:
            if n < opts.max_tables_before_stall:
                time.sleep(min(0.1, 0.005 * (n - opts.max_tables_before_slowdown + 1)))
                return
            while worst() >= opts.max_tables_before_stall:
                # Only a failure of a merge tried since this stall began counts: an
                # older DiskFullError may predate space coming back.
                err = c.error
                if isinstance(err, DiskFullError) and c.error_at > began:
                    raise err
                c.wake()
                time.sleep(0.02)
        finally:
            f.stall_seconds += time.monotonic() - began

    def flush(self) -> None:
        """Write every memtable to tables now and wait until they are durable."""
        self._check_writable()
        assert self._flusher is not None
        with self._write_lock:
            self._switch_memtables()
        self._flusher.wait_idle()

    def sync(self) -> None:
        """Make every write so far durable (fdatasync of the WAL)."""
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        if not self._read_only:
            self._check_writable()  # after a failed WAL write nothing can be made durable
            assert self._wal is not None
            self._sync_wal(self._wal.last_seq)

    def compact(self, keyspace: object = None, *, start: bytes | None = None,
                end: bytes | None = None, progress: Any = None) -> dict[str, Any]:
        """Merge tables into as few as possible (see lsm/compaction.py): of ``keyspace``
        (default: all), those overlapping ``[start, end)``; ``progress(dict)`` is called
        after each merge."""
        start = None if start is None else as_bytes(start, "start")
        end = None if end is None else as_bytes(end, "end")
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable or None, not {type(progress).__name__}")
        self._check_writable()
        ks = None if keyspace is None else self._resolve_keyspace(keyspace)
        self.flush()
        if self._compactor is None:
            from .compaction import Compactor
            self._compactor = Compactor(self)
        return self._compactor.compact_all(ks, start=start, end=end, progress=progress)

    # -- manifest helpers (REQUIRES: _state_lock held) --------------------------------------
    def _allocate_file_no(self) -> int:
        with self._state_lock:
            assert self._manifest is not None
            return self._manifest.state.allocate_file_no()

    def _log_edit(self, edit: dict[str, Any]) -> None:
        """Durably append ``edit`` (with the current counters) to the manifest, then
        delete files whose removal waited for a manifest that does not name them."""
        assert self._manifest is not None
        state = self._manifest.state
        edit.setdefault("next_file", state.next_file)
        edit.setdefault("unfinished_from", state.unfinished_floor(edit))
        edit.setdefault("last_version", self._version)
        self._manifest.append(edit)
        if self._deferred_deletes:
            live = {f"{self.path}/tables/{i.file_no:06d}.sst"
                    for ts in state.tables.values() for i in ts.values()}
            for p in [p for p in self._deferred_deletes if p not in live]:
                try:
                    self._env.remove(p)
                except FileNotFoundError:
                    pass
                except (BanyanStoreError, OSError):
                    continue
                self._deferred_deletes.remove(p)

    def _unpersisted_time_samples(self) -> list[tuple[int, int]]:
        assert self._manifest is not None
        persisted = self._manifest.state.time_map.samples
        return self._timemap.since_version(persisted[-1][0] if persisted else 0)

    def _defer_delete(self, paths: list[str]) -> None:
        self._deferred_deletes.extend(paths)

    # -- versions --------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The latest committed version."""
        return self._version

    def _check_version(self, version: object) -> int:
        if type(version) is not int:
            raise TypeError(f"version must be an int, not {type(version).__name__}")
        if version > self._version:
            raise VersionUnavailableError(f"version {version} is above the latest committed "
                                          f"version {self._version}")
        if version < self._history_floor and not self._snapshots.holds(version):
            # Below the floor only the versions of live snapshots are whole: merges keep
            # every entry a live snapshot sees (lsm/merge.py), so they stay readable.
            raise VersionUnavailableError(
                f"version {version} is below the oldest version this store retains "
                f"({self._history_floor}) and no live snapshot pins it")
        return version

    def _ttl_floor(self, ks: KeyspaceState, version: int) -> int:
        """Entries of ``ks`` below this version are past their TTL (0: no TTL)."""
        ttl = ks.ttl
        if ttl is None:
            return 0
        cutoff_second = int(self._clock() - ttl) // 1
        cached = self._ttl_cache.get(ks.id)
        if cached is not None and cached[0] == cutoff_second and cached[2] == self._version:
            return cached[1]
        floor = self._timemap.first_version_since(cutoff_second, self._version)
        self._ttl_cache[ks.id] = (cutoff_second, floor, self._version)
        return floor

    def _retention_floor(self) -> int:
        """The oldest version ``history_retention`` asks merges to keep whole."""
        retention = self.options.history_retention
        latest = self._version
        if retention is None:
            return latest
        first = self._timemap.first_version_since(int(self._clock() - retention), latest)
        return min(latest, first)

    @property
    def history_floor(self) -> int:
        """Reads at every version from this one up to :attr:`version` answer."""
        return self._history_floor

    @property
    def oldest_version(self) -> int:
        """The oldest version reads may ask for: the version of the oldest live
        snapshot, or :attr:`history_floor` if that is older.  Between the two, only
        the versions that live snapshots pin answer (the others raise
        VersionUnavailableError): merges keep exactly what each snapshot sees."""
        pinned = min(self._snapshots.versions(), default=self._history_floor)
        return min(pinned, self._history_floor)

    def set_history_floor(self, version: int) -> None:
        """Declare that versions below ``version`` will not be read again: merges may
        reclaim them, and reads below it raise VersionUnavailableError."""
        self._check_writable()
        version = self._check_version(version) if version != self._version + 1 else version
        with self._state_lock:
            if version > self._history_floor:
                assert self._manifest is not None
                self._manifest.append({"history_floor": version})
                self._history_floor = version

    # -- snapshots and checkpoints ---------------------------------------------------------
    def snapshot(self) -> Any:
        """A consistent read view at the current version (see snapshot.py)."""
        from ..snapshot import Snapshot
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        with self._write_lock:
            return Snapshot(self, self._version)

    def checkpoint(self, dest: str | Any) -> int:
        """Write a consistent copy of the store to directory ``dest`` (absent or
        empty; a str, bytes or os.PathLike); returns its version."""
        from .checkpoint import write_checkpoint
        dest = as_path(dest, "dest")
        self._check_writable()
        return write_checkpoint(self, dest)

    # -- stats and closing -----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        from .stats import collect
        return collect(self)

    def close(self) -> None:
        """Flush memtables, sync everything and release the store.  Idempotent."""
        if self._closed:
            return
        if self._exit_token is not None:
            shutdown.untrack(self._exit_token)
        errors: list[BaseException] = []
        if not self._read_only and self._wal_error is None:
            try:
                self.flush()
            except BanyanStoreError as exc:
                errors.append(exc)  # the WAL still holds the data; report after cleanup
        # After a failed WAL write the memtables stay unflushed (their switch would cut
        # the WAL, which cannot be written): the next open replays them from the WAL.
        self._closed = self._writes_refused = True
        for closer in (getattr(self._compactor, "stop", None), getattr(self._flusher, "stop", None),
                       getattr(self._wal, "close", None), getattr(self._manifest, "close", None),
                       getattr(self._lock, "release", None)):
            if closer is None:
                continue
            try:
                closer()
            except (BanyanStoreError, OSError) as exc:
                errors.append(exc)
        self._workers.shutdown()
        for ks in self._ks_by_id.values():
            for t in ks.view.tables:
                t.close()
        if self._own_env:
            self._env.close()
        if errors:
            raise errors[0]

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"version {self._version}"
        return f"<banyanstore.Store {self.path!r} {state}>"

    # public names shared with Keyspace: put, delete, get, multi_get, scan, history, in, iter
    def _iter_keyspaces(self) -> Iterable[KeyspaceState]:
        return list(self._ks_by_id.values())

