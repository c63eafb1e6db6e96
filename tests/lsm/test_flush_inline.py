"""A small memtable is flushed in the writer's process (lsm/flush.py, INLINE_FLUSH_BYTES).

Before, every flush in process mode went to the flush worker process, so closing a store
that had taken one write started a process to build a table of one entry: close() took
0.2-0.5 s instead of milliseconds.  A large memtable, or any flush once the worker runs,
still goes to the worker (it keeps the table building off the writer's GIL).
"""

from __future__ import annotations

from typing import Any

import pytest

import banyanstore
from banyanstore.lsm import flush, workers


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the worker processes started (one entry per start)."""
    count: list[int] = []
    real_init = workers.Worker.__init__

    def counting_init(self: Any) -> None:
        count.append(1)
        real_init(self)

    monkeypatch.setattr(workers.Worker, "__init__", counting_init)
    return count


def test_closing_after_a_few_writes_starts_no_worker_process(tmp_path, started):
    for round_ in range(3):
        with banyanstore.open(tmp_path / "db", compaction=False) as s:
            s.put(b"k%d" % round_, b"v%d" % round_)
            s.delete_range(b"x", b"y")
    assert started == []
    with banyanstore.open(tmp_path / "db", compaction=False) as s:
        assert [s.get(b"k%d" % i) for i in range(3)] == [b"v0", b"v1", b"v2"]
        assert s.stats()["keyspaces"]["default"]["tables"] == 3


def test_a_memtable_of_inline_flush_bytes_goes_to_the_worker(tmp_path, started):
    value = b"v" * 1000
    n = flush.INLINE_FLUSH_BYTES // len(value) + 1
    with banyanstore.open(tmp_path / "db", compaction=False, memtable_size=64 << 20) as s:
        for i in range(n):
            s.put(b"k%06d" % i, value)
        s.flush()
        assert started == [1]
        s.put(b"small", b"1")
        s.flush()  # small, but the worker runs: it builds this table too
        assert started == [1]
    with banyanstore.open(tmp_path / "db", compaction=False) as s:
        assert s.get(b"k%06d" % (n - 1)) == value and s.get(b"small") == b"1"
