"""``banyanstore verify PATH``: check a store (or a log) without changing anything.

For a store, in order:

1. ``CURRENT``: present, well formed, its checksum right, naming an existing
   manifest (if it is damaged and exactly one ``MANIFEST-*`` exists, the rest
   of the checks use that one, and ``repair`` can rewrite CURRENT);
2. the manifest: header, every record's CRC and JSON, replayed into a state; a
   torn last record is a warning (recovery ignores it);
3. every table the manifest names: present, the size it recorded, footer,
   filter, index and properties checksums, every data block (see tables.py),
   and the manifest's fences/versions/counts;
4. the WAL: every segment and record (see verify_log.py), every record's
   payload decoded, versions increasing, keyspaces known, the records
   recovery needs (from ``wal_seq``) present;
5. leftovers: tables the manifest does not name, temporary files, stale
   manifests (warnings: ``repair`` removes them) and foreign files (left alone).

A log directory gets step 4 only, without the payload decoding.

Beside a running writer, a check can straddle a flush or a merge: a table the
manifest named, or WAL segments it needed, are deleted once the writer's newer
manifest no longer needs them.  So when a check finds errors and the store's
manifests changed while it ran, the manifest is read again, and the findings it
explains are left out (a note says how many): a table it no longer names that
went missing, WAL records before its replay start that were cut.  A check with
other errors runs again, up to :data:`ATTEMPTS` times.

Each finding is an **error** (damage: data is or may be lost; exit 1) or a
**warning** (a crash leftover that an open or ``repair`` handles, a foreign file;
listed, exit 0).  A progress bar over the bytes checked is drawn on stderr on a
terminal (or with ``--progress``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from ..arguments import as_path
from ..errors import CorruptionError, NotAStoreError, StoreNotFoundError
from ..log.segment import parse_segment_name, parse_staged_name
from ..lsm.manifest import ManifestState, TableInfo, replay
from ..lsm.recovery import lost_manifest_edits
from ..lsm.wal import decode
from ..sstable.format import MAGIC as TABLE_MAGIC
from .common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    NOT_A_FILE,
    Output,
    Problem,
    Report,
    detect_kind,
    io_errors,
    make_env,
)
from .files import manifest_files, read_current, table_file, take_inventory, walk_manifest
from .progress import ProgressBar, wants_progress
from .salvage import LOSS_REPORT
from .tables import verify_table
from .verify_log import verify_log_dir

__all__ = ["verify_path", "verify_store", "load_state", "cmd_verify", "bytes_to_check"]


def load_state(store: str, report: Report) -> tuple[ManifestState, str] | None:
    """Check CURRENT and replay its manifest; ``(state, manifest name)`` or None."""
    current_path = os.path.join(store, "CURRENT")
    candidates = manifest_files(store)
    name: str | None = None
    try:
        name = read_current(store)
    except FileNotFoundError:
        report.error(current_path, "CURRENT is missing" + (
            "" if candidates else " and there is no MANIFEST-* file: not a usable store"))
    except CorruptionError as exc:
        report.from_corruption(exc, current_path)
    except IsADirectoryError:
        report.error(current_path, NOT_A_FILE)
    if name is None:
        if len(candidates) != 1:
            report.note(f"{len(candidates)} MANIFEST-* files exist; cannot tell which is current")
            return None
        name = candidates[0]
        report.note(f"checking the only manifest, {name}, in place of CURRENT's")
    path = os.path.join(store, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        report.error(path, f"CURRENT names {name}, which is missing")
        return None
    except IsADirectoryError:
        report.error(path, NOT_A_FILE)
        return None
    try:
        records = list(walk_manifest(data, path))
        state = replay(data, path)
    except CorruptionError as exc:
        report.from_corruption(exc, path)
        return None
    for rec in records:
        if rec.torn is not None:
            report.warning(path, f"torn last edit ({rec.torn}, {rec.length} bytes): it was never "
                           "acknowledged and recovery ignores it; the next open for writing "
                           "writes a fresh manifest", rec.offset)
    report.count("manifest_edits", sum(r.edit is not None for r in records))
    return state, name


ATTEMPTS = 5
"""Checks of a store whose writer changed it while they ran (see the module docstring)."""


Explanation = Callable[[ManifestState], bool]
"""Whether the store's state read after a check explains one of its findings."""


