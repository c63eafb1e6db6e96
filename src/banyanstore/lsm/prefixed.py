"""Prefix views: a store, keyspace or snapshot seen through a key prefix (as plyvel's
``prefixed_db``).

``store.prefixed(b"svc/a/")`` is a handle whose keys are relative to the prefix: its
``put(b"k", v)`` writes ``b"svc/a/k"``, its scans yield ``b"k"``, and nothing it does
reaches a key outside the prefix.  A view holds nothing of its own -- the parent
handle and the prefix -- so it is free to make, and a closed store (a dropped
keyspace, a closed snapshot) makes it raise what the parent raises.

A scan of the view reads the parent's ``[prefix + start, prefix + end)`` and, with no
end, ``[prefix, prefix_end(prefix))`` (to the end of the keyspace past a prefix of 0xff
bytes only: every key from such a prefix on starts with it).  So every row the parent
yields is the view's: no filter.  The parent's scan cuts the prefix off its keys
(``relative_scan``): the compiled merge makes each key from the bytes after it, the
pure-Python paths cut them in C calls (lsm/iterators.py's ``cut_keys``), no Python
frame per row.  Nested views compose into one prefix, so a view of a view costs what a
view costs.

>>> import banyanstore, tempfile
>>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
...     svc = store.prefixed(b"svc/")
...     a = svc.prefixed(b"a/")
...     _ = a.put(b"cpu", b"1"); _ = store.put(b"svc/b/cpu", b"2"); _ = store.put(b"x", b"3")
...     with store.batch() as b:
...         a.in_batch(b).put(b"mem", b"4")
...         svc.in_batch(b).delete(b"b/cpu")
...     list(a.items()), list(svc), store[b"svc/a/mem"], a.prefix
([(b'cpu', b'1'), (b'mem', b'4')], [b'a/cpu', b'a/mem'], b'4', b'svc/a/')
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any, TypeVar, overload

from ..arguments import BytesLike, as_bytes, as_keys
from ..handles import ProcessLocal
from .batch import Batch
from .iterators import relative_bounds, scan_bounds
from .mapping import ItemsView, KeysView, ValuesView

__all__ = ["PrefixedKeyspace", "PrefixedSnapshot", "PrefixedBatch", "check_prefix"]

T = TypeVar("T")


def check_prefix(prefix: object, max_key_size: int | None = None) -> bytes:
    """``prefix`` as bytes: TypeError naming it unless bytes-like; ValueError if it is
    longer than ``max_key_size`` (no key of the view could be written)."""
    p = as_bytes(prefix, "prefix")
    if max_key_size is not None and len(p) > max_key_size:
        raise ValueError(f"prefix must be at most max_key_size ({max_key_size}) bytes, "
                         f"not {len(p)}: no key under it could be written")
    return p


class _Prefix:
    """The key arithmetic of one prefix: the view's keys and bounds as the parent's."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix

    def key(self, key: object, name: str = "key") -> bytes:
        """The parent's key of the view's ``key`` (TypeError naming ``name`` unless bytes-like)."""
        if type(key) is not bytes:
            key = as_bytes(key, name)
        return self.prefix + key

    def bounds(self, start: object, end: object, prefix: object) -> tuple[bytes, bytes | None]:
        """The parent's ``[start, end)`` of the view's bounds (checked as ``scan`` checks
        them); ``end`` None only where every key from ``start`` on is the view's."""
        return relative_bounds(self.prefix, *scan_bounds(start, end, prefix))


