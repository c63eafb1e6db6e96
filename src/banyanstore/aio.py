"""The asyncio API: stores, keyspaces and logs whose calls are awaited.

``await banyanstore.aio.open(path)`` gives an :class:`AsyncStore`; its reads
and writes run in an executor (the loop's default one, or ``executor=``), so
the event loop never waits on a disk read, a memtable switch or an fdatasync.
Scans are ``async for`` loops that take rows from the store in batches (16 rows
first, growing to 1024 per executor hop), not one hop per row.

``await banyanstore.aio.open_log(path)`` gives an :class:`AsyncLog` whose
``append``/``append_many`` are the Log's ``append_async``/``append_many_async``:
a synced append parks its task in the Log's group commit, sharing each
fdatasync with every other task and thread, with no thread per waiter.

The wrappers add nothing to the synchronous objects: a program that never
imports this module pays nothing for it.  The synchronous object stays usable
beside its wrapper (``astore.store``, ``alog.log``), from any thread.

>>> import asyncio, tempfile
>>> import banyanstore.aio
>>> async def main(d):
...     async with await banyanstore.aio.open(d) as store:
...         v = await store.put(b"span:1", b"a")
...         batch = store.batch()
...         batch.put(b"span:2", b"b")
...         await store.write(batch)
...         rows = [row async for row in store.scan(prefix=b"span:")]
...         return v, await store.get(b"span:2"), await store.multi_get([b"span:1", b"x"]), rows
>>> with tempfile.TemporaryDirectory() as d:
...     asyncio.run(main(d))
(1, b'b', [b'a', None], [(b'span:1', b'a'), (b'span:2', b'b')])
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from itertools import islice
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

from .arguments import BytesLike, check_bool, check_limit
from .handles import ProcessLocal
from .lsm.keyspace import scan_bounds

if TYPE_CHECKING:
    from .log.follow_async import AsyncFollow
    from .log.log import Log
    from .lsm.batch import Batch
    from .lsm.keyspace import Keyspace
    from .lsm.prefixed import PrefixedBatch, PrefixedKeyspace, PrefixedSnapshot
    from .lsm.snapshot import Snapshot
    from .lsm.store import Store
    from .options import Options

__all__ = ["open", "open_log", "AsyncStore", "AsyncKeyspace", "AsyncSnapshot", "AsyncLog", "AsyncRows",
           "AsyncPrefixed", "AsyncPrefixedSnapshot"]

_log = logging.getLogger("banyanstore")
T = TypeVar("T")
FIRST_BATCH = 16
"""Rows of a scan's first executor hop: a short scan (a seek) costs one small hop."""
MAX_BATCH = 1024
"""Rows per hop once a scan is long: the hop's cost is spread over many rows."""


