"""Parallel transfers over a bounded thread pool, and progress reports.

Each task moves or checksums one whole file (hashlib and the network release
the interpreter lock, so threads overlap them); the pool holds ``parallel``
threads, so at most that many transfers run at once.

>>> seen = []
>>> t = Tracker("upload", files_total=2, bytes_total=10, callback=seen.append)
>>> t.add_bytes(4); t.file_done(); t.add_bytes(6); t.file_done()
>>> seen[-1]
Progress(phase='upload', files_done=2, files_total=2, bytes_done=10, bytes_total=10)
>>> run_parallel([1, 2, 3], lambda x: x * 2, parallel=2)
[2, 4, 6]
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Final, TypeVar

from .destination import CHUNK, Destination

__all__ = ["Progress", "ProgressCallback", "Tracker", "run_parallel", "check_parallel",
           "check_progress", "DEFAULT_PARALLEL", "hash_file"]

DEFAULT_PARALLEL: Final = 8
MAX_PARALLEL: Final = 256
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Progress:
    """Where a backup, restore or verify stands.

    ``phase``: ``"hash"`` (checksumming the store's files, to find what the
    destination lacks), ``"upload"``, ``"download"`` (restore) or ``"verify"``.
    Bytes and files count within the phase."""

    phase: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


ProgressCallback = Callable[[Progress], None]


class Tracker:
    """Counts one phase and reports it to ``callback`` (from worker threads, one call
    at a time)."""

    def __init__(self, phase: str, *, files_total: int, bytes_total: int,
                 callback: ProgressCallback | None) -> None:
        self.phase, self.files_total, self.bytes_total = phase, files_total, bytes_total
        self.files_done = self.bytes_done = 0
        self._callback = callback
        self._lock = threading.Lock()
        self._emit()

    def _emit(self) -> None:
        if self._callback is not None:
            self._callback(Progress(self.phase, self.files_done, self.files_total,
                                    self.bytes_done, self.bytes_total))

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n
            self._emit()

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1
            self._emit()


def check_parallel(parallel: object) -> int:
    """``parallel`` if it is an int in [1, 256]; TypeError/ValueError naming it otherwise."""
    if isinstance(parallel, bool) or not isinstance(parallel, int):
        raise TypeError(f"parallel must be an int, not {type(parallel).__name__}")
    if not 1 <= parallel <= MAX_PARALLEL:
        raise ValueError(f"parallel must be in [1, {MAX_PARALLEL}], got {parallel}")
    return parallel


def check_progress(progress: object) -> ProgressCallback | None:
    """``progress`` if it is None or callable; TypeError naming it otherwise (checked
    before any work: a worker thread calling it would fail far from the cause)."""
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable, not {type(progress).__name__}")
    return progress


def run_parallel(items: Sequence[T], work: Callable[[T], R], *, parallel: int,
                 dest: Destination | None = None) -> list[R]:
    """``[work(item) for item in items]`` on at most ``parallel`` threads.  On a
    failure, tasks not started are cancelled and the failure of the earliest item
    is raised once the running ones have finished.  On an interrupt (Ctrl-C) the
    requests ``dest`` is running are cancelled too, and ``dest`` refuses new ones
    (:meth:`Destination.stop_transfers`), so the running tasks end at once, a stalled
    one too.  Not on a task's failure: the running transfers finish (one stalled
    like the failed one after its own stall timeout)."""
    if not items:
        return []
    pool = ThreadPoolExecutor(max_workers=min(parallel, len(items)),
                              thread_name_prefix="banyanstore-transfer")
    try:
        futures = [pool.submit(work, item) for item in items]
        done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in done):
            for f in futures:
                f.cancel()
            wait(futures)
            failed = next(f for f in futures if not f.cancelled() and f.exception() is not None)
            error = failed.exception()
            assert error is not None
            raise error
        return [f.result() for f in futures]
    except BaseException as exc:
        if dest is not None and not isinstance(exc, Exception):  # a Ctrl-C, not a task's failure
            dest.stop_transfers()
        raise
    finally:
        # Not the pool's ``with``: its exit waits for every queued task, so a Ctrl-C
        # (a KeyboardInterrupt in the wait above) would let every remaining transfer
        # run first.  Tasks not started are cancelled; the running ones are waited for
        # (they use files the caller removes next) -- after a Ctrl-C their requests
        # were cancelled above, so that is at once.
        pool.shutdown(wait=True, cancel_futures=True)


def hash_file(path: str, on_bytes: Callable[[int], None]) -> str:
    """The SHA-256 (hex) of the file ``path``, reporting bytes read to ``on_bytes``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            on_bytes(len(chunk))
    return h.hexdigest()
