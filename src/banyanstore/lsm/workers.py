"""Worker processes for background table building (``compaction_mode="process"``).

Python threads share one interpreter lock, so a flush or a merge running on a
thread takes CPU time from the store's writers and readers.  In process mode
the CPU-heavy part -- encoding, compressing and checksumming a table -- runs
in a worker process (one for flushes, one for merges, so a long merge never
delays a flush); the store keeps everything that decides what is live: file
numbers, the fsync of the directory, the manifest edit and the views.

A worker is a plain ``python -m banyanstore.lsm.worker`` child speaking
pickled ``(function, args, stream_at)`` requests and ``(ok, result)`` replies over its
stdin/stdout (a request with ``stream_at`` set is followed by bytes pieces in frames,
``length:u64 piece``, up to a frame of length 0: their join is ``args[stream_at]`` -- a
flush buffer sent piece by piece, which the compiled memtable writes to the pipe itself
with the GIL released; see lsm/flushbuf.py) -- not a ``multiprocessing`` pool, whose helper processes outlive
a killed parent and keep its pipes open.  A worker exits when its stdin closes
and, on Linux, is killed with its parent (``PR_SET_PDEATHSIG``) -- to Linux the thread
that started it, so every worker is started by one thread that lives as long as the
pools that use it (:class:`_Spawner`).  If a worker
dies, the call fails with :class:`StorageIOError` (the flush or merge is then
retried on a fresh worker).  A worker killed mid-table leaves a partial file
that no manifest names: an orphan, removed at the next open.

Workers write through a plain :class:`~banyanstore.io.posix.PosixEnv` (writes
are plain syscalls in every IO mode), so process mode applies to stores on a
real filesystem; stores on other envs (crash simulator, fault injection)
build on threads.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Iterable
from typing import Any

from ..errors import StorageIOError
from ..io.posix import PosixEnv
from ..io.pread import dead_descriptor
from .flushbuf import Pieces, send_frames

__all__ = ["WorkerPools", "Worker", "offload", "build_table_in_worker"]


def offload(options: Any, env: Any) -> bool:
    """Whether a store with ``options`` on ``env`` builds tables in worker processes."""
    return options.compaction_mode == "process" and isinstance(env, PosixEnv)


class Worker:
    """One child process serving calls one at a time.  Thread-safe."""

    def __init__(self) -> None:
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "banyanstore.lsm.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True, env=env)
        self._lock = threading.Lock()

    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in the worker; its exception is re-raised here."""
        return self.call_streamed(fn, args, None, ())

    def call_streamed(self, fn: Any, args: tuple[Any, ...], stream_at: int | None,
                      pieces: Iterable[bytes]) -> Any:
        """``fn(*args)`` in the worker, where ``args[stream_at]`` (a placeholder here) is
        the join of ``pieces``, sent one by one as they are made; its exception is
        re-raised here."""
        with self._lock:
            stdin, stdout = self._proc.stdin, self._proc.stdout
            assert stdin is not None and stdout is not None
            try:
                pickle.dump((fn, args, stream_at), stdin, protocol=pickle.HIGHEST_PROTOCOL)
                if stream_at is not None:
                    self._send_pieces(stdin, pieces)
                stdin.flush()
                ok, result = pickle.load(stdout)
            except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
                if isinstance(exc, ValueError) and not (stdin.closed or stdout.closed):
                    raise  # not a dead worker's closed pipe
                self.close()
                raise StorageIOError(f"background worker process {self._proc.pid} died "
                                     f"(exit status {self._proc.poll()})", op="worker") from exc
        if not ok:
            raise result
        return result

    def _send_pieces(self, stdin: Any, pieces: Iterable[bytes]) -> None:
        """Each piece as it is made, in frames (a :class:`~.flushbuf.Pieces` sends its
        own).  A piece that cannot be made or sent (say MemoryError) leaves the worker
        mid-request: it is closed, the error raised."""
        try:
            if isinstance(pieces, Pieces):
                pieces.send(stdin)
            else:
                send_frames(stdin, pieces)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def kill(self) -> None:
        """End the process now (SIGKILL): a call in flight fails with StorageIOError
        and closes this worker; an idle worker is closed here.  Pipes are not closed
        under a call in flight (its read must see the end of the pipe, not a closed file)."""
        try:
            self._proc.kill()
        except OSError:
            pass  # already gone
        if self._lock.acquire(blocking=False):
            try:
                self.close()
            finally:
                self._lock.release()

    def disown(self) -> None:
        """In a forked child: point this process's copies of the pipes at a dead
        descriptor.  Nothing of the child reaches the worker -- a request the parent
        was writing at the fork, buffered here and written out when the child's files
        close -- and the worker still sees its stdin end when the parent closes it."""
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(dead_descriptor(), pipe.fileno(), inheritable=False)

    def close(self) -> None:
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class _Spawner:
    """Starts :class:`Worker` processes from one daemon thread of this process, which
    lives as long as some :class:`WorkerPools` that used it is not shut down.  A worker
    is killed when its parent dies (``PR_SET_PDEATHSIG``), and to Linux that parent is
    the *thread* that started it: a worker first needed by a thread that then ended --
    ``compact()`` called from a short-lived thread -- was killed with that thread, and
    the call of whichever thread used it next failed ("background worker process died";
    a merge's failure counts toward quarantining its tables)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[threading.Event, list[Any]] | None] = queue.SimpleQueue()
        self._pid = 0  # the process whose thread serves _jobs (0: no thread)
        self._users: set[int] = set()  # ids of the pools that used it and are not shut down
        os.register_at_fork(after_in_child=self._forget)

    def start(self, user: object) -> Worker:
        """A new worker for ``user`` (a :class:`WorkerPools`), started by the spawning
        thread; its exception is raised here.  (Interrupted while waiting, the worker
        started meanwhile is dropped: its pipes close when it is collected, and it exits.)"""
        done = threading.Event()
        box: list[Any] = []
        with self._lock:
            if self._pid != os.getpid():
                try:
                    threading.Thread(target=self._serve, args=(self._jobs,),
                                     name="banyanstore-worker-spawner", daemon=True).start()
                except RuntimeError:
                    # Python 3.12.0-3.12.2 refuse new threads in atexit hooks, where the
                    # exit hook's close may need a first worker: start it here -- that
                    # thread lives until the process ends.
                    return Worker()
                self._pid = os.getpid()
            self._users.add(id(user))
            self._jobs.put((done, box))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        worker: Worker = box[0]
        return worker

    def release(self, user: object) -> None:
        """``user``'s workers are closed: once no user has any, the thread ends (the
        workers it started are gone, so its end kills none)."""
        with self._lock:
            self._users.discard(id(user))
            if not self._users and self._pid == os.getpid():
                self._jobs.put(None)  # the thread's last job; a later start makes a new one
                self._jobs = queue.SimpleQueue()
                self._pid = 0

    def _forget(self) -> None:
        """In a forked child: the serving thread is the parent's (the child has none), and
        the lock may have been held at the fork."""
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._pid = 0
        self._users = set()

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[tuple[threading.Event, list[Any]] | None]) -> None:
        while (job := jobs.get()) is not None:
            done, box = job
            try:
                box.append(Worker())
            except BaseException as exc:  # noqa: BLE001 - raised in the thread that asked
                box.append(exc)
            done.set()


_spawner = _Spawner()


class WorkerPools:
    """Lazily started workers, one per purpose ("flush", "merge")."""

    def __init__(self) -> None:
        self._workers: dict[str, Worker] = {}
        self._cancelled: set[str] = set()
        self._disowned = False  # a forked child's copy: starts no worker
        self._lock = threading.Lock()

    def submit(self, purpose: str, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in the worker for ``purpose``; returns its result."""
        return self._worker(purpose).call(fn, *args)

    def submit_streamed(self, purpose: str, fn: Any, args: tuple[Any, ...], stream_at: int,
                        pieces: Iterable[bytes]) -> Any:
        """Run ``fn(*args)`` in the worker for ``purpose``, ``args[stream_at]`` being the
        join of ``pieces`` (see :meth:`Worker.call_streamed`); returns its result."""
        return self._worker(purpose).call_streamed(fn, args, stream_at, pieces)

    def prestart(self, purpose: str) -> None:
        """Start the worker for ``purpose`` now if it is not running (and not cancelled), so
        that its next call does not wait for a process to start."""
        try:
            self._worker(purpose)
        except (StorageIOError, OSError):
            # cancelled (the store is closing), or the process could not start (EMFILE,
            # EAGAIN): the flush's own call starts it again, and fails there, retried
            pass

    def running(self, purpose: str) -> bool:
        """Whether the worker for ``purpose`` is running."""
        # (no lock: _worker holds it while a process starts, and a writer asks this)
        worker = self._workers.get(purpose)
        return worker is not None and worker.alive

    def cancel(self, purpose: str) -> None:
        """Kill the worker for ``purpose`` -- its call in flight, if any, fails with
        StorageIOError -- and refuse later calls for it (a store closing stops its
        merge at once instead of waiting for it: Compactor.stop)."""
        with self._lock:
            self._cancelled.add(purpose)
            worker = self._workers.pop(purpose, None)
        if worker is not None:
            worker.kill()

    def _worker(self, purpose: str) -> Worker:
        with self._lock:
            if purpose in self._cancelled:
                raise StorageIOError(f"the {purpose} worker was cancelled (the store is closing)",
                                     op="worker")
            if self._disowned:
                raise StorageIOError(f"the {purpose} worker belongs to the parent process",
                                     op="worker")
            worker = self._workers.get(purpose)
            if worker is None or not worker.alive:
                worker = self._workers[purpose] = _spawner.start(self)
        return worker

    def disown(self) -> None:
        """In a forked child: the workers are the parent's (see :meth:`Worker.disown`);
        later calls are refused.  (No lock: the child has one thread.)"""
        self._disowned = True
        for worker in self._workers.values():
            worker.disown()

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers.values() if w.alive]

    def shutdown(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            w.close()
        _spawner.release(self)


def build_table_in_worker(path: str, options: Any, entries: Any, origin: Any = None,
                          range_dels: Any = ()) -> Any:
    """Write a table from a memtable's entries (a flush buffer or the columns: see
    lsm/flushbuf.py; the buffer is built into a table here, in the worker) and range tombstones;
    returns its TableMeta.  The partial file is removed on failure."""
    from ..sstable.builder import TableBuilder
    from .flushbuf import load_into
    builder = TableBuilder(PosixEnv(), path, options, origin)
    try:
        load_into(builder, entries)
        builder.add_range_dels(range_dels)
        return builder.finish()
    except BaseException:
        builder.abandon()
        raise
