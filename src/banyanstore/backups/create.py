"""Taking a backup: capture, checksum, upload what the destination lacks, manifest last.

1. Announce the backup (``pending/<id>``, see catalog.py) and capture the store
   into a scratch directory beside it (capture.py: hard links, no flush, the
   writer keeps running).
2. Checksum every captured table (SHA-256, on the pool); the WAL tail was
   checksummed while it was written.  Objects are named by their checksum, so
   a table an earlier backup uploaded is already there: list ``objects/`` once
   and upload only what is missing (or present with another size).
3. Make the uploads durable (:meth:`Destination.barrier`), then write the
   manifest: the backup exists from that moment, complete.  A process killed
   before it leaves objects no manifest names (removed by a later prune) and
   no backup.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
from datetime import UTC, datetime
from typing import Any

from ..arguments import as_path, check_bool
from ..errors import StoreNotFoundError
from ..lsm.manifest import STORE_FORMAT
from ..version import __version__
from .capture import Capture, capture
from .catalog import BackupInfo, Pending, wait_for_prunes
from .destination import CHUNK, Destination, check_stall_timeout, open_destination
from .manifest import (
    CREATED_FORMAT,
    ID_TIME_FORMAT,
    BackupManifest,
    KeyspaceEntry,
    TableEntry,
    WalTailEntry,
    encode_manifest,
    manifest_key,
    object_key,
)
from .scratch import ScratchDir
from .transfer import ProgressCallback, Tracker, check_parallel, check_progress, hash_file, run_parallel

__all__ = ["create_backup"]

logger = logging.getLogger("banyanstore.backups")


def _source(source: object) -> tuple[str, int]:
    """``(store directory, a version whose writes are all in its files)``."""
    from ..lsm.store import Store
    if isinstance(source, Store):
        version = source.version
        source.sync()  # writes acknowledged so far are made durable in the WAL file
        return os.path.abspath(source.path), version
    if isinstance(source, (str, bytes, os.PathLike)):  # a path as open() takes it
        return os.path.abspath(as_path(source, "store_or_path")), 0
    raise TypeError(f"store_or_path must be a Store or a path, not {type(source).__name__}")


def create_backup(source: object, url: object, *, parallel: int, progress: ProgressCallback | None,
                  stall_timeout: object, storage_options: dict[str, Any],
                  verify_reused: bool = False) -> BackupInfo:
    """See :func:`banyanstore.backup`."""
    parallel, progress = check_parallel(parallel), check_progress(progress)
    check_bool(verify_reused, "verify_reused")
    check_stall_timeout(stall_timeout)  # before the store is synced
    store_dir, known_version = _source(source)
    if not os.path.exists(os.path.join(store_dir, "CURRENT")):  # before touching the destination
        raise StoreNotFoundError(f"no store at {store_dir} (no CURRENT)")
    dest = open_destination(url, storage_options, stall_timeout)
    dest.check_location(creating=True)
    if dest.lies_within(store_dir):  # a restore over the store would delete them
        raise ValueError(f"url {dest.url} is inside the store {store_dir}: back up to a "
                         "directory outside it")
    created = datetime.now(UTC)
    backup_id = f"{created.strftime(ID_TIME_FORMAT)}-{secrets.token_hex(4)}"
    with ScratchDir(store_dir, "backup", fallback_to_tmp=True) as scratch:
        pending = Pending(dest, backup_id)
        try:
            wait_for_prunes(dest)  # after the marker: a prune starting later sees it
            cap = capture(store_dir, scratch.path, known_version=known_version)
            manifest = _upload(dest, cap, backup_id, created, store_dir, parallel, progress,
                               verify_reused)
        except BaseException as exc:
            pending.clear(interrupted=not isinstance(exc, Exception))
            raise
        pending.clear()
    return BackupInfo.of(manifest, dest.url)


def _damaged(dest: Destination, reused: list[tuple[str, str, int]], parallel: int,
             progress: ProgressCallback | None) -> list[tuple[str, str, int]]:
    """The objects of ``reused`` (present with the right size) whose bytes fail their
    SHA-256 -- damaged in place, or gone since the listing: a name and a size say
    nothing of the bytes, and every backup naming such an object cannot be restored.
    Uploading them again replaces them, which mends the older backups too."""
    checking = Tracker("verify", files_total=len(reused),
                       bytes_total=sum(size for _, _, size in reused), callback=progress)

    def intact(item: tuple[str, str, int]) -> bool:
        sha, _path, _size = item
        digest = hashlib.sha256()
        try:
            with dest.open_read(object_key(sha)) as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    checking.add_bytes(len(chunk))
        except FileNotFoundError:  # gone since the listing: upload it
            checking.file_done()
            return False
        checking.file_done()
        return digest.hexdigest() == sha

    damaged = [item for item, good in zip(reused, run_parallel(reused, intact, parallel=parallel,
                                                               dest=dest), strict=True) if not good]
    for sha, _path, _size in damaged:
        logger.warning("object %s fails its checksum or is gone: uploading it again",
                       dest.describe(object_key(sha)))
    return damaged


def _upload(dest: Destination, cap: Capture, backup_id: str, created: datetime, store_dir: str,
            parallel: int, progress: ProgressCallback | None, verify_reused: bool) -> BackupManifest:
    hashing = Tracker("hash", files_total=len(cap.tables),
                      bytes_total=sum(info.file_size for info, _ in cap.tables), callback=progress)

    def checksum(staged: str) -> str:
        digest = hash_file(staged, hashing.add_bytes)
        hashing.file_done()
        return digest

    digests = run_parallel([staged for _, staged in cap.tables], checksum, parallel=parallel)
    tables = [TableEntry(d, info.file_size, info) for (info, _), d in zip(cap.tables, digests, strict=True)]
    local = {t.sha256: (staged, t.size) for t, (_, staged) in zip(tables, cap.tables, strict=True)}
    tail = None
    if cap.tail is not None:
        t = cap.tail
        tail = WalTailEntry(t.sha256, t.size, t.records, t.first_version, t.last_version)
        local[t.sha256] = (t.path, t.size)
    present = dest.list("objects")
    missing = sorted((sha, path, size) for sha, (path, size) in local.items()
                     if present.get(sha) != size)
    if verify_reused:
        reused = sorted((sha, path, size) for sha, (path, size) in local.items()
                        if present.get(sha) == size)
        missing = sorted(missing + _damaged(dest, reused, parallel, progress))
    uploading = Tracker("upload", files_total=len(missing),
                        bytes_total=sum(size for _, _, size in missing), callback=progress)

    def upload(item: tuple[str, str, int]) -> None:
        sha, path, _size = item
        dest.upload(path, f"objects/{sha}", uploading.add_bytes)
        uploading.file_done()

    run_parallel(missing, upload, parallel=parallel, dest=dest)
    dest.barrier()
    state = cap.state
    manifest = BackupManifest(
        backup_id=backup_id, created=created.strftime(CREATED_FORMAT), banyanstore=__version__,
        store_format=STORE_FORMAT, source_path=store_dir, source_host=socket.gethostname(),
        version=cap.version, flushed_version=state.flushed_version,
        history_floor=cap.history_floor, next_file=state.next_file,
        keyspaces=[KeyspaceEntry(i, name, cap.keyspace_ttl.get(i), i in cap.keyspace_ttl)
                   for i, name in sorted(cap.keyspaces.items())],
        time_map=cap.time_map, tables=tables, wal_tail=tail,
        uploaded_files=len(missing), uploaded_bytes=sum(size for _, _, size in missing),
        expiry_time=state.expiry_time)
    dest.write(manifest_key(backup_id), encode_manifest(manifest))
    return manifest