def verify_store(store: str, on_progress: Callable[[int], None] | None = None) -> Report:
    """Check the store at ``store`` (see the module docstring)."""
    for _attempt in range(ATTEMPTS):
        before = _generation(store)
        report, movable = _check_store(store, on_progress)
        if report.ok or _generation(store) == before:
            return report
        _leave_out_explained(store, report, movable)
        if report.ok:
            return report
    report.note(f"a writer changed the store during each of {ATTEMPTS} checks: errors about "
                "missing tables or WAL records may be its flushes and merges; check again")
    return report


def _generation(store: str) -> tuple[bytes, list[tuple[str, int]]]:
    """What a writer changes before it deletes a file the store used: CURRENT, and the
    manifests (it appends an edit, or writes a new manifest, first)."""
    try:
        with open(os.path.join(store, "CURRENT"), "rb") as f:
            current = f.read()
    except (FileNotFoundError, IsADirectoryError):
        current = b""
    sizes = []
    for name in manifest_files(store):
        try:
            sizes.append((name, os.path.getsize(os.path.join(store, name))))
        except FileNotFoundError:
            sizes.append((name, -1))
    return current, sizes


def _leave_out_explained(store: str, report: Report,
                         movable: list[tuple[Problem, Explanation]]) -> None:
    """Drop the findings that the store's manifest, read now, explains."""
    loaded = load_state(store, Report(store, "store"))
    if loaded is None:
        return
    explained = [id(problem) for problem, why in movable if why(loaded[0])]
    if explained:
        report.problems = [p for p in report.problems if id(p) not in explained]
        report.note(f"{len(explained)} finding(s) left out: a writer flushed or merged during "
                    "the check, and its manifest no longer needs the files they are about")


def _check_store(store: str, on_progress: Callable[[int], None] | None
                 ) -> tuple[Report, list[tuple[Problem, Explanation]]]:
    """One check: its report, and the findings a writer moving on may explain."""
    report = Report(store, "store", on_progress=on_progress)
    movable: list[tuple[Problem, Explanation]] = []
    try:
        _check_store_files(store, report, movable)
    except FileNotFoundError as exc:  # listed, then gone before it was read
        report.error(exc.filename or store, "file disappeared during the check")
    return report, movable


def _check_store_files(store: str, report: Report,
                       movable: list[tuple[Problem, Explanation]]) -> None:
    loaded = load_state(store, report)
    if loaded is None:
        report.note("manifest unusable: tables and leftovers not checked")
        _check_wal(store, report, None)
        return
    state, name = loaded
    for ks_id, tables in state.tables.items():
        if ks_id not in state.keyspaces:
            report.error(os.path.join(store, name), f"tables of unknown keyspace {ks_id}")
        for info in tables.values():
            _check_table(store, info.file_no, info, report, movable)
    lost_edits = _check_wal(store, report, state, movable, manifest=os.path.join(store, name))
    inv = take_inventory(store, state, name)
    for path in inv.orphan_tables:
        if lost_edits is not None or state.unexplained(int(os.path.basename(path).split(".")[0])):
            report.error(path, "table not named by the manifest, and not provably an unfinished "
                         "output or a removed table: an edit naming it may have been lost (an "
                         "open for writing refuses; `banyanstore repair` salvages it)")
            if lost_edits is not None:  # a writer's flush during the check looks the same
                movable.append((report.problems[-1], lost_edits))
        else:
            report.warning(path, "table not named by the manifest (left by a crash or an "
                           "unfinished merge); an open for writing, or repair, removes it")
    for path in inv.temp_files + inv.stale_manifests:
        report.warning(path, "leftover file not in use; an open for writing, or repair, removes it")
    for path in inv.unknown:
        report.warning(path, "not a banyanstore file (left alone by the store and by repair)")
    _note_lost(os.path.join(store, "lost"), report)
    report.note(f"manifest {name}: version {state.last_version}, flushed_version "
                f"{state.flushed_version}, wal_seq {state.wal_seq}, history_floor "
                f"{state.history_floor}, keyspaces {sorted(state.keyspaces.values())}")


