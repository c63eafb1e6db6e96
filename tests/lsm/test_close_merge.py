"""close() with a merge in flight: the merge is cancelled, not waited for, and resumed
by the next open with compaction on (lsm/compaction.py, "Closing").

Before, close() joined the compactor, so a merge that had started (often the one the
close's own flush made due) ran to its end inside close() -- seconds for a large
merge -- while one that had not yet started was skipped: which tables a closed store
held depended on that race.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import StorageIOError, StoreClosedError
from banyanstore.lsm import compaction, merge
from banyanstore.lsm.workers import WorkerPools
from banyanstore.sstable.reader import TableReader

OPTS: dict[str, Any] = dict(memtable_size=1 << 20, block_size=1024, wal_sync="never",
                            compaction_min_width=4)


def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def fill_tables(store: Any, tables: int, per_table: int = 400) -> dict[bytes, bytes]:
    """``tables`` flushed tables of interleaved keys (every table overlaps the others;
    each fits in one memtable, so only the flushes here make tables)."""
    data = {}
    for t in range(tables):
        for i in range(per_table):
            k, v = b"k%06d" % (i * tables + t), b"v%d-" % t * 20
            store.put(k, v)
            data[k] = v
        store.flush()
    return data


def table_files(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path / "tables") if n.endswith(".sst"))


@pytest.fixture
def slow_merge(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Merges on a thread hold after their first chunk (the compiled merge: after each
    table's first block) until a compactor is being stopped, then take 50 ms per chunk
    or block (a large merge in miniature, which cannot end before close() has begun
    however the threads are scheduled); the event is set once a merge has produced its
    first chunk or read its first block."""
    started, stopping = threading.Event(), threading.Event()
    real, real_stop = merge.merged_chunks, compaction.Compactor.stop

    def slow(sources: Any, reverse: bool) -> Iterator[Any]:
        for i, chunk in enumerate(real(sources, reverse)):
            if i:
                stopping.wait(60)
            started.set()
            time.sleep(0.05)
            yield chunk

    def stop(self: compaction.Compactor) -> None:
        stopping.set()
        real_stop(self)
    real_payloads = TableReader.data_payloads

    def slow_payloads(self: TableReader) -> Iterator[Any]:  # the compiled merge's input
        for i, item in enumerate(real_payloads(self)):
            if i:
                stopping.wait(60)
            started.set()
            time.sleep(0.05)
            yield item

    monkeypatch.setattr(merge, "merged_chunks", slow)
    monkeypatch.setattr(TableReader, "data_payloads", slow_payloads)
    monkeypatch.setattr(compaction.Compactor, "stop", stop)
    return started


def test_close_cancels_a_merge_in_flight_and_the_next_open_resumes_it(
        tmp_path: Path, slow_merge: threading.Event, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "db"
    store = banyanstore.open(path, compaction_mode="thread", **OPTS)
    data = fill_tables(store, 4)  # the fourth flush makes a merge of the four due
    assert slow_merge.wait(60), "no merge started"
    during = table_files(path)  # the four inputs and the merge's output so far
    store.close()  # waiting for the merge would take minutes at 50 ms per chunk
    after = table_files(path)
    assert len(after) == 4 and set(after) < set(during)  # the partial output is gone
    with banyanstore.open(path, compaction=False, **OPTS) as store:
        st = store.stats()
        assert st["keyspaces"]["default"]["tables"] == 4
        assert dict(store.scan()) == data
    monkeypatch.undo()  # merges at full speed again
    with banyanstore.open(path, compaction_mode="thread", **OPTS) as store:
        # the merge installs its table before it counts itself: wait for both
        wait_for(lambda: store.stats()["keyspaces"]["default"]["tables"] == 1
                 and store.stats()["compaction"]["merges"] >= 1)
        st = store.stats()["compaction"]
        assert st["merges"] == 1 and st["failed_merges"] == 0 and st["quarantined"] == []
        assert dict(store.scan()) == data
    assert len(table_files(path)) == 1


def test_an_explicit_compact_cut_short_by_close_raises_store_closed(
        tmp_path: Path, slow_merge: threading.Event) -> None:
    path = tmp_path / "db"
    store = banyanstore.open(path, compaction=False, compaction_mode="thread", **OPTS)
    data = fill_tables(store, 3)
    errors: list[BaseException] = []

    def compact() -> None:
        try:
            store.compact()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)
    t = threading.Thread(target=compact)
    t.start()
    assert slow_merge.wait(60), "no merge started"
    store.close()
    t.join(60)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], StoreClosedError), errors
    assert len(table_files(path)) == 3
    with banyanstore.open(path, compaction=False, **OPTS) as store:
        assert dict(store.scan()) == data
        assert store.stats()["compaction"]["failed_merges"] == 0


