"""Many threads on one Store, one test per guarantee the README states (*Thread
safety*): a Store and its Keyspaces are shared by any number of threads (writes,
batches, reads, scans, snapshots, flush, compact, keyspace creation); a Snapshot is
shared by any number of readers and each sees exactly its version; an iterator
belongs to the one thread that consumes it, and keeps its view while others write,
flush and merge.

Bounded by operation counts, never by time: a few seconds each.  The interpreter's
switch interval is shortened so threads interleave inside the store's code paths
rather than between whole operations.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import banyanstore

WRITERS = 4
BATCHES = 150  # per writer; each batch: a record, its index entry, the writer's counter


@contextmanager
def fine_grained_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Run every target on its own thread; re-raise the first failure."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]


def record_key(writer: int, i: int) -> bytes:
    return b"rec:%d:%05d" % (writer, i)


def index_key(writer: int, i: int) -> bytes:
    return b"ix:%d:%05d" % (writer, i)


def counter_key(writer: int) -> bytes:
    return b"count:%d" % writer


Scan = Callable[..., Iterator[tuple[bytes, bytes]]]


def check_consistent(view: banyanstore.Snapshot | banyanstore.Store, writer: int) -> int:
    """At one view (a snapshot; or a store nobody writes): the writer's counter is n
    exactly when records 0..n-1 and their index entries are there and no later one is
    (batches are atomic); returns n."""
    if isinstance(view, banyanstore.Snapshot):
        snap = view
        scan_index: Scan = lambda **kw: snap.scan(keyspace="index", **kw)  # noqa: E731
    else:
        scan_index = view.keyspace("index").scan
    raw = view.get(counter_key(writer))
    n = 0 if raw is None else int(raw) + 1
    keys = [k for k, _ in view.scan(prefix=b"rec:%d:" % writer)]
    assert keys == [record_key(writer, i) for i in range(n)], (writer, n, len(keys))
    index = list(scan_index(prefix=b"ix:%d:" % writer))
    assert index == [(index_key(writer, i), record_key(writer, i)) for i in range(n)]
    return n


@pytest.fixture
def store(tmp_path: Path) -> Iterator[banyanstore.Store]:
    # small memtables: flushes (and merges) happen while the threads run
    with banyanstore.open(tmp_path / "db", memtable_size=64 << 10, compaction_min_width=2,
                          compaction_max_width=4, wal_sync="never") as s:
        s.keyspace("index")
        yield s


def test_writers_readers_snapshots_scans_flush_and_compact_at_once(store: banyanstore.Store,
                                                                   tmp_path: Path) -> None:
    """Writers commit atomic batches and single puts; readers check, at one snapshot, that
    every batch is whole, that counters only grow, and that a scan agrees with gets;
    another thread flushes and compacts; the final state is exact after a reopen."""
    done = threading.Event()
    versions: dict[int, list[int]] = {w: [] for w in range(WRITERS)}

    def writer(w: int) -> Callable[[], None]:
        def run() -> None:
            index = store.keyspace("index")  # concurrent lookups of one keyspace
            for i in range(BATCHES):
                with store.batch() as b:
                    b.put(record_key(w, i), b"payload-%d" % i * 8)
                    b.put(index_key(w, i), record_key(w, i), keyspace=index)
                    b.put(counter_key(w), b"%d" % i)
                versions[w].append(store.put(b"last:%d" % w, b"%d" % i))
        return run

    def reader() -> None:
        seen = [0] * WRITERS
        rounds = 0
        while not done.is_set() or rounds < 3:
            rounds += 1
            with store.snapshot() as snap:
                for w in range(WRITERS):
                    n = check_consistent(snap, w)
                    assert n >= seen[w], "a counter went backwards"
                    seen[w] = n
                    # the snapshot's view does not move while writers go on
                    assert check_consistent(snap, w) == n
                    if n:
                        got = store.multi_get([record_key(w, i) for i in range(n)])
                        assert all(v is not None for v in got)
            # plain reads without a snapshot: one view per call
            for w in range(WRITERS):
                raw = store.get(counter_key(w))
                assert raw is None or int(raw) + 1 >= seen[w]

    def maintenance() -> None:
        for _ in range(6):
            store.flush()
            store.compact()

    targets: list[Callable[[], None]] = [writer(w) for w in range(WRITERS)]
    finishers = [reader, reader, maintenance]
    with fine_grained_switching():
        def writers_then_done() -> None:
            try:
                run_threads(targets)
            finally:
                done.set()
        run_threads([writers_then_done, *finishers])
    for w in range(WRITERS):
        assert versions[w] == sorted(versions[w]) and len(set(versions[w])) == BATCHES
        assert check_consistent(store, w) == BATCHES
    all_versions = [v for vs in versions.values() for v in vs]
    assert len(set(all_versions)) == len(all_versions), "two writes got one version"
    path = store.path
    store.close()
    with banyanstore.open(path, read_only=True) as again:
        for w in range(WRITERS):
            assert check_consistent(again, w) == BATCHES


def test_one_snapshot_shared_by_many_readers(store: banyanstore.Store) -> None:
    """Readers share one Snapshot while writers overwrite and delete every key and the
    store flushes and merges: each read answers as of the snapshot's version."""
    for i in range(300):
        store.put(b"k%04d" % i, b"before")
    snap = store.snapshot()
    expected = {b"k%04d" % i: b"before" for i in range(300)}

    def overwrite() -> None:
        for i in range(300):
            store.put(b"k%04d" % i, b"after")
            if i % 3 == 0:
                store.delete(b"k%04d" % i)
        store.flush()
        store.compact()

    def read() -> None:
        for _ in range(8):
            assert dict(snap.scan()) == expected
            assert snap.multi_get(list(expected)[:50]) == [b"before"] * 50
            assert snap.get(b"k0003") == b"before"

    with fine_grained_switching():
        run_threads([overwrite, read, read, read])
    assert dict(snap.scan()) == expected
    snap.close()
    assert store.get(b"k0001") == b"after" and store.get(b"k0003") is None


