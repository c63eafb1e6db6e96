"""Prefix views (``store.prefixed(prefix)``, lsm/prefixed.py): keys relative to the
prefix, scans that never leave it (prefixes ending in 0xff bytes, the empty prefix),
range deletes that cannot reach outside it, nested views, batches mixing views,
snapshots, argument checks and closed stores -- against a model dict, in the engine
the run selects (BANYANSTORE_PURE_PYTHON=1 for the pure-Python one)."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import banyanstore
from banyanstore.errors import KeyspaceNotFoundError, ReadOnlyError, StoreClosedError

OPTS: dict[str, Any] = dict(io_mode="sync", memtable_size=64 * 1024, block_size=1024,
                            compaction=False, wal_sync="never")
PREFIXES = (b"", b"a", b"a\xff", b"\xff", b"\xff\xff", b"ab")
ALPHABET = b"\x00ab\xff"

keys = st.binary(max_size=3).map(lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b))
views = st.integers(0, len(PREFIXES) - 1)
values = st.binary(min_size=1, max_size=4)
ops = st.one_of(
    st.tuples(st.just("put"), views, keys, values),
    st.tuples(st.just("delete"), views, keys),
    st.tuples(st.just("range"), views, keys, keys),
    st.tuples(st.just("batch"), st.lists(st.tuples(views, keys, st.none() | values), max_size=4)),
    st.tuples(st.just("flush")),
)


def _relative(model: dict[bytes, bytes], prefix: bytes) -> dict[bytes, bytes]:
    return {k[len(prefix):]: v for k, v in model.items() if k.startswith(prefix)}


def _apply(store: Any, model: dict[bytes, bytes], op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "put":
        _, vi, k, v = op
        store.prefixed(PREFIXES[vi]).put(k, v)
        model[PREFIXES[vi] + k] = v
    elif kind == "delete":
        _, vi, k = op
        store.prefixed(PREFIXES[vi]).delete(k)
        model.pop(PREFIXES[vi] + k, None)
    elif kind == "range" and op[2] < op[3]:
        _, vi, s, e = op
        store.prefixed(PREFIXES[vi]).delete_range(s, e)
        p = PREFIXES[vi]
        for k in [k for k in model if k.startswith(p) and s <= k[len(p):] < e]:
            del model[k]
    elif kind == "batch":
        with store.batch() as b:
            for vi, k, v in op[1]:
                view = store.prefixed(PREFIXES[vi]).in_batch(b)
                if v is None:
                    view.delete(k)
                    model.pop(PREFIXES[vi] + k, None)
                else:
                    view.put(k, v)
                    model[PREFIXES[vi] + k] = v
    elif kind == "flush":
        store.flush()


def _check_view(view: Any, want: dict[bytes, bytes], probe: bytes) -> None:
    rows = sorted(want.items())
    assert list(view.scan()) == rows
    assert list(view.scan(reverse=True)) == rows[::-1]
    assert list(view) == [k for k, _ in rows]
    assert list(view.scan(limit=2)) == rows[:2]
    assert list(view.scan(probe)) == [r for r in rows if r[0] >= probe]
    assert list(view.scan(end=probe, reverse=True)) == [r for r in rows if r[0] < probe][::-1]
    assert list(view.keys(prefix=probe)) == [k for k, _ in rows if k.startswith(probe)]
    assert list(view.scan(prefix=probe, keys_only=True, reverse=True)) == [
        k for k, _ in rows if k.startswith(probe)][::-1]
    assert view.get(probe) == want.get(probe) and (probe in view) == (probe in want)
    assert view.multi_get([probe, *want]) == [want.get(probe), *want.values()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=25), keys)
def test_views_match_a_model_dict(script: list[tuple[Any, ...]], probe: bytes) -> None:
    model: dict[bytes, bytes] = {}
    with tempfile.TemporaryDirectory() as d, banyanstore.open(d, **OPTS) as store:
        for op in script:
            _apply(store, model, op)
        assert dict(store.scan()) == model
        with store.snapshot() as snap:
            for p in PREFIXES:
                _check_view(store.prefixed(p), _relative(model, p), probe)
                _check_view(snap.prefixed(p), _relative(model, p), probe)
            store.put(b"a\xff\x00late", b"x")  # after the snapshot: its views do not see it
            assert snap.prefixed(b"a\xff").get(b"\x00late") is None


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        yield s


EDGE_KEYS = (b"", b"\x00", b"\xfe", b"\xfe\xff", b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\xff",
             b"a", b"a\xff", b"a\xff\xff", b"a\xff\xff\x00", b"b")


@pytest.mark.parametrize("prefix", [b"", b"\xff", b"\xff\xff", b"\xff\xff\xff", b"a\xff", b"a\xff\xff",
                                    b"\xfe", b"\xfe\xff", b"b", b"a\xff\xff\x00\x00"])
@pytest.mark.parametrize("flushed", [False, True], ids=["memtable", "table"])
def test_bounds_at_0xff_bytes_and_the_empty_prefix(store: Any, prefix: bytes, flushed: bool) -> None:
    """Every key of the keyspace starting with the prefix, and no other, both ways, with
    a limit (the seek path) too; a prefix longer than every key holds nothing."""
    for k in EDGE_KEYS:
        store.put(k, b"v" + k)
    if flushed:
        store.flush()
    view = store.prefixed(prefix)
    want = [(k[len(prefix):], b"v" + k) for k in sorted(EDGE_KEYS) if k.startswith(prefix)]
    assert list(view.items()) == want
    assert list(view.items(reverse=True)) == want[::-1]
    assert list(view.scan(limit=1)) == want[:1]
    assert list(view.scan(reverse=True, limit=1)) == want[-1:]
    assert list(view.scan(limit=200)) == want
    assert view.approximate_count() >= 0 and view.approximate_size() >= 0


def test_delete_range_stays_inside_the_view(store: Any) -> None:
    for k in EDGE_KEYS:
        store.put(k, b"1")
    view = store.prefixed(b"\xff")
    view.delete_range(b"", b"\xff\xff\xff\xff")  # every key of the view
    assert list(view) == []
    assert list(store) == [k for k in sorted(EDGE_KEYS) if not k.startswith(b"\xff")]
    with pytest.raises(ValueError):
        view.delete_range(b"b", b"a")  # an empty range, as for the keyspace


def test_nested_views_compose(store: Any) -> None:
    inner = store.prefixed(b"svc/").prefixed(b"a/").prefixed(bytearray(b"cpu/"))
    assert inner.prefix == b"svc/a/cpu/"
    inner[b"1"] = b"x"
    assert store[b"svc/a/cpu/1"] == b"x" and store.prefixed(b"svc/a/")[b"cpu/1"] == b"x"
    del inner[b"1"]
    with pytest.raises(KeyError) as err:
        del inner[b"1"]
    assert err.value.args == (b"1",)  # the view's key, not the store's
    with pytest.raises(KeyError):
        inner[b"1"]


def test_views_of_a_keyspace(store: Any) -> None:
    index = store.keyspace("index")
    view = index.prefixed(b"t/")
    view.put(b"1", b"a")
    store.put(b"t/1", b"default")
    assert index[b"t/1"] == b"a" and list(view.items()) == [(b"1", b"a")]
    assert view.keyspace is index and view.store is store
    with store.batch() as b:
        view.in_batch(b).put(b"2", b"b")
        store.prefixed(b"t/").in_batch(b).put(b"2", b"c")
    assert view[b"2"] == b"b" and store[b"t/2"] == b"c"
    with view.snapshot() as snap:
        index.put(b"t/3", b"later")
        assert list(snap) == [b"1", b"2"] and snap.prefixed(b"2").get(b"") == b"b"
        assert snap.version == b.version
    assert snap.closed
    store.drop_keyspace("index")
    with pytest.raises(KeyspaceNotFoundError):
        view.get(b"1")
    with pytest.raises(KeyspaceNotFoundError):
        index.prefixed(b"t/")


def test_a_view_batch_is_atomic_and_counts(store: Any) -> None:
    view = store.prefixed(b"p/")
    with pytest.raises(RuntimeError), view.batch() as b:
        b.put(b"k", b"v")
        b.delete_range(b"a", b"b")
        assert len(b) == 2
        raise RuntimeError("abandon it")
    assert list(store) == [] and b.version is None
    with view.batch() as b:
        b.put(b"k", b"v")
        b.delete(b"old")
    assert b.version == store.version and b.store is store and len(b) == 0
    assert store[b"p/k"] == b"v"


def test_bad_arguments_name_themselves(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "db", max_key_size=16, **OPTS) as store:
        for bad in ("p", 1, None, [b"p"]):
            with pytest.raises(TypeError, match="prefix"):
                store.prefixed(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="prefix"):
                store.prefixed(b"a").prefixed(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="prefix"):
            store.prefixed(b"x" * 17)
        view = store.prefixed(memoryview(b"p/"))
        assert view.prefix == b"p/" and type(view.prefix) is bytes
        for call, name in ((lambda: view.get("k"), "key"), (lambda: view.put("k", b"v"), "key"),
                           (lambda: view.put(b"k", "v"), "value"), (lambda: view.delete(1), "key"),
                           (lambda: view.delete_range("a", b"b"), "start"),
                           (lambda: view.delete_range(b"a", None), "end"),
                           (lambda: view.scan(start="a"), "start"), (lambda: view.scan(end=1), "end"),
                           (lambda: view.scan(prefix="a"), "prefix"),
                           (lambda: view.scan(reverse=1), "reverse"),
                           (lambda: view.scan(keys_only="no"), "keys_only"),
                           (lambda: view.keys(reverse=None), "reverse"),
                           (lambda: view.multi_get(b"ab"), "keys"),
                           (lambda: view.in_batch(object()), "batch")):
            with pytest.raises(TypeError, match=name):
                call()
        with banyanstore.open(tmp_path / "other", **OPTS) as other, pytest.raises(ValueError, match="batch"):
            view.in_batch(other.batch())
        with pytest.raises(TypeError, match="pickle"):
            pickle.dumps(view)


def test_a_closed_store_makes_its_views_raise(tmp_path: Path) -> None:
    store = banyanstore.open(tmp_path / "db", **OPTS)
    view = store.prefixed(b"p/")
    view.put(b"k", b"v")
    snap_view = store.snapshot().prefixed(b"p/")
    batch = view.batch()
    store.close()
    assert view.closed and snap_view.closed
    for call in (lambda: view.get(b"k"), lambda: view.put(b"k", b"v"), lambda: view.delete(b"k"),
                 lambda: view.delete_range(b"a", b"b"), lambda: view.scan(), lambda: list(view),
                 lambda: view.multi_get([b"k"]), lambda: view.history(b"k"), lambda: view.keys(),
                 lambda: b"k" in view, lambda: view.prefixed(b"x"), lambda: view.batch(),
                 lambda: view.snapshot(), lambda: view.approximate_count(),
                 lambda: batch.put(b"k", b"v"), lambda: snap_view.get(b"k"), lambda: list(snap_view),
                 lambda: snap_view.items(), lambda: store.prefixed(b"p/")):
        with pytest.raises(StoreClosedError):
            call()


def test_an_iterator_of_a_view_raises_once_the_store_closes(tmp_path: Path) -> None:
    store = banyanstore.open(tmp_path / "db", **OPTS)
    view = store.prefixed(b"p/")
    for i in range(3000):
        store.put(b"p/%05d" % i, b"v" * 20)
    store.flush()
    rows = view.scan()
    assert next(rows) == (b"00000", b"v" * 20)
    store.close()
    with pytest.raises(StoreClosedError):
        for _ in rows:
            pass
    with pytest.raises(StoreClosedError):  # sticky: never a silent end
        next(rows)


def test_a_read_only_store_reads_through_views(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "db", **OPTS) as store:
        store.put(b"p/k", b"v")
    with banyanstore.open(tmp_path / "db", read_only=True) as ro:
        view = ro.prefixed(b"p/")
        assert view[b"k"] == b"v" and list(view) == [b"k"]
        with pytest.raises(ReadOnlyError):
            view.put(b"k", b"w")


def test_relative_scans_cut_the_prefix(store: Any) -> None:
    """``relative_scan(prefix, start, end)``: what a prefix view's scan is made of, on the
    store, a snapshot and a read-only store; bounds relative to the prefix, checked."""
    for k in (b"p", b"p/1", b"p/2", b"q"):
        store.put(k, b"v")
    assert list(store.relative_scan(b"p/")) == [(b"1", b"v"), (b"2", b"v")]
    assert list(store.relative_scan(b"p", b"/2", keys_only=True, reverse=True)) == [b"/2"]
    assert list(store.relative_scan(b"p", end=b"/2", limit=1)) == [(b"", b"v")]
    with store.snapshot() as snap:
        assert list(snap.relative_scan(b"p", keys_only=True)) == [b"", b"/1", b"/2"]
        with pytest.raises(TypeError, match="prefix"):
            snap.relative_scan("p")
    for bad, name in (({"prefix": None}, "prefix"), ({"prefix": b"p", "start": "a"}, "start"),
                      ({"prefix": b"p", "end": 1}, "end"), ({"prefix": b"p", "reverse": 1}, "reverse"),
                      ({"prefix": b"p", "keys_only": None}, "keys_only")):
        with pytest.raises(TypeError, match=name):
            store.relative_scan(**bad)
    store.flush()
    with banyanstore.open(store.path, read_only=True) as ro:
        assert list(ro.relative_scan(b"p/", keys_only=True)) == [b"1", b"2"]
        with pytest.raises(TypeError, match="prefix"):
            ro.relative_scan(1)
