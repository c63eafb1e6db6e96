"""``Log.follow_async`` / ``banyanstore.aio.AsyncLog.follow``: Log.follow for asyncio.

Waits park a future in the Log (no thread); appends from a thread, a task or another
process wake it; a close ends it cleanly; a cancelled step leaves nothing waiting and
loses no record.  Synchronisation is by events and by the loop's own ordering (a task
that awaits an event set by the follower runs only once the follower is parked)."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
from log_helpers import SMALL, payload

import banyanstore
import banyanstore.aio
from banyanstore.errors import LogRangeError, StoreClosedError
from banyanstore.log import Log


def _open(path: Path, **kw) -> Log:  # type: ignore[no-untyped-def]
    kw.setdefault("options", SMALL)
    return Log.open(str(path), **kw)


def _waiting(log: Log) -> int:
    """Followers the Log's appends notify (threads and tasks)."""
    return log._appends.followers


class GatedExecutor(ThreadPoolExecutor):
    """Counts hops; while ``gate`` is clear, hops wait for it (the test holds a read)."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.hops = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        self.hops += 1

        def gated():  # type: ignore[no-untyped-def]
            self.entered.set()
            self.gate.wait()
            return fn(*args, **kwargs)
        return super().submit(gated)


def test_follow_async_yields_what_is_there_then_appends_from_a_thread_across_rotations(tmp_path):
    total = 1500  # ~8 segments of 64 KiB: the follow crosses rotations
    with _open(tmp_path / "log") as log:
        for seq in range(1, 11):
            log.append(payload(seq, 300))

        def append_rest() -> None:
            for seq in range(11, total + 1, 7):
                log.append_many([payload(s, 300) for s in range(seq, min(seq + 7, total + 1))])

        async def main() -> list[tuple[int, bytes]]:
            got = []
            appender = threading.Thread(target=append_rest)
            async for item in log.follow_async(1):
                got.append(item)
                if item[0] == 10:
                    appender.start()  # after the records there were read: the rest waited for
                if item[0] == total:
                    break
            appender.join()
            return got

        got = asyncio.run(main())
        assert got == [(s, payload(s, 300)) for s in range(1, total + 1)]
        assert log.stats()["segments"] > 5 and _waiting(log) == 0
        assert got == list(log.follow(1, timeout=0))  # what the synchronous follow gives


def test_a_waiting_follower_holds_no_thread_and_an_append_from_a_task_wakes_it(tmp_path):
    executor = GatedExecutor()
    with _open(tmp_path / "log") as log:
        log.append(b"a")

        async def main() -> None:
            follower = log.follow_async(2, executor=executor)
            parked = asyncio.Event()

            async def consume() -> tuple[int, bytes]:
                parked.set()  # the task awaiting it runs only once anext() below is parked
                return await anext(follower)

            task = asyncio.create_task(consume())
            await parked.wait()
            assert _waiting(log) == 1 and executor.hops == 0  # parked in the log, no hop
            assert not task.done()
            log.append(b"b")  # from the loop's own thread: the wake is a call_soon
            assert await task == (2, b"b") and _waiting(log) == 0 and executor.hops == 1
            await follower.aclose()

        asyncio.run(main())
    executor.shutdown()


def test_follow_async_follows_a_writer_in_another_process(tmp_path):
    path = tmp_path / "log"
    with banyanstore.open_log(path) as log:
        log.append(b"0")
    count = 300
    child = (
        "import sys, banyanstore\n"
        "with banyanstore.open_log(sys.argv[1]) as log:\n"
        "    for i in range(1, int(sys.argv[2]) + 1):\n"
        "        log.append(b'%d' % i)\n"
        "        if i % 50 == 0:\n"
        "            log.sync()\n")

    async def main() -> list[tuple[int, bytes]]:
        reader = await banyanstore.aio.open_log(path, read_only=True, follow_interval_ms=5)
        async with reader:
            follower = reader.follow(1)
            first = await anext(follower)  # reading before the writer starts
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", child, str(path), str(count))
            got = [first]
            async for item in follower:
                got.append(item)
                if item[0] == count + 1:
                    break
            assert await proc.wait() == 0
            return got

    got = asyncio.run(main())
    assert got == [(1, b"0")] + [(i + 1, b"%d" % i) for i in range(1, count + 1)]


@pytest.mark.parametrize("closer", ["task", "thread"])
def test_follow_async_ends_cleanly_when_the_log_is_closed_while_it_waits(tmp_path, closer):
    async def main() -> None:
        alog = await banyanstore.aio.open_log(tmp_path / "log")
        await alog.append(b"first")
        follower = alog.follow(1)
        assert await anext(follower) == (1, b"first")
        parked = asyncio.Event()

        async def consume() -> list[tuple[int, bytes]]:
            parked.set()
            return [item async for item in follower]  # no timeout: only close() ends it

        task = asyncio.create_task(consume())
        await parked.wait()
        assert _waiting(alog.log) == 1
        if closer == "task":
            await alog.close()
        else:
            thread = threading.Thread(target=alog.log.close)
            thread.start()
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        assert await task == [] and _waiting(alog.log) == 0
        assert [item async for item in follower] == []  # ended: stays ended
        with pytest.raises(StoreClosedError):
            alog.follow()

    asyncio.run(main())


def test_a_cancelled_wait_leaves_nothing_waiting_and_loses_no_record(tmp_path):
    with _open(tmp_path / "log") as log:
        log.append(b"a")

        async def main() -> None:
            follower = log.follow_async(2)
            parked = asyncio.Event()

            async def consume() -> tuple[int, bytes]:
                parked.set()
                return await anext(follower)

            task = asyncio.create_task(consume())
            await parked.wait()
            assert _waiting(log) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert _waiting(log) == 0  # its future taken back out of the log
            log.append(b"b")
            assert await anext(follower) == (2, b"b")  # the iterator goes on from where it was
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0):
                    await anext(follower)
            assert _waiting(log) == 0
            log.append(b"c")
            assert await anext(follower) == (3, b"c")

        asyncio.run(main())


def test_a_step_cancelled_while_it_reads_skips_no_record_and_aclose_waits_for_the_read(tmp_path):
    executor = GatedExecutor()
    with _open(tmp_path / "log") as log:
        log.append_many([b"a", b"b", b"c"])

        async def main() -> None:
            follower = log.follow_async(1, executor=executor)
            executor.gate.clear()  # the read hop waits
            task = asyncio.create_task(anext(follower))
            await asyncio.get_running_loop().run_in_executor(None, executor.entered.wait)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            executor.gate.set()
            assert [await anext(follower) for _ in range(3)] == [(1, b"a"), (2, b"b"), (3, b"c")]
            assert executor.hops == 1  # the cancelled step's read was taken, not read again

            second = log.follow_async(1, executor=executor)
            executor.entered.clear()
            executor.gate.clear()
            task = asyncio.create_task(anext(second))
            await asyncio.get_running_loop().run_in_executor(None, executor.entered.wait)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            closing = asyncio.create_task(second.aclose())
            await asyncio.sleep(0)  # (one loop turn, not a wait for time)
            assert not closing.done()  # waits for the read the cancelled step left
            executor.gate.set()
            await closing
            assert [item async for item in second] == []

        asyncio.run(main())
    executor.shutdown(wait=True)  # nothing of the follows still runs in it


def test_follow_async_timeout_ends_it_when_nothing_comes(tmp_path):
    with _open(tmp_path / "log") as log:
        log.append_many([b"a", b"b"])

        async def main() -> None:
            assert [i async for i in log.follow_async(timeout=0)] == [(1, b"a"), (2, b"b")]
            assert [i async for i in log.follow_async(3, timeout=0)] == []
            assert [i async for i in log.follow_async(3, timeout=0.01)] == []
            follower = log.follow_async(2, timeout=math.inf)  # beyond any timer: waits like None
            parked = asyncio.Event()

            async def consume() -> tuple[int, bytes]:
                await anext(follower)
                parked.set()
                return await anext(follower)

            task = asyncio.create_task(consume())
            await parked.wait()
            log.append(b"c")
            assert await task == (3, b"c") and _waiting(log) == 0

        asyncio.run(main())


def test_follow_async_raises_log_range_error_when_it_fell_behind_truncation(tmp_path):
    with _open(tmp_path / "log") as log:
        for seq in range(1, 1001):
            log.append(payload(seq, 300))

        async def main() -> None:
            follower = log.follow_async(1, timeout=0)
            assert await anext(follower) == (1, payload(1, 300))
            seqs = [(await anext(follower))[0] for _ in range(15)]  # the rest of its first read
            assert seqs == list(range(2, 17))
            assert log.truncate_before(800) > 0
            with pytest.raises(LogRangeError):
                await anext(follower)
            with pytest.raises(LogRangeError):  # and again: never a silent end
                await anext(follower)
            await follower.aclose()

        asyncio.run(main())


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"timeout": -1}, ValueError, "timeout"), ({"timeout": math.nan}, ValueError, "timeout"),
    ({"timeout": "1"}, TypeError, "timeout"), ({"timeout": True}, TypeError, "timeout"),
    ({"start": "1"}, TypeError, "start"), ({"start": True}, TypeError, "start"),
    ({"start": 5}, LogRangeError, "start"), ({"executor": 3}, TypeError, "executor"),
    ({"executor": ProcessPoolExecutor(1)}, TypeError, "executor"),
])
def test_follow_async_rejects_bad_arguments_at_the_call(tmp_path, kwargs, error, name):
    with _open(tmp_path / "log") as log:
        log.append_many([b"a", b"b", b"c"])
        with pytest.raises(error, match=name):
            log.follow_async(**kwargs)
        if "executor" not in kwargs:
            async def main() -> None:
                alog = banyanstore.aio.AsyncLog(log)
                with pytest.raises(error, match=name):
                    alog.follow(**kwargs)
            asyncio.run(main())


def test_a_closed_log_refuses_follow_async_at_the_call(tmp_path):
    log = _open(tmp_path / "log")
    log.append(b"a")
    log.close()
    with pytest.raises(StoreClosedError):
        log.follow_async()
    with pytest.raises(StoreClosedError):
        banyanstore.aio.AsyncLog(log).follow(1)


def test_a_follower_has_no_truth_value(tmp_path):
    with _open(tmp_path / "log") as log:
        follower = log.follow_async()
        with pytest.raises(TypeError, match="truth value"):
            bool(follower)


def test_a_read_only_follower_catches_up_first_when_start_lies_past_what_it_saw(tmp_path):
    path = tmp_path / "log"
    with _open(path) as writer:
        writer.append(b"1")
        writer.sync()
        with _open(path, read_only=True, follow_interval_ms=5) as reader:
            writer.append_many([b"2", b"3"])
            writer.sync()
            assert reader.last_seq == 1

            async def main() -> list[tuple[int, bytes]]:
                follower = reader.follow_async(3, timeout=0)  # no IO at the call
                assert reader.last_seq == 1
                return [item async for item in follower]

            assert asyncio.run(main()) == [(3, b"3")]
            with pytest.raises(LogRangeError):
                asyncio.run(_drain(reader.follow_async(9, timeout=0)))


async def _drain(follower) -> list[tuple[int, bytes]]:  # type: ignore[no-untyped-def]
    return [item async for item in follower]


def test_the_follower_example_of_docs_runs_in_a_child_process(tmp_path):
    """A follow in a child interpreter ends at the log's close and the process exits:
    nothing left waiting keeps it alive."""
    code = (
        "import asyncio, sys, banyanstore.aio\n"
        "async def main():\n"
        "    log = await banyanstore.aio.open_log(sys.argv[1])\n"
        "    await log.append(b'x')\n"
        "    follower = log.follow(1)\n"
        "    got = [await anext(follower)]\n"
        "    async def closer():\n"
        "        await log.close()\n"
        "    closing = asyncio.get_running_loop().create_task(closer())\n"
        "    got += [item async for item in follower]\n"
        "    await closing\n"
        "    print(got)\n"
        "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "log")], capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[(1, b'x')]"
