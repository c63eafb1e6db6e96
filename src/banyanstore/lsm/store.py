"""The LSM Store: WAL-backed memtables, sorted string tables, MVCC versions.

Directory layout::

    <path>/LOCK                 advisory lock of the one writer
    <path>/CURRENT              names the manifest in use (see manifest.py)
    <path>/MANIFEST-NNNNNN      version edits
    <path>/wal/                 the write-ahead log (a banyanstore Log)
    <path>/tables/NNNNNN.sst    sorted string tables (see sstable/)

A :class:`Store` is a handle: it opens and closes the store's files and threads,
checks arguments, and hands the work to the objects that own the state --
the :class:`~banyanstore.lsm.tree.Tree` (manifest, keyspaces, views, versions,
floors), the :class:`~banyanstore.lsm.writer.Writer` (the write path), the
:class:`~banyanstore.lsm.flush.Flusher` and the
:class:`~banyanstore.lsm.compaction.Compactor`.  docs/store.md ("Who owns what")
has the picture; crash states are listed in docs/format/manifest.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from functools import partial
from typing import Any

from .. import heaptrim, shutdown
from ..arguments import BytesLike, as_bytes, as_path, check_clock, check_seconds, check_sync, checked_clock
from ..errors import (
    BanyanStoreError,
    ConfigError,
    CorruptionError,
    KeyspaceNotFoundError,
    StoreNotFoundError,
)
from ..io import Env, FileLock, check_env, make_env
from ..log.log import Log
from ..options import Options, resolve_options
from ..sstable.cache import BlockCache
from ..sstable.format import MAX_KEYSPACE_NAME
from .batch import Batch
from .budget import MemoryBudget
from .checkpoint import write_checkpoint
from .compaction import Compactor
from .flush import Flusher
from .keyspace import Keyspace
from .layout import directory_names, refuse_foreign_directory, refuse_interrupted_checkpoint
from .manifest import Manifest, ManifestState
from .recovery import check_orphans, open_tables, open_wal, read_wal, remove_orphans, replay_wal
from .snapshot import Snapshot
from .stats import collect
from .tree import Tree
from .view import KeyspaceState
from .workers import WorkerPools
from .writer import Writer

__all__ = ["Store", "check_storable_name", "listed_names"]

logger = logging.getLogger("banyanstore.store")


def check_storable_name(name: str) -> None:
    """ValueError unless a new keyspace's ``name`` fits where every table records it: UTF-8
    of at most MAX_KEYSPACE_NAME bytes.  Checked before the keyspace is created: a name
    no table can hold made every flush of the store fail (and its close with it), and a
    longer one wrote tables that read back as corrupt."""
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        raise ValueError(f"keyspace name must be text UTF-8 can encode, not {name[:64]!r} "
                         "(it holds a lone surrogate)") from None
    if size > MAX_KEYSPACE_NAME:
        raise ValueError(f"keyspace name must be at most {MAX_KEYSPACE_NAME} bytes as UTF-8, "
                         f"not {size} ({name[:32]!r}...)")


NAMES_LISTED = 20
"""At most this many keyspace names in an error saying which ones a store has."""


def listed_names(names: list[str]) -> str:
    """``names`` for an error message: the first NAMES_LISTED, then how many more.  A
    store of thousands of keyspaces made a misspelt name's error list every one."""
    shown = ", ".join(map(repr, names[:NAMES_LISTED]))
    more = len(names) - NAMES_LISTED
    return f"{shown}, ... and {more} more" if more > 0 else shown


