"""A :mod:`dbm`-compatible interface, so ``shelve`` and dbm users can switch.

Keys and values may be ``str`` (encoded as UTF-8) or bytes-like; reads return
``bytes`` like the standard library's dbm modules.

>>> import shelve, tempfile, os
>>> import banyanstore.dbm
>>> d = tempfile.mkdtemp()
>>> with banyanstore.dbm.open(os.path.join(d, "db"), "c") as db:
...     db["service"] = "checkout"
...     db.get("service"), "service" in db, len(db), db.setdefault("x", b"1")
(b'checkout', True, 1, b'1')
>>> with shelve.Shelf(banyanstore.dbm.open(os.path.join(d, "shelf"), "c")) as sh:
...     sh["spans"] = [1, 2, 3]
>>> with shelve.Shelf(banyanstore.dbm.open(os.path.join(d, "shelf"), "r")) as sh:
...     sh["spans"]
[1, 2, 3]
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import weakref
from collections.abc import Iterator, MutableMapping
from itertools import islice
from pathlib import Path
from typing import Any

from .arguments import as_bytes, as_path, is_buffer
from .errors import BanyanStoreError, CorruptionError
from .handles import ProcessLocal
from .io.posix import PosixEnv
from .lsm.layout import is_store_name
from .lsm.manifest import parse_current

__all__ = ["open", "error", "BanyanDbm"]

_logger = logging.getLogger("banyanstore")


class error(OSError):  # noqa: N801 - the dbm modules' name
    """Raised for dbm-level failures (like ``dbm.error``); the banyanstore error is
    its ``__cause__``."""


_MISSING = object()
_CLEAR_BATCH = 1000
"""Keys a batch of clear() deletes: one WAL record each, of a bounded size."""
_GNU_MODIFIERS = "fsu"
"""Letters dbm.gnu accepts after a flag (fast, synchronized, unlocked): accepted and
ignored, so code written for dbm.gnu opens unchanged; any other suffix is refused --
"rw" must not open read-only without a word."""


@contextlib.contextmanager
def _as_dbm_error() -> Iterator[None]:
    """The store's errors as :class:`error`, the one dbm users catch -- a close() on
    another thread, between an operation's check and its read, included."""
    try:
        yield
    except BanyanStoreError as exc:
        raise error(str(exc)) from exc


def _translated(keys: Iterator[bytes], db: BanyanDbm) -> Iterator[bytes]:
    """``keys`` with the dbm's errors; holds ``db``, so that a database dropped while an
    iteration of it runs stays open until the iteration ends (see _close_dropped)."""
    with _as_dbm_error():
        yield from keys
    del db


def _close_dropped(store: Any) -> None:
    """Close the store of a BanyanDbm collected without close(), as the standard library's
    dbm objects close when collected: ``del db`` and a later ``dbm.open`` of the same file
    works.  (The Store itself stays open when dropped -- shutdown.py -- so its LOCK was
    held until the interpreter exited.)  Errors are logged: a finalizer cannot raise."""
    if store.closed:  # closed by the program, or the parent's in a forked child
        return
    if threading.current_thread().name.startswith("banyanstore"):
        # Collected on one of the store's own threads (a reference cycle, collected
        # there): close() joins those threads, so it runs on a thread of its own.
        threading.Thread(target=_close_dropped, args=(store,), name="dbm-close").start()
        return
    try:
        store.close()
    except Exception:  # noqa: BLE001 - nobody to raise to
        _logger.exception("closing %r, a dbm dropped without close(), failed", store)


def _encode(obj: Any, name: str) -> bytes:
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if type(obj) is bytes:
        return obj
    if not is_buffer(obj):
        raise TypeError(f"dbm {name} must be str or bytes-like, not {type(obj).__name__}")
    return as_bytes(obj, f"dbm {name}")  # copied


