"""Restoring and verifying a backup.

Restore builds the new store in a scratch directory beside ``dest`` and makes
it visible with one rename, only after everything checked out:

1. the manifest decodes and validates (manifest.py: magic, checksum, every
   field; object names can only be ``objects/<sha256>``);
2. every object is downloaded (on the pool) and its size and SHA-256 must be
   what the manifest says -- a missing or tampered object is a
   :class:`CorruptionError` naming it;
3. the WAL tail is checked record by record (waltail.py) and appended to the
   new store's WAL; the store's own manifest is written (tables, keyspaces,
   counters, ``wal_seq`` 1);
4. the new store is opened read-only -- every table's footer and index read,
   the WAL replayed -- and must come up at the backup's version with its
   keyspaces;
5. everything is fsynced and the directory renamed to ``dest`` (an existing
   store there is swapped out atomically where the kernel can --
   ``renameat2(RENAME_EXCHANGE)`` -- and removed).

Any failure removes the scratch directory: nothing is left behind, and an
existing store at ``dest`` is untouched.  Verify runs steps 1-3 without
writing anything (objects are streamed through the checksum).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from typing import Any, BinaryIO, Final, Protocol

from ..arguments import as_path
from ..errors import BanyanStoreError, ConfigError, CorruptionError, StoreNotFoundError
from ..io.base import FileLock
from ..io.posix import PosixEnv
from ..log.log import Log
from ..lsm.manifest import Manifest, ManifestState
from ..lsm.timemap import TimeMap
from .catalog import BackupInfo, load_manifest
from .destination import CHUNK, Destination, open_destination
from .manifest import BackupManifest, ObjectEntry, manifest_key
from .scratch import ScratchDir
from .transfer import ProgressCallback, Tracker, check_parallel, check_progress, run_parallel
from .waltail import read_tail

__all__ = ["restore_backup", "verify"]

_AT_FDCWD: Final = -100
_RENAME_EXCHANGE: Final = 2


def restore_backup(url: object, dest: object, *, backup_id: str | None, overwrite: bool, parallel: int,
                   progress: ProgressCallback | None, stall_timeout: object,
                   storage_options: dict[str, Any]) -> BackupInfo:
    """See :func:`banyanstore.restore`."""
    parallel, progress = check_parallel(parallel), check_progress(progress)
    dest = as_path(dest, "dest")  # as open() takes it: "" is not the current directory
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, not {type(overwrite).__name__}")
    source = open_destination(url, storage_options, stall_timeout)
    target = os.path.abspath(dest)
    if source.lies_within(target):  # replacing dest would delete the backups
        raise ConfigError(f"restore destination dest={target} holds the backups being restored "
                          f"(url={source.url}); restore elsewhere")
    manifest = load_manifest(source, backup_id)
    made = _make_parents(os.path.dirname(target))
    try:
        old_store = _check_target(target, overwrite)
        try:
            with ScratchDir(target, "restore") as scratch:
                _build(source, manifest, scratch.path, parallel, progress)
                _swap_into_place(scratch, target, replacing=old_store is not None)
        finally:
            if old_store is not None:
                old_store.release()
    except BaseException:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise
    return BackupInfo.of(manifest, source.url)


def verify(url: object, backup_id: str | None, *, parallel: int, progress: ProgressCallback | None,
           stall_timeout: object, storage_options: dict[str, Any]) -> BackupInfo:
    """See :func:`banyanstore.verify_backup`."""
    parallel, progress = check_parallel(parallel), check_progress(progress)
    source = open_destination(url, storage_options, stall_timeout)
    manifest = load_manifest(source, backup_id)
    tracker = Tracker("verify", files_total=len(manifest.objects), bytes_total=manifest.size,
                      callback=progress)

    def check_table(entry: ObjectEntry) -> None:
        with _open_object(source, entry, manifest.backup_id) as f:
            checker = _Checked(f, entry, source, manifest.backup_id, tracker)
            while checker.read(CHUNK):
                pass
            checker.finish()
        tracker.file_done()

    run_parallel(manifest.tables, check_table, parallel=parallel, dest=source)
    tail = manifest.wal_tail
    if tail is not None:
        with _open_object(source, tail, manifest.backup_id) as f:
            checker = _Checked(f, tail, source, manifest.backup_id, tracker)
            for _payload in _tail_records(checker, manifest, source.describe(tail.key)):
                pass
            checker.finish()
        tracker.file_done()
    return BackupInfo.of(manifest, source.url)


# -- checking objects ------------------------------------------------------------------------------

def _missing(source: Destination, entry: ObjectEntry, backup_id: str) -> BanyanStoreError:
    """A missing object is damage -- unless the backup's manifest is gone too: a prune
    deleted the backup while it was read (manifest first, then the objects), which says
    nothing against the backup's content, and must not read as DAMAGED."""
    try:
        source.read(manifest_key(backup_id))
    except FileNotFoundError:
        return StoreNotFoundError(f"backup {backup_id} at {source.url} was deleted while it was "
                                  f"read (a prune): its manifest and object {entry.key} are gone")
    return CorruptionError(f"object {entry.key} of backup {backup_id} is missing",
                           path=source.describe(entry.key))


