"""Where backups go: a local directory, or any fsspec URL (``s3://``, ``gs://``, ``az://``...).

A destination is a flat key space under one prefix (``objects/<sha256>``,
``backups/<id>.manifest``, ``pending/<id>``).  Every write is *atomic*: a key
holds the whole object or nothing, so a backup process killed mid-upload never
leaves a short object under a final name (which the next, incremental backup
would take for present).

* **Local paths** (and ``file://``, ``local://`` URLs) use plain file calls: write a hidden
  temporary file, fsync it, rename it over the key, fsync the directory before
  anything depends on it (:meth:`Destination.barrier`).  fsspec's local file
  system offers neither the fsync nor the atomic rename, so local backups do
  not use it -- and work without fsspec installed.
* **Other URLs** go through fsspec, imported only then (``pip install
  'banyanstore[s3]'``, ``[gcs]``, ``[azure]``).  Object stores (S3, GCS, Azure,
  memory) make a PUT visible whole or not at all; other file systems get a
  temporary key and a move.  Credentials and endpoints come from the backend's
  usual places (for S3: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
  ``AWS_ENDPOINT_URL`` for MinIO or Ceph, ``~/.aws``...) or from
  ``storage_options``.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     dest = open_destination(d, {})
...     dest.write("pending/x", b"hello")
...     dest.read("pending/x"), dest.list("pending"), dest.list("objects")
(b'hello', {'x': 5}, {})
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterable, Iterator, MutableSequence
from typing import Any, Final

from ..arguments import is_finite_number
from ..errors import (
    BanyanStoreError,
    ConfigError,
    NotAStoreError,
    StorageIOError,
    StoreNotFoundError,
    from_oserror,
)

__all__ = ["Destination", "LocalDestination", "FsspecDestination", "open_destination", "CHUNK",
           "TEMP_MARK", "DEFAULT_STALL_TIMEOUT", "check_stall_timeout"]

CHUNK: Final = 1 << 20
TEMP_MARK: Final = ".tmp-"  # temporary names: ".tmp-<random>-<final name>"
ATOMIC_PUT: Final = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory",
                               "oss", "r2"})
EXTRAS: Final = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
                 "abfss": "azure", "adl": "azure"}

DEFAULT_STALL_TIMEOUT: Final = 300.0
"""Seconds an fsspec request may go without progress before it is cancelled."""
S3_PART_SIZE: Final = 8 << 20
"""An object of 2 parts or more goes to S3 in parts of this size, one part at a time
(:meth:`FsspecDestination._s3_multipart`), each reported as it is sent.  s3fs's
defaults -- 50 MiB parts, 10 at once sharing the link -- report nothing until 10
parts are nearly all sent: a stall timeout would have to allow 500 MiB without a sign
of life.  Downloads ask s3fs for one stream, which reports every 64 KiB (its
concurrent download of an object above 50 MiB: once per 10 ranges of 50 MiB).  The
pool's ``parallel`` objects at once keep the link busy."""
S3_MAX_PARTS: Final = 10_000  # S3's limit: a larger object takes larger parts
_POLL: Final = 0.25  # the longest a waiting thread sleeps between two looks at a request
INTERRUPTED_CLEANUP: Final = 2.0  # seconds a cleanup after a Ctrl-C may go without progress
_S3: Final = frozenset({"s3", "s3a"})
_LOCAL_SCHEMES: Final = ("file://", "local://")  # the plain local backend, not fsspec's

logger = logging.getLogger("banyanstore.backups")

_GLOB_MAGIC: Final = re.compile(r"[*?\[]")  # what fsspec's rm() and glob() expand
_LOCAL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})

OnBytes = Callable[[int], None]
OnChunk = Callable[[bytes], None]


def check_stall_timeout(stall_timeout: object) -> float | None:
    """``stall_timeout`` as float seconds (> 0, finite) or None (wait for ever);
    TypeError/ValueError naming it otherwise."""
    if stall_timeout is None:
        return None
    if isinstance(stall_timeout, bool) or not isinstance(stall_timeout, (int, float)):
        raise TypeError(f"stall_timeout must be a number of seconds or None, not "
                        f"{type(stall_timeout).__name__}")
    if not is_finite_number(stall_timeout) or stall_timeout <= 0:
        raise ValueError(f"stall_timeout must be a finite number of seconds > 0 or None, "
                         f"got {stall_timeout!r}")
    return float(stall_timeout)