def test_snapshots_taken_and_closed_by_many_threads(store: banyanstore.Store) -> None:
    """Snapshots at one version opened and closed from many threads at once are counted
    exactly: merges keep what live snapshots need, and none is left registered after."""
    store.put(b"k", b"v")

    def churn() -> None:
        for n in range(30000):
            snap = store.snapshot()
            if n % 1000 == 0:
                assert snap.get(b"k") == b"v"
            snap.close()

    with fine_grained_switching():
        run_threads([churn] * 8)
    assert store.stats()["live_snapshots"] == 0
    held = [store.snapshot() for _ in range(3)]
    assert store.stats()["live_snapshots"] == 3
    for snap in held:  # each closed by several threads at once: released once
        run_threads([snap.close] * 4)
        assert snap.closed
    assert store.stats()["live_snapshots"] == 0


def test_an_iterator_keeps_its_view_while_others_write_flush_and_merge(store: banyanstore.Store) -> None:
    """Each thread drains its own scan slowly while a writer rewrites every key and the
    store flushes and merges; every scan returns exactly the state it was opened on."""
    for i in range(400):
        store.put(b"k%04d" % i, b"v0")
    opened = threading.Barrier(4)

    def consume() -> None:
        scan = store.scan()
        first = next(scan)
        opened.wait()
        rest = list(scan)
        assert [first, *rest] == [(b"k%04d" % i, b"v0") for i in range(400)]

    def rewrite() -> None:
        opened.wait()
        for i in range(400):
            store.put(b"k%04d" % i, b"v1")
        store.flush()
        store.compact()

    with fine_grained_switching():
        run_threads([consume, consume, consume, rewrite])
    assert dict(store.scan()) == {b"k%04d" % i: b"v1" for i in range(400)}


def test_keyspaces_created_from_many_threads_at_once(store: banyanstore.Store) -> None:
    """Threads asking for the same new keyspaces get the same ones (one id each), and
    their writes all land."""
    def use(t: int) -> Callable[[], None]:
        def run() -> None:
            for n in range(10):
                store.keyspace(f"ks{n}").put(b"from-%d" % t, b"x")
        return run

    with fine_grained_switching():
        run_threads([use(t) for t in range(6)])
    ids = {ks["id"] for ks in store.stats()["keyspaces"].values()}
    assert len(ids) == len(store.keyspaces()) == 12  # default, index, ks0..ks9
    for n in range(10):
        keys = sorted(k for k, _ in store.keyspace(f"ks{n}").scan())
        assert keys == sorted(b"from-%d" % t for t in range(6))


def test_keyspaces_dropped_and_recreated_while_others_write_flush_and_merge(
        store: banyanstore.Store) -> None:
    """Threads each create, fill, drop and recreate a keyspace of their own while other
    threads write the default keyspace and the store flushes and merges: a handle of a
    dropped keyspace raises KeyspaceNotFoundError, a recreated keyspace starts empty, and
    nothing written elsewhere is lost."""
    rounds = 8

    def churn(t: int) -> Callable[[], None]:
        def run() -> None:
            for r in range(rounds):
                ks = store.keyspace(f"tmp{t}")
                assert list(ks.scan()) == [], "a recreated keyspace starts empty"
                for i in range(40):
                    ks.put(b"k%03d" % i, b"round-%d" % r)
                with store.batch() as b:
                    b.put(b"batched", b"x", keyspace=ks)
                    b.put(b"churn:%d:%d" % (t, r), b"done")
                assert dict(ks.scan())[b"k000"] == b"round-%d" % r
                store.drop_keyspace(f"tmp{t}")
                with pytest.raises(banyanstore.KeyspaceNotFoundError):
                    ks.get(b"k000")
        return run

    def steady() -> None:
        for i in range(600):
            store.put(b"steady:%04d" % i, b"v")

    def maintenance() -> None:
        for _ in range(4):
            store.flush()
            store.compact()

    with fine_grained_switching():
        run_threads([churn(t) for t in range(4)] + [steady, maintenance])
    assert store.keyspaces() == ["default", "index"]
    assert [k for k, _ in store.scan(prefix=b"steady:")] == [b"steady:%04d" % i for i in range(600)]
    assert len(list(store.scan(prefix=b"churn:"))) == 4 * rounds
    path = store.path
    store.close()
    with banyanstore.open(path, read_only=True) as again:
        assert again.keyspaces() == ["default", "index"]
        assert len(list(again.scan(prefix=b"steady:"))) == 600


