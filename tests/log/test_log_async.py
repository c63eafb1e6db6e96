"""Synced appends from asyncio tasks: they share group commit with each other and with
threads, without a thread per waiter, and nobody hangs."""

from __future__ import annotations

import asyncio
import errno
import threading
import time

import pytest
from log_helpers import open_log, payload

from banyanstore.errors import LogRangeError, StorageIOError
from banyanstore.io.faults import FaultEnv
from banyanstore.io.hooked import HookedEnv
from banyanstore.io.posix import PosixEnv
from banyanstore.log.commit import ALREADY_SYNCED, GroupCommit

TASKS, PER_TASK = 200, 10


def _runner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("banyanstore-log-commit")]


def test_many_tasks_share_fdatasyncs(real_env_dir):
    env, root = real_env_dir
    with open_log(env, root) as log:
        threads_before = threading.active_count()

        async def writer(i: int) -> list[int]:
            seqs = []
            for _ in range(PER_TASK):
                seq = await log.append_async(payload(i), sync=True)
                assert log.durable_seq >= seq  # durable when the await returns
                seqs.append(seq)
            return seqs

        async def main() -> list[list[int]]:
            return await asyncio.gather(*(writer(i) for i in range(TASKS)))

        results = asyncio.run(main())
        st = log.stats()
        assert threading.active_count() <= threads_before + 1, "a thread per waiter?"
        assert len(_runner_threads()) == 1
    total = TASKS * PER_TASK
    assert sorted(s for r in results for s in r) == list(range(1, total + 1))
    # One fdatasync per append would be `total`; sharing brings it far below.
    assert st["group_commit_batches"] <= total / 10, st
    assert not _runner_threads(), "close() stops the runner"


