"""``Keyspace.closed`` and ``AsyncKeyspace.closed``: true once the store is closed or
the keyspace dropped, when every call of the handle raises."""

from __future__ import annotations

import asyncio

import pytest

import banyanstore
import banyanstore.aio
from banyanstore.errors import KeyspaceNotFoundError, StoreClosedError


def test_a_keyspace_handle_is_closed_once_dropped_or_its_store_closed(tmp_path) -> None:
    store = banyanstore.open(tmp_path / "s")
    index, other = store.keyspace("index"), store.keyspace("other")
    assert not index.closed and not other.closed and not store.closed
    store.drop_keyspace("index")
    assert index.closed and not other.closed
    with pytest.raises(KeyspaceNotFoundError):
        index.get(b"k")
    again = store.keyspace("index")  # a new keyspace of the name: the old handle stays closed
    assert not again.closed and index.closed
    store.close()
    assert other.closed and again.closed and store.closed
    with pytest.raises(StoreClosedError):
        other.get(b"k")


def test_an_async_keyspace_is_closed_once_dropped_or_its_store_closed(tmp_path) -> None:
    async def main() -> None:
        store = await banyanstore.aio.open(tmp_path / "s")
        index, other = await store.keyspace("index"), await store.keyspace("other")
        assert not index.closed and not other.closed and not store.closed
        await store.drop_keyspace("index")
        assert index.closed and not other.closed
        with pytest.raises(KeyspaceNotFoundError):
            await index.get(b"k")
        await store.close()
        assert other.closed and store.closed
        with pytest.raises(StoreClosedError):
            await other.get(b"k")

    asyncio.run(main())