class Store(Keyspace):
    """An open store.  Use :func:`banyanstore.open`; the store is the handle of
    its ``"default"`` keyspace (``put``, ``get``, ``scan``... act on it)."""

    __slots__ = ("path", "options", "_env", "_own_env", "_lock", "_wal", "_cache", "_budget",
                 "_flusher", "_compactor", "_workers", "_read_only", "_exit_token", "_released",
                 "_opened", "__weakref__")
    _handle_kind = "store"

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Any, *, options: Options | None = None, env: Env | None = None,
             clock: Any = None, monotonic: Any = None, **kwargs: Any) -> Store:
        """Open a store of this class (:func:`banyanstore.open` picks the class: a
        :class:`~banyanstore.lsm.follower.FollowerStore` for ``read_only=True``).
        ``clock`` (a ``time.time``-like callable) replaces the wall clock behind commit
        times, TTL and history retention (for tests and simulations); ``monotonic`` (a
        ``time.monotonic``-like callable) the clock no step of the wall clock moves,
        which ``history_retention`` measures time passed by (default: ``time.monotonic``
        with the system clock; none with an injected ``clock``, whose time is then
        trusted as it is)."""
        path = as_path(path)
        check_env(env)
        check_clock(clock)
        check_clock(monotonic, "monotonic")
        opts = resolve_options(options, kwargs)
        if opts.read_only and cls is Store:
            raise ConfigError("a read-only store is opened with banyanstore.open(path, "
                              "read_only=True), which returns a reader that can follow a writer")
        own_env = env is None
        env = make_env(opts) if env is None else env
        # Made first and initialised here, so that this frame holds the store while its
        # __init__ runs: a Ctrl-C landing once the store is open -- as __init__ returns, or
        # in a subclass's __init__ after Store's (a reader's follow thread) -- left it open,
        # its threads running and LOCK held until exit, with nobody to close it.
        store = cls.__new__(cls)
        try:
            store.__init__(path, opts, env, own_env, clock, monotonic)  # type: ignore[misc]
            return store
        except BaseException:
            if not cls._close_after_interrupted_open(store) and own_env:
                env.close()
            raise

    def __init__(self, path: str, opts: Options, env: Env, own_env: bool,
                 clock: Any = None, monotonic: Any = None) -> None:
        self.path, self.options, self._env, self._own_env = path, opts, env, own_env
        # What history retention measures elapsed time by (Tree.retention_clock): the
        # monotonic clock beside the system one; an injected clock alone is a
        # simulation's time, trusted as it is.
        steady = (checked_clock(monotonic, "monotonic") if monotonic is not None
                  else time.monotonic if clock is None else None)
        clock = time.time if clock is None else checked_clock(clock)  # (a bad reading: named)
        self._read_only = opts.read_only
        self._lock: FileLock | None = None
        self._cache = BlockCache(opts.block_cache_size)
        self._budget = MemoryBudget(self._cache) if opts.memtables_share_cache else None
        self._flusher: Flusher | None = None
        self._compactor: Compactor | None = None
        self._workers = WorkerPools()
        self._wal: Log | None = None
        self._exit_token: int | None = None
        self._released = False  # close() ran to its end
        self._opened = False  # Store.__init__ ran to its end: close() undoes the open from then on
        # The handle of the "default" keyspace (its state is set by _load).
        self._store, self._tree = self, Tree(path, env, opts, self._cache, clock, steady)
        self._writer = Writer(self._tree, opts, clock, self._budget)
        self._fast_put, self._fast_delete = self._writer.fast_put, self._writer.fast_delete
        try:
            mem_bytes = self._load()
            if not self._read_only:
                self._start_background(mem_bytes)
                # an exit without close() still closes it (shutdown.py)
                self._exit_token = shutdown.track(self)
            self._opened = True
        except BaseException:
            self._opened = False
            self._abort_open()
            raise

    def _load(self) -> int:
        """Read the store from disk: manifest, tables, WAL (lsm/follower.py overrides
        it).  Returns the bytes the WAL's replay put into memtables."""
        mem_bytes = self._open_files()
        default = self._tree.keyspace("default")
        assert default is not None  # every manifest state has it
        self._ks = default
        return mem_bytes

    def _check_existence(self) -> bool:
        """Whether the store exists; the errors of ``error_if_exists``, and of a missing
        store that may not be created."""
        env, opts, path = self._env, self.options, self.path
        exists = env.exists(f"{path}/CURRENT")
        if exists:
            refuse_interrupted_checkpoint(env, path)
        if exists and opts.error_if_exists:
            raise ConfigError(f"store {path} already exists (error_if_exists=True)")
        if not exists:
            refuse_foreign_directory(env, path)
            if self._read_only or not opts.create_if_missing:
                if self._created_meanwhile():
                    return True
                raise StoreNotFoundError(f"no store at {path} (create_if_missing="
                                         f"{opts.create_if_missing}, read_only={self._read_only})")
        return exists

    def _created_meanwhile(self) -> bool:
        """No CURRENT was found: True if a writer creating the store wrote it since.
        Store names alone (tables/, wal/, LOCK, a manifest) are a creation under way or
        interrupted, which a writer starts afresh: no store yet (False).  Tables or WAL
        segments without CURRENT are damage."""
        try:
            self._refuse_data_without_current("opening it needs CURRENT")
        except CorruptionError:
            # the writer writes CURRENT before its first WAL segment
            if self._env.exists(f"{self.path}/CURRENT"):
                return True
            raise
        return False

    def _open_files(self) -> int:
        """Lock the store, read (or create) its manifest, tables and WAL, and write the
        writer's fresh manifest; returns the bytes the WAL's replay put into memtables.
        Everything is checked before anything is written (lsm/recovery.py)."""
        env, path = self._env, self.path
        exists = self._check_existence()
        if not exists:
            env.mkdir(path)  # (first: a path that cannot be made is named as given, not its tables/)
            env.mkdir(f"{path}/tables")
            env.mkdir(f"{path}/wal")
        self._lock = env.lock(f"{path}/LOCK")
        mem_bytes = 0
        if exists:
            state = Manifest.load(env, path)
            mem_bytes, read = self._check_and_replay(state)
            self._write_files(state, read)
        else:
            state = self._create_files()
        remove_orphans(env, path, state)
        return mem_bytes

    def _create_files(self) -> ManifestState:
        """A new store: its manifest, then its WAL; returns its (empty) state."""
        env, path = self._env, self.path
        self._refuse_to_recreate()
        state = ManifestState()
        # CURRENT first: a crash before it leaves no WAL segment behind, so the
        # half-created store is still recognised as new on the next open.
        manifest = Manifest.open_for_append(env, path, state)
        try:
            open_wal(env, path, self.options, state, existing=False, keep=self._keep_wal)
        except BaseException:
            manifest.close()
            raise
        assert self._wal is not None
        self._tree.load(state, {}, manifest, self._wal)
        return state

    def _check_and_replay(self, state: ManifestState) -> tuple[int, tuple[int, int] | None]:
        """Every check of an existing store's open, changing nothing on disk: the WAL
        (read-only) against the manifest, the tables and their leftovers, the WAL's
        records replayed into the memtables.  Returns the bytes replayed and the seqs
        the WAL was read from and to (None: no wal/)."""
        env, opts, path = self._env, self.options, self.path
        with read_wal(env, path, opts, state) as (wal, wal_incomplete):
            check_orphans(env, path, state, wal_incomplete=wal_incomplete)
            self._tree.load(state, open_tables(env, path, state, self._tree.open_table), None, None)
            if wal is None:
                return 0, None
            mem_bytes = replay_wal(self._tree, wal, opts, state)[1]
            return mem_bytes, (wal.first_seq, wal.last_seq)

    def _write_files(self, state: ManifestState, read: tuple[int, int] | None) -> None:
        """Once every check passed: open the WAL as its writer and write the fresh
        manifest the edits go to."""
        env, path = self._env, self.path
        open_wal(env, path, self.options, state, existing=True, keep=self._keep_wal)
        wal = self._wal
        assert wal is not None
        if read is not None and read != (wal.first_seq, wal.last_seq):
            raise CorruptionError(f"the WAL's writer reads seqs {wal.first_seq}..{wal.last_seq}, "
                                  f"a read-only open of it {read[0]}..{read[1]}", path=wal.path)
        if wal.first_seq > wal.last_seq:
            # An empty WAL (a clean close) holds no record of a dropped keyspace:
            # the new manifest need not carry their ids (Tree._forget_dropped).
            state.forget_dropped(set(state.dropped))
        self._tree.attach(Manifest.open_for_append(env, path, state), wal, state.dropped)

    def _keep_wal(self, wal: Log) -> None:
        """The WAL as its open returns it: from here on _abort_open closes it."""
        self._wal = wal

    def _refuse_to_recreate(self) -> None:
        """No CURRENT: a new store -- unless data files say a store was here, in which
        case starting empty would silently drop (and then delete) its data."""
        self._refuse_data_without_current("refusing to start an empty store over them")

    def _refuse_data_without_current(self, why: str) -> None:
        """CorruptionError if tables or WAL segments lie in the store without CURRENT
        (the writer creates CURRENT before its first WAL segment)."""
        env, path = self._env, self.path
        tables = [n for n in directory_names(env, f"{path}/tables", f"{path}/tables is a file")
                  if n.endswith(".sst")]
        wal = [n for n in directory_names(env, f"{path}/wal", f"{path}/wal is a file")
               if n.endswith(".log")]
        if tables or wal:
            raise CorruptionError(
                f"CURRENT is missing but the store has {len(tables)} table(s) and {len(wal)} WAL "
                f"segment(s); {why} (see `banyanstore repair`)", path=f"{path}/CURRENT")

    def _start_background(self, mem_bytes: int) -> None:
        """Start the flusher (and the compactor's thread, with ``compaction=True``) and
        let the writer take writes."""
        tree, opts = self._tree, self.options
        compactor = self._compactor = Compactor(tree, self._workers)
        running = compactor if opts.compaction else None
        self._flusher = Flusher(tree, self._workers,
                                on_flushed=None if running is None else running.wake,
                                budget=self._budget)
        self._flusher.start()
        if running is not None:
            running.start()
        assert self._wal is not None
        self._writer.start(self._wal, mem_bytes, self._flusher, running)

    def _abort_open(self) -> None:
        if self._exit_token is not None:
            shutdown.untrack(self._exit_token)
        self._workers.shutdown()
        self._writer.close()
        for closer in (getattr(self._compactor, "stop", None),
                       getattr(self._flusher, "stop", None),
                       getattr(self._wal, "close", None),
                       partial(self._tree.close, in_use=False),  # no reader has the store yet
                       getattr(self._lock, "release", None)):
            if closer is not None:
                try:
                    errors = closer()
                except Exception:  # noqa: BLE001 - the original error matters more
                    logger.exception("cleanup after a failed open")
                else:
                    for exc in errors or ():
                        logger.error("cleanup after a failed open: %s", exc)
        if self._own_env:
            self._env.close()

    def _close_after_interrupted_open(self) -> bool:
        """The open raised (a Ctrl-C): if the store had opened by then, close it as the
        caller would have and return True; False if Store.__init__ had not run to its
        end (it undid what it had opened itself).  Errors are logged: the interrupt is
        what the caller sees."""
        if not getattr(self, "_opened", False):  # (unset: raised before Store.__init__)
            return False
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the original error matters more
            logger.exception("closing store %s after an interrupted open", self.path)
        return True

    # -- keyspaces -------------------------------------------------------------------------
    def keyspace(self, name: str, *, ttl: float | None = None) -> Keyspace:
        """The keyspace called ``name``, created (durably) on first use: a non-empty str of
        at most 1024 bytes as UTF-8 (ValueError otherwise).

        ``ttl`` (seconds): entries older than this expire; it is stored with the
        keyspace (given at creation or later) and outlives reopening.  None leaves
        the keyspace's TTL as it is (a keyspace never given one follows the ``ttl``
        option of each open, which is not stored)."""
        if not isinstance(name, str):
            raise TypeError(f"keyspace name must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("keyspace name must not be empty")
        ttl = check_seconds(ttl, "ttl")
        # Closed: refused for every name.  Without this an existing keyspace's handle was
        # handed out (a new name reached the writer's check and raised), a handle whose
        # every read and write then raised StoreClosedError.
        self._tree.check_open()
        while True:
            ks = self._tree.keyspace(name)
            if ks is None:
                check_storable_name(name)
                ks = self._writer.create_keyspace(name, ttl)
            if ttl is None or self._tree.has_ttl(ks, ttl):  # (stored: the option is not)
                break
            self._writer.check_writable()
            if self._tree.set_ttl(ks, ttl):
                break
            # dropped by another thread since it was looked up: the name is free, and
            # this call creates the keyspace anew, as it would after the drop
        return self._keyspace_handle(ks)

    def _keyspace_handle(self, ks: KeyspaceState) -> Keyspace:
        """The handle :meth:`keyspace` returns for ``ks`` (a read-only store's reads
        differ)."""
        return Keyspace(self, self._tree, self._writer, ks)

    def keyspaces(self) -> list[str]:
        """The names of the keyspaces, sorted (``"default"`` among them)."""
        return self._tree.names()

    def keyspace_info(self) -> dict[str, dict[str, Any]]:
        """Every keyspace with its settings, by name: ``{"id": int, "ttl": seconds or None}``.

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     _ = store.keyspace("index", ttl=60)
        ...     store.keyspace_info()
        {'default': {'id': 0, 'ttl': None}, 'index': {'id': 1, 'ttl': 60}}
        """
        return {ks.name: {"id": ks.id, "ttl": ks.ttl}
                for ks in sorted(self._tree.keyspaces(), key=lambda k: k.name)}

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
        writer = self._writer
        writer.check_writable()
        merges = self._compactor.paused() if self._compactor is not None else contextlib.nullcontext()
        with writer.paused(), merges:  # no write, no merge: both may hold the keyspace
            writer.check_writable()
            self._tree.drop_keyspace(self._resolve_keyspace(name))

    def _resolve_keyspace(self, keyspace: object) -> KeyspaceState:
        """The keyspace an argument names (None: default).  Never creates one: a
        misspelt name in a batch must not become a new keyspace."""
        if keyspace is None:
            return self._ks
        if isinstance(keyspace, Keyspace):
            if keyspace.store is not self:
                raise ValueError(f"keyspace {keyspace.name!r} belongs to another store")
            state = self._tree.keyspace_by_id(keyspace.id)  # ids are never reused
            if state is None:
                raise KeyspaceNotFoundError(
                    f"keyspace {keyspace.name!r} of store {self.path} was dropped")
            return state
        if isinstance(keyspace, str):
            ks = self._tree.keyspace(keyspace)
            if ks is None:
                raise KeyspaceNotFoundError(
                    f"store {self.path} has no keyspace {keyspace!r} (it has "
                    f"{listed_names(self._tree.names())}); create it first with "
                    f"store.keyspace({keyspace!r})")
            return ks
        raise TypeError(f"keyspace must be a name or a Keyspace, not {type(keyspace).__name__}")

    # -- writes ----------------------------------------------------------------------------
    def batch(self, *, sync: bool | None = None) -> Batch:
        """An atomic batch: ``with store.batch() as b: b.put(...); b.delete(...)``.
        Keyspaces named in it must exist (see :meth:`keyspace`)."""
        check_sync(sync)
        self._writer.check_writable()
        return Batch(self._writer, self._resolve_keyspace, sync, self)

    def flush(self) -> None:
        """Write every memtable to tables now and wait until they are durable."""
        self._writer.flush()

    def sync(self) -> None:
        """Make every write so far durable (fdatasync of the WAL)."""
        self._tree.check_open()
        if not self._read_only:
            self._writer.sync()

    def compact(self, keyspace: object = None, *, start: BytesLike | None = None,
                end: BytesLike | None = None, progress: Any = None) -> dict[str, Any]:
        """Merge tables into as few as possible (see lsm/compaction.py): of ``keyspace``
        (default: all), those overlapping ``[start, end)``; ``progress(dict)`` is called
        after each merge."""
        start = None if start is None else as_bytes(start, "start")
        end = None if end is None else as_bytes(end, "end")
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable or None, not {type(progress).__name__}")
        self._writer.check_writable()
        ks = None if keyspace is None else self._resolve_keyspace(keyspace)
        self.flush()
        assert self._compactor is not None
        return self._compactor.compact_all(ks, start=start, end=end, progress=progress)

    # -- versions --------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The latest committed version."""
        return self._tree.version

    @property
    def history_floor(self) -> int:
        """Reads at every version from this one up to :attr:`version` answer."""
        return self._tree.history_floor

    @property
    def oldest_version(self) -> int:
        """The oldest version reads may ask for: the version of the oldest live
        snapshot, or :attr:`history_floor` if that is older.  Between the two, only
        the versions that live snapshots pin answer (the others raise
        VersionUnavailableError): merges keep exactly what each snapshot sees."""
        return self._tree.oldest_version()

    def set_history_floor(self, version: int) -> None:
        """Declare that versions below ``version`` will not be read again: merges may
        reclaim them, and reads below it raise VersionUnavailableError.  ``version`` is
        an int (not a bool) that reads may ask for, or ``version + 1`` (no version below
        the next write stays readable); TypeError naming it otherwise."""
        self._writer.check_writable()
        tree = self._tree
        if type(version) is not int or version != tree.version + 1:  # its type checked too
            version = tree.check_version(version)
        tree.set_history_floor(version)

    # -- snapshots and checkpoints ---------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """A consistent read view at the current version (see lsm/snapshot.py)."""
        self._tree.check_open()
        return Snapshot(self._tree, self._resolve_keyspace)

    def checkpoint(self, dest: str | Any) -> int:
        """Write a consistent copy of the store to directory ``dest`` (absent or
        empty; a str, bytes or os.PathLike); returns its version.  A file or a
        non-empty directory raises NotAStoreError (a FileExistsError), as for open()."""
        dest = as_path(dest, "dest")
        self._writer.check_writable()
        return write_checkpoint(self._tree, dest, self.flush)

    # -- stats and closing -----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """A plain dict of the store's figures: counters since the open (``stalls``,
        ``flush``, ``compaction``, ``wal``, ``block_cache``, ...), what it holds now
        (``keyspaces``: tables and memtables of each), ``implementation`` (``"native"``
        or ``"python"``: which engine reads) and ``closed``.  Answers after ``close()``
        too, as the store was then (docs/api.md, Store)."""
        return collect(self._tree, read_only=self._read_only, closed=self._tree.closed,
                       writer=self._writer, wal=self._wal, flusher=self._flusher,
                       compactor=self._compactor)

    def close(self) -> None:
        """Flush memtables, sync everything and release the store.  Idempotent: a close()
        interrupted part-way (Ctrl-C) is finished by the next call."""
        if self._released:
            return
        self._writer.refuse_reentry("close()")  # (before anything changes: the store stays open)
        errors = [] if self._tree.closed else self._stop_writes()
        errors += self._release()
        self._released = True
        # The block cache, the table indexes and the memtables are free now, but malloc
        # keeps freed memory resident unless it lies at the top of its heap (heaptrim.py):
        # without this a closed store's whole block cache stayed in the process.
        heaptrim.return_free_memory()
        if errors:
            raise errors[0]

    def _stop_writes(self) -> list[BaseException]:
        """close()'s first half: the memtables flushed, writes refused, reads raising
        StoreClosedError from now on.  Returns the errors to report after the rest."""
        if self._exit_token is not None:
            shutdown.untrack(self._exit_token)
            self._exit_token = None
        errors: list[BaseException] = []
        writer = self._writer
        if not self._read_only and not writer.wal_failed:
            try:
                writer.close_and_flush()  # (again after an interrupted close: a no-op if flushed)
            except BanyanStoreError as exc:
                errors.append(exc)  # the WAL still holds the data; report after cleanup
        # After a failed WAL write the memtables stay unflushed (their switch would cut
        # the WAL, which cannot be written): the next open replays them from the WAL.
        writer.close()
        self._tree.mark_closed()
        return errors

    def _release(self) -> list[BaseException]:
        """close()'s second half: threads stopped, files closed, the lock released.  Every
        step may run again: a close() interrupted here is finished by the next one."""
        errors: list[BaseException] = []
        for closer in (getattr(self._compactor, "stop", None), getattr(self._flusher, "stop", None),
                       getattr(self._wal, "close", None)):
            if closer is None:
                continue
            try:
                closer()
            except (BanyanStoreError, OSError) as exc:
                errors.append(exc)
        # The manifest and the tables -- retired, not closed: reads that checked `closed`
        # just before may still be using them (Tree.close_tables).
        errors += self._tree.close(in_use=True)
        if self._lock is not None:
            try:
                self._lock.release()
            except (BanyanStoreError, OSError) as exc:
                errors.append(exc)
        self._workers.shutdown()
        if self._own_env:
            self._env.close()
        return errors

    def disown(self) -> None:
        """Called in a forked child (shutdown.py): the store is the parent's.  Reads and
        writes raise StoreClosedError here, and close() releases nothing -- it would
        flush into the parent's files, cut the WAL under the parent's writes and unlock
        the parent's lock."""
        self._writer.close()
        self._tree.mark_closed(f"belongs to process {os.getppid()}: a forked child cannot use "
                               "it (open the store in the child)")
        if self._lock is not None:
            self._lock.disown()
        if self._wal is not None:
            self._wal.disown()
        self._workers.disown()
        self._released = True  # nothing of it is this process's to release

    @property
    def closed(self) -> bool:
        return self._tree.closed

    def __enter__(self) -> Store:
        # A closed store raises here, as Python's closed files do at `with f:`: every
        # call inside the block would raise anyway, and the error at the `with` names
        # the mistake (a handle used after its close) where it is made.
        self._tree.check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only " if self._read_only else ""
        state = "closed" if self._tree.closed else f"{mode}version {self.version}"
        return f"<banyanstore.Store {self.path!r} {state}>"

    # public names shared with Keyspace: put, delete, get, multi_get, scan, history, in, iter
