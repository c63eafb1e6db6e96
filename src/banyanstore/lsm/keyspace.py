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
:class:`~banyanstore.errors.StoreClosedError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..arguments import check_bool, check_limit
from .iterators import guarded, prefix_end
from .view import KeyspaceState

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Keyspace", "as_bytes", "as_keys", "scan_bounds"]


def as_bytes(obj: object, name: str) -> bytes:
    """``obj`` as ``bytes`` (bytes-like objects are copied); TypeError otherwise."""
    if type(obj) is bytes:
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    raise TypeError(f"{name} must be bytes-like, not {type(obj).__name__}")


def as_keys(keys: object) -> list[bytes]:
    """The ``keys`` argument of ``multi_get``: an iterable of bytes-like keys."""
    if isinstance(keys, (bytes, bytearray, memoryview, str)) or not isinstance(keys, Iterable):
        raise TypeError(f"keys must be an iterable of bytes-like keys, not {type(keys).__name__}")
    return [as_bytes(k, "key") for k in keys]


class Keyspace:
    """Reads and writes of one keyspace of a store."""

    __slots__ = ("_store", "_ks")

    def __init__(self, store: Store, ks: KeyspaceState) -> None:
        self._store = store
        self._ks = ks

    @property
    def name(self) -> str:
        return self._ks.name

    def __repr__(self) -> str:
        return f"<Keyspace {self._ks.name!r} of {self._store.path!r}>"

    # -- writes ---------------------------------------------------------------------
    def put(self, key: bytes, value: bytes, *, sync: bool | None = None) -> int:
        """Write ``value`` under ``key``; returns the version of this write."""
        if type(value) is not bytes:
            value = as_bytes(value, "value")
        return self._store._write_one(self._ks, key, value, sync)

    def delete(self, key: bytes, *, sync: bool | None = None) -> int:
        """Write a tombstone for ``key``; returns its version."""
        return self._store._write_one(self._ks, key, None, sync)

    # -- reads ----------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        """``key in keyspace``: a point lookup (TypeError for a key that is not bytes-like)."""
        return self.get(key) is not None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[bytes]:
        """The live keys, ascending."""
        return self.scan(keys_only=True)

    def get(self, key: bytes, version: int | None = None) -> bytes | None:
        """The latest value of ``key`` (or as of ``version``); None if absent/deleted."""
        store = self._store
        if store._closed:
            store._raise_closed()
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        view = self._ks.view  # before the version check: see Store._check_version
        v = store._version if version is None else store._check_version(version)
        if self._ks.ttl is None:
            return view.get(key, v, 0)
        return view.get(key, v, store._ttl_floor(self._ks, v))

    def multi_get(self, keys: Iterable[bytes], version: int | None = None) -> list[bytes | None]:
        """Values of ``keys`` in one batched pass (one batched IO call for tables)."""
        store = self._store
        if store._closed:
            store._raise_closed()
        ks = as_keys(keys)
        view = self._ks.view
        v = store._version if version is None else store._check_version(version)
        return view.multi_get(ks, v, store._ttl_floor(self._ks, v), store._env)

    def scan(self, start: bytes | None = None, end: bytes | None = None, *,
             prefix: bytes | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None, keys_only: bool = False) -> Iterator[Any]:
        """``(key, value)`` for keys in ``[start, end)`` (and starting with ``prefix``),
        ascending (or descending with ``reverse``), at most ``limit`` of them; with
        ``keys_only=True`` the keys alone."""
        store = self._store
        if store._closed:
            store._raise_closed()
        view = self._ks.view
        v = store._version if version is None else store._check_version(version)
        start, end = scan_bounds(start, end, prefix)
        check_bool(reverse, "reverse")
        check_bool(keys_only, "keys_only")
        check_limit(limit)
        return view.scan(start, end, v, store._ttl_floor(self._ks, v), reverse, limit,
                         store._check_open, keys_only)

    def history(self, key: bytes) -> Iterator[tuple[int, bytes | None]]:
        """``(version, value-or-None)`` of every retained write of ``key``, newest first."""
        store = self._store
        if store._closed:
            store._raise_closed()
        key = as_bytes(key, "key")
        view = self._ks.view
        v = store._version
        floor = store._ttl_floor(self._ks, v)
        return guarded([e for e in view.history(key, v) if e[0] >= floor], store._check_open)


def scan_bounds(start: object, end: object, prefix: object) -> tuple[bytes | None, bytes | None]:
    """Validated ``[start, end)`` narrowed to ``prefix``."""
    s = None if start is None else as_bytes(start, "start")
    e = None if end is None else as_bytes(end, "end")
    if prefix is not None:
        p = as_bytes(prefix, "prefix")
        if s is None or s < p:
            s = p
        pe = prefix_end(p)
        if pe is not None and (e is None or e > pe):
            e = pe
    return s, e
