"""Dict-like conveniences (lsm/mapping.py): item access, get(default=), the lazy
keys/values/items views with scan bounds, and the metadata-only estimates -- on
stores, keyspaces, snapshots and read-only stores, from memtables and tables."""

from __future__ import annotations

import array

import pytest

import banyanstore
from banyanstore.errors import (
    KeyspaceNotFoundError,
    ReadOnlyError,
    StoreClosedError,
    VersionUnavailableError,
)
from banyanstore.lsm.keyspace import Keyspace

N = 2000


def _key(i: int) -> bytes:
    return b"k%05d" % i


@pytest.fixture
def store(tmp_path):
    s = banyanstore.open(str(tmp_path / "s"), memtable_size=64 * 1024, block_size=1024,
                         compaction=False)
    yield s
    s.close()


def _fill(target, n: int = N) -> dict[bytes, bytes]:
    """``n`` keys, every third deleted again; returns the live model."""
    model = {}
    for i in range(n):
        target[_key(i)] = b"v%d" % i
        model[_key(i)] = b"v%d" % i
    for i in range(0, n, 3):
        del target[_key(i)]
        del model[_key(i)]
    return model


@pytest.mark.parametrize("flushed", [False, True], ids=["memtable", "tables"])
def test_item_access_and_views_match_a_dict(store, flushed):
    model = _fill(store)
    if flushed:
        store.flush()
    assert store[_key(1)] == b"v1"
    with pytest.raises(KeyError) as exc:
        store[_key(0)]  # deleted
    assert exc.value.args == (_key(0),)
    with pytest.raises(KeyError):
        store[b"absent"]
    assert list(store.keys()) == sorted(model)
    assert list(store.values()) == [model[k] for k in sorted(model)]
    assert list(store.items()) == sorted(model.items())
    assert list(reversed(store.items())) == sorted(model.items(), reverse=True)
    assert list(store.keys(reverse=True)) == sorted(model, reverse=True)
    assert list(reversed(store.keys(reverse=True))) == sorted(model)
    lo, hi = _key(100), _key(200)
    want = sorted(k for k in model if lo <= k < hi)
    assert list(store.keys(lo, hi)) == want
    assert list(store.items(start=lo, end=hi)) == [(k, model[k]) for k in want]
    assert list(store.keys(prefix=b"k001")) == sorted(k for k in model if k.startswith(b"k001"))
    assert list(store.values(lo, hi, reverse=True)) == [model[k] for k in reversed(want)]


def test_membership_is_a_point_lookup_inside_the_bounds(store):
    model = _fill(store, 30)
    keys = store.keys(_key(10), _key(20))
    assert _key(11) in keys and _key(12) not in keys  # 12 was deleted
    assert _key(1) not in keys and _key(25) not in keys  # live, but outside the bounds
    assert _key(25) in store.keys()
    items = store.items(prefix=b"k0001")
    assert (_key(11), model[_key(11)]) in items
    assert (_key(11), b"other") not in items and (_key(1), model[_key(1)]) not in items
    assert b"v11" in store.values() and b"v12" not in store.values()
    assert b"v11" not in store.values(end=_key(11))
    with pytest.raises(TypeError, match="key"):
        "k00011" in keys  # noqa: B015
    with pytest.raises(TypeError, match="key"):
        ("k00011", b"v11") in items  # noqa: B015
    assert _key(11) not in items  # not a (key, value) pair: not an item, as for a dict


def _views(target):
    """Bounded views of a store, keyspace or snapshot holding b"bb" -> b"1"."""
    return [target.keys(start=b"a"), target.keys(end=b"c"), target.keys(prefix=b"b"),
            target.items(start=b"b", end=b"c"), target.items(prefix=b"bb"), target.values(start=b"a")]


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview, lambda d: array.array("B", d)],
                         ids=["bytes", "bytearray", "memoryview", "array"])
