"""Reads racing ``close()``: they answer, or raise StoreClosedError -- never an IO error
from a closed descriptor, never a CorruptionError, never another file's bytes.

The window: a read takes a table's descriptor number (``file.fd``, in Python or in the
compiled core), then ``pread(2)``s it.  If ``close()`` closed the descriptor in between
and anything in the process opened a file meanwhile, the number named that other file:
the read returned its bytes (a false CorruptionError, or -- for a file laid out like the
table -- a wrong answer that passes every checksum).  ``close()`` now *retires* the
descriptors of tables readers may hold (io/pread.py): their numbers stay taken, by a
descriptor every read fails on, until the last reader lets the table go.

The deterministic tests open that window on purpose: ``PosixRandomAccessFile.fd`` becomes
a property whose getter, once armed, closes the store on another thread and opens the
twin store's table over and over to take the number, before it returns the number to the
read that asked for it (the compiled core reads the attribute too, so both engines are
tested).  The twin table has the same layout with other values, so a read of the wrong
file would come back with valid blocks.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import StoreClosedError
from banyanstore.io.pread import PosixRandomAccessFile, dead_descriptor

N = 3000
OPTS: dict[str, Any] = {"compaction": False, "block_size": 1024, "compression": "none",
                        "memtable_size": 1 << 20}


def _key(i: int) -> bytes:
    return b"k%05d" % i


def _fill(path: Path, fill: bytes) -> None:
    """One table of N keys, values ``fill * 40`` (the same layout for every ``fill``)."""
    with banyanstore.open(path, **OPTS) as s:
        for i in range(N):
            s.put(_key(i), fill * 40)
        s.flush()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class _Window:
    """The fd-window hook (see the module docstring)."""

    def __init__(self) -> None:
        self.action: Callable[[int, str], None] | None = None
        self.fired = 0

    def getter(self, f: Any) -> int:
        fd: int = f.__dict__["fd"]
        action = self.action
        if action is not None and fd >= 0 and f.path.endswith(".sst"):
            self.action = None
            self.fired += 1
            action(fd, f.path)
        return fd


@pytest.fixture
def window(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Window]:
    w = _Window()

    def setter(f: Any, value: int) -> None:
        f.__dict__["fd"] = value

    monkeypatch.setattr(PosixRandomAccessFile, "fd", property(w.getter, setter), raising=False)
    yield w


class _CloseAndTake:
    """The racing close and the file opened meanwhile: closes ``store`` on another thread,
    then opens the twin's table (the same name) until it gets the number ``fd`` (or gives up:
    the number is still taken)."""

    def __init__(self, store: Any, twin: Path) -> None:
        self.store, self.twin = store, twin
        self.held: list[int] = []
        self.took: int | None = None

    def __call__(self, fd: int, path: str) -> None:
        t = threading.Thread(target=self.store.close)
        t.start()
        t.join()
        other = str(self.twin / "tables" / os.path.basename(path))
        for _ in range(64):
            got = os.open(other, os.O_RDONLY)
            self.held.append(got)
            if got == fd:
                self.took = got
                break

    def release(self) -> None:
        for fd in self.held:
            os.close(fd)
        self.held.clear()


READS: dict[str, Callable[[Any], Any]] = {
    "get": lambda s: s.get(_key(1234)),
    "multi_get": lambda s: s.multi_get([_key(i) for i in range(0, N, 97)]),
    "contains": lambda s: _key(7) in s,
    "seek": lambda s: list(s.scan(_key(2000), limit=20)),
    "scan": lambda s: list(s.scan(_key(100), _key(2900))),
    "reverse": lambda s: list(s.scan(reverse=True)),
    "keys": lambda s: list(s.scan(keys_only=True)),
    "history": lambda s: list(s.history(_key(55))),
    "snapshot-get": lambda s: s.snapshot().get(_key(99)),
    "keyspace-get": lambda s: s.keyspace("default").get(_key(98)),
}


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Path, Path]:
    _fill(tmp_path / "db", b"a")
    _fill(tmp_path / "twin", b"b")
    return tmp_path / "db", tmp_path / "twin"


@pytest.mark.parametrize("read", [*READS, "read-only get", "read-only multi_get",
                                  "read-only scan", "read-only snapshot-get"])
def test_read_whose_descriptor_is_closed_under_it_raises_store_closed(
        stores: tuple[Path, Path], window: _Window, read: str) -> None:
    """The read took the descriptor's number, close() ran, a file was opened: the read
    raises StoreClosedError, and the number was never handed to the other file."""
    db, twin = stores
    read_only = read.startswith("read-only ")
    read = read.removeprefix("read-only ")
    s = banyanstore.open(db, block_cache_size=0, read_only=read_only,
                         **(OPTS if not read_only else {}))
    race = _CloseAndTake(s, twin)
    window.action = race
    try:
        got = READS[read](s)
    except StoreClosedError:
        got = StoreClosedError
    finally:
        race.release()
        s.close()
    assert window.fired == 1
    assert got is StoreClosedError, f"a read racing close() returned {str(got)[:200]}"
    assert race.took is None, "close() let the number of a descriptor in use go to another file"


@pytest.mark.parametrize("kind", ["scan", "reverse", "keys-only"])
def test_iterator_whose_descriptor_is_closed_under_it_raises_store_closed(
        stores: tuple[Path, Path], window: _Window, kind: str) -> None:
    """The same for an iterator started before close(): its next block read."""
    db, twin = stores
    s = banyanstore.open(db, block_cache_size=0, **OPTS)
    it = {"scan": lambda: s.scan(), "reverse": lambda: s.scan(reverse=True),
          "keys-only": lambda: s.scan(keys_only=True)}[kind]()
    first = next(it)
    race = _CloseAndTake(s, twin)
    window.action = race
    try:
        rest = list(it)
    except StoreClosedError:
        rest = None
    finally:
        race.release()
        s.close()
    assert window.fired == 1
    assert rest is None, f"the iterator went on after close(): {first!r}, then {len(rest)} more"
    assert race.took is None, "close() let the number of a descriptor in use go to another file"


def test_close_releases_every_descriptor(stores: tuple[Path, Path]) -> None:
    """Closing retires the tables' descriptors; the numbers go with the tables, which a
    closed store does not hold on to (the store object itself may live on)."""
    dead_descriptor()  # (made once per process, at the first retire)
    gc.collect()
    before = _open_fds()
    s = banyanstore.open(stores[0], block_cache_size=0, **OPTS)
    assert s.get(_key(5)) == b"a" * 40
    s.close()
    assert _open_fds() == before
    with pytest.raises(StoreClosedError):
        s.get(_key(5))
    with pytest.raises(StoreClosedError):
        s.multi_get([_key(5)])


def test_a_reader_holding_tables_across_close_releases_them_when_it_lets_go(
        stores: tuple[Path, Path]) -> None:
    dead_descriptor()
    gc.collect()
    before = _open_fds()
    s = banyanstore.open(stores[0], block_cache_size=0, **OPTS)
    it = s.scan()
    next(it)
    s.close()
    assert _open_fds() == before + 1  # the table's number, retired: the iterator holds the table
    with pytest.raises(StoreClosedError):
        list(it)
    del it
    gc.collect()
    assert _open_fds() == before


@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "read-only"])
def test_reads_racing_close_stress(tmp_path: Path, read_only: bool) -> None:
    """Readers of every kind, a thread opening and closing unrelated files, and close()
    on the main thread, for two seconds: every read answers right or raises
    StoreClosedError (before the fix: CorruptionError and StorageIOError EBADF)."""
    db = tmp_path / "db"
    with banyanstore.open(db, compaction=False, block_size=1024, memtable_size=1 << 20) as s:
        for t in range(3):  # three overlapping tables
            for i in range(t, N, 3):
                s.put(_key(i), b"%d-" % i * 8)
            s.flush()
    other = tmp_path / "other"
    other.write_bytes(b"x" * 100)
    want = {_key(i): b"%d-" % i * 8 for i in range(N)}
    wrong: list[str] = []
    rng = random.Random(7)
    deadline = time.monotonic() + 2.0
    rounds = 0
    while time.monotonic() < deadline or rounds < 5:
        rounds += 1
        s = banyanstore.open(db, block_cache_size=0, read_only=read_only,
                             **({} if read_only else {"compaction": False}))
        stop = threading.Event()

        def reader(seed: int, s: Any = s, stop: threading.Event = stop) -> None:
            r = random.Random(seed)
            while not stop.is_set():
                try:
                    op = r.random()
                    if op < 0.3:
                        k = _key(r.randrange(N))
                        got: Any = s.get(k)
                        if got != want[k]:
                            wrong.append(f"get {k!r} -> {got!r}")
                    elif op < 0.5:
                        ks = [_key(r.randrange(N)) for _ in range(20)]
                        if s.multi_get(ks) != [want[k] for k in ks]:
                            wrong.append("multi_get")
                    elif op < 0.8:
                        lo = r.randrange(N)
                        limit = r.choice([5, 200, None])
                        got = list(s.scan(_key(lo), limit=limit))
                        ref = [(_key(i), want[_key(i)]) for i in range(lo, N)][:limit]
                        if got != ref:
                            wrong.append(f"scan from {lo}")
                    elif len(list(s.scan(reverse=True, keys_only=r.random() < 0.5))) != N:
                        wrong.append("reverse scan")
                except StoreClosedError:
                    return
                except Exception as exc:  # noqa: BLE001 - what the test looks for
                    wrong.append(repr(exc))
                    return

        def opener(stop: threading.Event = stop) -> None:
            fds: list[int] = []
            while not stop.is_set():
                fds.append(os.open(other, os.O_RDONLY))
                if len(fds) > 5:
                    os.close(fds.pop(0))
            for fd in fds:
                os.close(fd)

        threads = [threading.Thread(target=reader, args=(rounds * 10 + r,)) for r in range(3)]
        threads.append(threading.Thread(target=opener))
        for t in threads:
            t.start()
        time.sleep(0.01 + rng.random() * 0.03)
        s.close()
        stop.set()
        for t in threads:
            t.join()
        assert wrong == [], f"round {rounds}: {wrong[:5]}"


def _pending_replay(path: Path) -> int:
    """The WAL records a store's next open would replay (what its close() left unflushed)."""
    with banyanstore.open(path, read_only=True) as ro:
        return sum(ks["memtable_entries"] for ks in ro.stats()["keyspaces"].values())


