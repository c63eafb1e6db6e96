"""The backups at a destination: listing, loading, in-progress markers, pruning.

A backup is complete exactly when ``backups/<id>.manifest`` exists and decodes;
objects are shared between backups (content addressed), so deleting a backup
deletes its manifest and then every object no remaining manifest names.

A backup in progress has uploaded objects that no manifest names yet, so it
announces itself with ``pending/<id>`` (JSON: host, pid and where that pid names a
process, start time) before its first upload and removes it after its manifest is
written.  While a live marker exists, :func:`prune` deletes manifests but no object.
A marker is stale -- its backup died -- when its process is gone (same host, boot and
PID namespace) or it is older than ``pending_timeout`` seconds (default a day); or its
backup finished -- it has a manifest -- and the marker's removal failed.

That check alone leaves a window: a backup announcing itself just after prune
looked would list ``objects/`` while prune deletes, reuse an object about to go
and name it in its manifest.  So prune announces itself too (``pruning/<id>``,
the same JSON) before it looks, and a backup, once announced, waits for every
live prune marker to go before it lists the objects.  Of the two, whichever
writes its marker first is seen by the other: either prune sees the backup and
deletes no object, or the backup sees prune and waits until its deletions are
over.  A prune marker is stale after ``PRUNE_TIMEOUT`` seconds (or when its
process is gone, same host); prune deletes no object once half of that has
passed since it announced itself, which leaves the other half for clock skew
between hosts.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from ..errors import BanyanStoreError, CorruptionError, StorageIOError, StoreNotFoundError
from .destination import TEMP_MARK, Destination
from .manifest import (
    BACKUP_ID,
    ID_TIME_FORMAT,
    MANIFEST_NAME,
    OBJECT_NAME,
    BackupManifest,
    check_backup_id,
    decode_manifest,
    manifest_key,
    parse_created,
)

__all__ = ["BackupInfo", "PruneResult", "read_manifests", "load_manifest", "Pending", "prune",
           "wait_for_prunes", "PENDING_TIMEOUT", "PRUNE_TIMEOUT"]

logger = logging.getLogger("banyanstore.backups")
PENDING_TIMEOUT: Final = 24 * 3600.0
PRUNE_TIMEOUT: Final = 900.0  # a prune marker older than this is stale
DELETE_BATCH: Final = 1000  # objects deleted between two looks at the clock


@dataclass(frozen=True)
class BackupInfo:
    """One complete backup, as :func:`banyanstore.list_backups` and
    :func:`banyanstore.backup` report it."""

    backup_id: str
    url: str
    version: int           # every write with a version <= it is in the backup
    created: datetime      # UTC
    source: str            # host:path of the store
    keyspaces: tuple[str, ...]
    files: int             # objects the backup needs (tables + WAL tail)
    size: int              # their bytes
    wal_records: int       # WAL records beyond the tables
    uploaded_files: int    # what the backup that made it had to upload
    uploaded_bytes: int

    @classmethod
    def of(cls, m: BackupManifest, url: str) -> BackupInfo:
        """The description of the backup whose manifest is ``m``, kept at ``url``."""
        return cls(m.backup_id, url, m.version,
                   parse_created(m.created),
                   f"{m.source_host}:{m.source_path}", tuple(k.name for k in m.keyspaces),
                   len(m.objects), m.size, m.wal_tail.records if m.wal_tail else 0,
                   m.uploaded_files, m.uploaded_bytes)


@dataclass(frozen=True)
class PruneResult:
    """What :func:`banyanstore.prune_backups` did."""

    kept: tuple[str, ...]
    deleted: tuple[str, ...]
    deleted_objects: int
    deleted_bytes: int
    kept_unreferenced: int  # unreferenced objects left: a backup is in progress, or prune ran out of time
    in_progress: tuple[str, ...]


def read_manifests(dest: Destination) -> tuple[list[BackupManifest], list[tuple[str, CorruptionError]]]:
    """Every decodable manifest (oldest first) and ``(backup id, error)`` of the damaged ones."""
    good: list[BackupManifest] = []
    damaged: list[tuple[str, CorruptionError]] = []
    for name in sorted(dest.list("backups")):
        m = MANIFEST_NAME.match(name)
        if m is None:
            continue  # a temporary file of a write in progress, or not ours
        key = f"backups/{name}"
        try:
            data = dest.read(key)
        except FileNotFoundError:
            continue  # pruned meanwhile
        try:
            manifest = decode_manifest(data, dest.describe(key))
            if manifest.backup_id != m.group(1):
                raise CorruptionError(f"manifest holds backup {manifest.backup_id}, not the "
                                      f"{m.group(1)} its name says", path=dest.describe(key))
        except CorruptionError as exc:
            damaged.append((m.group(1), exc))
            continue
        good.append(manifest)
    return good, damaged


def load_manifest(dest: Destination, backup_id: str | None) -> BackupManifest:
    """The manifest of ``backup_id``, or of the newest complete backup."""
    if backup_id is not None:
        check_backup_id(backup_id)  # (a bad argument first, wherever the url points)
    dest.check_location(creating=False)
    if backup_id is None:
        good, damaged = read_manifests(dest)
        newest_damaged = max(damaged, key=lambda d: d[0], default=None)
        if newest_damaged is not None and (not good or newest_damaged[0] > good[-1].backup_id):
            raise newest_damaged[1]  # never fall back to an older backup in silence
        if not good:
            raise StoreNotFoundError(f"no complete backup at {dest.url}")
        return good[-1]
    key = manifest_key(backup_id)
    try:
        data = dest.read(key)
    except FileNotFoundError:
        raise StoreNotFoundError(f"no backup {backup_id} at {dest.url}") from None
    manifest = decode_manifest(data, dest.describe(key))
    if manifest.backup_id != backup_id:
        raise CorruptionError(f"manifest holds backup {manifest.backup_id}, not {backup_id}",
                              path=dest.describe(key))
    return manifest


# -- in-progress markers -----------------------------------------------------------------------

class Pending:
    """The ``pending/<id>`` marker of a running backup (``pruning/<id>``: of a prune)."""

    def __init__(self, dest: Destination, backup_id: str, folder: str = "pending") -> None:
        self._dest, self._key = dest, f"{folder}/{backup_id}"
        marker = {"backup_id": backup_id, "host": socket.gethostname(), "pid": os.getpid(),
                  "pid_scope": _pid_scope(), "started": time.time()}
        dest.write(self._key, json.dumps(marker).encode())

    def clear(self, *, interrupted: bool = False) -> None:
        """Remove the marker.  If that fails, prune waits until it is stale: safe.
        ``interrupted`` (a Ctrl-C): a short try (:meth:`Destination.delete`
        ``after_interrupt``)."""
        try:
            self._dest.delete([self._key], after_interrupt=interrupted)
        except BanyanStoreError as exc:
            # One line, the cause in it (the commands print each warning as one line);
            # the traceback for whoever debugs the backend.
            logger.warning("could not remove the in-progress marker %s (%s); a prune removes it "
                           "once it is stale", self._dest.describe(self._key), exc)
            logger.debug("the marker's removal failed", exc_info=True)
        except Exception:  # noqa: BLE001 - the backup itself is complete; a bug shows its traceback
            logger.warning("could not remove the in-progress marker %s", self._dest.describe(self._key),
                           exc_info=True)


def _pid_scope() -> str:
    """Where this process's pid names it: this boot of this machine, in this PID namespace.

    A host name alone does not say so: containers on the host's network share its name
    but not its pids, and machines can share a name.  A pid absent here proves nothing
    about a process of another scope, and taking its backup for dead would let prune
    delete the objects it is uploading.  ``""`` where Linux's ``/proc`` is not there."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _marker_is_stale(name: str, raw: bytes, now: float, timeout: float) -> bool:
    try:
        marker = json.loads(raw)
        host, pid, started = marker["host"], int(marker["pid"]), float(marker["started"])
        scope = marker.get("pid_scope")  # absent in markers of older versions: the host decides
    except (ValueError, KeyError, TypeError, AttributeError):
        # Unreadable: its owner may still run, until the time its name carries is
        # older than the timeout (live forever, it would block prune or backups for good).
        created = datetime.strptime(name.split("-")[0], ID_TIME_FORMAT).replace(tzinfo=UTC)
        return now - created.timestamp() > timeout
    if now - started > timeout:
        return True
    if host == socket.gethostname() and (scope is None or scope == _pid_scope()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


def _live_markers(dest: Destination, timeout: float, folder: str = "pending") -> tuple[list[str], list[str]]:
    """``(live, stale)`` marker names in ``folder``."""
    live: list[str] = []
    stale: list[str] = []
    now = time.time()
    for name in sorted(dest.list(folder)):
        if not BACKUP_ID.match(name):
            continue
        try:
            raw = dest.read(f"{folder}/{name}")
        except FileNotFoundError:
            continue  # its backup (or prune) just finished
        (stale if _marker_is_stale(name, raw, now, timeout) else live).append(name)
    return live, stale


def wait_for_prunes(dest: Destination) -> None:
    """Return once no live prune runs at ``dest``.  Call it after announcing a backup
    and before listing ``objects/`` (see the module docstring)."""
    delay = 0.02
    while True:
        live, _stale = _live_markers(dest, PRUNE_TIMEOUT, "pruning")
        if not live:
            return
        logger.info("backup waits for prune %s to finish", ", ".join(live))
        time.sleep(delay)
        delay = min(2 * delay, 1.0)


# -- pruning -------------------------------------------------------------------------------------

def prune(dest: Destination, keep: int, *, pending_timeout: float = PENDING_TIMEOUT) -> PruneResult:
    """Keep the ``keep`` newest complete backups; delete the older ones' manifests,
    then every object no remaining backup names (see the module docstring)."""
    deadline = time.monotonic() + PRUNE_TIMEOUT / 2  # taken before the marker exists
    marker_id = f"{datetime.now(UTC).strftime(ID_TIME_FORMAT)}-{secrets.token_hex(4)}"
    marker = Pending(dest, marker_id, folder="pruning")
    try:
        result = _prune(dest, keep, pending_timeout, deadline)
    except BaseException as exc:
        marker.clear(interrupted=not isinstance(exc, Exception))
        raise
    marker.clear()
    return result


def _prune(dest: Destination, keep: int, pending_timeout: float, deadline: float) -> PruneResult:
    good, damaged = read_manifests(dest)
    if damaged:
        first = damaged[0][1]
        raise CorruptionError(f"{len(damaged)} backup manifest(s) are damaged; prune cannot tell "
                              f"which objects they need (first: {first}); move them away "
                              "after checking", path=first.path)
    kept, dropped = good[-keep:], good[:-keep]
    dest.delete(manifest_key(m.backup_id) for m in dropped)
    live, stale = _live_markers(dest, pending_timeout)
    # A marker whose backup has a manifest outlived its backup: the manifest is the
    # backup's last write, so nothing of it is uploading (its removal failed, or the
    # process died right after the manifest).  Its process may live on for days: taken
    # for live, it would keep every unreferenced object until pending_timeout.
    finished = {m.backup_id for m in good}
    stale += [name for name in live if name in finished]
    live = [name for name in live if name not in finished]
    objects = dest.list("objects")
    again, _ = read_manifests(dest)  # backups completed meanwhile keep their objects
    referenced = {o.sha256 for m in kept + again for o in m.objects}
    unreferenced = {name: size for name, size in objects.items()
                    if (OBJECT_NAME.match(name) and name not in referenced)
                    or name.startswith(TEMP_MARK)}
    deleted: list[str] = []
    if not live:
        deleted = _delete_until(dest, sorted(unreferenced), deadline)
        # No backup uploads now (none is live, and a new one waits for this prune): the
        # multipart uploads left under objects/ are killed backups' (their parts, at S3)
        if time.monotonic() <= deadline:
            try:
                if aborted := dest.abort_incomplete_uploads("objects"):
                    logger.info("prune: aborted %d unfinished multipart uploads", aborted)
            except StorageIOError as exc:  # a policy without s3:ListBucketMultipartUploads...
                logger.warning("prune: could not abort unfinished multipart uploads: %s", exc)
        dest.delete(f"pending/{name}" for name in stale)
        dest.delete(f"pruning/{name}" for name in _live_markers(dest, PRUNE_TIMEOUT, "pruning")[1])
        now = time.time()
        dest.delete(f"{folder}/{name}" for folder in ("backups", "pending", "pruning")
                    for name in dest.list(folder) if _abandoned_temp(folder, name, now))
    kept_unreferenced = len(unreferenced) - len(deleted)
    if kept_unreferenced:
        logger.warning("prune: %d unreferenced objects kept: %s", kept_unreferenced,
                       f"backups in progress ({', '.join(live)})" if live else
                       f"prune ran past {PRUNE_TIMEOUT / 2:.0f} s")
    return PruneResult(tuple(m.backup_id for m in kept), tuple(m.backup_id for m in dropped),
                       len(deleted), sum(unreferenced[name] for name in deleted), kept_unreferenced,
                       tuple(live))


def _abandoned_temp(folder: str, name: str, now: float) -> bool:
    """Whether ``name`` in ``folder`` is a temporary file its writer left (killed).

    A marker's (``pending/``, ``pruning/``) is being written by a backup or prune that
    announces itself at this moment, one this prune cannot see yet: deleting it fails
    that backup's rename.  Markers are written as their id is made, so only one whose id
    is older than a prune marker's timeout is left over.  A manifest's (``backups/``)
    is written by a backup whose marker is live meanwhile, and this prune found none."""
    if not name.startswith(TEMP_MARK):
        return False
    if folder == "backups":
        return True
    marker = name[len(TEMP_MARK):].partition("-")[2]  # after the random part
    if not BACKUP_ID.match(marker):
        return True  # no writer of ours makes such a name
    created = datetime.strptime(marker.split("-")[0], ID_TIME_FORMAT).replace(tzinfo=UTC)
    return now - created.timestamp() > PRUNE_TIMEOUT


def _delete_until(dest: Destination, names: list[str], deadline: float) -> list[str]:
    """Delete ``objects/<name>`` in batches while the monotonic clock is before
    ``deadline`` (after it, a waiting backup may take this prune's marker for
    stale); the names deleted."""
    deleted: list[str] = []
    for start in range(0, len(names), DELETE_BATCH):
        if time.monotonic() > deadline:
            break
        batch = names[start:start + DELETE_BATCH]
        dest.delete(f"objects/{name}" for name in batch)
        deleted += batch
    return deleted