def test_bounded_views_take_any_bytes_like_key(store, make):
    """``key in view`` and ``(key, value) in view`` take every bytes-like key (and value)
    that ``get`` takes, inside bounds as outside them -- on stores, keyspaces and
    snapshots -- and answer as for ``bytes``."""
    store[b"bb"] = b"1"
    store[b"d"] = b"2"
    index = store.keyspace("index")
    index[b"bb"] = b"1"
    with store.snapshot() as snap:
        for target in (store, index, snap):
            keys_a, keys_c, keys_b, items, items_bb, values = _views(target)
            for view in (keys_a, keys_c, keys_b):
                assert make(b"bb") in view
            assert make(b"d") not in keys_c and make(b"d") not in keys_b
            assert (make(b"bb"), make(b"1")) in items and (make(b"bb"), make(b"1")) in items_bb
            assert (make(b"bb"), make(b"2")) not in items and (make(b"d"), make(b"2")) not in items
            assert make(b"1") in values and make(b"3") not in values


def test_items_membership_mirrors_a_dict(store):
    """Anything but a 2-tuple is simply not an item (False, as ``dict.items()`` answers);
    a 2-tuple's key must be bytes-like (TypeError naming it, as for ``key in store``),
    its value need not be: a value that is not bytes-like is not stored, so not there."""
    store[b"a"] = b"1"
    model = {b"a": b"1"}
    for view, items in ((store.items(), model.items()), (store.items(end=b"b"), model.items())):
        for probe in ((b"a",), (b"a", b"1", b"x"), [b"a", b"1"], b"a", None, 5, (),
                      (b"a", None), (b"a", 1), (b"a", "1"), (b"b", b"1")):
            assert (probe in view) is False and (probe in items) is False, probe
        assert (b"a", b"1") in view and (b"a", memoryview(b"1")) in view
    with pytest.raises(TypeError, match="key"):
        (5, b"1") in store.items()  # noqa: B015
    assert (memoryview(b"abc")[::2], b"1") not in store.items(start=b"a")  # the key b"ac"
    assert (memoryview(b"a-")[::2], b"1") in store.items(start=b"a")


def test_views_are_lazy_and_live(store):
    store[b"a"] = b"1"
    keys, items = store.keys(), store.items()
    it = iter(items)
    store[b"b"] = b"2"
    assert list(keys) == [b"a", b"b"]  # each iteration is a new scan
    assert next(it) == (b"a", b"1")
    assert list(keys) == list(keys)
    assert "reversed" in repr(store.keys(reverse=True)) and "KeysView" in repr(keys)


def test_views_at_a_version(store):
    v1 = store.put(b"a", b"1")
    store[b"a"] = b"2"
    store[b"b"] = b"3"
    assert list(store.items(version=v1)) == [(b"a", b"1")]
    assert (b"a", b"1") in store.items(version=v1) and b"b" not in store.keys(version=v1)
    assert list(store.values()) == [b"2", b"3"]
    store.set_history_floor(store.version)
    late = store.keys(version=v1)  # made fine: the version is checked by each scan
    with pytest.raises(VersionUnavailableError):
        list(late)


def test_keys_scan_without_values(store, monkeypatch):
    """keys() and iteration take the keys-only scan (no value decoded, see View.scan)."""
    seen = []
    real = Keyspace.scan

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("keys_only", False))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Keyspace, "scan", spy)
    _fill(store, 50)
    store.flush()
    list(store.keys())
    list(reversed(store.keys()))
    list(store)
    assert seen == [True, True, True]
    list(store.items())
    assert seen[-1] is False


def test_get_default_by_keyword(store):
    v = store.put(b"k", b"1")
    store.delete(b"k")
    sentinel = object()
    assert store.get(b"k", default=sentinel) is sentinel
    assert store.get(b"k", v, default=sentinel) == b"1"  # version stays positional
    assert store.get(b"k", version=v) == b"1" and store.get(b"nope") is None
    assert store.get(b"k", default=b"") == b""
    assert store.get(b"k", None, sentinel) is sentinel  # third positional: default
    with pytest.raises(TypeError, match="version"):
        store.get(b"k", b"default")  # the second argument is the version, not a default


