"""Snapshots: consistent read views of a store inside one process.

A snapshot is a version plus a pin in the store's tree (:meth:`Tree.pin`): while
it is open, merges keep every entry it can see (see lsm/compaction.py), so its
reads stay exact however the store changes -- also the store's own reads at
``version=snap.version``.  A snapshot of a read-only store also holds the views
it was taken on (``views``): the writer's merges do not know about it, so it
keeps the tables it read instead (lsm/follower.py), and the store's own reads at
its version follow the writer's history floor.  Its iterators raise
:class:`~banyanstore.errors.StoreClosedError` when read after the snapshot (or
its store) is closed.  For an on-disk copy, use :meth:`Store.checkpoint`.

>>> import banyanstore, tempfile
>>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
...     _ = store.put(b"k", b"old")
...     with store.snapshot() as snap:
...         _ = store.put(b"k", b"new")
...         snap.get(b"k"), store.get(b"k"), snap.version, b"k" in snap
(b'old', b'new', 1, True)
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any, Literal, TypeVar, overload

from ..arguments import BytesLike, as_bytes, as_keys, check_bool, check_limit
from ..errors import StoreClosedError
from ..handles import ProcessLocal
from .iterators import guarded, relative_bounds
from .keyspace import scan_bounds
from .mapping import ItemsView, KeysView, ValuesView
from .prefixed import PrefixedSnapshot, check_prefix
from .tree import Tree
from .view import EMPTY_VIEW, KeyspaceState, View

T = TypeVar("T")

__all__ = ["Snapshot", "OpenSnapshots"]


class OpenSnapshots:
    """A read-only store's open snapshots, which the store's close() closes: one left
    open could no longer be read (StoreClosedError, as it said ``closed``), but its
    views kept every table's descriptor number taken for as long as the program held
    the object."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: weakref.WeakSet[Snapshot] = weakref.WeakSet()
        self._closed = False

    def add(self, snap: Snapshot) -> None:
        """Track ``snap``; one taken as the store closes is closed at once."""
        with self._lock:
            if not self._closed:
                self._snapshots.add(snap)
                return
        snap.close()

    def close(self) -> None:
        """The store is closed: close every snapshot tracked."""
        with self._lock:
            self._closed = True
            snapshots, self._snapshots = list(self._snapshots), weakref.WeakSet()
        for snap in snapshots:
            snap.close()


