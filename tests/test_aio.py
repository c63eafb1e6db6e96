"""banyanstore.aio: awaited store and log calls, ``async for`` scans taken in batches
per executor hop, synced appends of many tasks sharing fdatasyncs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

import banyanstore.aio
from banyanstore.errors import KeyspaceNotFoundError, StoreClosedError, VersionUnavailableError
from banyanstore.io.hooked import HookedEnv
from banyanstore.io.posix import PosixEnv

TASKS, PER_TASK = 200, 10


class SyncCounter(HookedEnv):
    """A real env that counts the fdatasyncs of files under ``wal/`` or of a log."""

    def __init__(self) -> None:
        super().__init__(PosixEnv())
        self.syncs = 0
        self._mu = threading.Lock()

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if op == "sync" and paths and paths[0].endswith(".log"):
            with self._mu:
                self.syncs += 1


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.hops = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        self.hops += 1
        return super().submit(fn, *args, **kwargs)


def test_store_calls_are_awaited(tmp_path):
    async def main() -> None:
        async with await banyanstore.aio.open(str(tmp_path / "s"), memtable_size=64 * 1024) as store:
            v1 = await store.put(b"a", b"1")
            assert await store.get(b"a") == b"1" and await store.get(b"b", default=b"-") == b"-"
            assert await store.contains(b"a") and not await store.contains(b"b")
            v2 = await store.delete(b"a")
            assert (v1, v2) == (1, 2) and store.version == 2
            assert await store.get(b"a", v1) == b"1" and await store.history(b"a") == [(2, None), (1, b"1")]
            index = await store.keyspace("index")
            batch = store.batch()
            batch.put(b"x", b"1", keyspace=index.handle)
            batch.put(b"y", b"2", keyspace="index")
            batch.put(b"c", b"3")
            assert await store.write(batch) == 3 and batch.version == 3
            assert await store.write(store.batch()) is None  # an empty batch: no version
            assert await index.multi_get([b"x", b"nope", b"y"]) == [b"1", None, b"2"]
            assert [k async for k in index] == [b"x", b"y"] and index.name == "index"
            assert [kv async for kv in index.scan(reverse=True, limit=1)] == [(b"y", b"2")]
            assert [kv async for kv in store.scan(version=v1)] == [(b"a", b"1")]
            await store.flush()
            await store.sync()
            assert isinstance(await store.compact(), dict)
            assert store.store.get(b"c") == b"3" and "AsyncStore" not in repr(store)
            assert store.keyspaces() == ["default", "index"]
            await store.drop_keyspace("index")
            assert store.keyspaces() == ["default"]
            with pytest.raises(KeyspaceNotFoundError):
                await index.get(b"x")
        assert store.closed
        with pytest.raises(StoreClosedError):
            await store.get(b"a")

    asyncio.run(main())


def test_delete_range_is_awaited_as_the_other_writes(tmp_path):
    """The store's writes are put, delete and delete_range: the asyncio wrappers (store
    and keyspaces) have all three, with the synchronous method's arguments and errors."""
    async def main() -> None:
        async with await banyanstore.aio.open(str(tmp_path / "s"), io_mode="sync") as store:
            index = await store.keyspace("index")
            for k in (b"a", b"b", b"c"):
                await store.put(k, b"1")
                await index.put(k, b"2")
            v = await store.delete_range(b"a", b"c")
            assert v == store.version and [k async for k in store.keys()] == [b"c"]
            assert await index.delete_range(b"b", b"z", sync=True) == v + 1
            assert [k async for k in index.keys()] == [b"a"]
            with pytest.raises(ValueError, match="end"):
                await store.delete_range(b"b", b"a")
            with pytest.raises(TypeError, match="start"):
                await index.delete_range("a", b"b")
            assert store.version == v + 1 and await store.get(b"a", v - 1) == b"1"

    asyncio.run(main())


def test_write_refuses_a_batch_of_another_store(tmp_path):
    """``await a.write(batch)`` commits to ``a``: a batch made by another store's batch()
    would silently go to that store (and return its version), so it is a ValueError
    naming the batch, and neither store changes."""
    async def main() -> None:
        async with await banyanstore.aio.open(str(tmp_path / "a"), io_mode="sync") as a, \
                await banyanstore.aio.open(str(tmp_path / "b"), io_mode="sync") as b:
            foreign = b.batch()
            foreign.put(b"k", b"v")
            with pytest.raises(ValueError, match="batch"):
                await a.write(foreign)
            assert (a.version, b.version) == (0, 0) and await b.get(b"k") is None
            assert await b.write(foreign) == 1 and await b.get(b"k") == b"v"

    asyncio.run(main())


