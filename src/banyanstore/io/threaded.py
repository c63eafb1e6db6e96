"""The ``nonblocking`` backend: batches of reads served by a few worker threads.

Everything but :meth:`ThreadedEnv.read_batch` is the ``sync`` backend.  A batch
is cut into one contiguous *chunk per worker* and each worker runs a plain
``pread`` loop over its chunk.  One task per read would be slower than no
threads at all (docs/facts.md: 20-35k reads/s from page cache against 0.7-0.87M/s
for a loop) because the per-task handoff costs more than a cached read; with
chunks the handoff is paid once per worker per batch, and O_DIRECT reads reach
35-59k/s with 4-16 threads against 16-18k/s one at a time.  ``os.pread``
releases the GIL, so the workers' reads overlap.

Small batches (fewer than :data:`MIN_THREADED_BATCH` reads) stay on the
caller's thread: waking workers costs more than a few cached reads.

The caller, done with its own chunk, runs every chunk no worker has taken yet rather
than wait for one: a batch racing :meth:`ThreadedEnv.close` -- workers checked, then
stopped by close() before its chunks were queued -- used to wait for them forever.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

from .base import ReadRequest
from .posix import PosixEnv

__all__ = ["ThreadedEnv", "MIN_THREADED_BATCH"]

MIN_THREADED_BATCH = 8
_MIN_CHUNK = 4  # never hand a worker fewer reads than this


class _Job:
    """One chunk of a batch: ``requests[lo:hi]`` into ``results[lo:hi]``."""

    __slots__ = ("requests", "results", "lo", "hi", "error", "done", "_taken")

    def __init__(self, requests: Sequence[ReadRequest], results: list[bytes], lo: int, hi: int) -> None:
        self.requests, self.results, self.lo, self.hi = requests, results, lo, hi
        self.error: tuple[int, BaseException] | None = None  # (request index, exception)
        self.done = threading.Event()
        self._taken = threading.Lock()

    def take(self) -> bool:
        """True for the one thread that runs this job: a worker, or the batch's caller."""
        return self._taken.acquire(blocking=False)

    def run(self) -> None:
        requests, results = self.requests, self.results
        i = self.lo
        try:
            while i < self.hi:
                f, off, n = requests[i]
                results[i] = f.read(off, n)
                i += 1
        except BaseException as exc:  # re-raised on the caller's thread
            self.error = (i, exc)
        finally:
            self.done.set()


class ThreadedEnv(PosixEnv):
    """``io_mode="nonblocking"``: :meth:`read_batch` split over ``threads`` daemon workers."""

    mode = "nonblocking"

    def __init__(self, *, threads: int = 8, direct_io: bool = False) -> None:
        """REQUIRES: ``threads >= 1``.  Workers start lazily on the first large batch."""
        super().__init__(direct_io=direct_io)
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.threads = threads
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._mu = threading.Lock()
        self._closed = False

    def _ensure_workers(self, wanted: int) -> None:
        with self._mu:
            if self._closed:
                raise ValueError("ThreadedEnv is closed")
            while len(self._workers) < wanted:
                t = threading.Thread(target=self._worker, name=f"banyanstore-io-{len(self._workers)}",
                                     daemon=True)
                t.start()
                self._workers.append(t)

    def _worker(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:  # close() sentinel
                return
            if job.take():
                job.run()
            job = None  # idle: hold no batch (its files stay open while anything holds them)

    def read_batch(self, requests: Sequence[ReadRequest]) -> list[bytes]:
        """Results in request order.  A failing read raises its own
        :class:`~banyanstore.errors.StorageIOError` (the lowest failing index wins)."""
        n = len(requests)
        if n < MIN_THREADED_BATCH or self.threads == 1:
            return [f.read(off, ln) for f, off, ln in requests]
        # The caller's thread works on the first chunk itself, so it is one of the workers.
        parts = max(1, min(self.threads, n // _MIN_CHUNK))
        self._ensure_workers(parts - 1)
        results: list[bytes] = [b""] * n
        bounds = [n * k // parts for k in range(parts + 1)]
        jobs = [_Job(requests, results, bounds[k], bounds[k + 1]) for k in range(parts)]
        for job in jobs[1:]:
            self._queue.put(job)
        jobs[0].run()
        for job in jobs[1:]:  # the chunks no worker took yet: here (workers may be gone)
            if job.take():
                job.run()
            else:
                job.done.wait()
        errors = [job.error for job in jobs if job.error is not None]
        if errors:
            raise min(errors, key=lambda e: e[0])[1]
        return results

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["io_threads"] = self.threads
        return info

    def close(self) -> None:
        """Stop the workers (after the jobs already queued).  Idempotent."""
        with self._mu:
            if self._closed:
                return
            self._closed = True
            workers, self._workers = self._workers, []
        for _ in workers:
            self._queue.put(None)
        for t in workers:
            t.join(timeout=5)
