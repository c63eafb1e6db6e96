"""Range scans on the compiled core against the pure-Python merge, over stores whose every
table covers the whole key range (time-series shaped: each flush holds a time slice of
every series), so a range spans several blocks in each of several tables.

Bounds are taken at block edges (a block's first and last keys, one byte past them, one
byte short), and the scans mix both directions, limits, versions below the top (the view
a snapshot reads), deletes, range tombstones and a block cache small enough that a range
meets cached and uncached blocks side by side.  Each scan runs twice (cold, then partly
cached) and must equal the Python merge's answer both times.
"""

from __future__ import annotations

import random

import pytest

import banyanstore
from banyanstore import accel
from banyanstore.lsm.view import View

pytestmark = pytest.mark.skipif(accel.native is None, reason="the store runs on pure Python here")


def _key(series: int, t: int) -> bytes:
    return series.to_bytes(2, "big") + t.to_bytes(2, "big")


def _fill(store: banyanstore.Store, rng: random.Random, range_dels: bool) -> None:
    """A few series written in time order across series, one table per time slice."""
    series = rng.randrange(3, 8)
    steps = rng.randrange(40, 90)
    for t in range(steps):
        for s in range(series):
            if rng.random() < 0.08:
                store.delete(_key(s, t - rng.randrange(0, 3) if t >= 2 else t))
            else:
                store.put(_key(s, t), rng.randbytes(rng.randrange(0, 60)))
        if range_dels and rng.random() < 0.03:
            s, t0 = rng.randrange(series), rng.randrange(steps)
            store.delete_range(_key(s, t0), _key(s, t0 + rng.randrange(1, 9)))
        if rng.random() < 0.1:
            store.flush()
    store.flush()


def _edge_keys(tables) -> list[bytes]:
    """Every table's block edges: first and last keys, a byte past and a byte short."""
    out: set[bytes] = set()
    for t in tables:
        for block in t.iter_blocks():
            keys = block.decode()[0]
            for k in (keys[0], keys[-1]):
                out.update((k, k + b"\x00", k[:-1]))
    return sorted(out)


