"""The public handle of a keyspace: put/delete/get/multi_get/scan/history.

The store itself is the handle of the ``"default"`` keyspace; named keyspaces
(``store.keyspace("index")``) share the store's WAL and version sequence, so a
batch can update several keyspaces atomically.

>>> import banyanstore, tempfile
>>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
...     index = store.keyspace("index")
...     v1 = index.put(b"service:a", b"1")
...     v2 = index.delete(b"service:a")
...     index.get(b"service:a"), index.get(b"service:a", version=v1), list(index.history(b"service:a"))
(None, b'1', [(2, None), (1, b'1')])

Iterators (``scan``, ``history``, iterating a keyspace) read lazily from the
store; read after the store is closed, they raise
:class:`~banyanstore.errors.StoreClosedError`.  So does a read racing ``close()`` on
another thread, unless it completes first: its error path asks whether the store was
closed meanwhile (``Tree.closed_meanwhile``), as the iterators' guards do -- close()
retires the table files such a read may be using (``Tree.close_tables``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any, Literal, TypeVar, overload

from .. import accel
from ..arguments import BytesLike, as_bytes, as_keys, check_bool, check_int, check_limit, check_seconds
from ..errors import KeyspaceNotFoundError, check_version_sign
from ..handles import ProcessLocal
from .iterators import guarded, relative_bounds, scan_bounds
from .mapping import ItemsView, KeysView, ValuesView
from .prefixed import PrefixedKeyspace, check_prefix
from .tree import Tree
from .view import KeyspaceState, View
from .writer import Writer

__all__ = ["Keyspace", "as_bytes", "as_keys", "scan_bounds"]

T = TypeVar("T")


class Keyspace(ProcessLocal):
    """Reads and writes of one keyspace of a store: reads go to the keyspace's view at
    the tree's version, writes to the store's :class:`~banyanstore.lsm.writer.Writer`."""

    __slots__ = ("_store", "_tree", "_writer", "_ks", "_fast_put", "_fast_delete")
    _handle_kind = "keyspace"  # (handles.py: what pickling and copying refuse)

    def __init__(self, store: Any, tree: Tree, writer: Writer, ks: KeyspaceState) -> None:
        self._store = store
        self._tree = tree
        self._writer = writer
        self._ks = ks
        # the compiled core's one-call writes (lsm/writer.py), or None
        self._fast_put, self._fast_delete = writer.fast_put, writer.fast_delete

    @property
    def name(self) -> str:
        """The keyspace's name (``"default"`` for the store itself)."""
        return self._ks.name

    @property
    def id(self) -> int:
        """The keyspace's id (as ``store.keyspace_info()`` shows it): never reused, also
        after a drop."""
        return self._ks.id

    @property
    def store(self) -> Any:
        """The :class:`~banyanstore.lsm.store.Store` this keyspace belongs to."""
        return self._store

    @property
    def closed(self) -> bool:
        """True once its store is closed or the keyspace dropped: when its calls raise
        StoreClosedError or KeyspaceNotFoundError (a new keyspace of the same name is
        another keyspace: this handle stays closed)."""
        return self._tree.closed or self._ks.dropped is not None

    def __repr__(self) -> str:
        # Its state as the store's repr shows it: a handle whose every call raises
        # looked like a live one.
        state = (" closed" if self._tree.closed
                 else " dropped" if self._ks.dropped is not None else "")
        return f"<Keyspace {self._ks.name!r} of {self._tree.path!r}{state}>"

    # -- writes ---------------------------------------------------------------------
    if accel.native is None:
        # The pure-Python engine has no one-call writes (``_fast_put`` is always None):
        # its put and delete do not test for them (the test is ~220 instructions of a
        # pure-Python put's ~36,000, docs/performance.md).
        def put(self, key: BytesLike, value: BytesLike, *, sync: bool | None = None) -> int:
            """Write ``value`` under ``key``; returns the version of this write."""
            if type(value) is not bytes:
                value = as_bytes(value, "value")
            if self._ks.dropped is not None:
                raise KeyspaceNotFoundError(self._ks.dropped)
            return self._writer.write_one(self._ks, key, value, sync)

        def delete(self, key: BytesLike, *, sync: bool | None = None) -> int:
            """Write a tombstone for ``key``; returns its version."""
            if self._ks.dropped is not None:
                raise KeyspaceNotFoundError(self._ks.dropped)
            return self._writer.write_one(self._ks, key, None, sync)
    else:
        def put(self, key: BytesLike, value: BytesLike, *, sync: bool | None = None) -> int:
            """Write ``value`` under ``key``; returns the version of this write."""
            fast = self._fast_put  # one C call for the common case; None: do it here
            if fast is not None and (v := fast(self._ks, key, value, sync)) is not None:
                return v
            if type(value) is not bytes:
                value = as_bytes(value, "value")
            if self._ks.dropped is not None:
                raise KeyspaceNotFoundError(self._ks.dropped)
            return self._writer.write_one(self._ks, key, value, sync)

        def delete(self, key: BytesLike, *, sync: bool | None = None) -> int:
            """Write a tombstone for ``key``; returns its version."""
            fast = self._fast_delete
            if fast is not None and (v := fast(self._ks, key, sync)) is not None:
                return v
            if self._ks.dropped is not None:
                raise KeyspaceNotFoundError(self._ks.dropped)
            return self._writer.write_one(self._ks, key, None, sync)

    def delete_range(self, start: BytesLike, end: BytesLike, *, sync: bool | None = None) -> int:
        """Delete every key ``start <= key < end`` with one range tombstone (one WAL
        record, however many keys it covers); returns its version.  Reads at an older
        version still see the keys; keys written later are not affected.  ValueError
        if ``end <= start``.

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     for k in (b"a", b"b", b"c"):
        ...         v = store.put(k, b"1")
        ...     gone = store.delete_range(b"a", b"c")
        ...     list(store.scan()), store.get(b"a", version=v)
        ([(b'c', b'1')], b'1')
        """
        start, end = self._writer.check_range(start, end)
        if self._ks.dropped is not None:
            raise KeyspaceNotFoundError(self._ks.dropped)
        return self._writer.write_batch([], sync, [(self._ks, start, end)])  # type: ignore[return-value]

    def set_ttl(self, ttl: float | None) -> None:
        """Set the keyspace's TTL (seconds, a finite number >= 0) or, with None, remove
        it: its entries then never expire, whatever the ``ttl`` option of an open.
        Durable (one manifest edit) before it returns.  ``keyspace(name, ttl=None)``
        leaves a TTL as it is, so this is the one way to remove one.

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     index = store.keyspace("index", ttl=60)
        ...     index.set_ttl(None)
        ...     store.keyspace_info()["index"]
        {'id': 1, 'ttl': None}
        """
        ttl = check_seconds(ttl, "ttl")
        self._writer.check_writable()
        # The manifest records null as "no TTL" (not "follow the option"): the state
        # reopens, followers, checkpoints and backups already read that way.
        if self._ks.dropped is not None or not self._tree.set_ttl(self._ks, ttl):
            raise KeyspaceNotFoundError(self._ks.dropped)

    def prefixed(self, prefix: BytesLike) -> PrefixedKeyspace:
        """The keyspace seen through ``prefix``: a handle with the same reads and writes
        whose keys are relative to it (lsm/prefixed.py).  ``prefix`` is bytes-like
        (TypeError naming it otherwise) of at most ``max_key_size`` bytes (ValueError).

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     cpu = store.prefixed(b"svc/a/")
        ...     _ = cpu.put(b"load", b"0.5")
        ...     cpu[b"load"], list(store.keys()), list(cpu.scan())
        (b'0.5', [b'svc/a/load'], [(b'load', b'0.5')])
        """
        p = check_prefix(prefix, self._tree.options.max_key_size)
        self._tree.check_open()
        if self._ks.dropped is not None:
            raise KeyspaceNotFoundError(self._ks.dropped)
        return PrefixedKeyspace(self, p)

    # -- reads ----------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        """``key in keyspace``: a point lookup (TypeError for a key that is not bytes-like)."""
        return self.get(key) is not None  # type: ignore[call-overload]

    def __iter__(self) -> Iterator[bytes]:
        """The live keys, ascending."""
        return self.scan(keys_only=True)

    @overload
    def get(self, key: BytesLike, version: int | None = None) -> bytes | None: ...
    @overload
    def get(self, key: BytesLike, version: int | None = None, *, default: T) -> bytes | T: ...
    @overload
    def get(self, key: BytesLike, version: int | None, default: T) -> bytes | T: ...

    def get(self, key: BytesLike, version: int | None = None, default: Any = None) -> Any:
        """The latest value of ``key`` (or as of ``version``); ``default`` (None) if
        absent or deleted.  Pass ``default`` by keyword: the second argument is the
        version.  (It is not keyword-only because filling a keyword-only default costs
        every call about 10% of a memtable read.)

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     v = store.put(b"k", b"1")
        ...     store.get(b"k"), store.get(b"nope", default=b"-"), store.get(b"k", version=v)
        (b'1', b'-', b'1')
        """
        tree = self._tree
        if tree.closed:
            tree.raise_closed()
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        ks = self._ks
        view = ks.view  # before the version check: see Tree.apply (floor, then views)
        v = tree.version if version is None else tree.check_version(version)
        try:  # (free unless it raises: the error path reports a close() that raced the read)
            if ks.ttl is None:
                value = view.get(key, v, 0)
            else:
                value = view.get(key, v, tree.ttl_floor(ks, v))
        except Exception as exc:
            tree.closed_meanwhile(exc)
            raise
        if value is None:
            return default
        return value

    def multi_get(self, keys: Iterable[BytesLike], version: int | None = None) -> list[bytes | None]:
        """Values of ``keys`` in one batched pass (one batched IO call for tables)."""
        tree = self._tree
        if tree.closed:
            tree.raise_closed()
        ks = as_keys(keys)
        view = self._ks.view
        v = tree.version if version is None else tree.check_version(version)
        try:
            return view.multi_get(ks, v, tree.ttl_floor(self._ks, v), tree.env)
        except Exception as exc:
            tree.closed_meanwhile(exc)
            raise

    # The overloads give a type checker the rows' type (a bare Iterator[Any] made
    # `mypy --strict` reject user functions returning what a scan yields).
    @overload
    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None,
             keys_only: Literal[False] = False) -> Iterator[tuple[bytes, bytes]]: ...
    @overload
    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None, keys_only: Literal[True]) -> Iterator[bytes]: ...
    @overload
    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None, keys_only: bool) -> Iterator[Any]: ...

    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None, keys_only: bool = False) -> Iterator[Any]:
        """``(key, value)`` for keys in ``[start, end)`` (and starting with ``prefix``),
        ascending (or descending with ``reverse``), at most ``limit`` of them; with
        ``keys_only=True`` the keys alone."""
        tree = self._tree
        if tree.closed:
            tree.raise_closed()
        ks = self._ks
        view = ks.view
        v = tree.version if version is None else tree.check_version(version)
        # The checks inline for the common arguments (a seek's cost is its setup); anything
        # else goes through the checking functions, which raise or normalise.
        if (prefix is not None or (start is not None and type(start) is not bytes)
                or (end is not None and type(end) is not bytes)):
            start, end = scan_bounds(start, end, prefix)
        return self._scan_view(view, v, start, end, reverse, limit, keys_only, 0)

    def relative_scan(self, prefix: BytesLike, start: BytesLike | None = None,
                      end: BytesLike | None = None, *, version: int | None = None,
                      reverse: bool = False, limit: int | None = None,
                      keys_only: bool = False) -> Iterator[Any]:
        """The rows of the keys starting with ``prefix`` in ``[prefix + start, prefix +
        end)``, each key without ``prefix`` (a prefix view's scan, lsm/prefixed.py: the
        compiled core makes each key from the bytes after it); the other arguments as
        :meth:`scan`'s.  Apart from ``scan``, whose arguments stay as they were."""
        tree = self._tree
        if tree.closed:
            tree.raise_closed()
        p = prefix if type(prefix) is bytes else as_bytes(prefix, "prefix")
        ks = self._ks
        view = ks.view  # (before the version check, as in scan)
        v = tree.version if version is None else tree.check_version(version)
        s, e = relative_bounds(p, start, end)
        return self._scan_view(view, v, s, e, reverse, limit, keys_only, len(p))

    def _scan_view(self, view: Any, v: int, start: bytes | None, end: bytes | None,
                   reverse: object, limit: object, keys_only: object, skip: int) -> Iterator[Any]:
        """The rest of :meth:`scan` and :meth:`relative_scan` once the bounds are the
        parent's: the flags checked (inline for the common values: a seek's cost is its
        setup), then the view's scan, each key cut by ``skip`` bytes."""
        tree, ks = self._tree, self._ks
        if reverse is not False and reverse is not True:
            check_bool(reverse, "reverse")
        if keys_only is not False and keys_only is not True:
            check_bool(keys_only, "keys_only")
        if limit is not None and (type(limit) is not int or limit < 0):
            check_limit(limit)
        floor = 0 if ks.ttl is None else tree.ttl_floor(ks, v)
        try:  # (a seek reads its first blocks here; later reads are the iterator's, guarded)
            return view.scan(start, end, v, floor, reverse, limit, tree.check_open, keys_only, skip)
        except Exception as exc:
            tree.closed_meanwhile(exc)
            raise

    def history(self, key: BytesLike) -> Iterator[tuple[int, bytes | None]]:
        """``(version, value-or-None)`` of every retained write of ``key``, newest first."""
        tree = self._tree
        if tree.closed:
            tree.raise_closed()
        key = as_bytes(key, "key")
        return self._history_at(self._ks.view, key, tree.version)

    def _history_at(self, view: Any, key: bytes, v: int) -> Iterator[tuple[int, bytes | None]]:
        """:meth:`history` of ``key`` in ``view`` read at version ``v`` (a follower reads
        its own view and version)."""
        tree = self._tree
        floor = tree.ttl_floor(self._ks, v)
        try:
            entries = view.history(key, v, *tree.retained_points())
        except Exception as exc:
            tree.closed_meanwhile(exc)
            raise
        return guarded([e for e in entries if e[0] >= floor], tree.check_open)


    # -- mapping conveniences (lsm/mapping.py says how they differ from a dict's) -----
    def __getitem__(self, key: BytesLike) -> bytes:
        """``keyspace[key]``: the latest value; KeyError if ``key`` is absent or deleted."""
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: BytesLike, value: BytesLike) -> None:
        """``keyspace[key] = value``: :meth:`put`, durable as the ``wal_sync`` setting says."""
        self.put(key, value)

    def __delitem__(self, key: BytesLike) -> None:
        """``del keyspace[key]``: KeyError if ``key`` is absent, as for a dict -- so it
        costs a point lookup before the tombstone; :meth:`delete` skips the lookup.  A
        store that takes no writes (read-only, closed) says so first: ReadOnlyError for
        a read-only store whether or not ``key`` is there, as ``put`` would."""
        self._writer.check_writable()
        if self.get(key) is None:
            raise KeyError(key)
        self.delete(key)

    def keys(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None,
             reverse: bool = False) -> KeysView:
        """A lazy view of the live keys in ``[start, end)`` (and starting with ``prefix``);
        iterating it scans without decoding values, ``key in view`` is a point lookup.

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     store[b"a:1"] = b"x"; store[b"a:2"] = b"y"; store[b"b:1"] = b"z"
        ...     list(store.keys(prefix=b"a:")), list(reversed(store.keys())), b"b:1" in store.keys(end=b"b")
        ([b'a:1', b'a:2'], [b'b:1', b'a:2', b'a:1'], False)
        """
        return KeysView(*self._view_args(start, end, prefix, version, reverse))

    def values(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
               prefix: BytesLike | None = None, version: int | None = None,
               reverse: bool = False) -> ValuesView:
        """A lazy view of the values of the live keys in the bounds, in key order.

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     store[b"a"] = b"1"; store[b"b"] = b"2"
        ...     list(store.values()), list(store.values(start=b"b")), b"1" in store.values()
        ([b'1', b'2'], [b'2'], True)
        """
        return ValuesView(*self._view_args(start, end, prefix, version, reverse))

    def items(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
              prefix: BytesLike | None = None, version: int | None = None,
              reverse: bool = False) -> ItemsView:
        """A lazy view of ``(key, value)`` of the live keys in the bounds (a :meth:`scan`
        each time it is iterated); ``(k, v) in view`` is a point lookup.

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     v1 = store.put(b"a", b"1"); _ = store.put(b"a", b"2")
        ...     list(store.items()), list(store.items(version=v1)), (b"a", b"2") in store.items()
        ([(b'a', b'2')], [(b'a', b'1')], True)
        """
        return ItemsView(*self._view_args(start, end, prefix, version, reverse))

    def _view_args(self, start: object, end: object, prefix: object, version: Any,
                   reverse: object) -> tuple[Any, Any, bytes | None, bytes | None, bool]:
        """The arguments of a mapping view, checked now (whether ``version`` is still
        readable is checked by each scan).  A closed store or a dropped keyspace fails
        here too, as :meth:`scan` does at its call (and a snapshot's views): the view
        was handed out and raised only when iterated."""
        tree = self._tree
        if tree.closed:
            tree.raise_closed()
        s, e = scan_bounds(start, end, prefix)
        check_bool(reverse, "reverse")
        if version is not None:
            check_version_sign(check_int(version, "version"))
        if self._ks.dropped is not None:
            raise KeyspaceNotFoundError(self._ks.dropped)
        return (partial(self.scan, version=version), partial(self.get, version=version), s, e,
                bool(reverse))

    # -- estimates --------------------------------------------------------------------
    def _estimate_view(self) -> View:
        """The view estimates are made from (a read-only store's published one)."""
        tree = self._tree
        if tree.closed:
            tree.raise_closed()
        return self._ks.view

    def approximate_count(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
                          prefix: BytesLike | None = None) -> int:
        """About how many keys ``[start, end)`` (and ``prefix``) holds, from metadata
        alone: no data block is read.  Every table counts its distinct keys (scaled by
        the share of its data blocks the range overlaps) and every memtable its keys
        in the range.  So a key is counted once per table or memtable holding it, and
        deleted, expired or overwritten keys count until merges drop them: over a whole
        store just compacted into one table with no deletes, it is exact.

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     for i in range(100): _ = store.put(b"k%03d" % i, b"v")
        ...     store.approximate_count(), store.approximate_count(b"k050"), store.approximate_count(b"x")
        (100, 50, 0)
        """
        s, e = scan_bounds(start, end, prefix)
        return self._estimate_view().approximate(s, e)[0]

    def approximate_size(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
                         prefix: BytesLike | None = None) -> int:
        """About how many bytes ``[start, end)`` (and ``prefix``) takes, from metadata
        alone: the on-disk size (compressed) of the table data blocks overlapping
        the range -- whole blocks, so a short range is rounded up to its blocks --
        plus the memtables' share by keys of what was written to them (every entry's
        key and value plus 16 bytes: lsm/memtable.py's SIZE_OVERHEAD), the same in both
        engines.  Old versions and tombstones count until merges drop them.

        >>> import banyanstore, tempfile
        >>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
        ...     _ = store.put(b"k", b"v" * 1000)
        ...     store.approximate_size() >= 1000, store.approximate_size(b"l")
        (True, 0)
        """
        s, e = scan_bounds(start, end, prefix)
        return self._estimate_view().approximate(s, e)[1]