class BanyanDbm(ProcessLocal, MutableMapping[Any, bytes]):
    """A banyanstore Store behind the dbm mapping protocol."""

    _handle_kind = "dbm database"  # (handles.py: what pickling and copying refuse)

    def __init__(self, store: Any, writable: bool) -> None:
        self._store = store
        self._writable = writable
        # The read-modify-writes (del's lookup and tombstone, setdefault's lookup and put,
        # clear's scan and deletes) are one step each for the other threads' writes, as
        # the standard modules' are: without it two threads could both delete one key.
        self._writing = threading.Lock()
        # Dropped without close(): closed when collected.  Not at exit -- the exit hook
        # (shutdown.py) closes a store still open then, and logs a failure as for any store.
        weakref.finalize(self, _close_dropped, store).atexit = False

    def __repr__(self) -> str:
        state = "closed" if self._store.closed else "read-write" if self._writable else "read-only"
        return f"<banyanstore.dbm database {self._store.path!r} {state}>"

    def _check(self) -> None:
        if self._store.closed:
            raise error(self._why_closed())

    def _why_closed(self) -> str:
        """The message of a closed dbm, with the store's reason: closed, or -- in a child
        made by os.fork() -- the parent's, to be opened in the child (a program that never
        closed the dbm was told only "dbm object is closed")."""
        try:
            self._store.snapshot().close()  # a closed store raises its StoreClosedError
        except BanyanStoreError as exc:
            return f"dbm object is closed ({exc})"
        return "dbm object is closed"

    def __getitem__(self, key: Any) -> bytes:
        self._check()
        with _as_dbm_error():
            value = self._store.get(_encode(key, "key"))
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._writing:
            self._write(lambda: self._store.put(_encode(key, "key"), _encode(value, "value")))

    def __delitem__(self, key: Any) -> None:
        k = _encode(key, "key")
        self._check_writable()  # before the lookup: a missing key on a read-only db is this error too
        with self._writing:
            with _as_dbm_error():
                present = self._store.get(k) is not None
            if not present:
                raise KeyError(key)
            self._write(lambda: self._store.delete(k))

    def _check_writable(self) -> None:
        self._check()
        if not self._writable:
            raise error("dbm object was opened read-only (flag 'r')")

    def _write(self, fn: Any) -> None:
        self._check_writable()
        try:
            fn()
        except BanyanStoreError as exc:
            raise error(str(exc)) from exc

    def __contains__(self, key: object) -> bool:
        self._check()
        try:
            key = _encode(key, "key")
        except TypeError:
            return False
        with _as_dbm_error():
            return self._store.get(key) is not None

    def __iter__(self) -> Iterator[bytes]:
        self._check()
        with _as_dbm_error():
            keys = self._store.scan(keys_only=True)
        return _translated(keys, self)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def keys(self) -> list[bytes]:  # type: ignore[override]
        """All keys (a list, as the dbm modules return)."""
        return list(iter(self))

    def clear(self) -> None:
        """Delete every key: the keys of one scan, deleted in batches (each batch atomic).

        MutableMapping's clear() pops one key at a time, and each pop's scan starts again
        at the first key, past the tombstones of every key popped before it: quadratic."""
        self._check_writable()
        with self._writing, _as_dbm_error():
            keys = self._store.scan(keys_only=True)  # at one version: keys written meanwhile stay
            while chunk := list(islice(keys, _CLEAR_BATCH)):
                with self._store.batch() as batch:
                    for key in chunk:
                        batch.delete(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._check()
        with _as_dbm_error():
            value = self._store.get(_encode(key, "key"))
        return default if value is None else value

    def setdefault(self, key: Any, default: Any = b"") -> bytes:
        with self._writing:
            value = self.get(key, _MISSING)
            if value is _MISSING:
                self._write(lambda: self._store.put(_encode(key, "key"), _encode(default, "value")))
                return _encode(default, "value")
            return value

    def sync(self) -> None:
        """Make every write so far durable (an fdatasync of the store's WAL)."""
        self._check()
        if self._writable:
            with _as_dbm_error():
                self._store.sync()

    def close(self) -> None:
        """Flush and close the database, releasing its lock; a second call does nothing."""
        if not self._store.closed:
            try:
                self._store.close()
            except BanyanStoreError as exc:
                raise error(str(exc)) from exc

    def __enter__(self) -> BanyanDbm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(file: str | bytes | os.PathLike[Any], flag: str = "r", mode: int = 0o666) -> BanyanDbm:  # noqa: A001
    """Open a dbm-style database at directory ``file`` (a str, bytes or os.PathLike).

    ``flag``: ``'r'`` read-only (must exist), ``'w'`` read-write (must exist),
    ``'c'`` read-write, created if missing, ``'n'`` always a new, empty database
    (replacing a database, an empty directory or an empty file at ``file``, as the
    standard library's dbm modules do; anything else there is left alone and
    raises :class:`error`); dbm.gnu's modifiers ``f``, ``s`` and ``u`` may follow
    the letter and are ignored, any other flag raises ValueError.  ``mode`` sets the
    permissions of a new database directory (less the umask): the file permissions of
    the dbm modules, with ``x`` added for each class that may read or write (0o600:
    a directory only its owner enters).
    """
    from . import open as open_store
    path = as_path(file, "file")
    if not isinstance(flag, str):
        raise TypeError(f"flag must be a str, not {type(flag).__name__}")
    if not flag or flag[0] not in "rwcn" or not set(flag[1:]) <= set(_GNU_MODIFIERS):
        raise ValueError(f"flag must be one of 'r', 'w', 'c', 'n' (optionally followed by "
                         f"dbm.gnu's modifiers 'f', 's', 'u'), not {flag!r}")
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be an int, not {type(mode).__name__}")
    kind = flag[0]
    try:
        if kind == "n":
            _clear_for_new(path)
        if kind in "cn" and not os.path.exists(path):
            # (where a dangling symlink points: makedirs of the link itself is "File exists")
            os.makedirs(os.path.realpath(path), mode=_directory_mode(mode))
        store = open_store(path, read_only=(kind == "r"), create_if_missing=kind in "cn")
    except BanyanStoreError as exc:
        raise error(f"cannot open {path} (flag {flag!r}): {exc}") from exc
    return BanyanDbm(store, writable=kind != "r")


def _directory_mode(mode: int) -> int:
    """The permissions of a new database directory for the file ``mode`` of the dbm
    modules: a class (owner, group, others) that may read or write the files may also
    enter the directory.  Only those: ``x`` for everyone would let a class that ``mode``
    shuts out (0o600) reach the files by their well-known names (CURRENT, wal/...),
    which the store creates readable by all (0o644 under the usual umask).

    >>> oct(_directory_mode(0o600)), oct(_directory_mode(0o640)), oct(_directory_mode(0o666))
    ('0o700', '0o750', '0o777')
    """
    mode &= 0o777
    for shift in (6, 3, 0):
        if mode >> shift & 0o6:
            mode |= 0o1 << shift
    return mode


def _holds_only_a_store(path: str, names: list[str]) -> bool:
    """Whether directory ``path`` (holding ``names``) is a banyanstore database and nothing
    else: every name is a store's and CURRENT is a banyanstore CURRENT.  A file named
    CURRENT alone proves nothing -- LevelDB and RocksDB databases have one too."""
    if "CURRENT" not in names or not all(map(is_store_name, names)):
        return False
    current = os.path.join(path, "CURRENT")
    try:
        parse_current(Path(current).read_bytes(), current)
    except (OSError, CorruptionError):
        return False
    return True


def _holds_no_data(path: str, names: list[str]) -> bool:
    """Whether directory ``path`` holds store names but no CURRENT and no table or WAL
    segment: a creation, or an earlier ``'n'``, cut short -- nothing to keep."""
    if "CURRENT" in names or not all(map(is_store_name, names)):
        return False
    subdirs = [os.path.join(path, d) for d in ("tables", "wal") if d in names]
    return not any(os.listdir(d) for d in subdirs if os.path.isdir(d))


def _remove_database(path: str, names: list[str]) -> None:
    """Remove the database at ``path``: its data first, then CURRENT, then the rest. A
    kill part-way then leaves a database (CURRENT still there) or no data at all, both
    of which the next ``'n'`` replaces; removed in directory order, it could leave tables
    without CURRENT, or a lone LOCK, which ``'n'`` refused as somebody else's."""
    for name in names:
        if name not in ("CURRENT", "LOCK"):
            full = os.path.join(path, name)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.remove(full)
    if "CURRENT" in names:
        os.remove(os.path.join(path, "CURRENT"))
    if os.path.islink(path):
        # A link to the database's directory (rmtree refuses links): the link and the
        # directory stay, and the new database is made where it points.
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, "LOCK"))
    else:
        shutil.rmtree(path)


def _clear_for_new(path: str) -> None:
    """Flag ``'n'``: remove what may be replaced by a new database at ``path`` -- a
    banyanstore database, an empty directory, an empty file -- and refuse anything
    else (another program's data is never deleted)."""
    if os.path.isdir(path):
        names = os.listdir(path)
        if names and not (_holds_only_a_store(path, names) or _holds_no_data(path, names)):
            raise error(f"{path} exists and is not a banyanstore database; not replacing it")
        # Hold the writer lock while deleting: a database open elsewhere raises
        # StoreLockedError instead of vanishing under its writer.
        lock = PosixEnv().lock(os.path.join(path, "LOCK")) if names else None
        try:
            _remove_database(path, names)
        finally:
            if lock is not None:
                lock.release()
    elif os.path.lexists(path):
        if not os.path.exists(path):  # a dangling symlink: nothing to replace
            return
        if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) != 0:
            raise error(f"{path} exists and is not a banyanstore database; not replacing it")
        os.remove(path)
