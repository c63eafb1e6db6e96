"""Exceptions raised by banyanstore.

Every exception the engine raises on purpose is a subclass of
:class:`BanyanStoreError`.  IO failures keep the original :class:`OSError` as
``__cause__`` and say which operation failed on which file.

>>> from banyanstore.errors import CorruptionError, BanyanStoreError
>>> err = CorruptionError("bad block checksum", path="/data/t1.sst", offset=4096)
>>> isinstance(err, BanyanStoreError), err.path, err.offset
(True, '/data/t1.sst', 4096)
>>> str(err)
'bad block checksum (file /data/t1.sst, offset 4096)'
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "BanyanStoreError",
    "ConfigError",
    "ConfigTypeError",
    "IOModeUnavailableError",
    "StoreLockedError",
    "StoreClosedError",
    "ReadOnlyError",
    "CorruptionError",
    "NegativeVersionError",
    "VersionUnavailableError",
    "LogRangeError",
    "DiskFullError",
    "StorageIOError",
    "EntryTooLargeError",
    "StoreNotFoundError",
    "NotAStoreError",
    "KeyspaceNotFoundError",
    "from_oserror",
]


class BanyanStoreError(Exception):
    """Base class of every error raised by banyanstore."""


class ConfigError(BanyanStoreError, ValueError):
    """An option is unknown, of the wrong type, or out of range."""


class ConfigTypeError(ConfigError, TypeError):
    """An option (or ``options``) of the wrong type: a :class:`ConfigError`, and a
    ``TypeError`` as Python's own calls raise for an argument of the wrong type."""


class IOModeUnavailableError(BanyanStoreError):
    """The requested ``io_mode`` cannot work here (kernel, sandbox, limits)."""


class StoreLockedError(BanyanStoreError):
    """Another process (or another open handle) holds the store's write lock."""


class StoreClosedError(BanyanStoreError):
    """An operation was attempted on a closed store, log or snapshot."""


class ReadOnlyError(BanyanStoreError):
    """A write was attempted on a store opened with ``read_only=True``."""


class CorruptionError(BanyanStoreError):
    """On-disk data failed a magic, format-version, length or checksum check.

    ``path`` and ``offset`` say where, when known.
    """

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None) -> None:
        self.path = path
        self.offset = offset
        self.message = message
        where = []
        if path is not None:
            where.append(f"file {path}")
        if offset is not None:
            where.append(f"offset {offset}")
        full = f"{message} ({', '.join(where)})" if where else message
        super().__init__(full)

    def relocated(self, old: str, new: str) -> CorruptionError:
        """The same damage named under directory ``new`` where it names ``old``: for
        damage found through links in a directory that does not outlive the call.

        >>> CorruptionError("bad record", path="/tmp/x/wal/1.log", offset=9).relocated(
        ...     "/tmp/x/wal", "/data/wal").path
        '/data/wal/1.log'
        """
        return CorruptionError(self.message.replace(old, new), offset=self.offset,
                               path=None if self.path is None else self.path.replace(old, new))


class VersionUnavailableError(BanyanStoreError):
    """A read asked for a version above the latest or below the retention floor."""


class NegativeVersionError(VersionUnavailableError, ValueError):
    """A negative version argument: no store ever had one.  A
    :class:`VersionUnavailableError` (what any unreadable version raises) and a
    ``ValueError`` (what any argument out of range raises)."""

    def __init__(self, version: int, name: str = "version") -> None:
        super().__init__(f"{name} must be >= 0, not {version}")


def check_version_sign(version: int, name: str = "version") -> int:
    """``version`` (an int) unless it is negative: :class:`NegativeVersionError`."""
    if version < 0:
        raise NegativeVersionError(version, name)
    return version


class LogRangeError(BanyanStoreError, IndexError):
    """A log sequence number outside ``[first_seq, last_seq]``."""


class EntryTooLargeError(BanyanStoreError, ValueError):
    """A key or value is larger than ``max_key_size`` / ``max_value_size``."""


class StoreNotFoundError(BanyanStoreError, FileNotFoundError):
    """No store or log at the path, and ``create_if_missing=False`` (or read-only)."""


class NotAStoreError(BanyanStoreError, FileExistsError):
    """The path exists but holds something else: a file, or a non-empty directory that
    is not a banyanstore store (or log).  ``create_if_missing`` only ever creates a
    store in an absent or empty directory, never among a user's files; a checkpoint's
    destination is refused the same way when it is a file or not empty."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:  # OSError.__str__ would print the args tuple
        return str(self.args[0]) if self.args else ""


class KeyspaceNotFoundError(BanyanStoreError, LookupError):
    """A keyspace named in a batch, snapshot read or compaction does not exist.
    Keyspaces are created only by :meth:`Store.keyspace`, so a misspelt name is
    an error, never a new, silently filled keyspace."""


class StorageIOError(BanyanStoreError, OSError):
    """An IO operation failed; the original :class:`OSError` is ``__cause__``."""

    def __init__(self, message: str, *, path: str | None = None, op: str | None = None,
                 errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.op = op
        if errno is not None:
            self.errno = errno

    def __str__(self) -> str:  # OSError.__str__ would print "[Errno ...]" tuples
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[object, ...]:
        # A worker process's error reaches the store pickled; the default pickling of an
        # exception keeps only ``args`` and ``__dict__``, so ``errno`` (an OSError slot
        # set after __init__) and the OSError ``__cause__`` would be lost on the way.
        cause = self.__cause__ if isinstance(self.__cause__, OSError) else None
        return (_rebuild_storage_error, (type(self), self.args, self.__dict__, self.errno, cause))


def _rebuild_storage_error(cls: type[StorageIOError], args: tuple[object, ...], state: dict[str, object],
                           code: int | None, cause: OSError | None) -> StorageIOError:
    """The unpickling half of :meth:`StorageIOError.__reduce__`."""
    exc = cls(*args)  # type: ignore[arg-type]
    exc.__dict__.update(state)
    if code is not None:
        exc.errno = code
    exc.__cause__ = cause
    return exc


class DiskFullError(StorageIOError):
    """The device is out of space (ENOSPC / EDQUOT); nothing acknowledged was lost."""


def from_oserror(op: str, path: str | None, exc: OSError) -> StorageIOError:
    """Translate an :class:`OSError` into the matching banyanstore error.

    The caller raises the result ``from exc`` so the cause is kept.

    >>> import errno
    >>> e = from_oserror("write", "/x/wal", OSError(errno.ENOSPC, "No space left"))
    >>> type(e).__name__, str(e)
    ('DiskFullError', 'write failed on /x/wal: [Errno 28] No space left')
    >>> str(from_oserror("open", "/x/t.sst", OSError(errno.EMFILE, "Too many open files")))[-42:]
    'keeps open with the option max_open_files)'
    """
    if isinstance(exc, StorageIOError):
        return exc
    code = exc.errno
    cls = DiskFullError if code in (_errno.ENOSPC, _errno.EDQUOT) else StorageIOError
    hint = _HINTS.get(code, "") if code is not None else ""
    return cls(f"{op} failed on {path}: {exc}{hint}", path=path, op=op, errno=code)


_HINTS = {_errno.EMFILE: " (raise the process's limit, ulimit -n, or cap the tables a store "
                         "keeps open with the option max_open_files)"}
