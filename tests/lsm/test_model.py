"""The randomized model test over every IO mode: thousands of operations,
with flushes, merges, snapshots, history floors and reopens."""

from __future__ import annotations

import pytest

import banyanstore

from .model import FakeClock, run_workload

SMALL = dict(memtable_size=64 * 1024, block_size=1024, compaction_min_width=2,
             compaction_max_width=4, block_cache_size=256 * 1024, wal_sync="never")


@pytest.mark.parametrize("retention", [None, 1e9], ids=["reclaim", "keep-history"])
def test_store_matches_model(env_dir, retention):
    env, root = env_dir
    opts = dict(SMALL, history_retention=retention)

    def open_store():
        return banyanstore.open(root, env=env, **opts)

    store, model = run_workload(open_store, seed=hash((env.mode, retention)) & 0xFFFF, steps=1500)
    store.close()


@pytest.mark.parametrize("seed", range(3))
def test_store_matches_model_more_seeds(tmp_path, seed):
    def open_store():
        return banyanstore.open(tmp_path / "db", io_mode="sync", **SMALL,
                                history_retention=None if seed % 2 else 1e9,
                                compression=("none", "lz4", "zstd")[seed],
                                compaction_mode=("thread", "process", "process")[seed])

    store, _ = run_workload(open_store, seed=1000 + seed, steps=2500, n_keys=1000)
    store.close()


@pytest.mark.parametrize("retention", [None, 30.0], ids=["reclaim", "retain-30s"])
@pytest.mark.parametrize("ttl", [None, 20.0], ids=["no-ttl", "ttl-20s"])
def test_store_matches_model_with_time(tmp_path, ttl, retention):
    """TTL and history retention under an injectable clock: expired entries vanish
    from every read exactly when the documented rule says, merges (forced at
    random, and in the background) reclaim only what no retained read needs."""
    clock = FakeClock()

    def open_store():
        return banyanstore.open(tmp_path / "db", io_mode="sync", clock=clock, ttl=ttl,
                                **dict(SMALL, history_retention=retention))

    store, _ = run_workload(open_store, seed=7, steps=2500, n_keys=400, clock=clock, ttl=ttl)
    store.close()
