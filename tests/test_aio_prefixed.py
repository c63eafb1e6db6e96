"""banyanstore.aio's prefix views: AsyncKeyspace.prefixed / AsyncSnapshot.prefixed, the
synchronous views' answers and errors, awaited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import banyanstore.aio
from banyanstore.errors import KeyspaceNotFoundError, StoreClosedError


def test_a_view_reads_and_writes_relative_keys(tmp_path: Path) -> None:
    async def main() -> None:
        async with await banyanstore.aio.open(str(tmp_path / "s")) as store:
            view = store.prefixed(b"\xff")
            await view.put(b"a", b"1")
            await view.put(b"\xff", b"2")
            await store.put(b"\xfe", b"outside")
            assert await view.get(b"a") == b"1" and await view.get(b"x", default=b"-") == b"-"
            assert await view.contains(b"\xff") and not await view.contains(b"b")
            assert await view.multi_get([b"a", b"b"]) == [b"1", None]
            assert [row async for row in view.scan()] == [(b"a", b"1"), (b"\xff", b"2")]
            assert [k async for k in view.keys(reverse=True)] == [b"\xff", b"a"]
            assert [k async for k in view] == [b"a", b"\xff"]
            assert [k async for k in view.prefixed(b"\xff")] == [b""]
            assert len(await view.history(b"a")) == 1
            assert await view.approximate_count() >= 0 and await view.approximate_size() >= 0
            await view.delete(b"a")
            await view.delete_range(b"", b"\xff\xff")
            assert [k async for k in view] == [] and await store.get(b"\xfe") == b"outside"
            assert view.prefix == b"\xff" and view.view.store is store.store

    asyncio.run(main())


def test_mixed_batches_and_snapshots(tmp_path: Path) -> None:
    async def main() -> None:
        async with await banyanstore.aio.open(str(tmp_path / "s")) as store:
            index = await store.keyspace("index")
            a, t = store.prefixed(b"a/"), index.prefixed(b"t/")
            batch = store.batch()
            a.in_batch(batch).put(b"1", b"x")
            t.in_batch(batch).put(b"1", b"y")
            version = await store.write(batch)
            assert await store.get(b"a/1") == b"x" and await index.get(b"t/1") == b"y"
            own = a.batch()
            own.put(b"2", b"z")
            assert await a.write(own) == version + 1
            async with a.snapshot() as snap:
                await a.put(b"3", b"later")
                assert [row async for row in snap.scan()] == [(b"1", b"x"), (b"2", b"z")]
                assert await snap.get(b"3") is None and snap.version == version + 1
                assert await snap.prefixed(b"2").get(b"") == b"z"
            assert snap.closed
            async with store.snapshot() as full:
                tv = full.prefixed(b"t/", keyspace="index")
                assert await tv.multi_get([b"1"]) == [b"y"] and await tv.contains(b"1")
                assert [k async for k in tv] == [b"1"] and len(await tv.history(b"1")) == 1

    asyncio.run(main())


def test_closed_stores_and_dropped_keyspaces_raise(tmp_path: Path) -> None:
    async def main() -> None:
        store = await banyanstore.aio.open(str(tmp_path / "s"))
        index = await store.keyspace("index")
        view, iview = store.prefixed(b"p/"), index.prefixed(b"p/")
        snap = store.snapshot().prefixed(b"p/")
        await store.drop_keyspace("index")
        with pytest.raises(KeyspaceNotFoundError):
            await iview.get(b"k")
        await store.close()
        assert view.closed and snap.closed
        with pytest.raises(StoreClosedError):
            await view.get(b"k")
        with pytest.raises(StoreClosedError):
            await view.put(b"k", b"v")
        with pytest.raises(StoreClosedError):
            view.scan()  # checked at the call, as AsyncKeyspace.scan
        with pytest.raises(StoreClosedError):
            await snap.get(b"k")
        with pytest.raises(StoreClosedError):
            store.prefixed(b"p/")
        with pytest.raises(TypeError, match="prefix"):
            view.prefixed("q")  # type: ignore[arg-type]

    asyncio.run(main())