def test_bad_arguments_raise_at_the_call_or_the_await(tmp_path):
    async def main() -> None:
        async with await banyanstore.aio.open(str(tmp_path / "s")) as store:
            with pytest.raises(TypeError, match="key"):
                await store.put("a", b"1")
            with pytest.raises(TypeError, match="keys"):
                await store.multi_get(b"ab")
            for bad in (lambda: store.scan(start="a"), lambda: store.scan(reverse=1),
                        lambda: store.scan(limit=-1), lambda: store.keys(version="1"),
                        lambda: store.scan(keys_only="yes")):
                with pytest.raises((TypeError, ValueError)):
                    bad()  # at the call, before any hop
            with pytest.raises(TypeError, match="batch"):
                await store.write([(b"k", b"v")])
            with pytest.raises(KeyspaceNotFoundError):
                batch = store.batch()
                batch.put(b"k", b"v", keyspace="nope")
            with pytest.raises(VersionUnavailableError):
                [row async for row in store.scan(version=5)]  # checked by the scan itself
        with pytest.raises(TypeError, match="executor"):
            await banyanstore.aio.open(str(tmp_path / "t"), executor=4)
        with ProcessPoolExecutor(1) as processes:  # the store cannot be sent to another process
            with pytest.raises(TypeError, match="executor"):
                await banyanstore.aio.open(str(tmp_path / "t"), executor=processes)
            with pytest.raises(TypeError, match="executor"):
                await banyanstore.aio.open_log(str(tmp_path / "l"), executor=processes)
            with pytest.raises(TypeError, match="executor"):
                banyanstore.aio.AsyncStore(store.store, executor=processes)

    asyncio.run(main())


def test_scans_take_rows_in_batches_not_one_hop_per_row(tmp_path):
    n = 5000
    executor = CountingExecutor()

    async def main() -> tuple[list[tuple[bytes, bytes]], int, list[bytes], int]:
        async with await banyanstore.aio.open(str(tmp_path / "s"), executor=executor) as store:
            batch = store.batch()
            for i in range(n):
                batch.put(b"k%05d" % i, b"v")
            await store.write(batch)
            await store.flush()
            before = executor.hops
            rows = [kv async for kv in store.scan()]
            scan_hops = executor.hops - before
            before = executor.hops
            short = [k async for k in store.keys(limit=3)]
            return rows, scan_hops, short, executor.hops - before

    try:
        rows, scan_hops, short, short_hops = asyncio.run(main())
    finally:
        executor.shutdown()
    assert rows == [(b"k%05d" % i, b"v") for i in range(n)]
    # 16, 64, 256, 1024, 1024, ...: 5000 rows in 8 hops (the last one short), not 5000.
    assert scan_hops <= 9, scan_hops
    assert short == [b"k00000", b"k00001", b"k00002"] and short_hops == 1


def test_many_tasks_share_fdatasyncs_of_synced_log_appends(tmp_path, capsys):
    env = SyncCounter()

    async def writer(log: banyanstore.aio.AsyncLog, i: int) -> list[int]:
        seqs = []
        for _ in range(PER_TASK):
            seq = await log.append(b"event %d" % i, sync=True)
            assert log.log.durable_seq >= seq  # durable when the await returns
            seqs.append(seq)
        return seqs

    async def main() -> tuple[list[list[int]], int, int]:
        log = await banyanstore.aio.open_log(str(tmp_path / "log"), env=env, wal_sync="never")
        async with log:
            threads_before = threading.active_count()
            syncs_before = env.syncs
            results = await asyncio.gather(*(writer(log, i) for i in range(TASKS)))
            syncs = env.syncs - syncs_before
            threads = threading.active_count() - threads_before
            assert [seq async for seq, _ in log.read(1, 3)] == [1, 2]
            return results, syncs, threads

    try:
        results, syncs, threads = asyncio.run(main())
    finally:
        env.close()
    total = TASKS * PER_TASK
    assert sorted(s for r in results for s in r) == list(range(1, total + 1))
    assert threads <= 2, "a thread per waiter?"  # the log's commit runner (+ an executor thread)
    # One fdatasync per append would be `total`; group commit shares them.
    assert 1 <= syncs <= total / 10, syncs
    with capsys.disabled():
        print(f"\naio log: {TASKS} tasks, {total} synced appends, {syncs} fdatasyncs")