@contextlib.contextmanager
def _open_object(source: Destination, entry: ObjectEntry, backup_id: str) -> Iterator[BinaryIO]:
    try:
        f = source.open_read(entry.key)
    except FileNotFoundError:
        raise _missing(source, entry, backup_id) from None
    try:
        yield f
    finally:
        f.close()


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Checked:
    """Reads an object through its SHA-256; :meth:`finish` compares with the manifest."""

    def __init__(self, raw: _Reader, entry: ObjectEntry, source: Destination, backup_id: str,
                 tracker: Tracker) -> None:
        self._raw, self._entry, self._source, self._backup_id = raw, entry, source, backup_id
        self._tracker = tracker
        self._sha = hashlib.sha256()
        self._size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.update(data)
        return bytes(data)

    def update(self, data: bytes) -> None:
        self._sha.update(data)
        self._size += len(data)
        self._tracker.add_bytes(len(data))

    def finish(self) -> None:
        while self.read(CHUNK):  # whatever the parser did not need still counts
            pass
        digest, entry = self._sha.hexdigest(), self._entry
        if self._size != entry.size or digest != entry.sha256:
            raise CorruptionError(
                f"object {entry.key} of backup {self._backup_id} fails its checksum: "
                f"{self._size} bytes with sha256 {digest}, the manifest says {entry.size} bytes",
                path=self._source.describe(entry.key))


def _tail_records(src: Any, manifest: BackupManifest, where: str) -> Iterator[bytes]:
    tail = manifest.wal_tail
    assert tail is not None
    return read_tail(src, where, records=tail.records, first_version=tail.first_version,
                     last_version=tail.last_version, keyspaces={k.id for k in manifest.keyspaces})


# -- building the store ---------------------------------------------------------------------------

def _fetch(source: Destination, entry: ObjectEntry, local: str, backup_id: str, tracker: Tracker) -> None:
    """Download ``entry`` to ``local`` and check it against the manifest."""
    checker = _Checked(_NoRead(), entry, source, backup_id, tracker)
    try:
        source.download(entry.key, local, checker.update)
    except FileNotFoundError:  # the local side is a fresh file in a directory we own
        raise _missing(source, entry, backup_id) from None
    checker.finish()
    tracker.file_done()


class _NoRead:
    """The raw side of a checker fed by :meth:`_Checked.update` alone."""

    def read(self, n: int = -1) -> bytes:
        return b""


def _build(source: Destination, m: BackupManifest, root: str, parallel: int,
           progress: ProgressCallback | None) -> None:
    tables_dir = os.path.join(root, "tables")
    os.mkdir(tables_dir)
    tracker = Tracker("download", files_total=len(m.objects), bytes_total=m.size, callback=progress)
    run_parallel(m.tables, lambda e: _fetch(source, e, os.path.join(
        tables_dir, f"{e.table.file_no:06d}.sst"), m.backup_id, tracker), parallel=parallel,
        dest=source)
    _write_wal(source, m, root, tracker)
    env = PosixEnv()
    env.sync_dir(tables_dir)
    Manifest.create(env, root, _store_state(m)).close()
    try:
        _check_opens(root, m, source.describe(manifest_key(m.backup_id)))
    except CorruptionError as exc:
        raise _named_in_backup(exc, root, source, m) from exc
    env.sync_dir(root)


def _write_wal(source: Destination, m: BackupManifest, root: str, tracker: Tracker) -> None:
    """The new store's WAL: the backup's tail records, from seq 1."""
    wal = Log.open(os.path.join(root, "wal"), lock=False, io_mode="sync", wal_sync="never")
    try:
        if m.wal_tail is not None:
            staged = os.path.join(root, "wal-tail")
            _fetch(source, m.wal_tail, staged, m.backup_id, tracker)
            with open(staged, "rb") as f:
                batch: list[bytes] = []
                for payload in _tail_records(f, m, source.describe(m.wal_tail.key)):
                    batch.append(payload)
                    if len(batch) >= 1024:
                        wal.append_many(batch)
                        batch = []
                if batch:
                    wal.append_many(batch)
            os.remove(staged)
        wal.sync()
    finally:
        wal.close()