def test_close_right_after_the_flush_that_makes_a_merge_due(tmp_path: Path) -> None:
    """Process mode (the default), where the merge runs in a worker process: whatever
    the race between the merge and close(), the closed store names exactly the table
    files it holds (a cancelled merge leaves no orphan), nothing is lost, and the next
    open with compaction on merges the tables."""
    path = tmp_path / "db"
    store = banyanstore.open(path, **OPTS)
    data = fill_tables(store, 4, per_table=2000)
    store.close()
    with banyanstore.open(path, compaction=False, **OPTS) as store:
        assert len(table_files(path)) == store.stats()["keyspaces"]["default"]["tables"]
        assert dict(store.scan()) == data
    with banyanstore.open(path, **OPTS) as store:
        wait_for(lambda: store.stats()["keyspaces"]["default"]["tables"] == 1)
        assert dict(store.scan()) == data
        assert store.stats()["compaction"]["failed_merges"] == 0


def test_cancelling_a_worker_fails_its_call_in_flight_and_refuses_later_ones() -> None:
    pools = WorkerPools()
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            pools.submit("merge", time.sleep, 600)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)
    try:
        assert pools.submit("merge", abs, -3) == 3  # the worker is up
        t = threading.Thread(target=call)
        t.start()
        wait_for(lambda: pools.pids() != [])
        pools.cancel("merge")
        t.join(60)
        assert not t.is_alive(), "the call in flight was not ended"
        assert len(outcome) == 1 and isinstance(outcome[0], StorageIOError), outcome
        assert pools.pids() == []
        with pytest.raises(StorageIOError, match="cancelled"):
            pools.submit("merge", abs, -1)
        assert pools.submit("flush", abs, -2) == 2  # other purposes are unaffected
    finally:
        pools.shutdown()


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_close_from_compacts_own_progress_callback_raises_store_closed(tmp_path: Path,
                                                                        mode: str) -> None:
    """A close() inside compact()'s progress callback cuts compact() short as one from
    another thread does: StoreClosedError, the merges done so far kept.  (It used to
    return a summary of the closed store's emptied views: tables_after 0.)"""
    path = tmp_path / "db"
    store = banyanstore.open(path, compaction=False, compaction_mode=mode, **OPTS)
    data = fill_tables(store, 3)
    other = store.keyspace("other")
    other_data = {}
    for t in range(3):  # three tables of "other" as well
        for i in range(100):
            other.put(b"o%04d" % i, b"%d" % t)
            other_data[b"o%04d" % i] = b"%d" % t
        store.flush()
    calls: list[dict[str, Any]] = []

    def close_at_first(info: dict[str, Any]) -> None:
        calls.append(info)
        store.close()
    with pytest.raises(StoreClosedError):
        store.compact(progress=close_at_first)
    assert len(calls) == 1
    with banyanstore.open(path, compaction=False, **OPTS) as store:
        assert dict(store.scan()) == data
        assert dict(store.keyspace("other").scan()) == other_data
        tables = {name: figures["tables"] for name, figures in store.stats()["keyspaces"].items()}
        assert sorted(tables.values()) == [1, 3]  # one keyspace merged, the other not


def test_a_call_on_a_worker_killed_while_idle_is_storage_io_error() -> None:
    """A worker ended while idle (cancel() racing a thread that already holds it) has
    closed pipes: a call through it is StorageIOError naming the dead worker, not a
    bare ValueError about a closed file."""
    from banyanstore.lsm.workers import Worker
    worker = Worker()
    try:
        assert worker.call(abs, -4) == 4
        worker.kill()
        with pytest.raises(StorageIOError, match="died"):
            worker.call(abs, -5)
    finally:
        worker.close()
