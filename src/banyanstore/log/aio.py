"""Appends for asyncio code: synced appends awaited, not blocked on.

``await log.append_async(record, sync=True)`` appends like :meth:`Log.append`
and then *awaits* durability: the task parks as an asyncio future in the same
group commit as threads' synced appends, so any number of tasks and threads
share each fdatasync.  No thread is started per waiter: rounds whose waiters
are all tasks are led by one worker thread per Log (started on first use; see
:mod:`banyanstore.log.commit`), which settles the futures through their loop's
``call_soon_threadsafe``.  Threads that never use this pay nothing for it.

The append itself runs in the calling task, as in :meth:`Log.append`: it takes
the append lock for a few microseconds -- and, once per ``segment_size``, for
the fdatasync that seals a full segment.

>>> import asyncio, tempfile
>>> from banyanstore.log import Log
>>> async def main(log):
...     seqs = await asyncio.gather(*(log.append_async(b"event", sync=True) for _ in range(50)))
...     return sorted(seqs) == list(range(1, 51)), log.durable_seq
>>> with tempfile.TemporaryDirectory() as d, Log.open(d, io_mode="sync") as log:
...     asyncio.run(main(log))
(True, 50)
"""

from __future__ import annotations

from collections.abc import Iterable

from ..arguments import BytesLike, check_seq, check_sync
from ..errors import LogRangeError
from .commit import GroupCommit
from .writer import LogTail

__all__ = ["AsyncAppends"]


class AsyncAppends:
    """Mixin of :class:`banyanstore.log.log.Log`: the ``*_async`` methods."""

    _commit: GroupCommit
    _always: bool
    _read_only: bool
    _appends: LogTail

    def append(self, record: BytesLike, *, sync: bool | None = None) -> int:
        raise NotImplementedError  # pragma: no cover  (Log's)

    def append_many(self, records: Iterable[BytesLike], *, sync: bool | None = None) -> int:
        raise NotImplementedError  # pragma: no cover  (Log's)

    async def append_async(self, record: BytesLike, *, sync: bool | None = None) -> int:
        """:meth:`Log.append` for asyncio: the wait for durability (``sync=True``, or
        ``wal_sync="always"``) is awaited, sharing fdatasyncs with every other waiter."""
        check_sync(sync)  # before the append: "no" must not mean True
        seq = self.append(record, sync=False)
        if self._always if sync is None else sync:
            await self._commit.wait_durable_async(seq)
        return seq

    async def append_many_async(self, records: Iterable[BytesLike], *, sync: bool | None = None) -> int:
        """:meth:`Log.append_many` for asyncio (see :meth:`append_async`)."""
        check_sync(sync)
        last = self.append_many(records, sync=False)
        if self._always if sync is None else sync:
            await self._commit.wait_durable_async(last)
        return last

    async def wait_durable_async(self, seq: int) -> None:
        """:meth:`Log.wait_durable` for asyncio: await until record ``seq`` is durable."""
        check_seq(seq, "seq")
        if seq > self._appends.next_seq - 1:
            raise LogRangeError(f"seq {seq} has not been appended (last_seq is {self._appends.next_seq - 1})")
        if not self._read_only:
            await self._commit.wait_durable_async(seq)