@pytest.mark.parametrize("seed", range(8))
def test_native_range_scans_match_python(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "store"
    # history_retention: every version stays readable (what a snapshot would pin)
    with banyanstore.open(path, compaction=False, history_retention=1e9, block_size=1024,
                          block_cache_size=rng.choice([0, 8 << 10, 64 << 10])) as store:
        _fill(store, rng, range_dels=seed % 4 == 3)
        view = store._ks.view
        assert view.cores is not None and len(view.tables) >= 3
        pure = View(view.mem, view.imms, view.tables)
        pure.cores = None
        edges = _edge_keys(view.tables)
        top = store.version
        for _ in range(150):
            start, end = (rng.choice(edges + [None]) for _ in range(2))
            if start is not None and end is not None and start > end and rng.random() < 0.8:
                start, end = end, start
            version = top if rng.random() < 0.6 else rng.randrange(1, top + 1)
            reverse = rng.random() < 0.4
            limit = rng.choice([None, None, None, 0, 1, 7, 40])
            args = (start, end, version, 0, reverse, limit, lambda: None)
            want = list(pure.scan(*args))
            for _ in range(2):
                assert list(view.scan(*args)) == want, args
            assert list(view.scan(*args, keys_only=True)) == [k for k, _ in want], args


def test_scan_tuples_the_caller_keeps_never_change(tmp_path):
    """The core reuses a (key, value) tuple for a later entry only once the caller has let
    go of it: tuples kept -- the loop variable of the step before, every third one in a
    list, one unpacked -- keep their entries, whatever the loop does with the others, and a
    garbage collection in between (which may untrack the tuples) changes nothing."""
    import gc
    with banyanstore.open(tmp_path / "store", compaction=False, block_size=1024) as store:
        for s in range(3):
            for t in range(200):
                store.put(_key(s, t), b"v%d" % (s * 1000 + t))
        store.flush()
        store.put(_key(1, 5), b"newer")  # a memtable source too
        want = list(store.scan(_key(0, 10), _key(2, 150)))
        assert len({id(p) for p in want}) == len(want)  # list(): every tuple its own
        kept, previous, unpacked = [], None, []
        for i, pair in enumerate(store.scan(_key(0, 10), _key(2, 150))):
            if previous is not None:
                assert previous == want[i - 1]
            if i % 3 == 0:
                kept.append(pair)
            if i == 50:
                gc.collect()
            previous = pair
        assert kept == want[::3]
        for k, v in store.scan(_key(0, 10), _key(2, 150)):
            unpacked.append((k, v))
        assert unpacked == want


def test_scan_keys_the_caller_keeps_or_hashed_stay_right(tmp_path):
    """The core rewrites a key object in place for a later entry only once nothing but the
    tuple it refills holds it (``for pair in scan``, ``for _ in scan``): a key kept on its
    own keeps its bytes, and a key a set lookup hashed (the hash is cached in the object)
    answers the next lookup by its new bytes, not the old hash."""
    with banyanstore.open(tmp_path / "store", compaction=False, block_size=1024) as store:
        for t in range(120):
            for s in range(3):
                store.put(_key(s, t), b"v%d" % (s * 1000 + t))
            if t % 40 == 39:
                store.flush()  # three tables, each a time slice of every series
        want = list(store.scan(_key(0, 5), _key(2, 110)))
        wanted = {k for k, _ in want}
        got, kept = [], []
        for i, pair in enumerate(store.scan(_key(0, 5), _key(2, 110))):
            assert pair[0] in wanted, pair  # hashes the key object
            got.append((bytes(bytearray(pair[0])), pair[1]))
            if i % 7 == 0:
                kept.append(pair[0])
        assert got == want
        assert kept == [k for k, _ in want][::7]
        for i, pair in enumerate(store.scan(_key(0, 5), _key(2, 110))):
            assert hash(pair[0]) == hash(bytes(bytearray(pair[0]))), i


@pytest.mark.parametrize("seed", range(4))
def test_native_scans_cutting_a_prefix_match_python(tmp_path, seed):
    """``skip`` (a prefix view's scan, ``relative=True``): the core makes each key from the
    bytes after the first ``skip`` -- of table entries and of memtable runs alike, in both
    directions, with limits, keys alone or pairs -- as the pure-Python paths cut them."""
    rng = random.Random(100 + seed)
    with banyanstore.open(tmp_path / "store", compaction=False, history_retention=1e9,
                          block_size=1024, block_cache_size=8 << 10) as store:
        _fill(store, rng, range_dels=False)
        for t in range(0, 90, 7):  # a memtable source beside the tables
            store.put(_key(1, t), b"mem%d" % t)
        view = store._ks.view
        assert view.cores is not None and view.mem.entries
        pure = View(view.mem, view.imms, view.tables)
        pure.cores = None
        edges = _edge_keys(view.tables)
        for _ in range(100):
            start, end = sorted(rng.choice(edges) for _ in range(2))
            skip = rng.choice([1, 2, 3, 4])
            reverse = rng.random() < 0.4
            args = (start, end, store.version, 0, reverse, rng.choice([None, 1, 7, 40]), lambda: None)
            want = [(k[skip:], v) for k, v in pure.scan(*args)]
            assert list(pure.scan(*args, False, skip)) == want, args
            assert list(view.scan(*args, False, skip)) == want, (args, skip)
            assert list(view.scan(*args, True, skip)) == [k for k, _ in want], (args, skip)


def test_a_key_shorter_than_the_skip_is_refused_not_read_past(tmp_path):
    """The core's ``skip`` against a key shorter than it (no bounds a prefix view makes hold
    one): ValueError, never a read before or past the key's bytes."""
    with banyanstore.open(tmp_path / "store", compaction=False) as store:
        store.put(b"a", b"1")
        store.flush()
        view = store._ks.view
        with pytest.raises(ValueError, match="shorter than skip"):
            list(view.scan(None, None, store.version, 0, False, None, lambda: None, True, 2))
