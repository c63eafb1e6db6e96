"""Read-only stores that follow the writer: ``banyanstore.open(path, read_only=True)``.

A read-only store may sit beside a writer in another process.  It opens what the
writer has left on disk at that moment (lsm/catchup.py explains how it copes with
the writer changing files meanwhile) and then stays there until it is told to
catch up:

* ``store.refresh()`` reads what the writer did since: new manifest edits (flushes,
  merges, new keyspaces, TTLs, the history floor), the tables they name, and the
  WAL written since -- so writes the writer has not flushed yet become visible;
* ``follow=True`` does that on a background thread every ``follow_interval_ms``.

What a follower sees: every write whose call had returned in the writer when the
refresh runs (the writer stores each WAL record into the file's shared mapping
before returning, log/writer.py) -- complete batches only, in version order.  How
stale it may be: up to one ``follow_interval_ms`` (or until your next
``refresh()``), in every ``wal_sync`` mode.

How a read stays consistent while a refresh publishes: the views of every
keyspace and the version they are complete up to are published as ONE object
(:class:`Published`), and a read takes both from it -- so it never pairs a new
view with an old version (a merged table may lack history an old version needs)
nor an old view with a new version (it would miss writes).  Snapshots and
iterators keep the views they were taken on; the tables in them stay readable
however the writer merges and deletes.  Nothing is shared with the writer but
files: a follower takes no lock the writer takes, and never writes.

>>> import banyanstore, tempfile
>>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d, wal_sync="always") as writer:
...     _ = writer.put(b"k", b"1")
...     with banyanstore.open(d, read_only=True) as reader:
...         _ = writer.put(b"k", b"2")
...         before = reader.get(b"k")
...         _ = reader.refresh()
...         before, reader.get(b"k"), reader.version == writer.version
(b'1', b'2', True)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from .. import heaptrim, shutdown
from ..arguments import BytesLike, check_bool, check_limit, version_type_error
from ..errors import ReadOnlyError, StoreClosedError, VersionUnavailableError, check_version_sign
from .background import BackgroundThread
from .catchup import CatchUp
from .iterators import relative_bounds
from .keyspace import Keyspace, as_bytes, as_keys, scan_bounds
from .snapshot import OpenSnapshots, Snapshot
from .store import Store, listed_names
from .tree import Tree
from .view import KeyspaceState, View

__all__ = ["FollowerStore", "FollowerKeyspace", "Published"]

logger = logging.getLogger("banyanstore.follower")


class Published:
    """What a follower's reads use: every keyspace's view and the version they are
    complete up to, published together in one assignment.  Immutable."""

    __slots__ = ("version", "floor", "views")

    def __init__(self, version: int, floor: int, views: dict[int, View]) -> None:
        self.version = version
        self.floor = floor
        self.views = views

    def check(self, version: object) -> int:
        """``version`` if this state can answer reads at it; else the error."""
        if type(version) is not int:
            raise version_type_error(version)
        check_version_sign(version)
        if version > self.version:
            raise VersionUnavailableError(f"version {version} is above the latest version this "
                                          f"reader has caught up with ({self.version}; see refresh())")
        if version < self.floor:
            raise VersionUnavailableError(f"version {version} is below the oldest version this "
                                          f"store retains ({self.floor})")
        return version


class _FollowerReads:
    """The read methods of a follower's keyspace handles: the same as
    :class:`~banyanstore.lsm.keyspace.Keyspace`'s, but the view and the version come
    from one :class:`Published` (the writer's read path reads them one after the
    other, which is exact there because a writer publishes its entries first)."""

    __slots__ = ()
    _store: FollowerStore
    _tree: Tree
    _ks: KeyspaceState

    def _read_point(self, version: int | None) -> tuple[View, int]:
        tree = self._tree
        if tree.closed:
            tree.raise_closed()
        pub = self._store.published
        # not yet published: empty; dropped: its DroppedView raises
        view = pub.views.get(self._ks.id, self._ks.view)
        return view, pub.version if version is None else pub.check(version)

    def get(self, key: BytesLike, version: int | None = None, default: Any = None) -> Any:
        """The latest value of ``key`` (or as of ``version``); ``default`` (None) if
        absent or deleted."""
        tree, ks = self._tree, self._ks  # _read_point inlined: the hottest read
        if tree.closed:
            tree.raise_closed()
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        pub = self._store.published
        view = pub.views.get(ks.id, ks.view)
        v = pub.version if version is None else pub.check(version)
        try:  # (free unless it raises: the error path reports a close() that raced the read)
            value = view.get(key, v, 0 if ks.ttl is None else tree.ttl_floor(ks, v))
        except Exception as exc:
            tree.closed_meanwhile(exc)
            raise
        if value is None:
            return default
        return value

    def _estimate_view(self) -> View:
        return self._read_point(None)[0]

    def multi_get(self, keys: Iterable[BytesLike], version: int | None = None) -> list[bytes | None]:
        """Values of ``keys`` in one batched pass (one batched IO call for tables)."""
        ks = as_keys(keys)
        view, v = self._read_point(version)
        tree = self._tree
        try:
            return view.multi_get(ks, v, tree.ttl_floor(self._ks, v), tree.env)
        except Exception as exc:
            tree.closed_meanwhile(exc)
            raise

    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None, keys_only: bool = False) -> Iterator[Any]:
        """``(key, value)`` for keys in ``[start, end)`` (and starting with ``prefix``),
        ascending (or descending with ``reverse``), at most ``limit`` of them; with
        ``keys_only=True`` the keys alone."""
        view, v = self._read_point(version)
        start, end = scan_bounds(start, end, prefix)
        return self._scan_view(view, v, start, end, reverse, limit, keys_only, 0)

    def relative_scan(self, prefix: BytesLike, start: BytesLike | None = None,
                      end: BytesLike | None = None, *, version: int | None = None,
                      reverse: bool = False, limit: int | None = None,
                      keys_only: bool = False) -> Iterator[Any]:
        """:meth:`Keyspace.relative_scan` of the published view."""
        view, v = self._read_point(version)
        p = as_bytes(prefix, "prefix")
        s, e = relative_bounds(p, start, end)
        return self._scan_view(view, v, s, e, reverse, limit, keys_only, len(p))

    def _scan_view(self, view: Any, v: int, start: bytes | None, end: bytes | None,
                   reverse: Any, limit: Any, keys_only: Any, skip: int) -> Iterator[Any]:
        """The rest of :meth:`scan` and :meth:`relative_scan` once the bounds are the
        parent's: the flags checked, then the published view's scan, keys cut by ``skip``."""
        check_bool(reverse, "reverse")
        check_bool(keys_only, "keys_only")
        check_limit(limit)
        tree = self._tree
        try:
            return view.scan(start, end, v, tree.ttl_floor(self._ks, v), reverse, limit,
                             tree.check_open, keys_only, skip)
        except Exception as exc:
            tree.closed_meanwhile(exc)
            raise

    def history(self, key: BytesLike) -> Iterator[tuple[int, bytes | None]]:
        """``(version, value-or-None)`` of every retained write of ``key``, newest first."""
        key = as_bytes(key, "key")
        view, v = self._read_point(None)
        return self._history_at(view, key, v)  # type: ignore[attr-defined]  # (a Keyspace mixin)


class FollowerKeyspace(_FollowerReads, Keyspace):
    """A named keyspace of a read-only store."""

    __slots__ = ()


class _FollowThread(BackgroundThread):
    """``follow=True``: refresh every ``follow_interval_ms``; a failed refresh is
    counted, logged and retried at the next interval (reads go on at the last state)."""

    thread_name = "banyanstore-follow"

    def __init__(self, store: FollowerStore, interval: float) -> None:
        super().__init__()
        self._store = store
        self._interval = interval
        self.failures = 0
        self.error: BaseException | None = None

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait(self._interval)
                if self._stopping:
                    return
            try:
                self._store.refresh()
            except StoreClosedError:
                return
            except Exception as exc:  # noqa: BLE001 - this thread must outlive any one failure
                self.failures += 1
                if repr(exc) != repr(self.error):
                    logger.warning("following %s: refresh failed (retrying every %.3f s): %s",
                                   self._store.path, self._interval, exc)
                self.error = exc
            else:
                self.error = None


class FollowerStore(_FollowerReads, Store):
    """A store opened with ``read_only=True`` (see the module docstring)."""

    __slots__ = ("_catchup", "published", "_refresh_lock", "_follow", "_refreshes",
                 "_refreshed_at", "_open_snapshots")

    published: Published
    """What reads use: every keyspace's view and the version they are complete up to."""

    def __init__(self, path: str, opts: Any, env: Any, own_env: bool, clock: Any = None,
                 monotonic: Any = None) -> None:
        self._refresh_lock = threading.Lock()
        self._follow: _FollowThread | None = None
        self._refreshes = 0
        self._refreshed_at = time.monotonic()
        self._open_snapshots = OpenSnapshots()
        super().__init__(path, opts, env, own_env, clock, monotonic)
        shutdown.track_reader(self)  # a closed handle in a forked child (see disown)
        if opts.follow:
            self._follow = _FollowThread(self, opts.follow_interval_ms / 1000)
            self._follow.start()

    def _load(self) -> int:
        self._check_existence()
        self._catchup = CatchUp(self._env, self.path, self.options, self._cache)
        try:
            self._catchup.run()
        except BaseException:
            self._catchup.close()
            raise
        self._wal = self._catchup.wal
        self._publish()
        ks = self._tree.keyspace("default")
        assert ks is not None
        self._ks = ks
        return 0  # no writes: the memtables the writer fills are the catch-up's

    # -- catching up -------------------------------------------------------------------------
    def refresh(self) -> int:
        """Catch up with the writer now; return the version caught up to.

        Reads the manifest edits, tables and WAL records the writer wrote since the
        last refresh (or the open).  Reads running meanwhile, snapshots and iterators
        keep the state they started on.  Raises CorruptionError for damage -- never
        because the writer moved on -- and keeps the last state readable then.
        """
        tree = self._tree
        if tree.closed:
            tree.raise_closed()
        with self._refresh_lock:
            if tree.closed:
                tree.raise_closed()
            if self._catchup.run():
                self._publish()
            self._refreshes += 1
            self._refreshed_at = time.monotonic()
            return self.published.version

    def _publish(self) -> None:
        """Make the catch-up's state the one reads use (REQUIRES: the refresh lock, or
        the open)."""
        c = self._catchup
        state = c.state
        views = {}
        for ks_id in sorted(state.keyspaces):  # a keyspace missing there was dropped
            mem, sealed = c.memtables_of(ks_id)
            views[ks_id] = View(mem, sealed, c.tables_of(ks_id))
        # The writer's history floor may lie above what this reader has seen (it counts
        # writes made after this refresh read the WAL).  Reads at or above flushed_version
        # stay exact all the same: tables hold nothing newer, so no merge dropped an
        # entry such a read needs; memtables are never reclaimed.
        floor = min(state.history_floor, state.flushed_version)
        self.published = pub = Published(c.version, floor, views)
        if self._budget is not None:
            # memtables_share_cache: the catch-up's memtables are charged to the block
            # cache as a writer's are (lsm/budget.py) -- a reader holding the writer's
            # WAL tail otherwise kept a full cache beside it.
            self._budget.set_active(sum(view.mem.approx_bytes for view in views.values()))
            self._budget.set_sealed(sum(m.approx_bytes for view in views.values() for m in view.imms))
        # the tree too: for keyspace lookups, TTL floors, stats() and checkpoints
        self._tree.adopt(state, views, c.timemap, pub.floor, pub.version)

    # -- the parts of Store a follower answers differently ---------------------------------------
    @property
    def version(self) -> int:
        """The version this reader has caught up with."""
        return self.published.version

    @property
    def oldest_version(self) -> int:
        """The oldest version reads may ask for."""
        return self.published.floor

    def keyspace(self, name: str, *, ttl: float | None = None) -> Keyspace:
        """The keyspace called ``name`` (ReadOnlyError if the store has none by that name:
        the writer may create it later, see :meth:`refresh`)."""
        try:
            return super().keyspace(name, ttl=ttl)  # the writer's checks, errors and lookup
        except ReadOnlyError as exc:
            # A missing name reached the create, whose refusal said only "opened
            # read-only", as if the user had asked to write: say which keyspace is
            # missing, which are there, and how a reader sees one its writer made since.
            if self._tree.keyspace(name) is not None:
                raise  # an existing keyspace given a new ttl: a write indeed
            there = listed_names(self.keyspaces())
            raise ReadOnlyError(f"{exc}: it has no keyspace {name!r} (it has {there}) and a "
                                "reader creates none; if its writer creates it, refresh() "
                                "(or follow=True) brings it here") from None

    def _keyspace_handle(self, ks: KeyspaceState) -> Keyspace:
        # One lookup, by Store.keyspace: a refresh on another thread may drop the
        # keyspace right after it (the handle then raises KeyspaceNotFoundError).
        return FollowerKeyspace(self, self._tree, self._writer, ks)

    def snapshot(self) -> Snapshot:
        """A consistent read view at the version caught up with; it keeps its tables and
        memtables whatever later refreshes bring."""
        self._tree.check_open()
        pub = self.published
        return Snapshot(self._tree, self._resolve_keyspace, pub.version, pub.views,
                        self._open_snapshots)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        # The writer's figure is its own active memtables' (the next switch waits for
        # them); a reader never writes, and its memtables are the catch-up's: the same
        # figure is theirs, as its keyspaces show them (it said 0 however much it held).
        out["memtable_bytes"] = sum(ks["memtable_bytes"] for ks in out["keyspaces"].values())
        f, c = self._follow, self._catchup
        out["follower"] = {
            "version": self.published.version, "refreshes": self._refreshes,
            "seconds_since_refresh": round(time.monotonic() - self._refreshed_at, 6),
            "retried_catch_ups": c.attempts, "pinned_tables": len(c.tables),
            "following": f is not None,
            "interval_ms": self.options.follow_interval_ms if f is not None else None,
            "failures": f.failures if f is not None else 0,
            "last_error": repr(f.error) if f is not None and f.error is not None else None,
        }
        return out

    def disown(self) -> None:
        """Called in a forked child (shutdown.py): the store is the parent's.  Its follow
        thread does not run here, and the parent's threads may have held the refresh
        lock at the fork, so it could neither follow nor refresh (nor close): reads
        raise StoreClosedError, as the parent's writers do, and close() releases
        nothing.  (No lock taken: the child has one thread.)"""
        self._follow = None  # the parent's thread
        self._refresh_lock = threading.Lock()
        super().disown()

    def close(self) -> None:
        """Stop following and release every file.  Idempotent."""
        if self._follow is not None:
            self._follow.stop()
        with self._refresh_lock:
            was_open = not self._tree.closed
            super().close()
            if was_open:
                # Reads now find the keyspaces' closed views (Tree.close_tables); the
                # published ones held the tables, which readers may still be using.
                pub = self.published
                self.published = Published(pub.version, pub.floor, {})
                self._open_snapshots.close()  # their views held the tables (reads on them raise now)
                self._catchup.close(in_use=True)
                heaptrim.return_free_memory()  # what the catch-up held (see Store.close)