def _note_lost(lost: str, report: Report) -> None:
    """What earlier salvages set aside, and the reports of what they could not recover."""
    if not os.path.isdir(lost):
        return
    runs = sorted(os.listdir(lost))
    report.note(f"{lost} holds what `banyanstore repair` set aside (salvage runs: "
                f"{len(runs)}): keep it or delete it")
    for run in runs:
        path = os.path.join(lost, run, LOSS_REPORT)
        if os.path.isfile(path):
            report.note(f"a salvage could not recover everything: see {path}")


def _check_table(store: str, file_no: int, info: TableInfo, report: Report,
                 movable: list[tuple[Problem, Explanation]]) -> None:
    """verify_table; a table gone by the end of its check may have been merged away."""
    path = table_file(store, file_no)
    found = len(report.problems)
    try:
        verify_table(path, report, info)
    except FileNotFoundError:
        report.error(path, "table named by the manifest is missing")
    if len(report.problems) > found and not os.path.exists(path):
        for problem in report.problems[found:]:
            movable.append((problem, lambda state: file_no not in state.live_files()))


def _check_wal(store: str, report: Report, state: ManifestState | None,
               movable: list[tuple[Problem, Explanation]] | None = None, *,
               manifest: str = "") -> Explanation | None:
    """Check the WAL, and that it holds what ``state`` (read from ``manifest``) needs.
    If the manifest lost edits (recovery.lost_manifest_edits, reported on it): what
    would explain that finding as a writer's flush during the check, else None."""
    wal = os.path.join(store, "wal")
    if not os.path.isdir(wal):
        report.error(wal, "the WAL directory is missing")
        return None
    last_version = 0

    def check(seq: int, data: bytes, seg: str, offset: int) -> None:
        nonlocal last_version
        try:
            rec = decode(data, seg)
        except CorruptionError as exc:
            report.error(seg, f"WAL record {seq}: {exc}", offset)
            return
        version = rec.version
        if version <= last_version:
            report.error(seg, f"WAL record {seq} has version {version}, not above the previous "
                         f"record's {last_version}", offset)
        last_version = version
        if state is None:
            return
        for ks_id in sorted(rec.keyspaces()):
            if ks_id not in state.keyspaces and ks_id not in state.dropped:  # dropped: skipped
                report.error(seg, f"WAL record {seq} writes to unknown keyspace {ks_id}", offset)
                break
        if version > state.flushed_version and seq >= state.wal_seq:
            report.count("wal_records_to_replay")

    summary = verify_log_dir(wal, report, check)
    if state is None:
        return None
    # The same checks as an open (lsm/recovery.py open_wal): first_seq <= wal_seq <= last_seq + 1.
    first_seq = summary.first_seq
    lost = None

    def wal_fits(now: ManifestState) -> bool:  # the writer's newer manifest needs no more
        return first_seq is not None and now.wal_seq >= first_seq

    if first_seq is not None and first_seq > state.wal_seq:
        lost = lost_manifest_edits(make_env(), store, state, manifest, first_seq)
        if lost is not None:
            report.error(manifest, lost.message, lost.offset)
        else:
            report.error(wal, f"the WAL starts at seq {first_seq}, but the manifest says "
                         f"records from seq {state.wal_seq} are still needed")
        if movable is not None:  # a writer cuts records its newer manifest does not need
            movable.append((report.problems[-1], wal_fits))
    _check_wal_end(wal, report, state, summary.last_seq)
    return None if lost is None else wal_fits