def test_a_write_racing_close_is_refused_or_flushed(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that lands while close() waits for its flush -- another thread's -- is
    refused (StoreClosedError) or in the tables close() leaves: close() flushes every
    write it acknowledged, so the next open has nothing to replay."""
    from banyanstore.lsm.flush import Flusher
    store = banyanstore.open(tmp_path / "s", **OPTS)
    store.put(b"before", b"v")
    outcome: list[object] = []

    def write() -> None:
        try:
            outcome.append(store.put(b"racing", b"v"))
        except StoreClosedError as exc:
            outcome.append(exc)

    wait_idle = Flusher.wait_idle

    def wait_idle_with_a_write(flusher: Flusher) -> None:
        if not outcome:  # the first wait: close()'s flush
            racer = threading.Thread(target=write)
            racer.start()
            racer.join()
        wait_idle(flusher)

    monkeypatch.setattr(Flusher, "wait_idle", wait_idle_with_a_write)
    store.close()
    monkeypatch.undo()
    assert len(outcome) == 1
    assert _pending_replay(tmp_path / "s") == 0, "close() left an acknowledged write unflushed"
    with banyanstore.open(tmp_path / "s", **OPTS) as reopened:
        racing = reopened.get(b"racing")
    assert racing == (None if isinstance(outcome[0], StoreClosedError) else b"v")


def test_writers_racing_close_stress(tmp_path: Path) -> None:
    """Threads writing while close() runs: every put that returned is there after the
    reopen, and close() flushed them all (nothing to replay)."""
    store = banyanstore.open(tmp_path / "s", **OPTS)
    acked: list[list[bytes]] = [[] for _ in range(4)]

    def write(n: int) -> None:
        i = 0
        while True:
            key = b"w%d:%08d" % (n, i)
            try:
                store.put(key, b"v" * 100)
            except StoreClosedError:
                return
            acked[n].append(key)
            i += 1

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in writers:
        t.start()
    time.sleep(0.3)
    store.close()
    for t in writers:
        t.join()
    assert _pending_replay(tmp_path / "s") == 0, "close() left acknowledged writes unflushed"
    with banyanstore.open(tmp_path / "s", **OPTS) as reopened:
        keys = set(reopened.scan(keys_only=True))
    lost = [k for keys_of in acked for k in keys_of if k not in keys]
    assert not lost and sum(map(len, acked)) > 0


def _deleted_files_open(under: Path) -> list[str]:
    """The files under ``under`` this process holds open that were unlinked (their disk
    space kept)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # (the listing's own descriptor, gone)
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [link for link in links if link.startswith(str(under)) and link.endswith(" (deleted)")]


def _three_tables(path: Path) -> banyanstore.Store:
    """A writer on ``path`` holding three tables of the same N keys (values a*40, b*40,
    c*40), with the process's dead pipe already made and garbage collected, so that a
    count of descriptors taken next sees only what the test opens."""
    writer = banyanstore.open(path, **OPTS)
    for fill in (b"a", b"b", b"c"):
        for i in range(N):
            writer.put(_key(i), fill * 40)
        writer.flush()
    dead_descriptor()
    gc.collect()
    return writer


def test_a_closed_snapshot_of_a_read_only_store_lets_go_of_its_tables(tmp_path: Path) -> None:
    """A read-only store's snapshot holds the views it was taken on (the writer's merges
    do not know of it).  Closed, it still held them for as long as the program kept the
    object: the tables a merge of the writer then deleted stayed open here, their disk
    space kept (3 of 3 tables in this test), and at the store's close every table's
    number stayed taken.  Now its close() lets go of them, as a writer's snapshot holds
    none."""
    path = tmp_path / "s"
    writer = _three_tables(path)
    before = _open_fds()
    reader = banyanstore.open(path, read_only=True, block_cache_size=0)
    snap = reader.snapshot()
    assert snap.get(_key(5)) == b"c" * 40
    snap.close()
    writer.compact()  # the three tables become one; theirs are unlinked
    reader.refresh()
    assert reader.get(_key(5)) == b"c" * 40
    assert _deleted_files_open(path) == [], "a closed snapshot kept the merged tables open"
    with pytest.raises(StoreClosedError):
        snap.get(_key(5))
    reader.close()
    assert _open_fds() == before, "the closed snapshot (still referenced) holds no descriptor"
    writer.close()


@pytest.mark.parametrize("how", ["snapshot", "copy of a snapshot", "snapshot taken by a follower"])
def test_an_open_snapshot_of_a_closed_read_only_store_lets_go_of_its_tables(tmp_path: Path,
                                                                           how: str) -> None:
    """A snapshot left open when its read-only store closes cannot be read any more
    (StoreClosedError), yet it held the views it was taken on: every table's number
    stayed taken (a copy of the dead pipe each) for as long as the program kept the
    object.  Now the store's close() closes its open snapshots (copies too)."""
    path = tmp_path / "s"
    writer = _three_tables(path)
    before = _open_fds()
    reader = banyanstore.open(path, read_only=True, block_cache_size=0,
                              follow=how == "snapshot taken by a follower")
    snap = reader.snapshot()
    if how == "copy of a snapshot":
        snap, first = copy.copy(snap), snap
        first.close()
    assert snap.get(_key(5)) == b"c" * 40
    reader.close()
    with pytest.raises(StoreClosedError):
        snap.get(_key(5))
    assert _open_fds() == before, "the open snapshot of the closed store holds no descriptor"
    snap.close()
    writer.close()