def test_threads_alone_never_start_the_runner(real_env_dir):
    env, root = real_env_dir
    with open_log(env, root) as log:
        ts = [threading.Thread(target=lambda: [log.append(b"x", sync=True) for _ in range(50)])
              for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not _runner_threads()


def test_tasks_and_threads_share_rounds_across_rotations_without_hanging(env_dir):
    """Tasks and threads wait in the same rounds while tiny segments rotate: the lead
    passes between threads and the runner, and every waiter is settled."""
    env, root = env_dir
    with open_log(env, root) as log:  # 64 KiB segments
        stop = time.monotonic() + 1.5
        thread_acks: list[int] = []

        def thread_writer() -> None:
            while time.monotonic() < stop:
                seq = log.append(b"t" * 100, sync=True)
                assert log.durable_seq >= seq
                thread_acks.append(seq)

        async def task_writer() -> int:
            n = 0
            while time.monotonic() < stop:
                seq = await log.append_async(b"a" * 100, sync=True)
                assert log.durable_seq >= seq
                n += 1
            return n

        async def main() -> list[int]:
            return await asyncio.wait_for(asyncio.gather(*(task_writer() for _ in range(50))), 60)

        ts = [threading.Thread(target=thread_writer, daemon=True) for _ in range(4)]
        for t in ts:
            t.start()
        task_acks = sum(asyncio.run(main()))
        for t in ts:
            t.join(30)
        assert not any(t.is_alive() for t in ts), f"a thread hung: {log.stats()}"
        assert task_acks and thread_acks and log.stats()["segments"] > 2
        assert log.durable_seq == log.last_seq


def test_a_cancelled_task_does_not_disturb_the_others(tmp_path):
    from banyanstore.io.posix import PosixEnv
    env = PosixEnv()
    with open_log(env, str(tmp_path)) as log:
        async def main() -> list[int]:
            victim = asyncio.create_task(log.append_async(b"cancelled", sync=True))
            others = [asyncio.create_task(log.append_async(b"x", sync=True)) for _ in range(20)]
            await asyncio.sleep(0)
            victim.cancel()
            seqs = await asyncio.gather(*others)
            with pytest.raises(asyncio.CancelledError):
                await victim
            seqs.append(await log.append_async(b"after", sync=True))
            return seqs

        seqs = asyncio.run(main())
        assert log.durable_seq >= max(seqs) and len(set(seqs)) == 21


def test_a_failed_sync_fails_every_awaiting_task(real_env_dir):
    env, root = real_env_dir
    fenv = FaultEnv(env)
    rule = fenv.inject("sync", errno.EIO, path_contains=".log", after=5)
    log = open_log(fenv, root)

    async def writer() -> str:
        try:
            for _ in range(100):
                await log.append_async(b"x", sync=True)
        except StorageIOError:
            return "failed"
        return "done"

    async def main() -> list[str]:
        return await asyncio.wait_for(asyncio.gather(*(writer() for _ in range(30))), 60)

    outcomes = asyncio.run(main())
    assert rule.fired == 1 and outcomes == ["failed"] * 30
    with pytest.raises(StorageIOError):
        log.append(b"after the failure")
    log.close()  # every writer was told; close releases the log without writing more


def test_append_many_async_and_wait_durable_async(env_dir):
    env, root = env_dir
    with open_log(env, root, wal_sync="never") as log:
        async def main() -> None:
            last = await log.append_many_async([b"a", b"b", b"c"])  # wal_sync=never: no wait
            assert last == 3 and log.durable_seq < 3
            await log.wait_durable_async(3)
            assert log.durable_seq >= 3
            assert await log.append_many_async([b"d"], sync=True) == 4 and log.durable_seq >= 4
            with pytest.raises(LogRangeError):
                await log.wait_durable_async(5)
            with pytest.raises(TypeError, match="seq"):
                await log.wait_durable_async("4")  # type: ignore[arg-type]

        asyncio.run(main())


def test_commit_protocol_with_only_tasks():
    """The protocol alone: tasks park, the runner leads, a second round covers late
    arrivals, and the runner stops leading when nobody waits."""
    syncs: list[int] = []
    last = [0]

    class File:
        def sync(self) -> None:
            syncs.append(last[0])

    gc = GroupCommit(lambda: (last[0], File()))

    async def waiter(seq: int) -> None:
        await gc.wait_durable_async(seq)
        assert gc.durable_seq >= seq

    async def main() -> None:
        last[0] = 100
        await asyncio.gather(*(waiter(s) for s in range(1, 101)))
        last[0] = 150
        await asyncio.gather(*(waiter(s) for s in range(101, 151)))

    asyncio.run(main())
    gc.close()
    assert gc.durable_seq == 150 and 2 <= len(syncs) <= 4, syncs
    gc.wait_durable(150)  # nobody leads now, nothing parked: returns at once
    assert GroupCommit(lambda: (0, ALREADY_SYNCED))._runner is None


class StalledThenFailingSyncs(HookedEnv):
    """Once armed: the first segment sync stalls until ``release`` is set; the second
    (close's) fails with EIO."""

    def __init__(self) -> None:
        super().__init__(PosixEnv())
        self.armed = False
        self.stalled, self.release, self.failed = threading.Event(), threading.Event(), threading.Event()
        self._syncs = 0

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if not (self.armed and op == "sync" and paths and paths[0].endswith(".log")):
            return
        self._syncs += 1
        if self._syncs == 1:
            self.stalled.set()
            self.release.wait(10)
        elif self._syncs == 2:
            self.failed.set()
            raise OSError(errno.EIO, "injected", paths[0])


def test_waiters_behind_a_failed_close_are_not_told_their_records_are_durable(tmp_path):
    env = StalledThenFailingSyncs()
    log = open_log(env, str(tmp_path), wal_sync="never")
    log.append(b"before", sync=True)
    env.armed = True
    thread_outcome: list[object] = []

    def thread_waiter() -> None:
        try:
            thread_outcome.append(log.append(b"thread", sync=True))
        except StorageIOError as exc:
            thread_outcome.append(exc)

    async def parked(waits: int) -> None:
        while log.stats()["sync_waits"] < waits:
            await asyncio.sleep(0.001)

    async def main() -> list[object]:
        waits = log.stats()["sync_waits"]
        leader = asyncio.ensure_future(log.append_async(b"led", sync=True))  # the runner's round
        assert await asyncio.to_thread(env.stalled.wait, 10)
        behind = asyncio.ensure_future(log.append_async(b"parked", sync=True))
        waiter = threading.Thread(target=thread_waiter)
        waiter.start()
        await asyncio.wait_for(parked(waits + 3), 10)  # both wait behind the stalled round
        closer_outcome: list[object] = []

        def close() -> None:
            try:
                log.close()
            except OSError as exc:  # close's own sync failed: it says so
                closer_outcome.append(exc)

        closer = threading.Thread(target=close)
        closer.start()
        assert await asyncio.to_thread(env.failed.wait, 10)
        env.release.set()
        await asyncio.to_thread(closer.join, 10)
        await asyncio.to_thread(waiter.join, 10)
        assert closer_outcome
        outcomes = await asyncio.gather(leader, behind, return_exceptions=True)
        return [*outcomes, *thread_outcome]

    outcomes = asyncio.run(main())
    # "parked" and "thread" were made durable by nothing but close's failed sync.
    assert isinstance(outcomes[1], StorageIOError), outcomes
    assert isinstance(outcomes[2], StorageIOError), outcomes