class Snapshot(ProcessLocal):
    """A read-only view of a store as of :attr:`version`."""

    _handle_kind = "snapshot"  # (handles.py: what pickling refuses; its copy is its own)

    def __init__(self, tree: Tree, resolve: Callable[[Any], KeyspaceState],
                 version: int | None = None, views: Mapping[int, View] | None = None,
                 registry: OpenSnapshots | None = None) -> None:
        """Pin ``version`` (None: the latest) in ``tree``; ``resolve`` turns a
        ``keyspace=`` argument into the keyspace; ``views`` (a read-only store's) are
        the views to read instead of the keyspaces' current ones, and ``registry`` the
        store's, which closes the snapshot (and lets go of them) when the store closes."""
        self._tree = tree
        self._resolve = resolve
        self._views = views
        self._registry = registry
        self._close_lock = threading.Lock()  # close() from two threads releases one pin
        self._closed = True  # until pinned: close() must not unpin what was never pinned
        self.version = tree.pin(version)
        self._closed = False
        if registry is not None:
            registry.add(self)

    def _check_open(self) -> None:
        """Raise StoreClosedError if this snapshot or its store is closed (also the
        guard of its iterators, see lsm/iterators.py)."""
        if self._closed:
            raise StoreClosedError(f"snapshot at version {self.version} is closed")
        self._tree.check_open()

    def _ks(self, keyspace: Any) -> tuple[KeyspaceState, View]:
        views = self._views  # before the check: close() empties it after marking it closed
        self._check_open()
        ks = self._resolve(keyspace)
        if views is None:
            return ks, ks.view
        return ks, views.get(ks.id, EMPTY_VIEW)  # a keyspace created after the snapshot

    def __contains__(self, key: object) -> bool:
        """``key in snap``: a point lookup in the default keyspace."""
        return self.get(key) is not None  # type: ignore[call-overload]

    def __getitem__(self, key: BytesLike) -> bytes:
        """``snap[key]``: the value in the default keyspace; KeyError if absent or deleted."""
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[bytes]:
        """The live keys of the default keyspace, ascending."""
        return self.scan(keys_only=True)

    # The overloads give a type checker the values' type (see Keyspace.get and .scan).
    @overload
    def get(self, key: BytesLike, *, keyspace: Any = None) -> bytes | None: ...
    @overload
    def get(self, key: BytesLike, *, keyspace: Any = None, default: T) -> bytes | T: ...

    def get(self, key: BytesLike, *, keyspace: Any = None, default: Any = None) -> Any:
        """The value of ``key`` at the snapshot's version; ``default`` (None) if absent."""
        ks, view = self._ks(keyspace)
        key = as_bytes(key, "key")
        try:
            value = view.get(key, self.version, self._tree.ttl_floor(ks, self.version))
        except Exception as exc:
            self._tree.closed_meanwhile(exc)  # the store's close() raced the read
            raise
        return default if value is None else value

    def multi_get(self, keys: Iterable[BytesLike], *, keyspace: Any = None) -> list[bytes | None]:
        """The values of ``keys`` at the snapshot's version (None where absent), in one
        batched pass."""
        ks, view = self._ks(keyspace)
        keys = as_keys(keys)
        try:
            return view.multi_get(keys, self.version, self._tree.ttl_floor(ks, self.version),
                                  self._tree.env)
        except Exception as exc:
            self._tree.closed_meanwhile(exc)
            raise

    @overload
    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False, limit: int | None = None,
             keyspace: Any = None,
             keys_only: Literal[False] = False) -> Iterator[tuple[bytes, bytes]]: ...
    @overload
    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False, limit: int | None = None,
             keyspace: Any = None, keys_only: Literal[True]) -> Iterator[bytes]: ...
    @overload
    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False, limit: int | None = None,
             keyspace: Any = None, keys_only: bool) -> Iterator[Any]: ...

    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False, limit: int | None = None,
             keyspace: Any = None, keys_only: bool = False) -> Iterator[Any]:
        """``(key, value)`` at the snapshot's version, as :meth:`Store.scan`; with
        ``keys_only=True`` the keys alone (values are not decoded)."""
        ks, view = self._ks(keyspace)
        s, e = scan_bounds(start, end, prefix)
        check_bool(reverse, "reverse")
        check_bool(keys_only, "keys_only")
        check_limit(limit)
        try:
            return view.scan(s, e, self.version, self._tree.ttl_floor(ks, self.version),
                             reverse, limit, self._check_open, keys_only)
        except Exception as exc:
            self._tree.closed_meanwhile(exc)
            raise

    def relative_scan(self, prefix: BytesLike, start: BytesLike | None = None,
                      end: BytesLike | None = None, *, reverse: bool = False,
                      limit: int | None = None, keyspace: Any = None,
                      keys_only: bool = False) -> Iterator[Any]:
        """The rows of the keys starting with ``prefix`` in ``[prefix + start, prefix +
        end)``, each key without ``prefix`` (a prefix view's scan, lsm/prefixed.py: the
        compiled core makes each key from the bytes after it); the other arguments as
        :meth:`scan`'s."""
        ks, view = self._ks(keyspace)
        p = as_bytes(prefix, "prefix")
        s, e = relative_bounds(p, start, end)
        check_bool(reverse, "reverse")
        check_bool(keys_only, "keys_only")
        check_limit(limit)
        try:
            return view.scan(s, e, self.version, self._tree.ttl_floor(ks, self.version),
                             reverse, limit, self._check_open, keys_only, len(p))
        except Exception as exc:
            self._tree.closed_meanwhile(exc)
            raise

    def keys(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False, keyspace: Any = None) -> KeysView:
        """A lazy view of the keys at the snapshot's version (see ``Store.keys``)."""
        return KeysView(*self._view_args(start, end, prefix, reverse, keyspace))

    def values(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
               prefix: BytesLike | None = None, reverse: bool = False, keyspace: Any = None) -> ValuesView:
        """A lazy view of the values at the snapshot's version (see ``Store.values``)."""
        return ValuesView(*self._view_args(start, end, prefix, reverse, keyspace))

    def items(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
              prefix: BytesLike | None = None, reverse: bool = False, keyspace: Any = None) -> ItemsView:
        """A lazy view of ``(key, value)`` at the snapshot's version (see ``Store.items``).

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     store[b"a"] = b"1"
        ...     with store.snapshot() as snap:
        ...         store[b"b"] = b"2"
        ...         list(snap.items()), list(snap), snap[b"a"], snap.get(b"b", default=b"-")
        ([(b'a', b'1')], [b'a'], b'1', b'-')
        """
        return ItemsView(*self._view_args(start, end, prefix, reverse, keyspace))

    def _view_args(self, start: object, end: object, prefix: object, reverse: object,
                   keyspace: Any) -> tuple[Any, Any, bytes | None, bytes | None, bool]:
        self._ks(keyspace)  # a closed snapshot or an unknown keyspace fails now
        s, e = scan_bounds(start, end, prefix)
        check_bool(reverse, "reverse")
        return (partial(self.scan, keyspace=keyspace), partial(self.get, keyspace=keyspace), s, e,
                bool(reverse))

    def prefixed(self, prefix: BytesLike, *, keyspace: Any = None) -> PrefixedSnapshot:
        """The snapshot's ``keyspace`` seen through ``prefix``: its reads at the snapshot's
        version with keys relative to the prefix (lsm/prefixed.py); the view's ``close()``
        closes this snapshot.  ``prefix`` as for ``Store.prefixed``."""
        p = check_prefix(prefix, self._tree.options.max_key_size)
        self._ks(keyspace)  # a closed snapshot or an unknown keyspace fails now
        return PrefixedSnapshot(self, p, keyspace)

    def history(self, key: BytesLike, *, keyspace: Any = None) -> Iterator[tuple[int, bytes | None]]:
        """``(version, value | None)`` of ``key``'s retained writes up to the snapshot's
        version, newest first (None: a delete)."""
        ks, view = self._ks(keyspace)
        floor = self._tree.ttl_floor(ks, self.version)  # expired entries stay hidden
        key = as_bytes(key, "key")
        try:
            entries = view.history(key, self.version, *self._tree.retained_points())
        except Exception as exc:
            self._tree.closed_meanwhile(exc)
            raise
        return guarded([e for e in entries if e[0] >= floor], self._check_open)

    def close(self) -> None:
        """Release the snapshot (idempotent); merges may then reclaim what it pinned."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._views is not None:
            # A read-only store's views: let go of their tables now, not when the object
            # is freed -- the writer may have deleted them (their disk space and
            # descriptors were kept while the program held the closed snapshot).
            self._views = {}
        self._tree.unpin(self.version)


    @property
    def closed(self) -> bool:
        """True once the snapshot or its store is closed (also the parent's store in a
        forked child): when its reads raise StoreClosedError.  It said False while its
        store was closed and every read raised."""
        return self._closed or self._tree.closed

    def __copy__(self) -> Snapshot:
        """A new snapshot at the same version, with its own pin (a copy of the object
        would share this one's, and closing both would release it twice)."""
        self._check_open()
        twin = Snapshot(self._tree, self._resolve, self.version, self._views, self._registry)
        # Pinned first, checked again after: if this one was closed meanwhile (another
        # thread), a merge may have cut its version before the twin's pin took hold.
        if self._closed:
            twin.close()
            self._check_open()
        return twin

    def __deepcopy__(self, memo: dict[int, Any]) -> Snapshot:
        return self.__copy__()

    def __enter__(self) -> Snapshot:
        self._check_open()  # closed (or its store closed): raise here, as Store.__enter__ does
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"<banyanstore.Snapshot version={self.version}{' closed' if self.closed else ''}>"