def test_delitem_of_a_missing_key_raises_and_writes_nothing(store):
    store[b"a"] = b"1"
    before = store.version
    with pytest.raises(KeyError):
        del store[b"missing"]
    assert store.version == before  # no tombstone written
    del store[b"a"]
    assert store.version == before + 1 and b"a" not in store
    with pytest.raises(KeyError):
        del store[b"a"]


def test_bad_arguments_raise_at_the_call(store):
    for bad in (lambda: store["k"],
                lambda: store.__setitem__("k", b"v"),
                lambda: store.__setitem__(b"k", "v"),
                lambda: store.__delitem__(1),
                lambda: store.keys(start="a"),
                lambda: store.items(prefix=3),
                lambda: store.values(version="1"),
                lambda: store.keys(version=True),
                lambda: store.approximate_count(start="a"),
                lambda: store.approximate_size(prefix=1)):
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(TypeError, match="reverse"):
        store.keys(reverse="yes")
    with pytest.raises(TypeError):
        len(store)  # no len(): counting live keys is a full scan (lsm/mapping.py)
    assert store.version == 0


def test_keyspaces_snapshots_and_batches_agree(store):
    index = store.keyspace("index")
    index[b"x"] = b"1"
    index[b"y"] = b"2"
    assert index[b"x"] == b"1" and list(index.items()) == [(b"x", b"1"), (b"y", b"2")]
    assert b"x" not in store.keys() and list(index) == [b"x", b"y"]
    with store.snapshot() as snap:
        index[b"z"] = b"3"
        del index[b"x"]
        store[b"d"] = b"4"
        assert list(snap.keys(keyspace="index")) == [b"x", b"y"]
        assert list(snap.items(keyspace=index)) == [(b"x", b"1"), (b"y", b"2")]
        assert list(snap.values(keyspace="index", reverse=True)) == [b"2", b"1"]
        assert b"x" in snap.keys(keyspace="index") and b"z" not in snap.keys(keyspace="index")
        assert list(snap) == [] and snap.get(b"d", default=b"-") == b"-"
        assert snap.get(b"x", keyspace="index", default=b"-") == b"1"
        with pytest.raises(KeyError):
            snap[b"d"]
        with pytest.raises(TypeError):
            snap[b"d"] = b"5"  # a snapshot is read-only
        with pytest.raises(KeyspaceNotFoundError):
            snap.keys(keyspace="nope")
        keys = snap.keys(keyspace="index")
    assert snap.closed
    with pytest.raises(StoreClosedError):
        list(keys)
    with pytest.raises(StoreClosedError):
        snap.items()
    assert list(index.keys()) == [b"y", b"z"]


def test_closed_and_read_only_stores(tmp_path):
    path = str(tmp_path / "s")
    with banyanstore.open(path) as s:
        s[b"a"] = b"1"
        keys = s.keys()
    with pytest.raises(StoreClosedError):
        s[b"a"]
    with pytest.raises(StoreClosedError):
        s[b"b"] = b"2"
    with pytest.raises(StoreClosedError):
        list(keys)
    with pytest.raises(StoreClosedError):
        s.approximate_count()
    with banyanstore.open(path, read_only=True) as ro:
        assert ro[b"a"] == b"1" and list(ro.items()) == [(b"a", b"1")]
        assert ro.get(b"b", default=b"-") == b"-" and ro.approximate_count() == 1
        with pytest.raises(ReadOnlyError):
            ro[b"b"] = b"2"
        with pytest.raises(ReadOnlyError):
            del ro[b"a"]