def _temp_name(key: str) -> str:
    head, _, name = key.rpartition("/")
    return f"{head}/{TEMP_MARK}{secrets.token_hex(6)}-{name}" if head else \
        f"{TEMP_MARK}{secrets.token_hex(6)}-{name}"


class Destination(ABC):
    """A backup destination.  Keys are relative (``objects/<sha256>``) and written
    atomically.  Thread-safe: uploads and downloads run in a pool."""

    url: str

    def describe(self, key: str) -> str:
        """The full URL of ``key`` (for messages)."""
        return f"{self.url.rstrip('/')}/{key}"

    @abstractmethod
    def list(self, folder: str) -> dict[str, int]:
        """``{name: size}`` of the files in ``folder`` (``{}`` if it does not exist)."""

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The bytes of ``key``; FileNotFoundError if absent."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically (replacing what is there)."""

    @abstractmethod
    def upload(self, local: str, key: str, on_bytes: OnBytes) -> None:
        """Store the file ``local`` under ``key`` atomically; ``on_bytes(n)`` as it goes."""

    @abstractmethod
    def download(self, key: str, local: str, on_chunk: OnChunk) -> None:
        """Copy ``key`` to the new file ``local`` (fsynced), showing every chunk to
        ``on_chunk`` on the way; FileNotFoundError if absent."""

    @abstractmethod
    def open_read(self, key: str) -> Any:
        """A binary file object reading ``key``; FileNotFoundError if absent."""

    @abstractmethod
    def delete(self, keys: Iterable[str], *, after_interrupt: bool = False) -> None:
        """Remove ``keys``; keys already gone are fine.  ``after_interrupt``: the cleanup
        of a call a Ctrl-C stopped -- allowed after :meth:`stop_transfers`, and given
        ``INTERRUPTED_CLEANUP`` seconds without progress at most (the user asked to
        stop, and a destination that stalled the transfer would stall this too)."""

    def abort_incomplete_uploads(self, folder: str) -> int:
        """Abort every unfinished multipart upload under ``folder``; how many.  S3 keeps
        the parts of one a killed backup started (unlisted, billed); call it only while
        no backup writes there.  Other destinations have none: 0."""
        return 0

    def barrier(self) -> None:  # noqa: B027 -- object stores need nothing here
        """Make every completed write durable before the next one is made."""

    def stop_transfers(self) -> None:  # noqa: B027 -- local file calls are not cancelled
        """Cancel the requests running now, and refuse every later one but a cleanup
        (:meth:`delete` ``after_interrupt``): a Ctrl-C, the pool's running tasks end at
        once.  For good: a Ctrl-C during ``pool.submit()`` can leave a worker thread
        the pool does not know (interrupted while it started), which would otherwise
        start its request after the call gave up -- and hold the interpreter's exit
        until the request ends."""

    def lies_within(self, path: str) -> bool:
        """Whether this destination is the local directory ``path`` or inside it."""
        return False

    def check_location(self, *, creating: bool) -> None:  # noqa: B027 -- see below
        """Raise where the location cannot be what the call needs: a place holding
        backups to read (``creating=False``) or one a backup may create.  An object
        store has no folders to check (a missing bucket fails at the first request)."""


# -- local directories ------------------------------------------------------------------------

