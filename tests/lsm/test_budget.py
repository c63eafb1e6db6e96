"""One memory budget for the block cache and the memtables (lsm/budget.py): while
memtables fill, the cache gives up blocks so that both stay within ``block_cache_size``
(down to a quarter of it); a flush gives the room back.  And the flush worker starts
while the first memtable fills, not when its flush begins."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore import accel
from banyanstore.lsm.budget import FLOOR_PART, MemoryBudget
from banyanstore.sstable.cache import PyBlockCache

MiB = 1 << 20


def test_budget_charges_active_and_sealed_memtables_down_to_the_floor() -> None:
    cache = PyBlockCache(64 * MiB)
    budget = MemoryBudget(cache)
    budget.set_active(10 * MiB)
    assert cache.limit == 54 * MiB
    budget.set_sealed(30 * MiB)
    assert cache.limit == 24 * MiB and budget.memtable_bytes == 40 * MiB
    budget.set_active(60 * MiB)
    assert cache.limit == 64 * MiB // FLOOR_PART  # the floor, whatever the memtables hold
    budget.set_sealed(0)
    budget.set_active(0)
    assert cache.limit == 64 * MiB


def test_budget_with_a_zero_cache() -> None:
    cache = PyBlockCache(0)
    budget = MemoryBudget(cache)
    budget.set_active(5 * MiB)
    assert cache.limit == 0


def fill_cache(store: Any, n: int) -> int:
    """Read every key (each block cached); returns the cache's usage."""
    assert sum(1 for _ in store.scan(end=b"w")) == n
    for i in range(0, n, 97):
        assert store.get(b"%08d" % i) is not None
    return int(store.stats()["block_cache"]["usage"])


@pytest.mark.parametrize("share", [True, False])
def test_writes_take_room_from_a_full_cache_and_a_flush_gives_it_back(
        tmp_path: Path, share: bool) -> None:
    """A store that served reads (cache full) takes writes: its cache shrinks as the
    memtable grows -- usage within capacity minus the memtable's charge, as of the last
    step -- and after a flush may use its whole capacity again.  Without
    ``memtables_share_cache`` the cache keeps its capacity throughout."""
    cap = 2 * MiB
    opts: dict[str, Any] = dict(block_cache_size=cap, memtable_size=4 * MiB, compaction=False,
                                memtables_share_cache=share)
    n = 30_000
    with banyanstore.open(tmp_path / "db", **opts) as store:
        for i in range(n):
            store.put(b"%08d" % i, b"v" * 100)
        store.flush()
        assert fill_cache(store, n) > cap * 3 // 4
        for i in range(8_000):  # ~1.4 MB of memtable, about a third of memtable_size
            store.put(b"w%07d" % i, b"w" * 100)
        cache = store.stats()["block_cache"]
        if share:
            assert cache["limit"] <= cap - (1 * MiB) and cache["usage"] <= cache["limit"]
            assert cache["limit"] >= cap // FLOOR_PART
        else:
            assert cache["limit"] == cap and cache["usage"] > cap * 3 // 4
        store.flush()
        assert store.stats()["block_cache"]["limit"] == cap
        assert fill_cache(store, n) > cap * 3 // 4


def test_the_compiled_put_path_takes_the_budgets_steps(tmp_path: Path) -> None:
    """Puts through the one-call path (when the compiled core is in use) stop at each step
    (a sixteenth of memtable_size, at most MEM_STEP_MAX), so the budget follows them too."""
    cap = 8 * MiB
    with banyanstore.open(tmp_path / "db", block_cache_size=cap, memtable_size=4 * MiB,
                          compaction=False) as store:
        for i in range(10_000):  # ~1.8 MB
            store.put(b"%08d" % i, b"v" * 100)
        charged = store.stats()["memtable_bytes"]
        limit = store.stats()["block_cache"]["limit"]
        assert charged > 1 * MiB
        assert cap - charged <= limit <= cap - charged + (4 * MiB) // 16
        assert store.stats()["writes_in_one_call"] > 0 or accel.native is None


def test_the_flush_worker_starts_before_the_first_flush(tmp_path: Path) -> None:
    """In process mode the flush worker starts once the first memtable is half full (so
    the first flush does not wait for a process to start while the next memtable fills),
    not at open, and not for a store that writes little."""
    with banyanstore.open(tmp_path / "db", memtable_size=1 * MiB, compaction=False) as store:
        workers = store._workers  # noqa: SLF001 - the worker pool is what is checked
        for i in range(1_000):  # ~0.2 MB: below half
            store.put(b"%08d" % i, b"v" * 100)
        time.sleep(0.2)
        assert not workers.running("flush")
        for i in range(1_000, 3_500):  # ~0.63 MB: past half, no flush yet
            store.put(b"%08d" % i, b"v" * 100)
        deadline = time.monotonic() + 30
        while not workers.running("flush") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert workers.running("flush")
        assert store.stats()["flush"]["flushes"] == 0


def test_a_flush_worker_that_cannot_start_early_does_not_stop_flushing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The early start of the flush worker failing (EMFILE, EAGAIN from fork) is left to
    the flush itself, which starts it again: before, the OSError ended the flusher thread
    and writers waiting for room waited forever (found by review)."""
    from banyanstore.lsm import workers as workers_mod

    real = workers_mod.Worker
    failures = [1]

    def flaky() -> Any:
        if failures[0]:
            failures[0] -= 1
            raise OSError(24, "Too many open files")
        return real()

    monkeypatch.setattr(workers_mod, "Worker", flaky)
    with banyanstore.open(tmp_path / "db", memtable_size=256 * 1024, max_immutable_memtables=1,
                          compaction=False) as store:
        for i in range(6_000):  # ~1.1 MB: several switches, a stall for room among them
            store.put(b"%08d" % i, b"v" * 100)
        store.flush()
        assert failures == [0]
        assert store.stats()["flush"]["flushes"] >= 3
        assert store.get(b"%08d" % 5_999) == b"v" * 100


def test_a_dropped_keyspaces_memtable_leaves_the_budget_at_the_next_flush(tmp_path: Path) -> None:
    """A flush with only a dropped keyspace's memtable charged (nothing left to seal)
    clears the charge: the cache may use its whole capacity again (found by review)."""
    cap = 4 * MiB
    with banyanstore.open(tmp_path / "db", block_cache_size=cap, memtable_size=8 * MiB,
                          compaction=False) as store:
        logs = store.keyspace("logs")
        for i in range(6_000):
            logs.put(b"%08d" % i, b"v" * 100)
        assert store.stats()["block_cache"]["limit"] < cap
        store.drop_keyspace("logs")
        store.flush()
        assert store.stats()["block_cache"]["limit"] == cap
        assert store.stats()["memtable_bytes"] == 0
