"""The backup commands: ``backup``, ``restore``, ``backups`` (list and verify), ``prune``.

They call :func:`banyanstore.backup` and friends; ``--option KEY=VALUE`` passes
fsspec storage options (VALUE is JSON where it parses as JSON, else a string).
On a terminal (and without ``--json``; or with ``--progress``) long transfers show
``rich`` progress bars on stderr, one per phase (``pip install 'banyanstore[cli]'``).

>>> storage_options(["anon=false", "client_kwargs={\\"region_name\\": \\"eu-west-1\\"}", "profile=dev"])
{'anon': False, 'client_kwargs': {'region_name': 'eu-west-1'}, 'profile': 'dev'}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import banyanstore

from ..backups import BackupInfo, Progress
from ..errors import BanyanStoreError, ConfigError, CorruptionError, StoreNotFoundError
from .common import EXIT_OK, EXIT_PROBLEMS, NotFound, Output, UsageError
from .progress import wants_progress

__all__ = ["cmd_backup", "cmd_restore", "cmd_backups", "cmd_prune", "storage_options",
           "ProgressBars"]

PHASES = {"hash": "checksum", "upload": "upload", "download": "download", "verify": "verify"}


def storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict (VALUE as JSON where it parses)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"storage option {pair!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


class ProgressBars:
    """A progress callback drawing one ``rich`` bar per phase on stderr (or on the
    rich ``console`` given); does nothing when disabled or when rich is not installed."""

    def __init__(self, enabled: bool, console: Any = None) -> None:
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
        except ImportError:
            return
        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), TimeRemainingColumn(),
                              console=console if console is not None else Console(stderr=True))

    def __call__(self, p: Progress) -> None:
        if self._bars is None:
            return
        task = self._tasks.get(p.phase)
        if task is None:
            task = self._tasks[p.phase] = self._bars.add_task(PHASES.get(p.phase, p.phase),
                                                              total=p.bytes_total)
        self._bars.update(task, completed=p.bytes_done, total=p.bytes_total,
                          description=f"{PHASES.get(p.phase, p.phase):9} "
                                      f"{p.files_done}/{p.files_total} files")

    def __enter__(self) -> ProgressBars:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()


def _existing(url: str) -> str:
    """A backup location to read: a local directory must exist (a typo is not "no backups")."""
    if "://" not in url and not os.path.isdir(url):
        # (a file is there: "no such" would send the user looking for a typo)
        what = "a file, not a directory" if os.path.lexists(url) else "no such backup directory"
        raise UsageError(f"{url}: {what}")
    return url


def _bars(args: argparse.Namespace, out: Output) -> ProgressBars:
    return ProgressBars(not args.quiet and wants_progress(args, out.json, out.err))


def _call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Bad arguments (not store errors) are usage errors on the command line."""
    try:
        return func(*args, **kwargs)
    except BanyanStoreError:
        raise
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _info_json(info: BackupInfo) -> dict[str, Any]:
    doc = dataclasses.asdict(info)
    doc["created"] = info.created.isoformat()
    doc["keyspaces"] = list(info.keyspaces)
    return doc