class LocalDestination(Destination):
    """A directory on a local (or mounted) file system."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = self.root
        self._dirty: set[str] = set()  # directories whose entries the next barrier syncs
        self._made: set[str] = set()  # folders known to exist

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def lies_within(self, path: str) -> bool:
        root, outer = os.path.realpath(self.root), os.path.realpath(path)
        return root == outer or root.startswith(outer.rstrip(os.sep) + os.sep)

    def check_location(self, *, creating: bool) -> None:
        """A file at the root: NotAStoreError, as checkpoint() and open() say (the first
        write under it failed with ENOTDIR naming ``<root>/pending`` or ``/backups``).
        A missing root, to read from: StoreNotFoundError -- a mistyped path is not "no
        backups" (listing gave [], and prune created the directory), as restore and the
        command line already said."""
        if os.path.isdir(self.root):
            return
        if os.path.lexists(self.root):
            raise NotAStoreError(f"backup location {self.root} is a file, not a directory")
        if not creating:
            raise StoreNotFoundError(f"no backup directory at {self.root}")

    def list(self, folder: str) -> dict[str, int]:
        path = self._path(folder)
        out: dict[str, int] = {}
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if entry.is_file(follow_symlinks=False):
                        try:
                            out[entry.name] = entry.stat().st_size
                        except FileNotFoundError:
                            continue  # renamed or removed since the directory was read
        except FileNotFoundError:
            return {}
        return out

    def _open(self, key: str) -> Any:
        """``key`` opened for reading; FileNotFoundError where no file holds it (a
        directory or a symlink loop in its place is no object either)."""
        path = self._path(key)
        try:
            return open(path, "rb")
        except IsADirectoryError:
            raise FileNotFoundError(errno.ENOENT, "not a file", path) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FileNotFoundError(errno.ENOENT, "a symlink loop", path) from None
            raise

    def read(self, key: str) -> bytes:
        with self._open(key) as f:
            return bytes(f.read())

    def _makedirs(self, folder: str) -> None:
        """Create ``folder`` and its missing ancestors (the root too, on a first backup).
        The next barrier syncs each new one's parent: a directory whose entry is not
        durable may vanish at a power loss with every backup in it."""
        if folder in self._made:
            return
        missing: list[str] = []
        path = folder
        while not os.path.isdir(path) and os.path.dirname(path) != path:
            missing.append(path)
            path = os.path.dirname(path)
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):  # made meanwhile: its parent is synced anyway
                os.mkdir(path)
            self._dirty.add(os.path.dirname(path))
        self._made.add(folder)

    def _atomic(self, key: str, fill: Callable[[Any], None]) -> None:
        final = self._path(key)
        folder = os.path.dirname(final)
        self._makedirs(folder)
        tmp = self._path(_temp_name(key))
        try:
            with open(tmp, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise
        self._dirty.add(folder)

    def write(self, key: str, data: bytes) -> None:
        self._atomic(key, lambda f: f.write(data))
        self.barrier()

    def upload(self, local: str, key: str, on_bytes: OnBytes) -> None:
        def copy(f: Any) -> None:
            with open(local, "rb") as src:
                while chunk := src.read(CHUNK):
                    f.write(chunk)
                    on_bytes(len(chunk))
        self._atomic(key, copy)

    def download(self, key: str, local: str, on_chunk: OnChunk) -> None:
        with self._open(key) as src, open(local, "xb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                on_chunk(chunk)
            out.flush()
            os.fsync(out.fileno())

    def open_read(self, key: str) -> Any:
        return self._open(key)

    def delete(self, keys: Iterable[str], *, after_interrupt: bool = False) -> None:
        for key in keys:
            try:
                os.remove(self._path(key))
            except FileNotFoundError:
                continue
            self._dirty.add(os.path.dirname(self._path(key)))
        self.barrier()

    def barrier(self) -> None:
        for folder in sorted(self._dirty):
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if self._dirty:  # a new folder's own entry lives in the root
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._dirty.clear()


# -- fsspec URLs ---------------------------------------------------------------------------------

class FsspecDestination(Destination):
    """Any fsspec file system (S3, GCS, Azure, SFTP, memory...)."""

    def __init__(self, url: str, storage_options: dict[str, Any],
                 stall_timeout: float | None = DEFAULT_STALL_TIMEOUT) -> None:
        protocol = url.split("://", 1)[0].lower()
        try:
            import fsspec
        except ImportError:
            raise ConfigError(f"{protocol}:// backups need fsspec: pip install "
                              f"'banyanstore[{EXTRAS.get(protocol, 'fsspec')}]'") from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except ImportError as exc:
            raise ConfigError(f"{protocol}:// backups need a backend fsspec cannot import ({exc}); "
                              f"pip install 'banyanstore[{EXTRAS.get(protocol, 'fsspec')}]'") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cannot use {url!r} as a backup destination: {exc}") from exc
        self.url = url.rstrip("/")
        self.root = root.rstrip("/")
        self._atomic_put = protocol in ATOMIC_PUT
        self._made: set[str] = set()  # folders known to exist (file systems without atomic puts)
        self._s3 = protocol in _S3
        self._get_options: dict[str, Any] = {"max_concurrency": 1} if self._s3 else {}
        # Requests of an asyncio file system (s3fs, gcsfs, adlfs...) run on fsspec's
        # IO loop; this object awaits them itself (see :meth:`_await`) so that one that
        # makes no progress can be cancelled: aiohttp has no timeout on sending a body,
        # and a server that stops reading held a backup for ever.
        self._async = bool(getattr(self.fs, "async_impl", False))
        self._stall = stall_timeout
        self._lock = threading.Lock()
        self._running: set[concurrent.futures.Future[Any]] = set()
        self._stopping = False
        self.fs.invalidate_cache()  # listings cached by an earlier call may be stale

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _call(self, op: str, key: str, name: str, *args: Any, clock: _Clock | None = None,
              cleanup: bool = False, **kwargs: Any) -> Any:
        """``self.fs.<name>(*args, **kwargs)``; on an asyncio file system its coroutine
        ``_<name>``, awaited under the stall timeout (see :meth:`_await` for ``cleanup``)."""
        method = getattr(self.fs, f"_{name}", None) if self._async else None
        if method is None:  # a synchronous file system: its own timeouts apply
            if clock is not None:
                clock.direct = True  # its callbacks run on this thread
            return getattr(self.fs, name)(*args, **kwargs)
        return self._await(op, key, method(*args, **kwargs), clock, cleanup)

    def _coroutine(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        """The asyncio file system's coroutine for its method ``name``: fsspec's public
        async API names each one ``_<name>`` (the plain name is its blocking wrapper)."""
        return getattr(self.fs, f"_{name}")

    def _await(self, op: str, key: str, coro: Coroutine[Any, Any, Any], clock: _Clock | None,
               cleanup: bool = False) -> Any:
        """The result of ``coro``, run on the file system's loop.  Cancelled, as a
        StorageIOError naming ``key`` and the seconds, once ``clock`` (the request's
        progress; the start alone where it reports none) is older than the stall
        timeout; cancelled at once by :meth:`stop_transfers`, or by a KeyboardInterrupt
        in this thread.  ``cleanup``: after an interrupt, allowed, and watched with
        ``INTERRUPTED_CLEANUP`` at most."""
        clock = clock if clock is not None else _Clock()
        limit = self._stall if not cleanup else min(INTERRUPTED_CLEANUP, self._stall or INTERRUPTED_CLEANUP)
        with self._lock:
            if self._stopping and not cleanup:
                coro.close()
                raise StorageIOError(f"{op} {self.describe(key)}: interrupted",
                                     path=self.describe(key), op=op)
            future = asyncio.run_coroutine_threadsafe(coro, self.fs.loop)
            self._running.add(future)
        try:
            while True:
                idle = time.monotonic() - clock.last
                if limit is not None and idle >= limit:
                    future.cancel()
                    raise StorageIOError(
                        f"{op} {self.describe(key)}: no progress for {limit:g} s "
                        f"(stall_timeout); the request was cancelled",
                        path=self.describe(key), op=op)
                wait = _POLL if limit is None else min(_POLL, limit - idle)
                # wait(), not result(timeout): a TimeoutError the request itself raises
                # must not read as "still running"
                concurrent.futures.wait([future], timeout=wait)
                if future.cancelled():
                    raise StorageIOError(f"{op} {self.describe(key)}: interrupted",
                                         path=self.describe(key), op=op)
                clock.report()  # on this thread, not on the loop all requests share
                if future.done():
                    result = future.result()
                    clock.report()
                    return result
        except BaseException:
            future.cancel()  # a Ctrl-C here, or the failures above: the request ends too
            raise
        finally:
            with self._lock:
                self._running.discard(future)

    def stop_transfers(self) -> None:
        with self._lock:
            self._stopping = True
            for future in self._running:
                future.cancel()

    @contextlib.contextmanager
    def _backend_errors(self, op: str, key: str, local: str | None = None) -> Iterator[None]:
        """A backend's own exception (botocore's NoCredentialsError or
        EndpointConnectionError...) as StorageIOError naming the URL, its cause kept.
        FileNotFoundError passes as it is (callers tell a missing key apart), and so do
        Python's other built-in exceptions (a bug's traceback must stay one).  Other
        OSErrors name the URL too: s3fs turns the service's refusals into them
        (PermissionError "Access Denied", without a file name), which the caller would
        otherwise report under its own local path.  Only a full disk or a read-only
        file system writing ``local`` (a download's file) names ``local``.  A bucket that
        does not exist is no missing key: s3fs raises S3's NoSuchBucket as a
        FileNotFoundError, which :meth:`list` would take for an empty folder (a typo in
        the bucket's name listing no backups, without an error)."""
        try:
            yield
        except FileNotFoundError as exc:
            if not _no_such_bucket(exc):
                raise
            bucket = self.root.split("/", 1)[0]
            raise StorageIOError(f"{op} {self.describe(key)}: the bucket {bucket} does not exist",
                                 path=self.describe(key), op=op) from exc
        except BanyanStoreError:
            raise
        except OSError as exc:
            where = local if local is not None and exc.errno in _LOCAL_ERRNOS else self.describe(key)
            raise from_oserror(op, where, exc) from exc
        except Exception as exc:
            if type(exc).__module__ == "builtins":
                raise
            raise StorageIOError(f"{op} {self.describe(key)}: {type(exc).__name__}: {exc}",
                                 path=self.describe(key), op=op) from exc

    def list(self, folder: str) -> dict[str, int]:
        path = self._path(folder)
        self.fs.invalidate_cache(path)
        try:
            with self._backend_errors("list", folder):
                entries = self._call("list", folder, "ls", path, detail=True)
        except FileNotFoundError:
            return {}
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
                for e in entries if e.get("type") == "file"}

    def read(self, key: str) -> bytes:
        with self._backend_errors("read", key):
            return bytes(self._call("read", key, "cat_file", self._path(key)))

    def _put(self, key: str, put: Callable[[str], None], op: str = "write") -> None:
        with self._backend_errors(op, key):  # "upload" for an object, as the stall says it
            if self._atomic_put:
                put(self._path(key))
                return
            tmp = self._path(_temp_name(key))
            self._make_folder(key)
            put(tmp)
            self._call("write", key, "mv", tmp, self._path(key))

    def _make_folder(self, key: str) -> None:
        """Create the folder of ``key``: a file system that is no object store (sftp,
        fsspec's local) opens no file in a folder that does not exist, and pipe_file()
        does not make it (put_file() does), so a fresh destination's first marker failed."""
        folder = self._path(key).rpartition("/")[0]
        if folder not in self._made:
            self._call("write", key, "makedirs", folder, exist_ok=True)
            self._made.add(folder)

    def write(self, key: str, data: bytes) -> None:
        self._put(key, lambda path: self._call("write", key, "pipe_file", path, data))

    def upload(self, local: str, key: str, on_bytes: OnBytes) -> None:
        clock = _Clock(on_bytes)
        options: dict[str, Any] = {}
        if self._s3:
            size = os.path.getsize(local)
            part_size = max(S3_PART_SIZE, -(-size // S3_MAX_PARTS))  # ceil
            if size >= 2 * part_size and self._async and hasattr(self.fs, "_call_s3"):
                with self._backend_errors("upload", key):  # s3fs's threshold for parts
                    self._s3_multipart(local, key, part_size, clock)
                return
            options = {"chunksize": part_size, "max_concurrency": 1}
        self._put(key, lambda path: self._call("upload", key, "put_file", local, path,
                                               callback=_callback(clock), clock=clock,
                                               **options), op="upload")

    def _s3_multipart(self, local: str, key: str, part_size: int, clock: _Clock) -> None:
        """s3fs's multipart upload, one part at a time, with the abort s3fs lacks: it
        aborts only on an Exception of its own, and a cancelled request (a stall, a
        Ctrl-C, a failing progress callback) is a CancelledError, which left every part
        sent at S3 -- unlisted and billed until a lifecycle rule removed them.  The
        upload id is known here, so the abort removes this upload's parts only (another
        backup may be uploading the same object at once)."""
        bucket, path, _ = self.fs.split_path(self._path(key))
        started: list[str] = []
        try:
            self._await("upload", key, self._s3_parts(bucket, path, local, part_size, clock, started),
                        clock)
        except BaseException:
            if started:
                abort = self._coroutine("call_s3")("abort_multipart_upload", Bucket=bucket,
                                                   Key=path, UploadId=started[0])
                try:  # a cleanup: bounded as one after a Ctrl-C (the server may be the stall)
                    self._await("upload", key, abort, None, cleanup=True)
                except Exception as exc:  # noqa: BLE001 -- the upload's own failure is raised
                    logger.warning("could not abort the multipart upload of %s (%s); the next "
                                   "prune aborts it", self.describe(key), exc)
            raise
        self.fs.invalidate_cache(self._path(key))

    def abort_incomplete_uploads(self, folder: str) -> int:
        if not (self._s3 and self._async and hasattr(self.fs, "_call_s3")):
            return 0
        bucket, _, root = self.root.partition("/")
        prefix = f"{root}/{folder}/" if root else f"{folder}/"  # the slash: not folder2/
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        aborted = 0
        with self._backend_errors("list uploads", folder):
            while True:
                page = self._call("list uploads", folder, "call_s3", "list_multipart_uploads", **params)
                for upload in page.get("Uploads", []):
                    key = upload["Key"][len(root) + 1:] if root else upload["Key"]
                    with contextlib.suppress(FileNotFoundError):  # aborted meanwhile
                        self._call("delete", key, "call_s3", "abort_multipart_upload", Bucket=bucket,
                                   Key=upload["Key"], UploadId=upload["UploadId"])
                        aborted += 1
                if not page.get("IsTruncated"):
                    return aborted
                params.update(KeyMarker=page.get("NextKeyMarker", ""),
                              UploadIdMarker=page.get("NextUploadIdMarker", ""))

    async def _s3_parts(self, bucket: str, path: str, local: str, part_size: int, clock: _Clock,
                        started: MutableSequence[str]) -> None:
        call_s3 = self._coroutine("call_s3")
        mpu = await call_s3("create_multipart_upload", Bucket=bucket, Key=path)
        upload_id = mpu["UploadId"]
        started.append(upload_id)
        parts: list[dict[str, Any]] = []
        sent = 0
        with open(local, "rb") as f:
            while chunk := f.read(part_size):
                out = await call_s3("upload_part", Bucket=bucket, Key=path, UploadId=upload_id,
                                             PartNumber=len(parts) + 1, Body=chunk)
                parts.append({"PartNumber": len(parts) + 1, "ETag": out["ETag"]})
                sent += len(chunk)
                clock.progress(sent)
        await call_s3("complete_multipart_upload", Bucket=bucket, Key=path, UploadId=upload_id,
                               MultipartUpload={"Parts": parts})

    def download(self, key: str, local: str, on_chunk: OnChunk) -> None:
        # One streaming GET (a read through open() costs a HEAD and ranged GETs), then
        # the checksum pass over the fresh file, from the page cache.
        clock = _Clock()
        try:
            with self._backend_errors("download", key, local):
                self._call("download", key, "get_file", self._path(key), local,
                           callback=_callback(clock), clock=clock,
                           **self._get_options)
        except FileNotFoundError:
            if os.path.exists(local):
                os.remove(local)
            raise
        with open(local, "rb") as f:
            while chunk := f.read(CHUNK):
                on_chunk(chunk)
            os.fsync(f.fileno())

    def open_read(self, key: str) -> Any:
        guard = lambda: self._backend_errors("read", key)  # noqa: E731
        if self._async:
            # A streamed GET whose every read is awaited under the stall timeout (a
            # buffered file's reads are fsspec's own blocking calls, which nothing
            # could cancel); file systems without one read through the buffered file.
            with guard():
                try:
                    stream = self._await("read", key, self.fs.open_async(self._path(key), "rb"),
                                         None)
                except NotImplementedError:
                    stream = None
                else:  # s3fs sends the GET at the first read: a missing key fails here
                    self._await("read", key, stream.read(0), None)
            if stream is not None:
                return _GuardedReader(_AwaitedStream(
                    lambda coro: self._await("read", key, coro, None), stream), guard)
        with guard():
            return _GuardedReader(self.fs.open(self._path(key), "rb", block_size=8 * CHUNK), guard)

    def delete(self, keys: Iterable[str], *, after_interrupt: bool = False) -> None:
        paths = [self._path(k) for k in keys]
        if not paths:
            return
        key = paths[0][len(self.root) + 1:]
        with self._backend_errors("delete", key):
            # rm() takes its paths for glob patterns: under a prefix holding * ? or [
            # it would delete other prefixes' keys (``db[p]/...`` matches ``dbp/...``) and
            # miss its own.  rm_file() takes a path as it is, one request per key.
            # One key (a marker) goes through rm_file() too: s3fs's rm() runs its
            # requests as tasks of their own, which cancelling it (a stall) leaves
            # running -- holding a connection to the stalled server for good.
            if len(paths) > 1 and not any(_GLOB_MAGIC.search(p) for p in paths):
                try:
                    self._call("delete", key, "rm", paths, cleanup=after_interrupt)
                    return
                except FileNotFoundError:
                    pass  # some were gone: remove the rest one by one
            for p in paths:
                try:
                    self._call("delete", p[len(self.root) + 1:], "rm_file", p,
                               cleanup=after_interrupt)
                except FileNotFoundError:
                    pass


def _no_such_bucket(exc: BaseException) -> bool:
    """Whether an S3 API's NoSuchBucket error is among ``exc`` and its causes (s3fs keeps
    botocore's error, with the service's code in ``response``, as the cause)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        response = getattr(cause, "response", None)
        error = response.get("Error") if isinstance(response, dict) else None
        if isinstance(error, dict) and error.get("Code") == "NoSuchBucket":
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class _Clock:
    """When a request last showed progress (``last``, monotonic seconds), and the bytes
    it moved, for ``on_bytes``.

    The backend reports progress on fsspec's IO thread, whose one event loop runs every
    request of the process: ``on_bytes`` (the user's ``progress``, in the end) must not
    run there -- a slow one would hold every transfer.  :meth:`report`, called by the
    thread awaiting the request, hands it the bytes; ``direct``: the backend's calls
    run on that thread anyway (a synchronous file system), report at once."""

    def __init__(self, on_bytes: OnBytes | None = None) -> None:
        self.last = time.monotonic()
        self.direct = False
        self._on_bytes = on_bytes
        self._seen = self._reported = 0

    def progress(self, total: int) -> None:
        """``total`` bytes moved so far (any thread)."""
        self.last = time.monotonic()
        self._seen = max(self._seen, total)
        if self.direct:
            self.report()

    def report(self) -> None:
        """Pass the bytes moved since the last report on to ``on_bytes``."""
        seen = self._seen
        if seen > self._reported and self._on_bytes is not None:
            delta, self._reported = seen - self._reported, seen
            self._on_bytes(delta)


class _AwaitedStream:
    """A file system's asyncio stream (``open_async``) read through
    :meth:`FsspecDestination._await`: each read is one request under the stall timeout."""

    def __init__(self, run: Callable[[Coroutine[Any, Any, Any]], Any], stream: Any) -> None:
        self._run, self._stream = run, stream

    def read(self, n: int = -1) -> bytes:
        return bytes(self._run(self._stream.read(n)))

    def close(self) -> None:
        self._run(self._stream.close())


class _GuardedReader:
    """A backend's file object whose reads translate its errors (see
    :meth:`FsspecDestination._backend_errors`)."""

    def __init__(self, raw: Any, guard: Callable[[], contextlib.AbstractContextManager[None]]) -> None:
        self._raw, self._guard = raw, guard

    def read(self, n: int = -1) -> bytes:
        with self._guard():
            return bytes(self._raw.read(n))

    def close(self) -> None:
        with self._guard():
            self._raw.close()

    def __enter__(self) -> _GuardedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _callback(clock: _Clock) -> Any:
    """An fsspec callback: every call of it is progress for ``clock``."""
    from fsspec.callbacks import Callback

    class _Progress(Callback):
        def call(self, *args: Any, **kwargs: Any) -> None:
            clock.progress(int(self.value))  # fsspec updated self.value already

    return _Progress()


def open_destination(url: object, storage_options: dict[str, Any],
                     stall_timeout: object = DEFAULT_STALL_TIMEOUT) -> Destination:
    """The destination ``url`` names: a local path or ``file://``/``local://`` URL, else fsspec.
    ``stall_timeout``: see :func:`check_stall_timeout` and :meth:`FsspecDestination._await`
    (local file calls have none)."""
    stall = check_stall_timeout(stall_timeout)
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise TypeError(f"url must be a str or path, not {type(url).__name__}")
    if not url:
        raise ValueError("url must not be empty")
    # local:// too: fsspec's local file system would neither fsync nor see that the
    # directory lies inside the store or a restore's dest
    scheme = next((s for s in _LOCAL_SCHEMES if url.lower().startswith(s)), None)
    if "://" not in url or scheme is not None:
        if storage_options:
            raise ValueError(f"storage options {sorted(storage_options)} apply to fsspec URLs, "
                             f"not to the local path {url!r}")
        return LocalDestination(url[len(scheme):] if scheme is not None else url)
    return FsspecDestination(url, storage_options, stall)