async def _run(executor: Executor | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in ``executor`` (None: the loop's default)."""
    loop = asyncio.get_running_loop()
    call = functools.partial(fn, *args, **kwargs) if kwargs else (lambda: fn(*args))
    return await loop.run_in_executor(executor, call)


class _Write:
    """A write handed to an executor, which a cancel may drop while it waits for a
    thread -- and not once a thread has it (see :func:`_run_write`)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._call = call
        self._mu = threading.Lock()
        self._state = "queued"  # -> "running" in the thread, or "dropped" by a cancel
        self._submitted: Future[Any] | None = None

    def start(self, executor: Executor | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if executor is None:  # the loop's pool: a thread calls run() as it takes the call
            return loop.run_in_executor(None, self._run)
        self._submitted = executor.submit(self._run)  # (one that wraps calls: its own future says)
        return asyncio.wrap_future(self._submitted, loop=loop)

    def _run(self) -> Any:
        with self._mu:
            if self._state == "dropped":
                return None
            self._state = "running"
        return self._call()

    def drop(self) -> bool:
        """Whether the write was dropped (no thread had it: none ever will)."""
        if self._submitted is not None:
            return self._submitted.cancel()
        with self._mu:
            if self._state == "queued":
                self._state = "dropped"
            return self._state == "dropped"


async def _run_write(executor: Executor | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """:func:`_run` for a write: a cancelled task hears its CancelledError only once the
    write is dropped or has ended.  Heard at once while the write still ran, it saw the
    write unapplied (``batch.version`` None) and the write landed a moment later: a
    retry wrote it twice."""
    write = _Write(functools.partial(fn, *args, **kwargs))
    running = write.start(executor)
    try:
        result: T = await asyncio.shield(running)
    except asyncio.CancelledError:
        if not write.drop():  # a thread has it: wait for its end
            await asyncio.wait([running])
            if not running.cancelled():
                running.exception()  # (retrieved: its error goes to nobody, unlogged)
        raise
    return result


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class _Opening(Generic[C]):
    """An open run in an executor thread for a task that may be cancelled meanwhile.

    The thread cannot be stopped, so a cancelled task would leave what it opens
    open with nobody holding it: its LOCK held (every later open of the path
    raising StoreLockedError), its files and threads kept.  Whoever comes second
    -- the thread finishing the open or the task abandoning it -- closes it."""

    def __init__(self, opener: Callable[[], C]) -> None:
        self._opener = opener
        self._mu = threading.Lock()
        self._abandoned = False
        self._opened: C | None = None

    def run(self) -> C | None:
        """In the executor thread: the opened object (None if the task is gone: closed)."""
        opened = self._opener()
        with self._mu:
            if not self._abandoned:
                self._opened = opened
                return opened
        _close_orphan(opened)
        return None

    def abandon(self, executor: Executor | None) -> None:
        """In the cancelled task: close what the thread has already opened, if anything."""
        with self._mu:
            self._abandoned = True
            opened, self._opened = self._opened, None
        if opened is not None:  # not on the loop: a store's close flushes what its WAL replay loaded
            _close_in_background(executor, opened)


def _close_orphan(opened: _Closable) -> None:
    try:
        opened.close()
    except Exception as exc:  # the task that wanted it was cancelled: nobody to raise to
        _log.warning("closing %r, opened for a cancelled task, failed: %s", opened, exc)


def _close_in_background(executor: Executor | None, opened: _Closable) -> None:
    _run_or_own_thread(executor, functools.partial(_close_orphan, opened))


def _run_or_own_thread(executor: Executor | None, fn: Callable[[], T]) -> asyncio.Future[T]:
    """``fn()`` in ``executor`` or, if it is shut down, in a thread of its own (joined at exit):
    for closes, which must happen whoever shut the executor down first."""
    loop = asyncio.get_running_loop()
    try:
        return loop.run_in_executor(executor, fn)
    except RuntimeError:  # the executor refuses new calls
        done: Future[T] = Future()
        threading.Thread(target=_settle_with, args=(done, fn), name="banyanstore-aio-close").start()
        return asyncio.wrap_future(done)


async def _close(executor: Executor | None, close: Callable[[], None]) -> None:
    """``close()`` in ``executor`` (or a thread of its own), carried out even if the
    awaiting task is cancelled: a cancel that reached the call while it still waited for
    a free executor thread took it back, and the store or log stayed open with nobody
    holding it -- its LOCK held (every later open of the path raising StoreLockedError)
    until the interpreter exits.  The task still sees its CancelledError."""
    closing = _run_or_own_thread(executor, close)
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        closing.add_done_callback(_report_close)
        raise


def _report_close(closing: asyncio.Future[None]) -> None:
    """A close whose task was cancelled ended: nobody awaits it to see its error."""
    if not closing.cancelled() and closing.exception() is not None:
        _log.warning("closing for a cancelled task failed: %s", closing.exception())


def _settle_with(done: Future[T], fn: Callable[[], T]) -> None:
    try:
        done.set_result(fn())
    except BaseException as exc:
        done.set_exception(exc)


async def _open(executor: Executor | None, opener: Callable[[], C]) -> C:
    """``opener()`` in ``executor``; if the awaiting task is cancelled, what it opens is closed."""
    opening = _Opening(opener)
    try:
        opened = await _run(executor, opening.run)
    except asyncio.CancelledError:
        opening.abandon(executor)
        raise
    assert opened is not None  # (None only once abandoned)
    return opened


def _check_executor(executor: object) -> Executor | None:
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor or None, "
                        f"not {type(executor).__name__}")
    if isinstance(executor, ProcessPoolExecutor):  # calls on the store cannot be sent to another process
        raise TypeError("executor must run calls in threads of this process (a ThreadPoolExecutor), "
                        "not a ProcessPoolExecutor")
    return executor


async def open(path: str | bytes | os.PathLike[Any], *, options: Options | None = None,  # noqa: A001
               executor: Executor | None = None, **kwargs: Any) -> AsyncStore:
    """:func:`banyanstore.open` for asyncio (the open -- a WAL replay -- runs in the executor)."""
    from . import open as open_store
    executor = _check_executor(executor)
    store = await _open(executor, functools.partial(open_store, path, options=options, **kwargs))
    return AsyncStore(store, executor=executor)


async def open_log(path: str | bytes | os.PathLike[Any], *, options: Options | None = None,
                   executor: Executor | None = None, **kwargs: Any) -> AsyncLog:
    """:func:`banyanstore.open_log` for asyncio (recovery runs in the executor)."""
    from . import open_log as open_sync_log
    executor = _check_executor(executor)
    log = await _open(executor, functools.partial(open_sync_log, path, options=options, **kwargs))
    return AsyncLog(log, executor=executor)


class AsyncRows:
    """An ``async for`` over a synchronous iterator that may read files (a scan,
    a log read): rows are taken in batches in the executor, FIRST_BATCH growing
    to MAX_BATCH per hop.  The iterator itself is made in the first hop too
    (opening a scan may read blocks)."""

    __slots__ = ("_make", "_executor", "_it", "_rows", "_size", "_done", "_hop")

    def __init__(self, make: Callable[[], Iterator[Any]], executor: Executor | None) -> None:
        self._make, self._executor = make, executor
        self._it: Iterator[Any] | None = None
        self._rows: Iterator[Any] = iter(())
        self._size = FIRST_BATCH
        self._done = False
        self._hop: asyncio.Future[tuple[list[Any], bool]] | None = None  # rows being taken

    def __aiter__(self) -> AsyncRows:
        return self

    def __bool__(self) -> bool:
        # `if store.keys(prefix=p):` tests a synchronous view for emptiness (one seek);
        # the same line here was always true, so an empty range passed for a full one.
        # A truth test cannot be awaited, so it is refused, saying how to ask.
        raise TypeError("an async scan has no truth value (it would need a read): use "
                        "`await anext(aiter(rows), None) is not None` for 'is it non-empty'")

    async def __anext__(self) -> Any:
        while True:
            for row in self._rows:  # the rest of the batch in hand: no hop
                return row
            if self._done:
                raise StopAsyncIteration
            hop = self._hop if self._hop is not None else self._start_hop()
            # Shielded: the thread cannot be stopped, so a cancelled step leaves the hop
            # running and the next step takes its rows, rather than skipping them.
            batch, done = await asyncio.shield(hop)
            if self._hop is hop:  # the first step to see it takes its rows; others read them
                self._hop, self._done, self._rows = None, done, iter(batch)

    def _start_hop(self) -> asyncio.Future[tuple[list[Any], bool]]:
        loop = asyncio.get_running_loop()
        self._hop = loop.run_in_executor(self._executor, self._take, self._size)
        self._size = min(self._size * 4, MAX_BATCH)
        return self._hop

    def _take(self, n: int) -> tuple[list[Any], bool]:
        """Up to ``n`` rows, and whether the iterator is exhausted (a short batch)."""
        if self._it is None:
            self._it = self._make()
        rows = list(islice(self._it, n))
        return rows, len(rows) < n


class AsyncKeyspace(ProcessLocal):
    """A keyspace's reads and writes, awaited (see the module docstring).  The
    arguments and errors are those of :class:`~banyanstore.lsm.keyspace.Keyspace`."""

    __slots__ = ("_handle", "_executor")
    _handle_kind = "keyspace"  # (handles.py: what pickling and copying refuse)

    def __init__(self, handle: Keyspace, *, executor: Executor | None = None) -> None:
        self._handle = handle
        self._executor = _check_executor(executor)

    @property
    def name(self) -> str:
        """The keyspace's name (:attr:`Keyspace.name`)."""
        return self._handle.name

    @property
    def handle(self) -> Keyspace:
        """The synchronous keyspace (or store) this wraps."""
        return self._handle

    @property
    def id(self) -> int:
        """The keyspace's id (:attr:`Keyspace.id`)."""
        return self._handle.id

    @property
    def closed(self) -> bool:
        """True once its store is closed or the keyspace dropped (:attr:`Keyspace.closed`)."""
        return self._handle.closed

    def __repr__(self) -> str:
        return f"<banyanstore.aio {self._handle!r}>"

    # The overloads of Keyspace.get: a type checker sees bytes | None, not Any.
    @overload
    async def get(self, key: BytesLike, version: int | None = None) -> bytes | None: ...
    @overload
    async def get(self, key: BytesLike, version: int | None = None, *, default: T) -> bytes | T: ...
    @overload
    async def get(self, key: BytesLike, version: int | None, default: T) -> bytes | T: ...

    async def get(self, key: BytesLike, version: int | None = None, default: Any = None) -> Any:
        """``await ks.get(key)``: the latest value (or as of ``version``); ``default`` if absent
        (the arguments of :meth:`Keyspace.get`)."""
        return await _run(self._executor, self._handle.get, key, version, default)

    async def multi_get(self, keys: Iterable[BytesLike], version: int | None = None) -> list[bytes | None]:
        """``await ks.multi_get(keys)``: values of ``keys`` in one batched pass."""
        return await _run(self._executor, self._handle.multi_get, keys, version)

    async def put(self, key: BytesLike, value: BytesLike, *, sync: bool | None = None) -> int:
        """``await ks.put(key, value)``: the version of the write.  A synced put waits
        for its (shared) fdatasync in an executor thread."""
        return await _run_write(self._executor, self._handle.put, key, value, sync=sync)

    async def delete(self, key: BytesLike, *, sync: bool | None = None) -> int:
        """``await ks.delete(key)``: the version of the tombstone."""
        return await _run_write(self._executor, self._handle.delete, key, sync=sync)

    async def delete_range(self, start: BytesLike, end: BytesLike, *, sync: bool | None = None) -> int:
        """``await ks.delete_range(start, end)``: the version of the range tombstone over
        ``[start, end)`` (see :meth:`Keyspace.delete_range`)."""
        return await _run_write(self._executor, self._handle.delete_range, start, end, sync=sync)

    async def set_ttl(self, ttl: float | None) -> None:
        """``await ks.set_ttl(seconds)``: set the keyspace's TTL durably; None removes it
        (see :meth:`Keyspace.set_ttl`)."""
        await _run(self._executor, self._handle.set_ttl, ttl)

    async def contains(self, key: BytesLike) -> bool:
        """``await ks.contains(key)``: ``key in ks`` (a point lookup)."""
        return await _run(self._executor, self._handle.__contains__, key)

    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None, keys_only: bool = False) -> AsyncRows:
        """``async for key, value in ks.scan(...)``: :meth:`Keyspace.scan`'s rows,
        taken in batches.  Arguments are checked here, at the call -- and a closed store
        or a dropped keyspace raises here, as the synchronous scan does."""
        # Keyspace.keys checks the bounds, reverse, version, closed and dropped at once,
        # reading nothing (it raised only at the first ``async for`` step for the last two).
        self._handle.keys(start, end, prefix=prefix, version=version, reverse=reverse)
        start, end = scan_bounds(start, end, prefix)
        check_bool(keys_only, "keys_only")
        check_limit(limit)
        scan = functools.partial(self._handle.scan, start, end, version=version, reverse=reverse,
                                 limit=limit, keys_only=keys_only)
        return AsyncRows(scan, self._executor)

    def keys(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None) -> AsyncRows:
        """``async for key in ks.keys(...)``: the keys alone (values not decoded)."""
        return self.scan(start, end, prefix=prefix, version=version, reverse=reverse, limit=limit,
                         keys_only=True)

    def __aiter__(self) -> AsyncRows:
        """``async for key in ks``: the live keys, ascending."""
        return self.keys()

    def prefixed(self, prefix: BytesLike) -> AsyncPrefixed:
        """The keyspace seen through ``prefix`` (no IO): :meth:`Keyspace.prefixed`, awaited."""
        return AsyncPrefixed(self._handle.prefixed(prefix), executor=self._executor)

    async def history(self, key: BytesLike) -> list[tuple[int, bytes | None]]:
        """``await ks.history(key)``: every retained write of ``key``, newest first."""
        return await _run(self._executor, lambda: list(self._handle.history(key)))

    async def approximate_count(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
                                prefix: BytesLike | None = None) -> int:
        """``await ks.approximate_count(...)``: :meth:`Keyspace.approximate_count`, from
        metadata alone (a memtable's keys in the range are counted: the executor's work)."""
        return await _run(self._executor, self._handle.approximate_count, start, end, prefix=prefix)

    async def approximate_size(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
                               prefix: BytesLike | None = None) -> int:
        """``await ks.approximate_size(...)``: :meth:`Keyspace.approximate_size`."""
        return await _run(self._executor, self._handle.approximate_size, start, end, prefix=prefix)


class AsyncStore(AsyncKeyspace):
    """An open store for asyncio code; the handle of its default keyspace, as
    :class:`~banyanstore.lsm.store.Store` is."""

    __slots__ = ()
    _handle_kind = "store"

    _handle: Store

    def __init__(self, store: Store, *, executor: Executor | None = None) -> None:
        super().__init__(store, executor=executor)

    @property
    def store(self) -> Store:
        """The synchronous store this wraps."""
        return self._handle

    @property
    def version(self) -> int:
        """:attr:`Store.version`: the latest committed version (no IO)."""
        return self._handle.version

    @property
    def path(self) -> str:
        """The store's directory."""
        return self._handle.path

    @property
    def options(self) -> Options:
        """The options the store was opened with."""
        return self._handle.options

    @property
    def history_floor(self) -> int:
        """:attr:`Store.history_floor` (no IO)."""
        return self._handle.history_floor

    @property
    def oldest_version(self) -> int:
        """:attr:`Store.oldest_version` (no IO)."""
        return self._handle.oldest_version

    async def set_history_floor(self, version: int) -> None:
        """``await store.set_history_floor(version)``: see :meth:`Store.set_history_floor`
        (durable: a manifest edit)."""
        await _run(self._executor, self._handle.set_history_floor, version)

    def keyspace_info(self) -> dict[str, dict[str, Any]]:
        """Every keyspace's id and TTL, by name (no IO): :meth:`Store.keyspace_info`."""
        return self._handle.keyspace_info()

    async def stats(self) -> dict[str, Any]:
        """``await store.stats()``: :meth:`Store.stats`."""
        return await _run(self._executor, self._handle.stats)

    async def keyspace(self, name: str, *, ttl: float | None = None) -> AsyncKeyspace:
        """``await store.keyspace(name)``: created (durably) on first use."""
        ks = await _run(self._executor, self._handle.keyspace, name, ttl=ttl)
        return AsyncKeyspace(ks, executor=self._executor)

    def keyspaces(self) -> list[str]:
        """The names of the keyspaces, sorted (no IO)."""
        return self._handle.keyspaces()

    async def drop_keyspace(self, name: str) -> None:
        """``await store.drop_keyspace(name)``: see :meth:`Store.drop_keyspace`."""
        await _run(self._executor, self._handle.drop_keyspace, name)

    def snapshot(self) -> AsyncSnapshot:
        """An :class:`AsyncSnapshot` of the store at its current version (no IO: a pin in
        memory, as :meth:`Store.snapshot`); ``async with store.snapshot() as snap:``
        closes it at the end of the block."""
        return AsyncSnapshot(self._handle.snapshot(), executor=self._executor)

    def batch(self, *, sync: bool | None = None) -> Batch:
        """A :class:`~banyanstore.lsm.batch.Batch` to fill (no IO) and :meth:`write`."""
        return self._handle.batch(sync=sync)

    async def write(self, batch: Batch | PrefixedBatch, *, sync: bool | None = None) -> int | None:
        """``await store.write(batch)``: commit ``batch`` (or the batch a prefix view's
        ``PrefixedBatch`` fills) atomically; its version (None for an empty batch)."""
        from .lsm.batch import Batch
        from .lsm.prefixed import PrefixedBatch
        if isinstance(batch, PrefixedBatch):  # a prefix view's: the store's batch it fills
            batch = batch.batch
        if not isinstance(batch, Batch):
            raise TypeError(f"batch must be a Batch from store.batch(), not {type(batch).__name__}")
        if batch.store is not self._handle:  # its commit would write to the other store
            raise ValueError(f"batch belongs to another store ({getattr(batch.store, 'path', None)}), "
                             f"not {self._handle.path}")
        return await _run_write(self._executor, batch.commit, sync=sync)

    async def flush(self) -> None:
        """``await store.flush()``: :meth:`Store.flush`."""
        await _run(self._executor, self._handle.flush)

    async def sync(self) -> None:
        """``await store.sync()``: :meth:`Store.sync`."""
        await _run(self._executor, self._handle.sync)

    async def compact(self, keyspace: object = None, **kwargs: Any) -> dict[str, Any]:
        """``await store.compact(...)``: :meth:`Store.compact` (the same arguments)."""
        return await _run(self._executor, self._handle.compact, keyspace, **kwargs)

    async def checkpoint(self, dest: str | Any) -> int:
        """``await store.checkpoint(dest)``: :meth:`Store.checkpoint`."""
        return await _run(self._executor, self._handle.checkpoint, dest)

    async def close(self) -> None:
        """Flush and close the store (in the executor: closing syncs; in a thread of its
        own if the executor was shut down); done even if the awaiting task is cancelled."""
        await _close(self._executor, self._handle.close)

    async def __aenter__(self) -> AsyncStore:
        self._handle.__enter__()  # a closed store raises its StoreClosedError here (no IO)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncSnapshot(ProcessLocal):
    """A :class:`~banyanstore.lsm.snapshot.Snapshot`'s reads, awaited: the same
    arguments, answers and errors (a closed snapshot, or one whose store closed, raises
    StoreClosedError; scans check their arguments and the snapshot at the call).

    >>> import asyncio, tempfile
    >>> import banyanstore.aio
    >>> async def main(d):
    ...     async with await banyanstore.aio.open(d) as store:
    ...         await store.put(b"k", b"old")
    ...         async with store.snapshot() as snap:
    ...             await store.put(b"k", b"new")
    ...             rows = [row async for row in snap.scan()]
    ...             return rows, await snap.get(b"k"), await store.get(b"k"), snap.version
    >>> with tempfile.TemporaryDirectory() as d:
    ...     asyncio.run(main(d))
    ([(b'k', b'old')], b'old', b'new', 1)
    """

    __slots__ = ("_snap", "_executor")
    _handle_kind = "snapshot"  # (handles.py: what pickling and copying refuse)

    def __init__(self, snapshot: Snapshot, *, executor: Executor | None = None) -> None:
        self._snap = snapshot
        self._executor = _check_executor(executor)

    @property
    def snapshot(self) -> Snapshot:
        """The synchronous snapshot this wraps."""
        return self._snap

    @property
    def version(self) -> int:
        """The version it reads at."""
        return self._snap.version

    @property
    def closed(self) -> bool:
        """True once the snapshot or its store is closed (:attr:`Snapshot.closed`)."""
        return self._snap.closed

    def __repr__(self) -> str:
        return f"<banyanstore.aio {self._snap!r}>"

    @overload
    async def get(self, key: BytesLike, *, keyspace: Any = None) -> bytes | None: ...
    @overload
    async def get(self, key: BytesLike, *, keyspace: Any = None, default: T) -> bytes | T: ...

    async def get(self, key: BytesLike, *, keyspace: Any = None, default: Any = None) -> Any:
        """``await snap.get(key)``: the value at the snapshot's version; ``default`` if absent."""
        return await _run(self._executor, self._snap.get, key, keyspace=keyspace, default=default)

    async def multi_get(self, keys: Iterable[BytesLike], *, keyspace: Any = None) -> list[bytes | None]:
        """``await snap.multi_get(keys)``: the values of ``keys`` at the snapshot's version."""
        return await _run(self._executor, self._snap.multi_get, keys, keyspace=keyspace)

    async def contains(self, key: BytesLike, *, keyspace: Any = None) -> bool:
        """``await snap.contains(key)``: ``key in snap`` (a point lookup; any keyspace)."""
        return await self.get(key, keyspace=keyspace) is not None

    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False, limit: int | None = None,
             keyspace: Any = None, keys_only: bool = False) -> AsyncRows:
        """``async for key, value in snap.scan(...)``: :meth:`Snapshot.scan`'s rows, taken
        in batches.  Arguments, the keyspace and the snapshot are checked here, at the call."""
        # Snapshot.keys checks the snapshot, the keyspace, the bounds and reverse, reading nothing.
        self._snap.keys(start, end, prefix=prefix, reverse=reverse, keyspace=keyspace)
        check_bool(keys_only, "keys_only")
        check_limit(limit)
        scan = functools.partial(self._snap.scan, start, end, prefix=prefix, reverse=reverse,
                                 limit=limit, keyspace=keyspace, keys_only=keys_only)
        return AsyncRows(scan, self._executor)

    def keys(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False, limit: int | None = None,
             keyspace: Any = None) -> AsyncRows:
        """``async for key in snap.keys(...)``: the keys alone (values not decoded)."""
        return self.scan(start, end, prefix=prefix, reverse=reverse, limit=limit,
                         keyspace=keyspace, keys_only=True)

    def __aiter__(self) -> AsyncRows:
        """``async for key in snap``: the live keys of the default keyspace, ascending."""
        return self.keys()

    def prefixed(self, prefix: BytesLike, *, keyspace: Any = None) -> AsyncPrefixedSnapshot:
        """The snapshot's ``keyspace`` seen through ``prefix`` (no IO):
        :meth:`Snapshot.prefixed`, awaited; its ``close()`` closes this snapshot."""
        return AsyncPrefixedSnapshot(self._snap.prefixed(prefix, keyspace=keyspace),
                                     executor=self._executor)

    async def history(self, key: BytesLike, *, keyspace: Any = None) -> list[tuple[int, bytes | None]]:
        """``await snap.history(key)``: the writes of ``key`` up to the snapshot's version,
        newest first."""
        return await _run(self._executor, lambda: list(self._snap.history(key, keyspace=keyspace)))

    async def close(self) -> None:
        """Release the snapshot (idempotent; no IO: it unpins its version in memory)."""
        self._snap.close()

    async def __aenter__(self) -> AsyncSnapshot:
        self._snap.__enter__()  # a closed snapshot (or store) raises StoreClosedError here
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncPrefixed(ProcessLocal):
    """A prefix view's reads and writes, awaited: :class:`~banyanstore.lsm.prefixed.PrefixedKeyspace`'s
    arguments, answers and errors, keys relative to :attr:`prefix`.

    >>> import asyncio, tempfile
    >>> import banyanstore.aio
    >>> async def main(d):
    ...     async with await banyanstore.aio.open(d) as store:
    ...         a, b = store.prefixed(b"svc/a/"), store.prefixed(b"svc/b/")
    ...         await a.put(b"cpu", b"1")
    ...         batch = store.batch()
    ...         a.in_batch(batch).put(b"mem", b"2"); b.in_batch(batch).put(b"cpu", b"3")
    ...         await store.write(batch)
    ...         return [row async for row in a.scan()], await b.get(b"cpu"), await store.get(b"svc/a/mem")
    >>> with tempfile.TemporaryDirectory() as d:
    ...     asyncio.run(main(d))
    ([(b'cpu', b'1'), (b'mem', b'2')], b'3', b'2')
    """

    __slots__ = ("_view", "_executor")
    _handle_kind = "prefix view"

    def __init__(self, view: PrefixedKeyspace, *, executor: Executor | None = None) -> None:
        self._view = view
        self._executor = _check_executor(executor)

    @property
    def view(self) -> PrefixedKeyspace:
        """The synchronous prefix view this wraps."""
        return self._view

    @property
    def prefix(self) -> bytes:
        """The prefix of every key of the view."""
        return self._view.prefix

    @property
    def closed(self) -> bool:
        """The view's ``closed``: True once the store is closed or the keyspace dropped."""
        return self._view.closed

    def __repr__(self) -> str:
        return f"<banyanstore.aio {self._view!r}>"

    def prefixed(self, prefix: BytesLike) -> AsyncPrefixed:
        """The view of ``self.prefix + prefix`` (no IO)."""
        return AsyncPrefixed(self._view.prefixed(prefix), executor=self._executor)

    async def get(self, key: BytesLike, version: int | None = None, default: Any = None) -> Any:
        """``await view.get(key)``: the value of ``prefix + key`` (as Keyspace.get)."""
        return await _run(self._executor, self._view.get, key, version, default)

    async def multi_get(self, keys: Iterable[BytesLike], version: int | None = None) -> list[bytes | None]:
        """``await view.multi_get(keys)``: the values of the view's ``keys``, in order."""
        return await _run(self._executor, self._view.multi_get, keys, version)

    async def contains(self, key: BytesLike) -> bool:
        """``await view.contains(key)``: whether ``prefix + key`` holds a live value."""
        return await _run(self._executor, self._view.__contains__, key)

    async def put(self, key: BytesLike, value: BytesLike, *, sync: bool | None = None) -> int:
        """``await view.put(key, value)``: write ``prefix + key``; returns the version."""
        return await _run_write(self._executor, self._view.put, key, value, sync=sync)

    async def delete(self, key: BytesLike, *, sync: bool | None = None) -> int:
        """``await view.delete(key)``: delete ``prefix + key``; returns the version."""
        return await _run_write(self._executor, self._view.delete, key, sync=sync)

    async def delete_range(self, start: BytesLike, end: BytesLike, *, sync: bool | None = None) -> int:
        """``await view.delete_range(start, end)``: delete the view's keys in ``[start, end)``."""
        return await _run_write(self._executor, self._view.delete_range, start, end, sync=sync)

    def batch(self, *, sync: bool | None = None) -> PrefixedBatch:
        """A batch of the view's keys to fill (no IO) and :meth:`write`."""
        return self._view.batch(sync=sync)

    def in_batch(self, batch: Any) -> PrefixedBatch:
        """The store's ``batch`` seen through the view (no IO): ``await store.write(batch)``
        commits it with whatever else it holds."""
        return self._view.in_batch(batch)

    async def write(self, batch: PrefixedBatch, *, sync: bool | None = None) -> int | None:
        """``await view.write(batch)``: commit the batch ``batch`` fills (AsyncStore.write)."""
        return await AsyncStore(self._view.store, executor=self._executor).write(batch, sync=sync)

    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None, keys_only: bool = False) -> AsyncRows:
        """``async for key, value in view.scan(...)``: checked at the call, as AsyncKeyspace.scan."""
        self._view.keys(start, end, prefix=prefix, version=version, reverse=reverse)
        check_bool(keys_only, "keys_only")
        check_limit(limit)
        scan = functools.partial(self._view.scan, start, end, prefix=prefix, version=version,
                                 reverse=reverse, limit=limit, keys_only=keys_only)
        return AsyncRows(scan, self._executor)

    def keys(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, version: int | None = None, reverse: bool = False,
             limit: int | None = None) -> AsyncRows:
        """``async for key in view.keys(...)``: the view's live keys (scan's bounds)."""
        return self.scan(start, end, prefix=prefix, version=version, reverse=reverse, limit=limit,
                         keys_only=True)

    def __aiter__(self) -> AsyncRows:
        return self.keys()

    async def history(self, key: BytesLike) -> list[tuple[int, bytes | None]]:
        """``await view.history(key)``: the retained versions of ``prefix + key``, newest first."""
        return await _run(self._executor, lambda: list(self._view.history(key)))

    async def approximate_count(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
                                prefix: BytesLike | None = None) -> int:
        """``await view.approximate_count(...)``: an estimate of the view's live keys in the bounds."""
        return await _run(self._executor, self._view.approximate_count, start, end, prefix=prefix)

    async def approximate_size(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
                               prefix: BytesLike | None = None) -> int:
        """``await view.approximate_size(...)``: the estimated bytes of the view's keys in the bounds."""
        return await _run(self._executor, self._view.approximate_size, start, end, prefix=prefix)

    def snapshot(self) -> AsyncPrefixedSnapshot:
        """A snapshot seen through the view (no IO); closing it closes the snapshot."""
        return AsyncPrefixedSnapshot(self._view.snapshot(), executor=self._executor)