def _size(n: int) -> str:
    """Bytes for a person: ``512 B``, ``2.0 KiB``..."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def cmd_backup(args: argparse.Namespace, out: Output) -> int:
    opts = storage_options(args.option)
    with _bars(args, out) as bars:
        info = _call(banyanstore.backup, args.store, args.url, parallel=args.parallel,
                     progress=bars, stall_timeout=args.stall_timeout,
                     verify_reused=args.verify_reused, **opts)
    if out.json:
        out.doc(_info_json(info))
    else:
        out.line(f"backup {info.backup_id} of {args.store} at version {info.version}: "
                 f"{info.files} files, {_size(info.size)}; uploaded {info.uploaded_files} files, "
                 f"{_size(info.uploaded_bytes)}")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, out: Output) -> int:
    opts = storage_options(args.option)
    with _bars(args, out) as bars:
        try:
            info = _call(banyanstore.restore, _existing(args.url), args.dest, backup_id=args.backup,
                         overwrite=args.overwrite, parallel=args.parallel, progress=bars,
                         stall_timeout=args.stall_timeout, **opts)
        except StoreNotFoundError as exc:  # no such backup there: "not found", as `backups` says
            raise NotFound(str(exc)) from exc
        except ConfigError as exc:
            # restore() names its Python keyword ("pass overwrite=True"); here the user
            # typed a command line, whose option is --overwrite.
            raise UsageError(str(exc).replace("overwrite=True", "--overwrite")) from exc
    if out.json:
        out.doc(_info_json(info) | {"dest": args.dest})
    else:
        out.line(f"restored backup {info.backup_id} (version {info.version}, "
                 f"{_size(info.size)}) to {args.dest}")
    return EXIT_OK


def _damaged(url: str, opts: dict[str, Any], stall_timeout: float | None) -> dict[str, _Problem]:
    """``{backup id: problem}`` of the manifests that do not decode (the listing leaves
    them out; a verify must name them)."""
    from ..backups.catalog import read_manifests
    from ..backups.destination import open_destination
    _good, damaged = read_manifests(_call(open_destination, url, opts, stall_timeout))
    return {backup_id: _Problem(exc) for backup_id, exc in damaged}


class _Problem(str):
    """What ``verify_backup`` found wrong; ``damaged``: damage (a CorruptionError), not
    a failure to read the backup (the network, the service), which says nothing of it."""

    damaged: bool

    def __new__(cls, exc: BanyanStoreError) -> _Problem:
        problem = super().__new__(cls, str(exc))
        problem.damaged = isinstance(exc, CorruptionError)
        return problem


def _verify(args: argparse.Namespace, out: Output, info: BackupInfo,
            opts: dict[str, Any]) -> _Problem | None:
    """The problem ``verify_backup`` finds in ``info``'s backup, or None."""
    with _bars(args, out) as bars:
        try:
            _call(banyanstore.verify_backup, args.url, info.backup_id, parallel=args.parallel,
                  progress=bars, stall_timeout=args.stall_timeout, **opts)
        except BanyanStoreError as exc:
            return _Problem(exc)
    return None


def cmd_backups(args: argparse.Namespace, out: Output) -> int:
    """List the complete backups; ``--verify`` checks each (or the one named), and
    names the backups whose manifest is damaged."""
    opts = storage_options(args.option)
    infos = _call(banyanstore.list_backups, _existing(args.url), stall_timeout=args.stall_timeout,
                  **opts)
    damaged = _damaged(args.url, opts, args.stall_timeout) if args.verify else {}
    if args.backup is not None:
        infos = [i for i in infos if i.backup_id == args.backup]
        damaged = {i: p for i, p in damaged.items() if i == args.backup}
        if not infos and not damaged:
            raise NotFound(f"no complete backup {args.backup} at {args.url}")
    rows: list[tuple[str, BackupInfo | None, _Problem | None]] = [
        (i.backup_id, i, _verify(args, out, i, opts) if args.verify else None) for i in infos]
    rows += [(backup_id, None, problem) for backup_id, problem in damaged.items()]
    failed = unreadable = 0
    for backup_id, info, problem in sorted(rows, key=lambda row: row[0]):
        failed += problem is not None and problem.damaged
        unreadable += problem is not None and not problem.damaged
        if out.json:
            doc = _info_json(info) if info is not None else {"backup_id": backup_id}
            out.doc(doc | ({"ok": problem is None, "problem": problem and str(problem),
                            "damaged": problem is not None and problem.damaged}
                           if args.verify else {}))
            continue
        status = "" if not args.verify else ("  OK" if problem is None else
                                             f"  {'DAMAGED' if problem.damaged else 'UNREADABLE'}: {problem}")
        head = backup_id if info is None else (
            f"{backup_id}  version {info.version}  {info.files} files  {_size(info.size)}  {info.source}")
        out.line(head + status)
    if not out.json:
        out.line(f"({len(rows)} backups{f', {failed} damaged' if failed else ''}"
                 f"{f', {unreadable} unreadable' if unreadable else ''})")
    return EXIT_PROBLEMS if failed or unreadable else EXIT_OK


def cmd_prune(args: argparse.Namespace, out: Output) -> int:
    opts = storage_options(args.option)
    result = _call(banyanstore.prune_backups, _existing(args.url), keep=args.keep,
                   stall_timeout=args.stall_timeout, **opts)
    if out.json:
        out.doc(dataclasses.asdict(result))
    else:
        out.line(f"kept {len(result.kept)} backups, deleted {len(result.deleted)}; deleted "
                 f"{result.deleted_objects} unreferenced objects ({_size(result.deleted_bytes)})")
        if result.in_progress:
            out.line(f"{result.kept_unreferenced} unreferenced objects kept: backups in progress "
                     f"({', '.join(result.in_progress)})")
        elif result.kept_unreferenced:
            out.line(f"{result.kept_unreferenced} unreferenced objects kept: prune ran out of "
                     "time; run it again")
    return EXIT_OK