class PrefixedKeyspace(ProcessLocal):
    """A keyspace (or the store, its ``"default"`` keyspace) seen through a key prefix:
    ``store.prefixed(prefix)``, ``keyspace.prefixed(prefix)``.  The reads and writes of
    :class:`~banyanstore.lsm.keyspace.Keyspace`, with keys relative to :attr:`prefix`."""

    __slots__ = ("_handle", "_at", "_prefix", "_get")
    _handle_kind = "prefix view"  # (handles.py: what pickling and copying refuse)

    def __init__(self, handle: Any, prefix: bytes) -> None:
        """REQUIRES: ``prefix`` checked (:func:`check_prefix`); use ``handle.prefixed``."""
        self._handle = handle
        self._at = _Prefix(prefix)
        # A get's two lookups kept at hand: what a get through the view adds to the
        # keyspace's is the concatenation and this call.
        self._prefix, self._get = prefix, handle.get

    @property
    def prefix(self) -> bytes:
        """The prefix of every key of the view (of the parent keyspace, nested views'
        prefixes joined)."""
        return self._at.prefix

    @property
    def keyspace(self) -> Any:
        """The :class:`~banyanstore.lsm.keyspace.Keyspace` (or store) the view reads."""
        return self._handle

    @property
    def store(self) -> Any:
        """The :class:`~banyanstore.lsm.store.Store` of the keyspace."""
        return self._handle.store

    @property
    def closed(self) -> bool:
        """The keyspace's ``closed``: True once the store is closed or the keyspace dropped."""
        return bool(self._handle.closed)

    def __repr__(self) -> str:
        return f"<banyanstore prefix view {self.prefix!r} of {self._handle!r}>"

    def prefixed(self, prefix: BytesLike) -> PrefixedKeyspace:
        """The view of ``self.prefix + prefix``: nested views are one view."""
        return self._handle.prefixed(self.prefix + check_prefix(prefix))

    # -- writes ---------------------------------------------------------------------
    def put(self, key: BytesLike, value: BytesLike, *, sync: bool | None = None) -> int:
        """Write ``value`` under ``prefix + key``; returns the version."""
        return self._handle.put(self._at.key(key), value, sync=sync)

    def delete(self, key: BytesLike, *, sync: bool | None = None) -> int:
        """Write a tombstone for ``prefix + key``; returns its version."""
        return self._handle.delete(self._at.key(key), sync=sync)

    def delete_range(self, start: BytesLike, end: BytesLike, *, sync: bool | None = None) -> int:
        """Delete the view's keys ``start <= key < end`` (one range tombstone over
        ``[prefix + start, prefix + end)``, which holds keys of the view alone)."""
        at = self._at
        return self._handle.delete_range(at.key(start, "start"), at.key(end, "end"),
                                         sync=sync)

    def batch(self, *, sync: bool | None = None) -> PrefixedBatch:
        """An atomic batch of the store whose operations take the view's keys:
        ``with view.batch() as b: b.put(...)``."""
        return PrefixedBatch(self.store.batch(sync=sync), self)

    def in_batch(self, batch: Batch | PrefixedBatch) -> PrefixedBatch:
        """The store's ``batch`` (or the batch a ``PrefixedBatch`` fills) seen through the
        view: its operations join that batch, which commits them with those of other
        views and keyspaces of the store, atomically."""
        if isinstance(batch, PrefixedBatch):
            batch = batch.batch
        if not isinstance(batch, Batch):
            raise TypeError(f"batch must be a Batch of store.batch(), not {type(batch).__name__}")
        if batch.store is not self.store:
            raise ValueError(f"batch belongs to another store ({getattr(batch.store, 'path', None)})")
        return PrefixedBatch(batch, self)

    def __setitem__(self, key: BytesLike, value: BytesLike) -> None:
        self.put(key, value)

    def __delitem__(self, key: BytesLike) -> None:
        """``del view[key]``: KeyError (of the view's key) if absent, as for the keyspace."""
        try:
            self._handle.__delitem__(self._at.key(key))
        except KeyError:
            raise KeyError(key) from None

    # -- reads ----------------------------------------------------------------------
    @overload
    def get(self, key: BytesLike, version: int | None = None) -> bytes | None: ...
    @overload
    def get(self, key: BytesLike, version: int | None = None, *, default: T) -> bytes | T: ...
    @overload
    def get(self, key: BytesLike, version: int | None, default: T) -> bytes | T: ...

    def get(self, key: BytesLike, version: int | None = None, default: Any = None) -> Any:
        """The value of ``prefix + key`` (as :meth:`Keyspace.get`)."""
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        return self._get(self._prefix + key, version, default)

    def __getitem__(self, key: BytesLike) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[call-overload]

    def __iter__(self) -> Iterator[bytes]:
        """The view's live keys, ascending."""
        return self.scan(keys_only=True)

    def multi_get(self, keys: Iterable[BytesLike], version: int | None = None) -> list[bytes | None]:
        p = self._at.prefix
        return self._handle.multi_get([p + k for k in as_keys(keys)], version)

    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None, keys_only: bool = False) -> Iterator[Any]:
        """The view's rows in ``[start, end)`` (and starting with ``prefix``), keys
        relative to the view's prefix: :meth:`Keyspace.scan`'s arguments."""
        if prefix is not None:
            start, end = scan_bounds(start, end, prefix)
        return self._handle.relative_scan(self._prefix, start, end, version=version, reverse=reverse,
                                          limit=limit, keys_only=keys_only)

    def history(self, key: BytesLike) -> Iterator[tuple[int, bytes | None]]:
        return self._handle.history(self._at.key(key))

    def keys(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None,
             reverse: bool = False) -> KeysView:
        """A lazy view of the view's live keys (see ``Store.keys``)."""
        return KeysView(*self._view_args(start, end, prefix, version, reverse))

    def values(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
               prefix: BytesLike | None = None, version: int | None = None,
               reverse: bool = False) -> ValuesView:
        return ValuesView(*self._view_args(start, end, prefix, version, reverse))

    def items(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
              prefix: BytesLike | None = None, version: int | None = None,
              reverse: bool = False) -> ItemsView:
        return ItemsView(*self._view_args(start, end, prefix, version, reverse))

    def _view_args(self, start: object, end: object, prefix: object, version: Any,
                   reverse: object) -> tuple[Any, Any, bytes | None, bytes | None, bool]:
        """As ``Keyspace._view_args``, in the view's keys: the parent checks its state and
        the arguments (``reverse``, ``version``) at the call."""
        self._handle.keys(*self._at.bounds(start, end, prefix), version=version, reverse=reverse)
        s, e = scan_bounds(start, end, prefix)
        return (partial(self.scan, version=version), partial(self.get, version=version), s, e,
                bool(reverse))

    def approximate_count(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
                          prefix: BytesLike | None = None) -> int:
        return self._handle.approximate_count(*self._at.bounds(start, end, prefix))

    def approximate_size(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
                         prefix: BytesLike | None = None) -> int:
        return self._handle.approximate_size(*self._at.bounds(start, end, prefix))

    def snapshot(self) -> PrefixedSnapshot:
        """A snapshot of the store seen through the view (its keyspace, its prefix);
        closing it closes the snapshot."""
        snap = self.store.snapshot()
        try:
            return snap.prefixed(self.prefix, keyspace=self._handle)
        except BaseException:
            snap.close()
            raise


