"""Following a Log from asyncio code: ``async for seq, record in log.follow_async()``.

:meth:`Log.follow` waits on a condition in its thread.  An event loop cannot, and
an executor thread parked there for as long as nobody appends would be lost to the
loop's other calls (and could not be stopped when its task is cancelled).  So a
task waits *without a thread*: it parks an asyncio future in the Log
(:class:`AsyncWaiters`), which the appends that notify :meth:`Log.follow`'s threads
settle through the future's loop (``call_soon_threadsafe``), and ``close()`` too.
Only the reading of records that are there hops into the executor, in batches (as
``banyanstore.aio``'s scans: 16 records first, growing to 1024).

A cancelled step leaves nothing behind: a task cancelled while it waits takes its
future back out of the Log; one cancelled while a batch is read leaves the hop to
finish (it only reads records already there) and the next step takes its records,
so none is skipped.  ``aclose()`` ends the iterator and waits for such a hop.

>>> import asyncio, tempfile
>>> from banyanstore.log import Log
>>> async def main(log):
...     follower = log.follow_async(1)
...     asyncio.get_running_loop().call_later(0.01, log.append_many, [b"b", b"c"])
...     got = [await anext(follower) for _ in range(3)]
...     await follower.aclose()
...     return got
>>> with tempfile.TemporaryDirectory() as d, Log.open(d, io_mode="sync") as log:
...     _ = log.append(b"a")
...     asyncio.run(main(log))
[(1, b'a'), (2, b'b'), (3, b'c')]
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from itertools import islice
from typing import Any, Protocol

from ..errors import StoreClosedError
from .writer import LogTail

__all__ = ["AsyncFollow", "AsyncFollowing", "AsyncWaiters"]

FIRST_BATCH = 16
"""Records of a follow's first read hop (as banyanstore.aio's scans)."""
MAX_BATCH = 1024
"""Records per read hop once a follower reads a long stretch."""
LONGEST_WAIT = 86400.0
"""One wait of a task, in seconds, before it looks again (a longer timeout, math.inf
included, is waited in such steps: the loop's timer would overflow)."""

Hop = asyncio.Future[tuple[list[tuple[int, bytes]], int, bool]]


class AsyncWaiters:
    """The futures of tasks waiting for an append to one Log, each with its loop.
    Used under the Log's lock."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def add(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        future = loop.create_future()
        self._waiting.append((loop, future))
        return future

    def discard(self, future: asyncio.Future[None]) -> bool:
        """Take ``future`` out (its task stopped waiting); False if it was woken first."""
        for i, (_loop, waiting) in enumerate(self._waiting):
            if waiting is future:
                del self._waiting[i]
                return True
        return False

    def wake_all(self) -> int:
        """Settle every future (in its loop's thread); how many there were."""
        woken, self._waiting = self._waiting, []
        for loop, future in woken:
            # A loop closed meanwhile has no task left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future)
        return len(woken)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # cancelled by its task's timeout meanwhile
        future.set_result(None)


class AsyncFollowing:
    """Mixin of :class:`banyanstore.log.log.Log`: :meth:`follow_async`."""

    _lock: threading.Lock
    _closed: bool
    _read_only: bool
    _appends: LogTail
    _async_waiters: AsyncWaiters
    _opts: Any

    def _follow_args(self, start: object, timeout: float | None) -> int | None:
        raise NotImplementedError  # pragma: no cover  (LogView's)

    def _follow_start(self, start: int | None) -> int:
        raise NotImplementedError  # pragma: no cover  (LogView's)

    def _refresh_needed(self, start: int | None) -> bool:
        raise NotImplementedError  # pragma: no cover  (LogView's)

    def refresh(self) -> int:
        raise NotImplementedError  # pragma: no cover  (Log's)

    def follow_async(self, start: int | None = None, *, timeout: float | None = None,
                     executor: Executor | None = None) -> AsyncFollow:
        """:meth:`Log.follow` for asyncio: ``async for seq, record in log.follow_async()``.

        The same ``start`` and ``timeout``, checked at the call; it ends when the log is
        closed (by any thread) or ``timeout`` passes with no new record, and raises
        :class:`LogRangeError` if the records it is about to read were truncated away.
        Waiting takes no thread (see the module docstring); records are read in
        ``executor`` (None: the loop's default).  A read-only log catches up in the
        executor every ``follow_interval_ms`` while it waits -- and first, when
        ``start`` lies past what it has caught up with (then at the first step)."""
        if (executor is not None and not isinstance(executor, Executor)
                or isinstance(executor, ProcessPoolExecutor)):  # its calls cannot reach this log
            raise TypeError(f"executor must be a concurrent.futures.Executor running calls in "
                            f"threads of this process, or None, not {type(executor).__name__}")
        checked = self._follow_args(start, timeout)  # also StoreClosedError
        begin = (lambda: self._follow_start(checked)) if self._refresh_needed(checked) else None
        seq = self._follow_start(checked) if begin is None else 0
        return AsyncFollow(self, seq, timeout, executor, self._await_record_async, begin)  # type: ignore[arg-type]

    async def _await_record_async(self, seq: int, deadline: float | None,
                                  executor: Executor | None) -> bool:
        """Wait, in the task, until record ``seq`` exists (True), or the deadline passes
        or the log closes (False) -- :meth:`LogView._await_record` without a thread."""
        loop = asyncio.get_running_loop()
        poll = self._opts.follow_interval_ms / 1000 if self._read_only else None
        while True:
            if poll is not None and self._appends.next_seq <= seq and not self._closed:
                await _refresh_in(executor, self.refresh)  # nobody notifies a read-only log
            with self._lock:
                if self._closed:
                    return False
                if self._appends.next_seq > seq:
                    return True
                wait = _wait_for(poll, deadline)
                if wait is not None and wait <= 0:
                    return False
                future = self._async_waiters.add(loop)
                self._appends.followers += 1  # appends notify while this is non-zero
            try:
                await asyncio.wait_for(future, wait)
            except TimeoutError:
                pass
            finally:
                with self._lock:
                    if self._async_waiters.discard(future):  # not woken: it is ours to count down
                        self._appends.followers -= 1


def _wait_for(poll: float | None, deadline: float | None) -> float | None:
    """How long one wait may last (None: until woken)."""
    wait = poll
    if deadline is not None:
        remaining = deadline - time.monotonic()
        wait = remaining if wait is None else min(wait, remaining)
    return None if wait is None else min(wait, LONGEST_WAIT)


async def _refresh_in(executor: Executor | None, refresh: Callable[[], int]) -> None:
    """``refresh()`` in the executor; a closed log's refresh is the wait's end, seen next."""
    hop = asyncio.get_running_loop().run_in_executor(executor, refresh)
    hop.add_done_callback(_retrieve)
    with contextlib.suppress(StoreClosedError):
        await asyncio.shield(hop)  # a cancelled task leaves it to end on its own (it reads)


def _retrieve(hop: asyncio.Future[Any]) -> None:
    """Mark a hop's error as seen: a hop left by a cancelled step may fail unawaited."""
    if not hop.cancelled():
        hop.exception()


class _Records(Protocol):
    """What a follower reads through: the Log's public reads."""

    @property
    def last_seq(self) -> int: ...

    def read(self, start: int | None = None, end: int | None = None) -> Iterator[tuple[int, bytes]]: ...


class AsyncFollow:
    """The ``async for`` iterator of :meth:`Log.follow_async` (see the module docstring).
    It belongs to one task."""

    __slots__ = ("_log", "_seq", "_timeout", "_executor", "_wait", "_begin", "_rows", "_size",
                 "_ended", "_hop")

    def __init__(self, log: _Records, seq: int, timeout: float | None, executor: Executor | None,
                 wait: Callable[[int, float | None, Executor | None], Awaitable[bool]],
                 begin: Callable[[], int] | None) -> None:
        self._log, self._seq, self._timeout, self._executor = log, seq, timeout, executor
        self._wait, self._begin = wait, begin  # the Log's wait; its start check, if deferred
        self._rows: Iterator[tuple[int, bytes]] = iter(())
        self._size = FIRST_BATCH
        self._ended = False
        self._hop: Hop | None = None  # records being read

    def __aiter__(self) -> AsyncFollow:
        return self

    def __bool__(self) -> bool:
        raise TypeError("a log follower has no truth value (it would need to wait): "
                        "use `await anext(follower, None)`")

    async def __anext__(self) -> tuple[int, bytes]:
        while True:
            for row in self._rows:  # the rest of the batch in hand: no hop
                return row
            if self._ended:
                raise StopAsyncIteration
            if self._hop is None and not await self._next_hop():
                self._ended = True
                raise StopAsyncIteration
            hop = self._hop
            assert hop is not None
            # Shielded: a cancelled step leaves the hop running; the next step takes its rows.
            rows, seq, ended = await asyncio.shield(hop)
            if self._hop is hop:
                self._hop, self._rows, self._seq, self._ended = None, iter(rows), seq, ended

    async def _next_hop(self) -> bool:
        """Wait for the next record and start reading; False if the follow ends."""
        if self._begin is not None:  # a read-only log catching up first (Log.follow's check)
            self._seq = await asyncio.get_running_loop().run_in_executor(self._executor, self._begin)
            self._begin = None
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        if not await self._wait(self._seq, deadline, self._executor):
            return False
        loop = asyncio.get_running_loop()
        self._hop = loop.run_in_executor(self._executor, self._take, self._seq, self._size)
        self._hop.add_done_callback(_retrieve)
        self._size = min(self._size * 4, MAX_BATCH)
        return True

    def _take(self, seq: int, n: int) -> tuple[list[tuple[int, bytes]], int, bool]:
        """In the executor: up to ``n`` records from ``seq``, the seq after them, and
        whether the follow ended (the log closed), as Log.follow's reads."""
        upto = self._log.last_seq
        try:
            rows = list(islice(self._log.read(seq, upto + 1), n))
        except StoreClosedError:
            return [], seq, True
        # Past records skipped as damaged too: the read covered every seq up to `upto`.
        return rows, rows[-1][0] + 1 if len(rows) == n else upto + 1, False

    async def aclose(self) -> None:
        """End the follow: no more records; waits for a read hop a cancelled step left."""
        self._ended, self._rows = True, iter(())
        hop, self._hop = self._hop, None
        if hop is not None:
            await asyncio.wait([hop])
