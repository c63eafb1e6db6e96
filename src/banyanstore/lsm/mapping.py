"""Dict-like conveniences of stores, keyspaces and snapshots: ``store[k]``,
``store[k] = v``, ``del store[k]`` and the lazy ``keys()``/``values()``/``items()``
views that accept the bounds of a scan.

The choices, where a ``dict`` and an LSM store differ:

* ``store[k]`` raises :class:`KeyError` for a missing (or deleted) key, as a
  ``dict`` does; ``store.get(k, default=d)`` returns ``d`` instead.
* ``del store[k]`` raises :class:`KeyError` for a missing key, as a ``dict``
  does, so it costs a point lookup before the tombstone is written (and the
  two are not one atomic step: a concurrent ``delete`` of the same key may let
  both succeed).  ``store.delete(k)`` writes the tombstone blindly, without
  the lookup.
* There is no ``len(store)``: the number of live keys is known only after
  merging every table and memtable (versions and tombstones of one key lie in
  several of them), which is a full scan.  ``approximate_count()`` answers from
  the tables' metadata instead; ``sum(1 for _ in store)`` counts exactly.
* The views are *lazy and live*: each iteration is a new scan at the version
  it starts at (or at the view's ``version``), not a copy.  ``k in keys`` and
  ``(k, v) in items`` are point lookups inside the view's bounds (``k`` any
  bytes-like key, as ``get`` takes; as for a ``dict``'s items, anything but a
  2-tuple is not an item); ``v in values`` scans.  ``reversed(view)`` scans the
  other way.  ``bool(view)`` is whether a live key lies in the bounds (one seek);
  a store itself, having no ``len()``, is always true.

>>> import banyanstore, tempfile
>>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
...     store[b"a"] = b"1"; store[b"b"] = b"2"; store[b"c"] = b"3"
...     del store[b"b"]
...     keys = store.keys(start=b"b")
...     (store[b"a"], store.get(b"b", default=b"-"), list(keys), b"a" in keys,
...      list(reversed(store.items())), b"3" in store.values())
(b'1', b'-', [b'c'], False, [(b'c', b'3'), (b'a', b'1')], True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

from ..arguments import as_bytes

__all__ = ["KeysView", "ValuesView", "ItemsView"]

_second = itemgetter(1)
_NONE = object()  # no key (b"" is a key)

Scan = Callable[..., Iterator[Any]]
"""A bound ``scan(start, end, *, reverse=..., keys_only=...)`` of the store,
keyspace or snapshot a view reads (the other bounds already applied)."""
Lookup = Callable[[Any], "bytes | None"]
"""A bound point read (``get``) at the view's version."""


class _ScanView:
    """What the three views share: validated bounds, a scan and a point read."""

    __slots__ = ("_scan", "_lookup", "_start", "_end", "_reverse")

    def __init__(self, scan: Scan, lookup: Lookup, start: bytes | None, end: bytes | None,
                 reverse: bool) -> None:
        """REQUIRES: the bounds are checked (``scan_bounds``) and ``reverse`` a bool, so a
        bad argument fails at the call that makes the view, not at its first use."""
        self._scan, self._lookup = scan, lookup
        self._start, self._end, self._reverse = start, end, reverse

    def _entries(self, reverse: bool, keys_only: bool) -> Iterator[Any]:
        return self._scan(self._start, self._end, reverse=reverse, keys_only=keys_only)

    def _in_bounds(self, key: Any) -> bool:
        return ((self._start is None or key >= self._start)
                and (self._end is None or key < self._end))

    def __bool__(self) -> bool:
        """Whether a live key lies in the bounds: one seek, as a dict's empty view is
        false.  Without it every view was true (an object with neither ``__bool__``
        nor ``__len__``), so ``if store.keys(prefix=p):`` took an empty range for a
        full one."""
        return next(iter(self._entries(self._reverse, True)), _NONE) is not _NONE

    def _other_way(self) -> Any:
        return type(self)(self._scan, self._lookup, self._start, self._end, not self._reverse)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} [{self._start!r}, {self._end!r})"
                f"{' reversed' if self._reverse else ''}>")


class KeysView(_ScanView):
    """The live keys in the bounds, read without decoding values (``keys()``)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[bytes]:
        return self._entries(self._reverse, True)

    def __reversed__(self) -> Iterator[bytes]:
        return self._other_way().__iter__()

    def __contains__(self, key: object) -> bool:
        """A point lookup inside the bounds (TypeError for a key that is not bytes-like)."""
        if type(key) is not bytes:
            key = as_bytes(key, "key")  # compared with the bounds as bytes
        return self._lookup(key) is not None and self._in_bounds(key)


class ValuesView(_ScanView):
    """The values of the live keys in the bounds, in key order (``values()``)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[bytes]:
        # (map, not a generator: it asks a scan that raised again, which raises again)
        return map(_second, self._entries(self._reverse, False))

    def __reversed__(self) -> Iterator[bytes]:
        return self._other_way().__iter__()

    def __contains__(self, value: object) -> bool:
        """A scan of the bounds for ``value`` (there is no index of values); a value
        that is not bytes-like is not there."""
        if type(value) is not bytes:
            value = _stored_form(value)
            if value is None:
                return False
        return any(x == value for x in self)


class ItemsView(_ScanView):
    """``(key, value)`` of the live keys in the bounds (``items()``)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self._entries(self._reverse, False)

    def __reversed__(self) -> Iterator[tuple[bytes, bytes]]:
        return self._other_way().__iter__()

    def __contains__(self, item: object) -> bool:
        """A point lookup of the key inside the bounds, compared with the value.  As for
        ``dict.items()``, anything but a ``(key, value)`` tuple is not an item (False);
        a key that is not bytes-like is a TypeError, as for ``key in store``."""
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        key, value = item
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        stored = self._lookup(key)
        if stored is None or not self._in_bounds(key):
            return False
        return stored == (value if type(value) is bytes else _stored_form(value))


def _stored_form(value: object) -> bytes | None:
    """``value`` as the bytes a store would hold for it; None if no write could have
    stored it (not bytes-like)."""
    try:
        return as_bytes(value, "value")
    except TypeError:
        return None