def _check_wal_end(wal: str, report: Report, state: ManifestState, last: int | None) -> None:
    last_seq = last if last is not None else 0
    if state.wal_seq > last_seq + 1:
        report.error(wal, f"the WAL ends at seq {last_seq}, before seq {state.wal_seq} where the "
                     "manifest says replay starts: records the manifest needs are missing")


def verify_path(path: str | bytes | os.PathLike[Any],
                on_progress: Callable[[int], None] | None = None) -> Report:
    """Check the store, log or table at ``path``; changes nothing.  ``on_progress(nbytes)``
    is called as bytes are checked (they add up to about :func:`bytes_to_check`)."""
    path = as_path(path)
    with io_errors("verify", path):
        return _verify_kind(path, on_progress)


def _verify_kind(path: str, on_progress: Callable[[int], None] | None) -> Report:
    kind = detect_kind(path)
    if kind == "unknown" and _is_table_file(path):
        kind = "table"
    if kind == "store":
        return verify_store(path, on_progress)
    if kind == "log":
        report = Report(path, "log", on_progress=on_progress)
        verify_log_dir(path, report)
        _list_foreign(path, report)
        return report
    if kind == "table":
        report = Report(path, "table", on_progress=on_progress)
        verify_table(path, report)
        return report
    # The library's errors, as open() raises them (verify_path is public API: the
    # command line's UsageError was neither a BanyanStoreError nor an OSError); the
    # command maps both to exit 2 with the same line.
    if kind == "missing":
        raise StoreNotFoundError(f"{path}: no such file or directory")
    raise NotAStoreError(f"{path}: not a banyanstore store, log or table ({kind})", path=path)


def _is_table_file(path: str) -> bool:
    """A file named like no store file that is a table by its content (its last bytes are
    a table's magic: a copy, a backup's object named by its hash) or by its ``.sst``
    suffix (a copy cut short, which verify reports as damage): checked as a table, as
    dump-table reads any file."""
    if not os.path.isfile(path):
        return False
    if path.endswith(".sst"):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(max(os.path.getsize(path) - len(TABLE_MAGIC), 0))
            return f.read() == TABLE_MAGIC
    except OSError:
        return False  # said by the usage error that follows


def _list_foreign(log_dir: str, report: Report) -> None:
    """Warn of each name in a log directory that a log does not write (left alone)."""
    for name in sorted(os.listdir(log_dir)):
        if name != "LOCK" and parse_segment_name(name) is None and parse_staged_name(name) is None:
            report.warning(os.path.join(log_dir, name), "not a banyanstore file (left alone by the "
                           "log and by repair)")


def bytes_to_check(path: str) -> int:
    """About the bytes :func:`verify_path` reads: the tables and WAL of a store (orphans
    included), a log's segments, a table file."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    folders = [os.path.join(path, "tables"), os.path.join(path, "wal")] \
        if detect_kind(path) == "store" else [path]
    return sum(entry.stat().st_size for folder in folders if os.path.isdir(folder)
               for entry in os.scandir(folder) if entry.is_file())


def print_report(report: Report, out: Output) -> None:
    if out.json:
        out.pretty(report.to_json())
        return
    out.line(f"{report.kind} {report.path}")
    for text in report.info:
        out.line(f"  note: {text}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
    if counts:
        out.line(f"  checked: {counts}")
    for p in report.problems:
        out.line(f"  {p}")
    if report.errors:
        out.line(f"DAMAGED: {report.errors} errors, {report.warnings} warnings")
    elif report.warnings:
        out.line(f"OK, {report.warnings} warnings (no damage)")
    else:
        out.line("OK")


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    """Exit 0 when nothing is damaged (warnings are listed), 1 when something is."""
    enabled = wants_progress(args, out.json, out.err)
    total = bytes_to_check(args.path) if enabled and os.path.exists(args.path) else 0
    with ProgressBar("verify", total=total, unit="bytes", enabled=enabled, stream=out.err) as bar:
        report = verify_path(args.path, bar.advance if enabled else None)
    print_report(report, out)
    return EXIT_OK if report.ok else EXIT_PROBLEMS