def test_many_tasks_share_fdatasyncs_of_synced_store_puts(tmp_path, capsys):
    env = SyncCounter()
    executor = ThreadPoolExecutor(max_workers=16)
    tasks, per_task = 64, 10

    async def writer(store: banyanstore.aio.AsyncStore, i: int) -> None:
        for j in range(per_task):
            await store.put(b"k%d-%d" % (i, j), b"v", sync=True)

    async def main() -> int:
        async with await banyanstore.aio.open(str(tmp_path / "s"), env=env, executor=executor,
                                              wal_sync="never") as store:
            before = env.syncs
            await asyncio.gather(*(writer(store, i) for i in range(tasks)))
            syncs = env.syncs - before
            assert len([k async for k in store]) == tasks * per_task
            return syncs

    try:
        syncs = asyncio.run(main())
    finally:
        executor.shutdown()
        env.close()
    assert 1 <= syncs < tasks * per_task / 2, syncs
    with capsys.disabled():
        print(f"\naio store: {tasks} tasks, {tasks * per_task} synced puts, {syncs} fdatasyncs")


def test_log_wrapper(tmp_path):
    async def main() -> None:
        async with await banyanstore.aio.open_log(str(tmp_path / "log")) as log:
            assert await log.append_many([b"a", b"b", b"c"]) == 3
            await log.wait_durable(await log.append(b"d"))
            assert [r async for r in log] == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d")]
            assert [r async for r in log.read(2, limit=2)] == [(2, b"b"), (3, b"c")]
            assert await log.get(4) == b"d" and await log.sync() == 4
            with pytest.raises(TypeError, match="sync"):
                await log.append(b"x", sync="yes")
            with pytest.raises(TypeError, match="records"):
                await log.append_many(b"abc")
        assert log.closed

    asyncio.run(main())


