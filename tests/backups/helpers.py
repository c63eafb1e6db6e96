"""Stores with history in several keyspaces, and exact comparisons of two stores."""

from __future__ import annotations

import random
from typing import Any

import banyanstore

KEYSPACES = ("default", "idx", "ttl")
OPTIONS: dict[str, Any] = {"memtable_size": 64 * 1024, "compaction": False, "compaction_mode": "thread",
                           "io_mode": "sync"}


def keys(n: int) -> list[bytes]:
    return [b"k%05d" % i for i in range(n)] + [b"\x00bin\xff"]


def fill(store: Any, rng: random.Random, ops: int, universe: list[bytes]) -> None:
    """Puts, deletes and cross-keyspace batches over ``universe``; a keyspace with a TTL."""
    idx = store.keyspace("idx")
    store.keyspace("ttl")
    store.keyspace("ttl", ttl=3600)
    for i in range(ops):
        key = rng.choice(universe)
        r = rng.random()
        if r < 0.1:
            store.delete(key)
        elif r < 0.2:
            with store.batch() as b:
                b.put(key, b"batch %d" % i)
                b.put(key, b"%d" % i, keyspace="idx")
                b.delete(rng.choice(universe), keyspace="ttl")
        elif r < 0.3:
            idx.put(key, rng.randbytes(rng.randrange(0, 300)))
        else:
            store.put(key, b"v%d-" % i + rng.randbytes(rng.randrange(0, 200)))


def dump(store: Any, universe: list[bytes]) -> dict[str, Any]:
    """Everything a reader can see: version, floor, keyspaces, every key's history."""
    out: dict[str, Any] = {"version": store.version, "oldest": store.oldest_version,
                           "keyspaces": store.keyspaces()}
    for name in store.keyspaces():
        ks = store.keyspace(name)
        out[name] = {k: list(ks.history(k)) for k in universe}
        out[name + ":scan"] = list(ks.scan())
    return out


def latest(store: Any) -> dict[str, list[tuple[bytes, bytes]]]:
    return {name: list(store.keyspace(name).scan()) for name in store.keyspaces()}


def restored(url: str, dest: str, universe: list[bytes], **kwargs: Any) -> dict[str, Any]:
    banyanstore.restore(url, dest, **kwargs)
    # A writer open: it reports the history floor the manifest holds (a read-only one
    # may report a lower one, see lsm/follower.py).
    with banyanstore.open(dest, **OPTIONS) as copy:
        return dump(copy, universe)