def test_memtable_size_estimate_is_the_same_in_both_engines(store):
    """Over memtables approximate_size is defined by what was written, not by the memory
    an engine charges, so the compiled core and pure Python give the same figure: each
    entry's key and value plus SIZE_OVERHEAD, the share of the keys in the range."""
    from banyanstore.lsm.memtable import SIZE_OVERHEAD
    for i in range(100):
        store.put(b"m%03d" % i, b"x")
    store.delete(b"m000")  # a tombstone: its key alone
    store.delete_range(b"a", b"b")  # its bounds, no key
    total = 100 * (4 + 1 + SIZE_OVERHEAD) + (4 + SIZE_OVERHEAD) + (2 + SIZE_OVERHEAD)
    assert store.approximate_size() == total
    assert store.approximate_size(prefix=b"m00") == total * 10 // 100
    assert store.approximate_size(b"m050", b"m060") == total * 10 // 100
    assert store.approximate_size(b"n") == 0 and store.approximate_count() == 100
    store.put(b"m001", b"yy")  # a second version of a key: one more entry, no more keys
    assert store.approximate_size() == total + 4 + 2 + SIZE_OVERHEAD


def test_estimates_from_memtables_and_tables(tmp_path):
    with banyanstore.open(str(tmp_path / "s"), block_size=1024, compaction=False) as store:
        assert store.approximate_count() == 0 and store.approximate_size() == 0
        for i in range(N):
            store[_key(i)] = b"x" * 50
        assert store.approximate_count() == N  # memtable: exact
        assert store.approximate_count(_key(500), _key(1500)) == 1000
        mem_size = store.approximate_size()
        assert mem_size >= N * 56
        store.flush()
        assert store.approximate_count() == N  # one table: its key count
        whole = store.approximate_size()
        assert 0 < whole <= mem_size
        half = store.approximate_count(_key(0), _key(N // 2))
        # Whole blocks: off by at most the keys of the two edge blocks (~15 keys each).
        assert abs(half - N // 2) <= 40, half
        part = store.approximate_size(_key(0), _key(N // 2))
        assert abs(part - whole // 2) <= whole // 10 and part < whole
        assert store.approximate_count(b"z") == 0 and store.approximate_size(b"z") == 0
        assert store.approximate_count(prefix=b"k01") == pytest.approx(1000, abs=40)
        # Overwrites count once per table holding the key, until merged.
        for i in range(N):
            store[_key(i)] = b"y" * 50
        store.flush()
        assert store.approximate_count() == 2 * N
        store.compact()
        assert store.approximate_count() == N == sum(1 for _ in store)
        index = store.keyspace("index")
        assert index.approximate_count() == 0
        index[b"a"] = b"1"
        assert index.approximate_count() == 1 and store.approximate_count() == N


def test_an_empty_view_is_false_as_a_dicts_is(store):
    """``if store.keys(prefix=p):`` was always true: a view had no ``__bool__`` (nor a
    ``len()``), so an empty range read as non-empty.  Now a view is true when a live
    key lies in its bounds (one seek), as a dict's view is, for stores, keyspaces and
    snapshots, at a version too."""
    index = store.keyspace("index")
    for target in (store, index):
        assert not target.keys() and not target.values() and not target.items()
    store.put(b"a", b"1")
    store.put(b"b", b"2")
    index.put(b"z", b"")
    with store.snapshot() as snap:
        store.delete_range(b"a", b"c")
        for views, full in ((store.keys, False), (snap.keys, True)):
            assert bool(views()) is full and bool(views(start=b"a", end=b"c")) is full
            assert not views(prefix=b"x") and not views(start=b"c", end=b"d")
        assert snap.values(prefix=b"b") and snap.items(reverse=True)
        assert not snap.items(keyspace="index", prefix=b"a") and snap.keys(keyspace=index)
    assert store.keys(version=2) and not store.items(version=0) and not store.values()
    assert index.keys() and index.values() and not index.items(end=b"z")  # (b"" is a value)