def test_the_synchronous_api_does_not_load_the_asyncio_wrappers(tmp_path):
    code = ("import sys, banyanstore\n"
            f"with banyanstore.open({str(tmp_path / 's')!r}) as s:\n"
            "    s.put(b'k', b'v'); list(s.scan()); s.get(b'k')\n"
            "print('banyanstore.aio' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class GatedExecutor(ThreadPoolExecutor):
    """Its calls start only while ``gate`` is set; ``ran`` is set when one has returned."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.gate = threading.Event()
        self.gate.set()
        self.ran = threading.Event()
        self.at_gate = threading.Semaphore(0)  # released by each call that reached the gate

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        def gated():  # type: ignore[no-untyped-def]
            self.at_gate.release()
            self.gate.wait(10)
            try:
                return fn(*args, **kwargs)
            finally:
                self.ran.set()
        return super().submit(gated)


@pytest.mark.parametrize("opener", ["open", "open_log"])
@pytest.mark.parametrize("when", ["opening", "opened"])
def test_a_cancelled_open_closes_what_it_opened(tmp_path, opener, when):
    path = str(tmp_path / "db")
    executor = GatedExecutor()
    open_async = getattr(banyanstore.aio, opener)

    async def main() -> None:
        executor.gate.clear()
        task = asyncio.ensure_future(open_async(path, executor=executor))
        await asyncio.sleep(0.05)  # the open is submitted, waiting at the gate
        executor.gate.set()
        if when == "opened":  # done in its thread, its result not yet delivered to the task
            assert executor.ran.wait(10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    finally:
        executor.shutdown()  # an open still running ends (and closes) first
    with getattr(banyanstore, opener)(path):  # no StoreLockedError: nothing left it open
        pass



def test_a_cancelled_scan_step_loses_no_rows(tmp_path):
    executor = GatedExecutor()
    keys = [b"k%03d" % i for i in range(200)]

    async def main() -> list[bytes]:
        async with await banyanstore.aio.open(str(tmp_path / "s"), executor=executor) as store:
            batch = store.batch()
            for k in keys:
                batch.put(k, b"v")
            await store.write(batch)
            rows = store.keys().__aiter__()
            seen = [await rows.__anext__() for _ in range(16)]  # the first hop's rows
            executor.gate.clear()
            step = asyncio.ensure_future(rows.__anext__())
            await asyncio.sleep(0.05)  # its hop is submitted, waiting at the gate
            step.cancel()
            with pytest.raises(asyncio.CancelledError):
                await step
            executor.gate.set()
            seen += [k async for k in rows]
            return seen

    try:
        assert asyncio.run(main()) == keys
    finally:
        executor.shutdown()


@pytest.mark.parametrize("opener", ["open", "open_log"])
def test_close_closes_even_after_the_executor_was_shut_down(tmp_path, opener):
    path = str(tmp_path / "db")
    executor = ThreadPoolExecutor(1)

    async def main() -> None:
        async with await getattr(banyanstore.aio, opener)(path, executor=executor) as db:
            executor.shutdown()  # (by code that did not know the store still used it)
            with pytest.raises(RuntimeError, match="shutdown"):
                await db.sync()  # other calls: the executor's refusal
        assert db.closed

    asyncio.run(main())
    with getattr(banyanstore, opener)(path):  # its LOCK is free
        pass


def test_metadata_and_maintenance_calls_of_the_sync_store_are_there_too(tmp_path):
    """What a Store answers from metadata or does for maintenance -- estimates, stats,
    keyspace settings, the history floor -- an AsyncStore (and keyspace) answers alike,
    without reaching for ``store.store``."""
    async def main() -> None:
        executor = CountingExecutor()
        async with await banyanstore.aio.open(str(tmp_path / "s"), executor=executor,
                                              history_retention=0) as store:
            index = await store.keyspace("index", ttl=60)
            for i in range(100):
                await store.put(b"k%03d" % i, b"v" * 10)
            await index.put(b"i", b"1")
            sync_store = store.store
            assert await store.approximate_count() == sync_store.approximate_count() == 100
            assert await store.approximate_count(prefix=b"k05") == 10
            assert await store.approximate_size(b"k050") == sync_store.approximate_size(b"k050") > 0
            assert await index.approximate_count() == 1 and (store.id, index.id) == (0, 1)
            assert store.keyspace_info() == {"default": {"id": 0, "ttl": None}, "index": {"id": 1, "ttl": 60}}
            assert store.path == sync_store.path and store.options is sync_store.options
            stats = await store.stats()
            assert stats["keyspaces"]["default"]["tables"] == 0 and "block_cache" in stats
            hops = executor.hops
            await store.set_history_floor(50)
            assert executor.hops == hops + 1  # a manifest edit: in the executor
            assert store.history_floor == sync_store.history_floor == 50
            assert store.oldest_version == sync_store.oldest_version
            await index.set_ttl(None)  # a manifest edit too: in the executor
            assert executor.hops == hops + 2 and store.keyspace_info()["index"]["ttl"] is None
            with pytest.raises(TypeError, match="prefix"):
                await store.approximate_count(prefix="k")  # type: ignore[arg-type]
        executor.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("opener", ["open", "open_log"])
def test_a_cancelled_close_still_closes(tmp_path, opener):
    """A task cancelled while its ``close()`` waited for a free executor thread took the
    call back: the store (or log) stayed open with nobody holding it, its LOCK held --
    every later open of the path raised StoreLockedError until the interpreter exited.
    The close is now carried out; the task still sees its CancelledError."""
    path = str(tmp_path / "db")
    executor = GatedExecutor()  # two threads, both kept busy below

    async def main():  # type: ignore[no-untyped-def]
        db = await getattr(banyanstore.aio, opener)(path, executor=executor)
        executor.gate.clear()
        loop = asyncio.get_running_loop()
        busy = [loop.run_in_executor(executor, int) for _ in range(2)]  # both threads at the gate
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(db.close())
        await asyncio.sleep(0.05)  # submitted: queued behind the two calls
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        executor.gate.set()
        await asyncio.gather(*busy)
        await asyncio.to_thread(executor.shutdown)  # what was queued ends, this loop still running
        return db

    try:
        db = asyncio.run(main())
    finally:
        executor.shutdown()  # waits for what was queued
    assert db.closed
    with getattr(banyanstore, opener)(path):  # its LOCK is free
        pass


def test_log_read_takes_check_gaps_as_the_synchronous_read_does():
    """``AsyncLog.read`` had no ``check_gaps``: a program reading a log with a missing
    middle segment under its own policy (``log.read(check_gaps=False)``) got a TypeError
    from the asyncio twin, whose only answer was the CorruptionError."""
    from banyanstore.errors import CorruptionError
    from banyanstore.io.memory import MemoryEnv
    env = MemoryEnv()

    async def main():  # type: ignore[no-untyped-def]
        async with await banyanstore.aio.open_log("/log", env=env, segment_size=64 * 1024) as log:
            await log.append_many([b"r" * 20_000 for _ in range(20)])
        segments = sorted(p for p in env.snapshot_state() if p.endswith(".log"))
        env.remove(segments[1])
        async with await banyanstore.aio.open_log("/log", env=env, read_only=True) as log:
            with pytest.raises(CorruptionError):
                [r async for r in log.read()]
            seqs = [seq async for seq, _ in log.read(check_gaps=False)]
            with pytest.raises(TypeError, match="check_gaps"):
                log.read(check_gaps="no")
            return seqs, [seq for seq, _ in log.log.read(check_gaps=False)]

    seqs, sync_seqs = asyncio.run(main())
    assert seqs == sync_seqs and seqs[0] == 1 and seqs[-1] == 20 and len(seqs) < 20


def test_get_takes_its_arguments_as_the_synchronous_get_does(tmp_path):
    """``store.get(key, version, default)`` -- the synchronous signature -- was a
    TypeError in asyncio code (``default`` was keyword-only there)."""
    async def main():  # type: ignore[no-untyped-def]
        async with await banyanstore.aio.open(str(tmp_path / "s"), io_mode="sync") as store:
            v = await store.put(b"k", b"1")
            index = await store.keyspace("index")
            sync = store.store
            return ([await store.get(b"nope", None, b"-"), await store.get(b"k", v, b"-"),
                     await index.get(b"nope", v, b"-")],
                    [sync.get(b"nope", None, b"-"), sync.get(b"k", v, b"-"),
                     sync.keyspace("index").get(b"nope", v, b"-")])

    got, want = asyncio.run(main())
    assert got == want == [b"-", b"1", b"-"]


def test_a_cancelled_write_is_applied_whole_or_not_at_all(tmp_path):
    """As docs/api.md says: a write cancelled while it waits for an executor thread is
    dropped (a batch stays uncommitted, ``version`` None, and may be written again); one
    cancelled once it runs is applied whole."""
    executor = GatedExecutor()

    async def main():  # type: ignore[no-untyped-def]
        async with await banyanstore.aio.open(str(tmp_path / "s"), executor=executor,
                                              io_mode="sync") as store:
            loop = asyncio.get_running_loop()
            executor.gate.clear()
            running = asyncio.ensure_future(store.put(b"started", b"1"))  # at the gate: running
            busy = loop.run_in_executor(executor, int)  # the other thread
            for _ in range(2):  # both threads taken
                assert await asyncio.to_thread(executor.at_gate.acquire, True, 10)
            batch = store.batch()
            batch.put(b"a", b"1")
            batch.put(b"b", b"2")
            queued = [asyncio.ensure_future(store.write(batch)),
                      asyncio.ensure_future(store.put(b"queued", b"1"))]
            await asyncio.sleep(0.05)
            for task in (running, *queued):
                task.cancel()
            for task in queued:
                with pytest.raises(asyncio.CancelledError):
                    await task
            executor.gate.set()  # the running put's task hears its cancel once the put ends
            with pytest.raises(asyncio.CancelledError):
                await running
            await busy
            await asyncio.to_thread(executor.shutdown)  # the running put ends
            plain = banyanstore.aio.AsyncStore(store.store)  # (the loop's executor)
            assert batch.version is None and len(batch) == 2
            assert await plain.multi_get([b"started", b"queued", b"a", b"b"]) == [b"1", None, None, None]
            assert await plain.write(batch) == 2 and batch.version == 2
            assert await plain.multi_get([b"a", b"b"]) == [b"1", b"2"]

    try:
        asyncio.run(main())
    finally:
        executor.shutdown()


@pytest.mark.parametrize("write", ["put", "delete", "delete_range", "batch"])
def test_a_write_cancelled_while_it_runs_has_ended_when_the_task_hears_it(tmp_path, write):
    """docs/api.md: a cancelled write was applied or not, and ``batch.version`` says which.
    But a task cancelled while its write ran in the executor got its CancelledError at
    once, the write still running: ``batch.version`` then said None (not committed) and
    the commit landed a moment later -- a retry with a new batch wrote it twice.  Now the
    cancelled task waits for a write that has started before it hears the cancel."""
    executor = GatedExecutor()

    async def main():  # type: ignore[no-untyped-def]
        async with await banyanstore.aio.open(str(tmp_path / "s"), executor=executor,
                                              io_mode="sync") as store:
            batch = store.batch()
            batch.put(b"b", b"1")
            calls = {"put": lambda: store.put(b"k", b"1"), "delete": lambda: store.delete(b"k"),
                     "delete_range": lambda: store.delete_range(b"a", b"z"),
                     "batch": lambda: store.write(batch)}
            while executor.at_gate.acquire(blocking=False):  # (the open's call)
                pass
            executor.gate.clear()
            task = asyncio.ensure_future(calls[write]())
            assert await asyncio.to_thread(executor.at_gate.acquire, True, 10)  # it runs
            task.cancel()
            for _ in range(5):  # the cancel is delivered
                await asyncio.sleep(0)
            assert not task.done(), "the task heard the cancel while its write still ran"
            executor.gate.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert store.version == 1  # applied, before the task went on
            if write == "batch":
                assert batch.version == 1 and await store.get(b"b") == b"1"

    try:
        asyncio.run(main())
    finally:
        executor.shutdown()
