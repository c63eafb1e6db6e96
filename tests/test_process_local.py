"""Open handles (stores, keyspaces, snapshots, logs, dbm databases, their asyncio
wrappers) refuse pickling and copying with a TypeError that says what to do.

Before: a handle passed to a ``multiprocessing`` child started by spawn or forkserver
failed with ``cannot pickle '_thread.lock' object``; ``copy.copy(store)`` made a second
object sharing every internal (closing it closed the original) and ``copy.deepcopy``
failed as pickle did.  A snapshot keeps its documented copy.
"""

from __future__ import annotations

import asyncio
import copy
import multiprocessing
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import banyanstore
import banyanstore.aio
import banyanstore.dbm


def _child(handle: Any) -> None:  # pragma: no cover - never runs: the handle does not pickle
    pass


@pytest.fixture
def handles(tmp_path: Path) -> Iterator[dict[str, Any]]:
    store = banyanstore.open(tmp_path / "store")
    store.put(b"k", b"v")
    reader = banyanstore.open(tmp_path / "store", read_only=True)
    log = banyanstore.open_log(tmp_path / "log")
    log.append(b"r")
    db = banyanstore.dbm.open(str(tmp_path / "db"), "c")
    loop = asyncio.new_event_loop()
    astore = loop.run_until_complete(banyanstore.aio.open(tmp_path / "astore"))
    alog = loop.run_until_complete(banyanstore.aio.open_log(tmp_path / "alog"))
    snap = store.snapshot()
    out = {"store": store, "keyspace": store.keyspace("index"), "reader": reader,
           "snapshot": snap, "log": log, "dbm": db, "async store": astore,
           "async keyspace": loop.run_until_complete(astore.keyspace("index")), "async log": alog}
    try:
        yield out
    finally:
        loop.run_until_complete(astore.close())
        loop.run_until_complete(alog.close())
        loop.close()
        for h in (snap, db, log, reader, store):
            h.close()


KINDS = ["store", "keyspace", "reader", "snapshot", "log", "dbm", "async store",
         "async keyspace", "async log"]


@pytest.mark.parametrize("kind", KINDS)
def test_pickle_is_refused_naming_the_handle(handles: dict[str, Any], kind: str) -> None:
    handle = handles[kind]
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        with pytest.raises(TypeError, match=r"cannot pickle a banyanstore .* open it in the other process"):
            pickle.dumps(handle, protocol)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
@pytest.mark.parametrize("kind", ["store", "log", "dbm", "snapshot"])
def test_a_handle_passed_to_a_spawned_process_says_to_open_it_there(
        handles: dict[str, Any], kind: str, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    proc = ctx.Process(target=_child, args=(handles[kind],))
    # The process object is pickled before the child is started: nothing runs.
    with pytest.raises(TypeError, match=r"pass its path and open it in the other process"):
        proc.start()
    assert not getattr(handles[kind], "closed", False)  # (a dbm database has no `closed`)


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "snapshot"])
def test_copy_is_refused_and_the_handle_stays_open(
        handles: dict[str, Any], kind: str, copier: Callable[[Any], Any]) -> None:
    handle = handles[kind]
    with pytest.raises(TypeError, match=r"cannot copy a banyanstore .*use the same object"):
        copier(handle)
    store = handles["store"]
    assert store.get(b"k") == b"v"  # nothing was shared, closed or broken
    assert not store.closed


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_a_snapshot_keeps_its_copy(handles: dict[str, Any], copier: Callable[[Any], Any]) -> None:
    snap = handles["snapshot"]
    handles["store"].put(b"k", b"later")
    with copier(snap) as twin:
        assert twin.version == snap.version and twin.get(b"k") == b"v"
    assert not snap.closed and snap.get(b"k") == b"v"


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy, pickle.dumps],
                         ids=["copy", "deepcopy", "pickle"])
def test_a_batch_does_not_copy_or_pickle(tmp_path: Path, copier: Callable[[Any], Any]) -> None:
    """``copy.copy(batch)`` shared the original's operation list: a put added to the copy
    was committed by the original (whose len() did not count it), then again by the
    copy. deepcopy and pickle failed deep inside, on an internal object that differed by
    engine (``_thread.lock``, ``NativeBlockCache``). Now each raises a TypeError that
    names the batch and what to do, and the batch is untouched."""
    with banyanstore.open(tmp_path / "store") as store:
        batch = store.batch()
        batch.put(b"a", b"1")
        with pytest.raises(TypeError, match=r"cannot (copy|pickle) a banyanstore batch.*store\.batch\(\)"):
            copier(batch)
        assert len(batch) == 1 and batch.commit() == 1
        assert list(store.items()) == [(b"a", b"1")] and store.version == 1
