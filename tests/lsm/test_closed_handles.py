"""Closed handles, in both engines: what a handle reports once it (or the store it
belongs to) is closed, and where a call on it fails -- at the call, as Python's own
closed files do, not somewhere later."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import banyanstore
import banyanstore.aio
from banyanstore.errors import StoreClosedError


def _closed_store(root: Any, **opts: Any) -> Any:
    s = banyanstore.open(str(root), **opts)
    s.put(b"k", b"v")
    s.close()
    return s


# -- 1. entering a closed handle ------------------------------------------------------
def test_with_a_closed_store_raises_at_entry(tmp_path: Any) -> None:
    s = _closed_store(tmp_path / "s")
    with pytest.raises(StoreClosedError, match="is closed"):
        with s:
            pytest.fail("entered a closed store")  # pragma: no cover


def test_with_a_closed_read_only_store_raises_at_entry(tmp_path: Any) -> None:
    _closed_store(tmp_path / "s")
    ro = banyanstore.open(str(tmp_path / "s"), read_only=True)
    ro.close()
    with pytest.raises(StoreClosedError), ro:
        pytest.fail("entered a closed store")  # pragma: no cover


def test_with_a_closed_snapshot_raises_at_entry(tmp_path: Any) -> None:
    with banyanstore.open(str(tmp_path / "s")) as s:
        snap = s.snapshot()
        snap.close()
        with pytest.raises(StoreClosedError, match="snapshot"), snap:
            pytest.fail("entered a closed snapshot")  # pragma: no cover
        snap2 = s.snapshot()
    with pytest.raises(StoreClosedError), snap2:  # its store closed
        pytest.fail("entered a snapshot of a closed store")  # pragma: no cover


def test_with_a_closed_log_raises_at_entry(tmp_path: Any) -> None:
    log = banyanstore.open_log(str(tmp_path / "l"))
    log.close()
    with pytest.raises(StoreClosedError, match="is closed"), log:
        pytest.fail("entered a closed log")  # pragma: no cover


def test_async_with_a_closed_async_store_or_log_raises_at_entry(tmp_path: Any) -> None:
    async def main() -> list[str]:
        entered = []
        store = await banyanstore.aio.open(str(tmp_path / "s"))
        await store.close()
        with pytest.raises(StoreClosedError):
            async with store:
                entered.append("store")
        log = await banyanstore.aio.open_log(str(tmp_path / "l"))
        await log.close()
        with pytest.raises(StoreClosedError):
            async with log:
                entered.append("log")
        return entered
    assert asyncio.run(main()) == []


def test_with_an_open_handle_still_closes_it_on_exit(tmp_path: Any) -> None:
    with banyanstore.open(str(tmp_path / "s")) as s, s.snapshot() as snap:
        assert not snap.closed
    assert s.closed and snap.closed
    with banyanstore.open_log(str(tmp_path / "l")) as log:
        assert not log.closed
    assert log.closed


# -- 2. a snapshot whose store closed says so -----------------------------------------
@pytest.mark.parametrize("read_only", [False, True])
def test_a_snapshot_of_a_closed_store_reports_closed(tmp_path: Any, read_only: bool) -> None:
    root = str(tmp_path / "s")
    _closed_store(root)
    s = banyanstore.open(root, read_only=read_only)
    snap = s.snapshot()
    assert not snap.closed
    s.close()
    assert snap.closed  # its reads raise StoreClosedError: `closed` agrees with them
    assert "closed" in repr(snap)
    with pytest.raises(StoreClosedError):
        snap.get(b"k")
    snap.close()  # still releases nothing twice
    assert snap.closed


# -- 3. where a closed (or dropped) handle's views fail: at the call, as scan() ------
VIEWS = ("keys", "values", "items")


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("read_only", [False, True])
def test_views_of_a_closed_store_raise_at_the_call_as_scan_does(tmp_path: Any, view: str,
                                                                  read_only: bool) -> None:
    root = str(tmp_path / "s")
    _closed_store(root)
    s = banyanstore.open(root, read_only=read_only)
    snap = s.snapshot()
    s.close()
    for handle in (s, snap):
        with pytest.raises(StoreClosedError):
            handle.scan()
        with pytest.raises(StoreClosedError):
            getattr(handle, view)()  # at the call, not when iterated
        with pytest.raises(StoreClosedError):  # closed is said before a bad bound, as scan()
            getattr(handle, view)(start=1)


@pytest.mark.parametrize("view", VIEWS)
def test_views_of_a_keyspace_of_a_closed_store_raise_at_the_call(tmp_path: Any, view: str) -> None:
    with banyanstore.open(str(tmp_path / "s")) as s:
        idx = s.keyspace("index")
    with pytest.raises(StoreClosedError):
        getattr(idx, view)()


@pytest.mark.parametrize("view", VIEWS)
def test_views_of_a_dropped_keyspace_raise_at_the_call_as_scan_does(tmp_path: Any, view: str) -> None:
    from banyanstore.errors import KeyspaceNotFoundError
    with banyanstore.open(str(tmp_path / "s")) as s:
        idx = s.keyspace("index")
        idx.put(b"k", b"v")
        s.drop_keyspace("index")
        with pytest.raises(KeyspaceNotFoundError):
            idx.scan()
        with pytest.raises(KeyspaceNotFoundError, match="dropped"):
            getattr(idx, view)()


def test_an_async_scan_of_a_closed_store_raises_at_the_call(tmp_path: Any) -> None:
    # As the synchronous scan(), and as AsyncLog.read() of a closed log already did.
    async def main() -> None:
        store = await banyanstore.aio.open(str(tmp_path / "s"))
        idx = await store.keyspace("index")
        await store.close()
        for call in (store.scan, store.keys, idx.scan, idx.keys, store.__aiter__):
            with pytest.raises(StoreClosedError):
                call()
    asyncio.run(main())


# -- 6. a missing keyspace's error names a bounded number of the others ---------------
def test_a_missing_keyspace_error_lists_at_most_twenty_names(tmp_path: Any) -> None:
    from banyanstore.errors import KeyspaceNotFoundError, ReadOnlyError
    root = str(tmp_path / "s")
    with banyanstore.open(root) as s:
        for i in range(500):
            s.keyspace(f"ks{i:04d}")
        for call in (lambda: s.batch().put(b"k", b"v", keyspace="nope"),
                     lambda: s.snapshot().get(b"k", keyspace="nope"),
                     lambda: s.drop_keyspace("nope")):
            with pytest.raises(KeyspaceNotFoundError) as info:
                call()
            message = str(info.value)
            assert "'nope'" in message and "'default'" in message and "'ks0018'" in message
            assert "'ks0019'" not in message and "and 481 more" in message, message
            assert len(message) < 600
    with banyanstore.open(root, read_only=True) as ro, pytest.raises(ReadOnlyError) as info:
        ro.keyspace("nope")
    assert "and 481 more" in str(info.value) and len(str(info.value)) < 800


def test_a_missing_keyspace_error_lists_every_name_of_a_few(tmp_path: Any) -> None:
    from banyanstore.errors import KeyspaceNotFoundError
    with banyanstore.open(str(tmp_path / "s")) as s:
        s.keyspace("index")
        with pytest.raises(KeyspaceNotFoundError, match=r"\(it has 'default', 'index'\)"):
            s.drop_keyspace("nope")


# -- 5. an async scan has no truth value ----------------------------------------------
def test_an_async_scan_refuses_a_truth_test_instead_of_always_true(tmp_path: Any) -> None:
    # `if store.keys(prefix=p):` is an emptiness test on a synchronous view; the same
    # line on an AsyncStore was always true (an empty range taken for a full one).
    async def main() -> tuple[Any, Any]:
        async with await banyanstore.aio.open(str(tmp_path / "s")) as store:
            with pytest.raises(TypeError, match="anext"):
                bool(store.keys(prefix=b"nothing"))
            first = await anext(aiter(store.keys(prefix=b"nothing")), None)  # the way to ask
            await store.put(b"k", b"v")
            present = await anext(aiter(store.keys()), None)
        log = await banyanstore.aio.open_log(str(tmp_path / "l"))
        try:
            with pytest.raises(TypeError):
                bool(log.read())
        finally:
            await log.close()
        return first, present
    assert asyncio.run(main()) == (None, b"k")


# -- batches: their store closed, or themselves done ----------------------------------
def test_adding_to_a_batch_of_a_closed_store_raises_at_the_call(tmp_path: Any) -> None:
    # docs/api.md: after close() "the handles and batches made before raise
    # StoreClosedError" -- adding to one was accepted, and only its commit raised.
    s = banyanstore.open(str(tmp_path / "s"))
    s.keyspace("index")
    b = s.batch()
    b.put(b"a", b"1")
    s.close()
    for add in (lambda: b.put(b"k", b"v"), lambda: b.delete(b"k"),
                lambda: b.delete_range(b"a", b"b"), lambda: b.put(b"k", b"v", keyspace="index")):
        with pytest.raises(StoreClosedError):
            add()
    assert len(b) == 1
    with pytest.raises(StoreClosedError), b:
        pytest.fail("entered a batch of a closed store")  # pragma: no cover
    with pytest.raises(StoreClosedError):
        b.commit()
    assert b.version is None


def test_with_a_committed_batch_raises_at_entry(tmp_path: Any) -> None:
    with banyanstore.open(str(tmp_path / "s")) as s:
        with s.batch() as b:
            b.put(b"k", b"v")
        with pytest.raises(RuntimeError, match="already committed"), b:
            pytest.fail("entered a committed batch")  # pragma: no cover
        d = s.batch()
        d.discard()
        with pytest.raises(RuntimeError), d:
            pytest.fail("entered a discarded batch")  # pragma: no cover
        assert s.get(b"k") == b"v"


# -- what a keyspace handle's repr says ------------------------------------------------
def test_a_keyspace_repr_says_closed_or_dropped_as_the_store_repr_does(tmp_path: Any) -> None:
    s = banyanstore.open(str(tmp_path / "s"))
    idx, gone = s.keyspace("index"), s.keyspace("gone")
    assert "closed" not in repr(idx) and "dropped" not in repr(idx)
    s.drop_keyspace("gone")
    assert "dropped" in repr(gone)
    s.close()
    assert "closed" in repr(s) and "closed" in repr(idx)


def test_a_batch_repr_says_its_store_operations_and_state(tmp_path: Any) -> None:
    """A batch printed while debugging said only ``<banyanstore.lsm.batch.Batch object at
    0x...>``: not which store, how many operations, or whether it was committed."""
    with banyanstore.open(str(tmp_path / "s")) as s:
        b = s.batch()
        b.put(b"k", b"v")
        b.delete(b"j")
        assert repr(b) == f"<banyanstore.Batch of {s.path!r}: 2 operations>"
        v = b.commit()
        assert repr(b) == f"<banyanstore.Batch of {s.path!r}: committed at version {v}>"
        d = s.batch()
        d.discard()
        assert repr(d) == f"<banyanstore.Batch of {s.path!r}: discarded>"
        empty = s.batch()
        empty.commit()
        assert repr(empty) == f"<banyanstore.Batch of {s.path!r}: committed at version None>"
    e = banyanstore.open(str(tmp_path / "t"))
    f = e.batch()
    f.put(b"k", b"v")
    e.close()
    with pytest.raises(banyanstore.StoreClosedError):
        f.commit()
    assert repr(f).startswith(f"<banyanstore.Batch of {e.path!r}: commit failed (StoreClosedError")


def test_a_dbm_repr_says_its_path_and_whether_it_is_open(tmp_path: Any) -> None:
    import banyanstore.dbm
    path = str(tmp_path / "d")
    db = banyanstore.dbm.open(path, "c")
    assert repr(db) == f"<banyanstore.dbm database {path!r} read-write>"
    db.close()
    assert repr(db) == f"<banyanstore.dbm database {path!r} closed>"
    with banyanstore.dbm.open(path, "r") as ro:
        assert repr(ro) == f"<banyanstore.dbm database {path!r} read-only>"


def test_a_read_only_store_and_log_say_so_in_their_repr(tmp_path: Any) -> None:
    """A read-only store printed as ``<banyanstore.Store 'p' version 1>``, the writer's
    repr: nothing told a reader's handle from the writer's.  An empty log printed
    ``seqs [1, 0]``."""
    path = str(tmp_path / "s")
    with banyanstore.open(path) as w, banyanstore.open(path, read_only=True) as r:
        assert repr(w) == f"<banyanstore.Store {path!r} version 0>"
        assert repr(r) == f"<banyanstore.Store {path!r} read-only version 0>"
    assert repr(r) == f"<banyanstore.Store {path!r} closed>"
    lpath = str(tmp_path / "log")
    with banyanstore.open_log(lpath) as log, banyanstore.open_log(lpath, read_only=True) as ro:
        assert repr(log) == f"<banyanstore Log {lpath!r} empty>"
        assert repr(ro) == f"<banyanstore Log {lpath!r} read-only empty>"
        log.append(b"x")
        ro.refresh()
        assert repr(log) == f"<banyanstore Log {lpath!r} seqs [1, 1]>"
        assert repr(ro) == f"<banyanstore Log {lpath!r} read-only seqs [1, 1]>"
    assert repr(log) == f"<banyanstore Log {lpath!r} closed>"
