"""The annotations of the public API say what docs/api.md says it accepts: every key,
value, scan bound and log record is any bytes-like object. Annotated ``bytes``, a type
checker of the user's code (mypy 2's default strict bytes, ``mypy --strict``) rejected
``store.put(bytearray(...), memoryview(...))``, which the API documents and accepts."""

from __future__ import annotations

import collections.abc
import inspect
import typing
from typing import Any

import pytest

import banyanstore
import banyanstore.aio
from banyanstore.log.aio import AsyncAppends

# The argument names that take bytes: one key, value, bound or record...
ONE = {"key", "value", "start", "end", "prefix", "record"}
# ...or an iterable of them.
MANY = {"keys", "records"}
# A log's start and end are sequence numbers.
LOGS = ("Log", "AsyncAppends", "AsyncLog")

CLASSES = [banyanstore.Store, banyanstore.Keyspace, banyanstore.Snapshot, banyanstore.Batch,
           banyanstore.Log, AsyncAppends, banyanstore.aio.AsyncStore,
           banyanstore.aio.AsyncKeyspace, banyanstore.aio.AsyncLog]


def _annotation(func: Any, name: str) -> Any:
    """The evaluated annotation of one parameter (only that one: others may name
    classes imported for type checkers alone)."""
    text = func.__annotations__[name]
    if not isinstance(text, str):
        return text
    return eval(text, {**vars(typing), **func.__globals__})  # noqa: S307 -- the module's own text


def _accepts(annotation: Any, cls: type) -> bool:
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union,
                                                                              _union_type()) \
        else (annotation,)
    return any(isinstance(m, type) and issubclass(cls, m) for m in members)


def _union_type() -> Any:
    import types
    return types.UnionType


def _params() -> list[tuple[str, Any, str]]:
    found = []
    for cls in CLASSES:
        for attr, func in inspect.getmembers(cls, inspect.isfunction):
            if attr.startswith("_") and attr not in ("__getitem__", "__setitem__", "__delitem__"):
                continue
            for name in inspect.signature(func).parameters:
                if cls.__name__ in LOGS and name in ("start", "end"):
                    continue
                if name in ONE | MANY and name in func.__annotations__:
                    found.append((f"{cls.__name__}.{attr}({name})", func, name))
    return found


PARAMS = _params()


def test_the_walk_finds_the_api() -> None:
    names = {label for label, _f, _n in PARAMS}
    for label in ("Store.put(key)", "Store.put(value)", "Store.scan(prefix)",
                  "Store.multi_get(keys)", "Snapshot.get(key)", "Batch.delete_range(end)",
                  "Log.append(record)", "Log.append_many(records)", "AsyncStore.put(value)",
                  "AsyncLog.append(record)", "Store.__setitem__(value)", "Store.compact(start)"):
        assert label in names


@pytest.mark.parametrize(("label", "func", "name"), PARAMS, ids=[p[0] for p in PARAMS])
def test_bytes_arguments_are_annotated_bytes_like(label: str, func: Any, name: str) -> None:
    annotation = _annotation(func, name)
    if name in MANY:
        assert typing.get_origin(annotation) is collections.abc.Iterable, label
        (annotation,) = typing.get_args(annotation)
    for cls in (bytes, bytearray, memoryview):
        assert _accepts(annotation, cls), f"{label}: {annotation!r} does not accept {cls.__name__}"


def _returns(func: Any) -> list[Any]:
    """The evaluated return annotations of ``func``'s overloads."""
    import collections.abc as abc
    names = {**vars(typing), **vars(abc), **func.__globals__}
    return [eval(o.__annotations__["return"], names)  # noqa: S307 -- the module's own text
            for o in typing.get_overloads(func)]


@pytest.mark.parametrize(("func", "expected"), [
    (banyanstore.Keyspace.scan, collections.abc.Iterator[tuple[bytes, bytes]]),
    (banyanstore.Keyspace.scan, collections.abc.Iterator[bytes]),  # keys_only=True
    (banyanstore.Snapshot.scan, collections.abc.Iterator[tuple[bytes, bytes]]),
    (banyanstore.Snapshot.scan, collections.abc.Iterator[bytes]),
    (banyanstore.Snapshot.get, bytes | None),
    (banyanstore.Keyspace.get, bytes | None),
    (banyanstore.aio.AsyncKeyspace.get, bytes | None),
], ids=["scan", "scan-keys_only", "snapshot-scan", "snapshot-scan-keys_only", "snapshot-get",
        "get", "aio-get"])
def test_reads_are_typed_for_a_type_checker(func: Any, expected: Any) -> None:
    """What reads return is typed, not Any: a user function under ``mypy --strict``
    returning ``next(store.scan())`` or ``snap.get(key)`` was an error (returning Any)."""
    assert expected in _returns(func), _returns(func)
