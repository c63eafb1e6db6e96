"""``AsyncStore.snapshot()``: a Snapshot's reads awaited, with the Snapshot's answers
and its rules after close (docs/api.md, Snapshots and asyncio)."""

from __future__ import annotations

import asyncio
import copy
import pickle
import random

import pytest

import banyanstore.aio
from banyanstore.errors import KeyspaceNotFoundError, StoreClosedError


def _fill(store, rng: random.Random, n: int = 600) -> None:  # type: ignore[no-untyped-def]
    index = store.keyspace("index")
    for i in range(n):
        key = b"k%05d" % rng.randrange(n)
        ks = index if i % 3 == 0 else store
        if rng.random() < 0.1:
            ks.delete(key)
        else:
            ks.put(key, b"v%d" % i)
        if i == n // 2:
            store.flush()  # some in a table, some in the memtable


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_async_snapshot_reads_what_the_sync_snapshot_reads(tmp_path, seed):
    rng = random.Random(seed)

    async def main() -> None:
        async with await banyanstore.aio.open(tmp_path / "s", memtable_size=64 * 1024) as store:
            _fill(store.store, rng)
            async with store.snapshot() as snap:
                twin = snap.snapshot
                version = snap.version
                _fill(store.store, rng)  # later writes: invisible to both
                assert version == twin.version < store.version and not snap.closed
                for ks in (None, "index"):
                    keys = [b"k%05d" % rng.randrange(700) for _ in range(40)]
                    assert await snap.multi_get(keys, keyspace=ks) == twin.multi_get(keys, keyspace=ks)
                    for key in keys[:10]:
                        assert await snap.get(key, keyspace=ks) == twin.get(key, keyspace=ks)
                        assert await snap.get(key, keyspace=ks, default=b"-") == twin.get(
                            key, keyspace=ks, default=b"-")
                        present = twin.get(key, keyspace=ks) is not None
                        assert await snap.contains(key, keyspace=ks) == present
                        assert await snap.history(key, keyspace=ks) == list(twin.history(key, keyspace=ks))
                    for kw in ({}, {"reverse": True}, {"prefix": b"k001"}, {"limit": 7},
                               {"start": b"k002", "end": b"k004", "reverse": True}):
                        assert [r async for r in snap.scan(keyspace=ks, **kw)] == list(
                            twin.scan(keyspace=ks, **kw))
                        assert [r async for r in snap.keys(keyspace=ks, **kw)] == list(
                            twin.scan(keyspace=ks, keys_only=True, **kw))
                assert [k async for k in snap] == list(twin)
            assert snap.closed and twin.closed

    asyncio.run(main())


def test_a_closed_async_snapshot_refuses_every_read_as_the_sync_one(tmp_path):
    async def main() -> None:
        store = await banyanstore.aio.open(tmp_path / "s")
        await store.put(b"a", b"1")
        snap = store.snapshot()
        begun = snap.scan()  # checked at the call, read at the first step
        await snap.close()
        await snap.close()  # idempotent
        assert snap.closed and "closed" in repr(snap)
        await _refuses_everything(snap, begun)

        live = store.snapshot()
        await store.close()  # its store closed: the snapshot is closed too
        assert live.closed
        await _refuses_everything(live, None)
        with pytest.raises(StoreClosedError):
            store.snapshot()

    asyncio.run(main())


async def _refuses_everything(snap, begun) -> None:  # type: ignore[no-untyped-def]
    for call in (lambda: snap.get(b"a"), lambda: snap.multi_get([b"a"]), lambda: snap.contains(b"a"),
                 lambda: snap.history(b"a")):
        with pytest.raises(StoreClosedError):
            await call()
    for call in (snap.scan, snap.keys, lambda: snap.__aiter__()):
        with pytest.raises(StoreClosedError):  # at the call, as Snapshot.scan
            call()
    if begun is not None:
        with pytest.raises(StoreClosedError):
            [r async for r in begun]
    with pytest.raises(StoreClosedError):
        async with snap:
            pass


def test_a_keyspace_dropped_after_the_snapshot_is_gone_from_it(tmp_path):
    async def main() -> None:
        async with await banyanstore.aio.open(tmp_path / "s") as store:
            index = await store.keyspace("index")
            await index.put(b"x", b"1")
            async with store.snapshot() as snap:
                assert await snap.get(b"x", keyspace="index") == b"1"
                await store.drop_keyspace("index")
                with pytest.raises(KeyspaceNotFoundError):
                    await snap.get(b"x", keyspace="index")
                with pytest.raises(KeyspaceNotFoundError):
                    snap.scan(keyspace="index")
                with pytest.raises(KeyspaceNotFoundError):
                    snap.keys(keyspace="nope")

    asyncio.run(main())


@pytest.mark.parametrize(("call", "error", "name"), [
    (lambda s: s.get("a"), TypeError, "key"), (lambda s: s.multi_get(b"ab"), TypeError, "keys"),
    (lambda s: s.contains(1), TypeError, "key"), (lambda s: s.history(None), TypeError, "key"),
    (lambda s: s.scan(reverse="yes"), TypeError, "reverse"),
    (lambda s: s.scan(keys_only=1), TypeError, "keys_only"),
    (lambda s: s.scan(limit=-1), ValueError, "limit"), (lambda s: s.keys(limit="2"), TypeError, "limit"),
    (lambda s: s.scan(prefix="a"), TypeError, "prefix"),
    (lambda s: s.scan(start="a"), TypeError, "start"),
])
def test_bad_arguments_raise_naming_them(tmp_path, call, error, name):
    async def main() -> None:
        async with await banyanstore.aio.open(tmp_path / "s") as store, store.snapshot() as snap:
            with pytest.raises(error, match=name):
                result = call(snap)
                if asyncio.iscoroutine(result):
                    await result

    asyncio.run(main())


def test_an_async_snapshot_neither_pickles_nor_copies(tmp_path):
    async def main() -> None:
        async with await banyanstore.aio.open(tmp_path / "s") as store, store.snapshot() as snap:
            for refuse in (pickle.dumps, copy.copy, copy.deepcopy):
                with pytest.raises(TypeError, match="snapshot"):
                    refuse(snap)

    asyncio.run(main())
