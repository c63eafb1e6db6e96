"""A flush's manifest edit is durable before the WAL it replaces is cut, so losing the
edit -- a power loss before its fsync, at any step -- never loses data: the WAL still
holds every acknowledged write and the flush's tables are removed as unfinished outputs.

Proven with the crash-simulating env: the flush of a store holding 600 acknowledged
synced writes is crashed before each of its mutating IO operations in turn.
"""

from __future__ import annotations

from typing import Any

import pytest

import banyanstore
from banyanstore.io.memory import MemoryEnv
from banyanstore.lsm import flush

from .crashenv import CrashEnv, abandon

ROOT = "/db"
N = 600
OPTS: dict[str, Any] = dict(segment_size=64 * 1024, compaction=False, compression="none",
                            wal_sync="always")


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flush, "BACKOFF_START", 0.001)
    monkeypatch.setattr(flush, "BACKOFF_MAX", 0.002)


def key(i: int) -> bytes:
    return b"k%05d" % i


def value(i: int) -> bytes:
    return b"v%05d-" % i + b"x" * 100


def run(crash_at: int | None) -> tuple[MemoryEnv, CrashEnv, int]:
    """N synced puts (over two WAL segments), then flush(); crash before op ``crash_at``.
    Returns the disk, the env and the op count when the flush began."""
    disk = MemoryEnv()
    disk.mkdir(ROOT)
    env = CrashEnv(disk, crash_at)
    store = banyanstore.open(ROOT, env=env, **OPTS)
    try:
        for i in range(N):
            store.put(key(i), value(i))
        began = env.ops
        store.flush()
        store.close()
    except banyanstore.BanyanStoreError:
        assert env.dead
        abandon(store)
        return disk, env, -1
    return disk, env, began


def test_manifest_sync_precedes_every_wal_removal() -> None:
    disk, env, began = run(None)
    trace = env.trace[began:]
    edit_syncs = [i for i, (op, p) in enumerate(trace) if op == "sync" and "MANIFEST" in p]
    wal_removes = [i for i, (op, p) in enumerate(trace) if op == "remove" and "/wal/" in p]
    assert edit_syncs and wal_removes, trace
    assert edit_syncs[0] < wal_removes[0], trace


def test_crash_at_every_step_of_a_flush_loses_nothing() -> None:
    disk, env, began = run(None)
    flush_ops = env.ops - began
    assert flush_ops > 5
    for crash_at in range(began, env.ops + 1):
        disk, crashed, _ = run(crash_at)
        with banyanstore.open(ROOT, env=disk, **OPTS) as store:
            got = dict(store.scan())
        assert got == {key(i): value(i) for i in range(N)}, f"crash before op {crash_at}: " \
            f"{crashed.trace[-1] if crashed.trace else None}"
        named = set()
        with banyanstore.open(ROOT, env=disk, read_only=True, **OPTS) as store:
            for ks in store.stats()["keyspaces"].values():
                named |= {f"{t['file']:06d}.sst" for t in ks["table_list"]}
        assert set(disk.listdir(f"{ROOT}/tables")) == named
