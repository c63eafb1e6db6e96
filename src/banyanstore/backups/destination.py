"""Where backups go: a local directory, or any fsspec URL (``s3://``, ``gs://``, ``az://``...).

A destination is a flat key space under one prefix (``objects/<sha256>``,
``backups/<id>.manifest``, ``pending/<id>``).  Every write is *atomic*: a key
holds the whole object or nothing, so a backup process killed mid-upload never
leaves a short object under a final name (which the next, incremental backup
would take for present).

* **Local paths** (and ``file://`` URLs) use plain file calls: write a hidden
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

import contextlib
import errno
import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from ..errors import BanyanStoreError, ConfigError, StorageIOError, from_oserror

__all__ = ["Destination", "LocalDestination", "FsspecDestination", "open_destination", "CHUNK",
           "TEMP_MARK"]

CHUNK: Final = 1 << 20
TEMP_MARK: Final = ".tmp-"  # temporary names: ".tmp-<random>-<final name>"
ATOMIC_PUT: Final = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory",
                               "oss", "r2"})
EXTRAS: Final = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
                 "abfss": "azure", "adl": "azure"}

_GLOB_MAGIC: Final = re.compile(r"[*?\[]")  # what fsspec's rm() and glob() expand
_LOCAL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})

OnBytes = Callable[[int], None]
OnChunk = Callable[[bytes], None]


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
    def delete(self, keys: Iterable[str]) -> None:
        """Remove ``keys``; keys already gone are fine."""

    def barrier(self) -> None:  # noqa: B027 -- object stores need nothing here
        """Make every completed write durable before the next one is made."""

    def lies_within(self, path: str) -> bool:
        """Whether this destination is the local directory ``path`` or inside it."""
        return False


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

    def delete(self, keys: Iterable[str]) -> None:
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

    def __init__(self, url: str, storage_options: dict[str, Any]) -> None:
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
        self.fs.invalidate_cache()  # listings cached by an earlier call may be stale

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

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
                entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
                for e in entries if e.get("type") == "file"}

    def read(self, key: str) -> bytes:
        with self._backend_errors("read", key):
            return bytes(self.fs.cat_file(self._path(key)))

    def _put(self, key: str, put: Callable[[str], None]) -> None:
        with self._backend_errors("write", key):
            if self._atomic_put:
                put(self._path(key))
                return
            tmp = self._path(_temp_name(key))
            self._make_folder(key)
            put(tmp)
            self.fs.mv(tmp, self._path(key))

    def _make_folder(self, key: str) -> None:
        """Create the folder of ``key``: a file system that is no object store (sftp,
        fsspec's local) opens no file in a folder that does not exist, and pipe_file()
        does not make it (put_file() does), so a fresh destination's first marker failed."""
        folder = self._path(key).rpartition("/")[0]
        if folder not in self._made:
            self.fs.makedirs(folder, exist_ok=True)
            self._made.add(folder)

    def write(self, key: str, data: bytes) -> None:
        self._put(key, lambda path: self.fs.pipe_file(path, data))

    def upload(self, local: str, key: str, on_bytes: OnBytes) -> None:
        self._put(key, lambda path: self.fs.put_file(local, path, callback=_callback(on_bytes)))

    def download(self, key: str, local: str, on_chunk: OnChunk) -> None:
        # One streaming GET (a read through open() costs a HEAD and ranged GETs), then
        # the checksum pass over the fresh file, from the page cache.
        try:
            with self._backend_errors("download", key, local):
                self.fs.get_file(self._path(key), local)
        except FileNotFoundError:
            if os.path.exists(local):
                os.remove(local)
            raise
        with open(local, "rb") as f:
            while chunk := f.read(CHUNK):
                on_chunk(chunk)
            os.fsync(f.fileno())

    def open_read(self, key: str) -> Any:
        with self._backend_errors("read", key):
            return _GuardedReader(self.fs.open(self._path(key), "rb", block_size=8 * CHUNK),
                                  lambda: self._backend_errors("read", key))

    def delete(self, keys: Iterable[str]) -> None:
        paths = [self._path(k) for k in keys]
        if not paths:
            return
        with self._backend_errors("delete", paths[0][len(self.root) + 1:]):
            # rm() takes its paths for glob patterns: under a prefix holding * ? or [
            # it would delete other prefixes' keys (``db[p]/...`` matches ``dbp/...``) and
            # miss its own.  rm_file() takes a path as it is, one request per key.
            if not any(_GLOB_MAGIC.search(p) for p in paths):
                try:
                    self.fs.rm(paths)
                    return
                except FileNotFoundError:
                    pass  # some were gone: remove the rest one by one
            for p in paths:
                try:
                    self.fs.rm_file(p)
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


def _callback(on_bytes: OnBytes) -> Any:
    """An fsspec callback passing byte counts on to ``on_bytes``."""
    from fsspec.callbacks import Callback

    class _Progress(Callback):
        def __init__(self) -> None:
            super().__init__()
            self._reported = 0

        def call(self, *args: Any, **kwargs: Any) -> None:
            delta = int(self.value) - self._reported  # fsspec updated self.value already
            if delta > 0:
                self._reported += delta
                on_bytes(delta)

    return _Progress()


def open_destination(url: object, storage_options: dict[str, Any]) -> Destination:
    """The destination ``url`` names: a local path or ``file://`` URL, else fsspec."""
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise TypeError(f"url must be a str or path, not {type(url).__name__}")
    if not url:
        raise ValueError("url must not be empty")
    if "://" not in url or url.lower().startswith("file://"):
        if storage_options:
            raise ValueError(f"storage options {sorted(storage_options)} apply to fsspec URLs, "
                             f"not to the local path {url!r}")
        return LocalDestination(url[7:] if url.lower().startswith("file://") else url)
    return FsspecDestination(url, storage_options)