def _store_state(m: BackupManifest) -> ManifestState:
    state = ManifestState()
    state.keyspaces = {k.id: k.name for k in m.keyspaces}
    state.keyspace_ttl = {k.id: k.ttl for k in m.keyspaces if k.has_ttl}
    state.tables = {k.id: {} for k in m.keyspaces}
    for t in m.tables:
        state.tables[t.table.keyspace][t.table.file_no] = t.table
    state.next_file = max([m.next_file] + [t.table.file_no + 1 for t in m.tables])
    state.last_version = m.version
    state.flushed_version = m.flushed_version
    state.wal_seq = 1
    state.history_floor = m.history_floor
    state.time_map = TimeMap(m.time_map)
    state.expiry_time = m.expiry_time
    return state


def _named_in_backup(exc: CorruptionError, root: str, source: Destination,
                     m: BackupManifest) -> CorruptionError:
    """``exc`` naming the backup's object where it names a table of the new store (in
    the scratch directory, removed as the restore fails)."""
    for t in m.tables:
        exc = exc.relocated(os.path.join(root, "tables", f"{t.table.file_no:06d}.sst"),
                            source.describe(t.key))
    return exc


def _check_opens(root: str, m: BackupManifest, where: str) -> None:
    """Open the new store read-only: tables readable, WAL replayed, version right
    (CorruptionError naming ``where``, the backup's manifest, otherwise)."""
    from ..lsm.follower import FollowerStore
    with FollowerStore.open(root, read_only=True, io_mode="sync") as store:
        names = sorted(k.name for k in m.keyspaces)
        if store.version != m.version or store.keyspaces() != names:
            raise CorruptionError(f"the restored store opens at version {store.version} with "
                                  f"keyspaces {store.keyspaces()}; backup {m.backup_id} says "
                                  f"version {m.version} and {names}", path=where)


# -- putting it in place ---------------------------------------------------------------------------

def _make_parents(parent: str) -> list[str]:
    """Create ``parent`` and its missing ancestors, each synced into its own parent (a
    directory whose entry is not durable may vanish at a power loss, with the restored
    store in it); the ones created, outermost first."""
    made: list[str] = []
    path = parent
    while not os.path.exists(path):
        made.append(path)
        path = os.path.dirname(path)
    env = PosixEnv()
    for path in reversed(made):
        os.mkdir(path)
        env.sync_dir(os.path.dirname(path))
    return list(reversed(made))


def _check_target(target: str, overwrite: bool) -> FileLock | None:
    """Refuse a ``dest`` that holds anything but an empty directory, unless it is a
    store and ``overwrite``; then hold its lock (StoreLockedError while a writer runs)."""
    if not os.path.lexists(target):
        return None
    if not os.path.isdir(target) or os.path.islink(target):
        raise ConfigError(f"restore destination dest={target} exists and is not a directory")
    names = os.listdir(target)
    if not names:
        return None
    if not overwrite:
        raise ConfigError(f"restore destination dest={target} is not empty; pass overwrite=True "
                          "to replace the store there")
    if "CURRENT" not in names:
        raise ConfigError(f"restore destination dest={target} is not empty and holds no store; "
                          "overwrite=True only replaces a store")
    return PosixEnv().lock(os.path.join(target, "LOCK"))


def _exchange(a: str, b: str) -> bool:
    """Swap two directories atomically (Linux renameat2); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)


def _swap_into_place(scratch: ScratchDir, target: str, *, replacing: bool) -> None:
    parent = os.path.dirname(target)
    env = PosixEnv()
    if replacing and _exchange(scratch.path, target):
        scratch.exchanged()
        env.sync_dir(parent)
        return  # the old store is now the scratch directory, removed with it
    if replacing:
        # Not under the scratch prefix: after a crash between the two renames the old
        # store waits here for its owner, and no cleaner may take it for scratch.
        aside = f"{parent}/.{os.path.basename(target)}.replaced-{secrets.token_hex(4)}"
        os.rename(target, aside)
        try:
            os.rename(scratch.path, target)
        except BaseException:
            os.rename(aside, target)  # a failed restore leaves the old store where it was
            raise
        scratch.moved_to(target)
        env.sync_dir(parent)
        shutil.rmtree(aside)
        return
    try:
        os.rename(scratch.path, target)  # also over an empty directory
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        # absent or empty when checked, filled since (another restore to it finished first)
        raise ConfigError(f"restore destination dest={target} is not empty (it was filled "
                          "while the restore ran)") from exc
    scratch.moved_to(target)
    env.sync_dir(parent)