class PrefixedSnapshot(ProcessLocal):
    """A snapshot's keyspace seen through a key prefix: ``snap.prefixed(prefix,
    keyspace=None)``.  The reads of :class:`~banyanstore.lsm.snapshot.Snapshot` at its
    version, keys relative to :attr:`prefix`; ``close()`` closes the snapshot."""

    __slots__ = ("_snap", "_keyspace", "_at")
    _handle_kind = "prefix view"

    def __init__(self, snap: Any, prefix: bytes, keyspace: Any = None) -> None:
        """REQUIRES: ``prefix`` checked and ``keyspace`` resolved by ``snap.prefixed``."""
        self._snap = snap
        self._keyspace = keyspace
        self._at = _Prefix(prefix)

    @property
    def prefix(self) -> bytes:
        return self._at.prefix

    @property
    def snapshot(self) -> Any:
        """The :class:`~banyanstore.lsm.snapshot.Snapshot` the view reads."""
        return self._snap

    @property
    def version(self) -> int:
        return self._snap.version

    @property
    def closed(self) -> bool:
        return bool(self._snap.closed)

    def __repr__(self) -> str:
        return f"<banyanstore prefix view {self.prefix!r} of {self._snap!r}>"

    def prefixed(self, prefix: BytesLike) -> PrefixedSnapshot:
        return self._snap.prefixed(self.prefix + check_prefix(prefix),
                                   keyspace=self._keyspace)

    @overload
    def get(self, key: BytesLike) -> bytes | None: ...
    @overload
    def get(self, key: BytesLike, *, default: T) -> bytes | T: ...

    def get(self, key: BytesLike, *, default: Any = None) -> Any:
        return self._snap.get(self._at.key(key), keyspace=self._keyspace, default=default)

    def __getitem__(self, key: BytesLike) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[call-overload]

    def __iter__(self) -> Iterator[bytes]:
        return self.scan(keys_only=True)

    def multi_get(self, keys: Iterable[BytesLike]) -> list[bytes | None]:
        p = self._at.prefix
        return self._snap.multi_get([p + k for k in as_keys(keys)],
                                    keyspace=self._keyspace)

    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False, limit: int | None = None,
             keys_only: bool = False) -> Iterator[Any]:
        s, e = scan_bounds(start, end, prefix)
        return self._snap.relative_scan(self.prefix, s, e, reverse=reverse, limit=limit,
                                        keyspace=self._keyspace, keys_only=keys_only)

    def history(self, key: BytesLike) -> Iterator[tuple[int, bytes | None]]:
        return self._snap.history(self._at.key(key), keyspace=self._keyspace)

    def keys(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False) -> KeysView:
        return KeysView(*self._view_args(start, end, prefix, reverse))

    def values(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
               prefix: BytesLike | None = None, reverse: bool = False) -> ValuesView:
        return ValuesView(*self._view_args(start, end, prefix, reverse))

    def items(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
              prefix: BytesLike | None = None, reverse: bool = False) -> ItemsView:
        return ItemsView(*self._view_args(start, end, prefix, reverse))

    def _view_args(self, start: object, end: object, prefix: object,
                   reverse: object) -> tuple[Any, Any, bytes | None, bytes | None, bool]:
        self._snap.keys(*self._at.bounds(start, end, prefix), reverse=reverse, keyspace=self._keyspace)
        s, e = scan_bounds(start, end, prefix)
        return self.scan, self.get, s, e, bool(reverse)

    def close(self) -> None:
        """Close the snapshot the view reads (idempotent)."""
        self._snap.close()

    def __enter__(self) -> PrefixedSnapshot:
        self._snap.__enter__()  # a closed snapshot raises StoreClosedError here
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrefixedBatch:
    """A store's :class:`~banyanstore.lsm.batch.Batch` seen through a prefix view: its
    operations take the view's keys and go to the view's keyspace; committing it
    commits the batch (with whatever else was added to it)."""

    __slots__ = ("batch", "_view", "_at")

    def __init__(self, batch: Batch, view: PrefixedKeyspace) -> None:
        self.batch = batch
        """The store's batch the operations go to."""
        self._view = view
        self._at = _Prefix(view.prefix)

    @property
    def version(self) -> int | None:
        return self.batch.version

    @property
    def store(self) -> Any:
        return self.batch.store

    def put(self, key: BytesLike, value: BytesLike) -> None:
        self.batch.put(self._at.key(key), value, keyspace=self._view.keyspace)

    def delete(self, key: BytesLike) -> None:
        self.batch.delete(self._at.key(key), keyspace=self._view.keyspace)

    def delete_range(self, start: BytesLike, end: BytesLike) -> None:
        at = self._at
        self.batch.delete_range(at.key(start, "start"), at.key(end, "end"), keyspace=self._view.keyspace)

    def __len__(self) -> int:
        return len(self.batch)

    def commit(self, *, sync: bool | None = None) -> int | None:
        return self.batch.commit(sync=sync)

    def discard(self) -> None:
        self.batch.discard()

    def __enter__(self) -> PrefixedBatch:
        self.batch.__enter__()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.batch.__exit__(exc_type, exc, tb)

    def __reduce__(self) -> Any:
        return self.batch.__reduce__()

    def __copy__(self) -> Any:
        return self.batch.__copy__()

    def __deepcopy__(self, memo: Any) -> Any:
        return self.batch.__copy__()
