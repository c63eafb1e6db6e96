"""``flush()`` waits for the memtables sealed before it returns, not for those other
threads' writes seal while it waits.

Under a steady stream of writes the flush queue is seldom empty: a ``flush()`` (and so
``compact()`` and ``checkpoint()``, which flush first) that waited for an empty queue
waited as long as the writers kept it busy -- seconds with four writer threads and
64 KiB memtables, without bound in principle.  Here the flusher is held inside the
second flush, so the old wait never ends; the new one returns once the first is in.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.lsm import flush

WAIT = 30.0  # seconds: only a hang reaches it


def test_flush_returns_when_its_memtables_are_in(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = flush.build_table
    entered = [threading.Event(), threading.Event()]
    release = [threading.Event(), threading.Event()]
    calls = [0]

    def gated(*args: Any, **kwargs: Any) -> Any:
        n = min(calls[0], 1)
        calls[0] += 1
        entered[n].set()
        release[n].wait()  # (the test's finally sets them all)
        return real(*args, **kwargs)

    store = banyanstore.open(tmp_path / "db", memtable_size=64 * 1024, compaction=False,
                             compaction_mode="thread", max_immutable_memtables=2)
    try:
        for i in range(100):
            store.put(b"a%05d" % i, b"x" * 100)
        monkeypatch.setattr(flush, "build_table", gated)
        done = threading.Event()
        errors: list[BaseException] = []

        def flusher() -> None:
            try:
                store.flush()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            done.set()

        caller = threading.Thread(target=flusher)
        caller.start()
        assert entered[0].wait(WAIT)  # the flush of the "a" keys is being built
        # Another thread's writes fill a memtable meanwhile: its switch queues a
        # second flush, which the flusher will be held in.
        i = 0
        while store.stats()["flush"]["pending"] < 2:
            store.put(b"b%05d" % i, b"y" * 1000)
            i += 1
        release[0].set()
        assert entered[1].wait(WAIT)
        assert done.wait(WAIT), "flush() waited for a memtable sealed after it was called"
        assert not errors
        assert store.stats()["flush"]["pending"] == 1  # the second is still held
        release[1].set()
        caller.join()
        store.flush()
        assert store.stats()["flush"]["pending"] == 0
    finally:
        for event in release:
            event.set()
        store.close()
    with banyanstore.open(tmp_path / "db") as store:
        assert len(list(store.scan(prefix=b"a"))) == 100
        assert len(list(store.scan(prefix=b"b"))) == i
