"""``stats()`` tells a writer's wait for memtable space apart from a stall on tables.

A slow run of writes (a benchmark round at half its usual speed) must be able to say
where its time went: ``stats()["stalls"]`` counted both kinds of wait together, so a
writer held up by a flush that had not freed a memtable yet looked the same as one held
up by unmerged tables.  Here the flusher is held inside a flush with
``max_immutable_memtables=1``, so the writer's next switch must wait for it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.lsm import flush

WAIT = 30.0  # seconds: only a hang reaches it


def test_a_writer_waiting_for_a_flush_is_counted_as_a_memtable_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = flush.build_table
    entered, release = threading.Event(), threading.Event()

    def gated(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait()  # (the finally below sets it)
        return real(*args, **kwargs)

    monkeypatch.setattr(flush, "build_table", gated)
    store = banyanstore.open(tmp_path / "db", memtable_size=64 * 1024, compaction=False,
                             compaction_mode="thread", max_immutable_memtables=1)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(400):  # 400 KB: several memtables of 64 KiB
                store.put(b"k%05d" % i, b"v" * 1000)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=writer)
    try:
        before = store.stats()["stalls"]
        assert before["memtable_waits"] == 0 and before["memtable_wait_seconds"] == 0
        thread.start()
        assert entered.wait(WAIT)  # the first memtable's flush is held
        # The writer fills the next memtable and must wait at its switch: one memtable
        # already waits for the (held) flusher.
        for _ in range(int(WAIT / 0.01)):
            if store.stats()["stalls"]["memtable_waits"] >= 1 or done.is_set():
                break
            threading.Event().wait(0.01)
        assert store.stats()["stalls"]["memtable_waits"] >= 1, "the writer never waited"
        assert not done.is_set(), "the writer finished while the flusher was held"
        release.set()
        thread.join(WAIT)
        assert not thread.is_alive() and not errors
        st = store.stats()["stalls"]
        assert st["memtable_waits"] >= 1 and st["memtable_wait_seconds"] > 0
        assert st["table_stalls"] == 0 and st["table_stall_seconds"] == 0  # compaction=False
        assert st["count"] == st["memtable_waits"] + st["table_stalls"]
        assert st["seconds"] == pytest.approx(st["memtable_wait_seconds"] + st["table_stall_seconds"],
                                              abs=1e-5)
    finally:
        release.set()
        thread.join(WAIT)
        store.close()
    with banyanstore.open(tmp_path / "db") as store:
        assert len(list(store.scan(prefix=b"k"))) == 400


def test_merges_started_counts_every_merge_begun(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "db", memtable_size=64 * 1024, compaction=False) as store:
        assert store.stats()["compaction"]["merges_started"] == 0
        for round_ in range(3):
            for i in range(50):
                store.put(b"k%05d" % i, b"%d" % round_ * 500)
            store.flush()
        store.compact()
        c = store.stats()["compaction"]
        assert c["merges"] >= 1
        assert c["merges_started"] == c["merges"] + c["failed_merges"]


def test_wal_rotations_at_memtable_switches_are_counted(tmp_path: Path) -> None:
    """Each memtable switch rotates the WAL with the write lock held, its syncs included:
    on a slow disk that is where writes wait, so stats() counts rotations and their time."""
    with banyanstore.open(tmp_path / "db", memtable_size=64 * 1024, compaction=False) as store:
        wal = store.stats()["wal"]
        assert wal["rotations"] == 0 and wal["rotate_seconds"] == 0
        for i in range(300):  # 300 KB: several switches of 64 KiB memtables
            store.put(b"k%05d" % i, b"v" * 1000)
        wal = store.stats()["wal"]
        assert wal["rotations"] >= 3 and wal["rotate_seconds"] > 0
        before = wal["rotations"]
        store.flush()  # a switch too
        assert store.stats()["wal"]["rotations"] == before + 1