class AsyncPrefixedSnapshot(ProcessLocal):
    """A prefix view of a snapshot, awaited (:class:`~banyanstore.lsm.prefixed.PrefixedSnapshot`);
    ``await view.close()`` (or ``async with``) closes the snapshot."""

    __slots__ = ("_view", "_executor")
    _handle_kind = "prefix view"

    def __init__(self, view: PrefixedSnapshot, *, executor: Executor | None = None) -> None:
        self._view = view
        self._executor = _check_executor(executor)

    @property
    def view(self) -> PrefixedSnapshot:
        """The synchronous snapshot view this wraps."""
        return self._view

    @property
    def prefix(self) -> bytes:
        """The prefix of every key of the view."""
        return self._view.prefix

    @property
    def version(self) -> int:
        """The version the snapshot reads at."""
        return self._view.version

    @property
    def closed(self) -> bool:
        """Whether the snapshot is closed (or its store)."""
        return self._view.closed

    def __repr__(self) -> str:
        return f"<banyanstore.aio {self._view!r}>"

    def prefixed(self, prefix: BytesLike) -> AsyncPrefixedSnapshot:
        """The view of ``self.prefix + prefix`` of the same snapshot (no IO)."""
        return AsyncPrefixedSnapshot(self._view.prefixed(prefix), executor=self._executor)

    async def get(self, key: BytesLike, *, default: Any = None) -> Any:
        """``await view.get(key)``: the value of ``prefix + key`` at the snapshot's version."""
        return await _run(self._executor, self._view.get, key, default=default)

    async def multi_get(self, keys: Iterable[BytesLike]) -> list[bytes | None]:
        """``await view.multi_get(keys)``: the values of the view's ``keys`` at the snapshot's version."""
        return await _run(self._executor, self._view.multi_get, keys)

    async def contains(self, key: BytesLike) -> bool:
        """``await view.contains(key)``: whether ``prefix + key`` is live at the snapshot's version."""
        return await _run(self._executor, self._view.__contains__, key)

    def scan(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False, limit: int | None = None,
             keys_only: bool = False) -> AsyncRows:
        """``async for key, value in view.scan(...)``: the view's rows at the snapshot's version."""
        self._view.keys(start, end, prefix=prefix, reverse=reverse)  # checked now, reading nothing
        check_bool(keys_only, "keys_only")
        check_limit(limit)
        scan = functools.partial(self._view.scan, start, end, prefix=prefix, reverse=reverse,
                                 limit=limit, keys_only=keys_only)
        return AsyncRows(scan, self._executor)

    def keys(self, start: BytesLike | None = None, end: BytesLike | None = None, *,
             prefix: BytesLike | None = None, reverse: bool = False, limit: int | None = None) -> AsyncRows:
        """``async for key in view.keys(...)``: the view's live keys at the snapshot's version."""
        return self.scan(start, end, prefix=prefix, reverse=reverse, limit=limit, keys_only=True)

    def __aiter__(self) -> AsyncRows:
        return self.keys()

    async def history(self, key: BytesLike) -> list[tuple[int, bytes | None]]:
        """``await view.history(key)``: the versions of ``prefix + key`` the snapshot sees, newest first."""
        return await _run(self._executor, lambda: list(self._view.history(key)))

    async def close(self) -> None:
        """Close the snapshot (idempotent; no IO)."""
        self._view.close()

    async def __aenter__(self) -> AsyncPrefixedSnapshot:
        self._view.__enter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncLog(ProcessLocal):
    """An open Log for asyncio code (see the module docstring)."""

    __slots__ = ("_log", "_executor")
    _handle_kind = "log"  # (handles.py: what pickling and copying refuse)

    def __init__(self, log: Log, *, executor: Executor | None = None) -> None:
        self._log = log
        self._executor = _check_executor(executor)

    @property
    def log(self) -> Log:
        """The synchronous log this wraps."""
        return self._log

    def __repr__(self) -> str:
        return f"<banyanstore.aio {self._log!r}>"

    async def append(self, record: BytesLike, *, sync: bool | None = None) -> int:
        """``await log.append(record)``: the record's seq, once durable when synced
        (``sync=True``; the default None follows ``wal_sync``) -- sharing group commit
        across tasks (Log.append_async)."""
        return await self._log.append_async(record, sync=sync)

    async def append_many(self, records: Iterable[BytesLike], *, sync: bool | None = None) -> int:
        """``await log.append_many(records)``: the last record's seq (Log.append_many_async)."""
        return await self._log.append_many_async(records, sync=sync)

    async def wait_durable(self, seq: int) -> None:
        """Await until record ``seq`` is durable (Log.wait_durable_async)."""
        await self._log.wait_durable_async(seq)

    def read(self, start: int | None = None, end: int | None = None,
             limit: int | None = None, *, check_gaps: bool = True) -> AsyncRows:
        """``async for seq, record in log.read(...)``: Log.read's records in batches
        (``check_gaps`` as there)."""
        records = self._log.read(start, end, limit, check_gaps=check_gaps)  # checked now, read lazily
        return AsyncRows(lambda: records, self._executor)

    def __aiter__(self) -> AsyncRows:
        return self.read()

    def follow(self, start: int | None = None, *, timeout: float | None = None) -> AsyncFollow:
        """``async for seq, record in log.follow(...)``: Log.follow for asyncio
        (Log.follow_async): records as they are appended, waited for without blocking
        the loop or holding a thread; ends when the log closes or ``timeout`` passes
        with no new record.  Arguments (and a closed log) are checked at the call;
        ``aclose()`` ends it.

        >>> import asyncio, tempfile
        >>> import banyanstore.aio
        >>> async def main(d):
        ...     async with await banyanstore.aio.open_log(d) as log:
        ...         await log.append(b"a")
        ...         follower = log.follow(1)
        ...         asyncio.get_running_loop().call_later(0.01, log.log.append, b"b")
        ...         got = [await anext(follower), await anext(follower)]
        ...     return got, [row async for row in follower]  # the close ended it
        >>> with tempfile.TemporaryDirectory() as d:
        ...     asyncio.run(main(d))
        ([(1, b'a'), (2, b'b')], [])
        """
        return self._log.follow_async(start, timeout=timeout, executor=self._executor)

    async def get(self, seq: int) -> bytes:
        """``await log.get(seq)``: :meth:`Log.get`."""
        return await _run(self._executor, self._log.get, seq)

    async def sync(self, upto_seq: int | None = None) -> int:
        """``await log.sync()``: :meth:`Log.sync`; returns the durable seq."""
        return await _run(self._executor, self._log.sync, upto_seq)

    async def close(self) -> None:
        """Close the log (in the executor, or a thread of its own if it was shut down);
        done even if the awaiting task is cancelled."""
        await _close(self._executor, self._log.close)

    @property
    def closed(self) -> bool:
        """:attr:`Log.closed`."""
        return self._log.closed

    async def __aenter__(self) -> AsyncLog:
        self._log.__enter__()  # a closed log raises its StoreClosedError here (no IO)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