def test_one_view_iterated_by_many_threads(store: banyanstore.Store) -> None:
    """A keys()/items() view is shared like the store: each thread's iteration is its own
    scan, complete and in order, while a writer adds keys outside the view's bounds."""
    for i in range(300):
        store.put(b"in:%04d" % i, b"%d" % i)
    items = store.items(prefix=b"in:")
    keys = store.keys(prefix=b"in:")
    expected = [(b"in:%04d" % i, b"%d" % i) for i in range(300)]

    def iterate() -> None:
        for _ in range(5):
            assert list(items) == expected
            assert list(keys) == [k for k, _ in expected]

    def write_elsewhere() -> None:
        for i in range(300):
            store.put(b"out:%04d" % i, b"x")
        store.flush()

    with fine_grained_switching():
        run_threads([iterate, iterate, iterate, write_elsewhere])


def test_keyspace_ttl_set_while_another_thread_drops_it(store: banyanstore.Store) -> None:
    """``store.keyspace(name, ttl=...)`` racing ``drop_keyspace(name)``: either the TTL was
    set before the drop (the keyspace is gone after), or the drop came first and the call
    created a new keyspace with that TTL -- never an error about the manifest."""
    for trial in range(20):
        store.keyspace("racy", ttl=1000)
        both_ready = threading.Barrier(2)
        ttl = 2000 + trial

        def set_ttl() -> None:
            both_ready.wait()
            store.keyspace("racy", ttl=ttl)

        def drop() -> None:
            both_ready.wait()
            store.drop_keyspace("racy")

        run_threads([set_ttl, drop])
        info = store.keyspace_info()
        assert "racy" not in info or info["racy"]["ttl"] == ttl
        if "racy" in info:
            store.drop_keyspace("racy")


@pytest.mark.parametrize("sync", [None, False])
def test_no_write_is_acknowledged_into_a_keyspace_already_dropped(store: banyanstore.Store,
                                                                   sync: bool | None) -> None:
    """A thread puts and deletes through a keyspace handle while another drops the
    keyspace and then writes elsewhere: every write the handle acknowledged came before
    the drop (its version is below the write made after the drop returned); the ones
    after it raise KeyspaceNotFoundError -- never a version for data already gone.
    (``sync=False`` takes the Python write path in both engines.)"""
    for _ in range(10):
        ks = store.keyspace("doomed")
        acknowledged: list[int] = []
        writing = threading.Event()

        def write() -> None:
            for i in itertools.count():
                try:
                    if i % 2:
                        acknowledged.append(ks.delete(b"k%d" % i, sync=sync))
                    else:
                        acknowledged.append(ks.put(b"k%d" % i, b"v", sync=sync))
                except banyanstore.KeyspaceNotFoundError:
                    return
                writing.set()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        assert writing.wait(30)
        store.drop_keyspace("doomed")
        after_drop = store.put(b"after-drop", b"x")
        writer.join(30)
        assert not writer.is_alive()
        assert [v for v in acknowledged if v > after_drop] == []


_SNAPSHOT_COLLECTED_UNDER_THE_PINS_LOCK = """
import faulthandler, gc, sys
import banyanstore
faulthandler.dump_traceback_later(30, exit=True)  # a deadlock: exit 1 with the stacks
store = banyanstore.open(sys.argv[1])
store.put(b"k", b"v")
class Holder:
    pass
reads = {"oldest_version": lambda: store.oldest_version,
         "history": lambda: list(store.history(b"k")),
         "snapshot": lambda: store.snapshot().close()}
for read in reads.values():
    for extra in range(16):  # so that one collection falls inside the pins' lock
        gc.disable()
        gc.collect()
        holder = Holder()
        holder.cycle, holder.snapshot = holder, store.snapshot()  # only gc can free it
        del holder
        gc.set_threshold(gc.get_count()[0] + extra, 1000, 1000)
        gc.enable()
        read()
        gc.set_threshold(700, 10, 10)
gc.collect()
assert store.stats()["live_snapshots"] == 0
store.close()
"""


def test_a_snapshot_the_garbage_collector_closes_inside_the_pins_lock(tmp_path: Path) -> None:
    """A snapshot lost in a reference cycle is closed by the garbage collector, which runs
    at whatever allocation comes next on whatever thread -- also one made while that
    thread holds the lock of the pinned versions (``oldest_version``, ``history()``, a
    merge's floors, taking a snapshot). Its close must not wait for that lock: the
    thread would wait for itself, and every later snapshot, history() and merge with it."""
    child = subprocess.run([sys.executable, "-c", _SNAPSHOT_COLLECTED_UNDER_THE_PINS_LOCK,
                            str(tmp_path / "db")], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
