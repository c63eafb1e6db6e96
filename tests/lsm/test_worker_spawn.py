"""Worker processes live as long as the store's process, whichever thread started them.

A worker asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``), and to
Linux that parent is the *thread* that started it: a worker first needed by a thread
that then ended -- ``compact()`` called from a short-lived thread -- was killed with
that thread (SIGKILL), and the call of whichever thread used it next failed with
"background worker process died".
"""

from __future__ import annotations

import os
import sys
import threading

import pytest

from banyanstore.lsm.workers import WorkerPools

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG and /proc/self/task are Linux's")


def _wait_until_gone(native_id: int) -> None:
    """Wait until the kernel has finished the thread ``native_id`` (a joined Python thread
    may still be exiting): the parent-death signal, if any, has been sent by then."""
    task = f"/proc/self/task/{native_id}"
    for _ in range(1000):
        if not os.path.exists(task):
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"thread {native_id} did not end")


def test_a_worker_started_by_a_thread_that_ended_serves_the_next_call() -> None:
    pools = WorkerPools()
    try:
        first: list[int] = []
        thread = threading.Thread(target=lambda: first.append(pools.submit("merge", os.getpid)))
        thread.start()
        thread.join()
        assert thread.native_id is not None and first
        _wait_until_gone(thread.native_id)
        # the same process answers: it was neither killed nor replaced
        assert pools.submit("merge", os.getpid) == first[0]
        assert pools.pids() == first
    finally:
        pools.shutdown()


def test_the_spawning_thread_ends_when_the_last_pools_shut_down() -> None:
    """No thread is left behind by a closed store: the spawning thread ends once every
    pools that used it is shut down, and a later start makes a new one."""
    def spawners() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "banyanstore-worker-spawner"]

    first, second = WorkerPools(), WorkerPools()
    try:
        first.submit("flush", os.getpid)
        second.submit("flush", os.getpid)
        first.shutdown()
        assert len(spawners()) == 1  # second still uses it
        assert second.submit("merge", os.getpid) in second.pids()
    finally:
        first.shutdown()
        second.shutdown()
    for thread in spawners():
        thread.join(5)
    assert not spawners()
    again = WorkerPools()
    try:
        assert again.submit("flush", os.getpid) in again.pids() and len(spawners()) == 1
    finally:
        again.shutdown()


def test_a_worker_is_started_where_no_thread_can_be(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.12.0-3.12.2 refuse a new thread in an ``atexit`` hook ("can't create new
    thread at interpreter shutdown"), where the exit hook closes a store left open and its
    flush may need its first worker: the worker is then started by the calling thread --
    the exit hook's, which lives until the process ends -- not refused."""
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    pools = WorkerPools()
    try:
        assert pools.submit("flush", os.getpid) in pools.pids()
    finally:
        pools.shutdown()
