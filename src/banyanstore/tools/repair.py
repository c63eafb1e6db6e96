"""``banyanstore repair PATH``: the conservative repair -- only what is provably safe.

What it does (holding the store's LOCK, so no writer runs meanwhile):

* rewrites ``CURRENT`` when it is missing or garbage *and* exactly one
  ``MANIFEST-*`` file exists *and* that file replays cleanly (it is then the
  only manifest CURRENT can ever have named that still exists);
* after making the manifest, CURRENT and the directory durable (fsync), removes
  the files the manifest does not name: orphan tables, ``*.tmp`` files, stale
  manifests -- the same files an open for writing removes;
* cuts a torn last manifest record (never acknowledged; recovery ignores it);
* cuts a torn WAL tail (and a last segment whose header never became durable)
  by opening the WAL as a Log, whose recovery does exactly that.

What it refuses, saying why: any change to a table the manifest names (missing
or damaged tables are reported, never deleted or rewritten); choosing a
manifest when CURRENT is damaged and several (or none) exist, or when CURRENT
names a missing one; WAL damage followed by intact records (skipping it would
lose acknowledged writes); foreign files (not ours, left alone).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from ..errors import BanyanStoreError, CorruptionError
from ..log.log import Log
from ..lsm.manifest import ManifestState, replay
from .common import EXIT_OK, EXIT_PROBLEMS, Output, Report, UsageError, detect_kind, make_env
from .files import current_text, manifest_files, read_current, table_file, take_inventory, walk_manifest
from .tables import verify_table
from .verify import print_report, verify_path
from .verify_log import verify_log_dir

__all__ = ["RepairResult", "repair", "cmd_repair"]


@dataclass
class RepairResult:
    done: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (what, why)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fix_current(store: str, res: RepairResult, dry_run: bool) -> str | None:
    """The manifest name to use, after rewriting CURRENT if that is provably safe."""
    try:
        return read_current(store)
    except FileNotFoundError:
        why = "CURRENT is missing"
    except CorruptionError:
        why = "CURRENT is garbage"
    candidates = manifest_files(store)
    if len(candidates) != 1:
        res.refused.append((f"{why}: rewrite CURRENT", f"{len(candidates)} MANIFEST-* files exist, "
                            "so which one is current cannot be proven"))
        return None
    name = candidates[0]
    try:
        with open(os.path.join(store, name), "rb") as f:
            replay(f.read(), name)
    except CorruptionError as exc:
        res.refused.append((f"{why}: rewrite CURRENT to name {name}", f"it does not replay: {exc}"))
        return None
    if not dry_run:
        make_env().write_file_atomic(os.path.join(store, "CURRENT"), current_text(name).encode())
    res.done.append(f"{why}: rewrote CURRENT to name {name}, the only manifest, which replays cleanly")
    return name


def _load(store: str, name: str, res: RepairResult, dry_run: bool) -> ManifestState | None:
    """Replay the manifest; cut a torn last record (recovery ignores it anyway)."""
    path = os.path.join(store, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
        state = replay(data, path)
        torn = [r for r in walk_manifest(data, path) if r.torn is not None]
        if torn:
            if not dry_run:
                with open(path, "r+b") as f:
                    f.truncate(torn[0].offset)
                    os.fsync(f.fileno())
            res.done.append(f"cut the torn last edit of {path} at offset {torn[0].offset} "
                            f"({torn[0].length} bytes, never acknowledged)")
        return state
    except FileNotFoundError:
        res.refused.append(("use the manifest", f"CURRENT names {name}, which is missing; another "
                            "manifest could name deleted tables or miss live ones"))
    except CorruptionError as exc:
        res.refused.append(("use the manifest", f"it does not replay ({exc}); without it no file can "
                            "be proven unused"))
    return None


def _remove_orphans(store: str, name: str, state: ManifestState, res: RepairResult,
                    dry_run: bool) -> None:
    inv = take_inventory(store, state, name)
    unexplained = [p for p in inv.orphan_tables
                   if state.unexplained(int(os.path.basename(p).split(".")[0]))]
    doomed = [p for p in inv.removable if p not in unexplained]
    for path in unexplained:
        res.refused.append((f"remove {path}", "no manifest edit names it, and it is not provably "
                            "an unfinished output or a removed table: an edit naming it may have "
                            "been lost"))
    if doomed and not dry_run:
        # Files go only once a manifest not naming them is durable: a crashed writer may
        # have left its last edit in the page cache, unsynced.
        _fsync(os.path.join(store, name))
        _fsync(os.path.join(store, "CURRENT"))
        make_env().sync_dir(store)
    for path in doomed:
        if not dry_run:
            os.remove(path)
        res.done.append(f"removed {path} (not named by the manifest)")
    if doomed and not dry_run:
        for d in {os.path.dirname(p) for p in doomed}:
            make_env().sync_dir(d)
    for path in inv.unknown:
        res.refused.append((f"remove {path}", "not a banyanstore file: left alone"))


def _check_named_tables(store: str, state: ManifestState, res: RepairResult) -> None:
    """Damaged tables the manifest names are reported, never deleted or rewritten."""
    for tables in state.tables.values():
        for info in tables.values():
            path = table_file(store, info.file_no)
            report = Report(path, "table")
            verify_table(path, report, info)
            if report.problems:
                res.refused.append((f"fix {path}", f"{report.problems[0].message} (offset "
                                    f"{report.problems[0].offset}); the manifest names this table, "
                                    "so repair never deletes or rewrites it: restore the store from "
                                    "a checkpoint or backup"))


def _fix_log(directory: str, res: RepairResult, dry_run: bool, *, lock: bool) -> None:
    """Cut a torn tail by opening the Log for writing (its recovery cuts it)."""
    report = Report(directory, "log")
    verify_log_dir(directory, report)
    errors = [p for p in report.problems if p.severity == "error"]
    if errors:
        res.refused.append((f"repair the log {directory}",
                            f"{errors[0]}; skipping damaged records would lose acknowledged writes"))
        return
    if not report.problems:
        return
    if not dry_run:
        log = Log.open(directory, io_mode="sync", wal_sync="always", create_if_missing=False,
                       lock=lock)
        log.close()
    for p in report.problems:
        res.done.append(f"log recovery fixed: {p.file} @ offset {p.offset}: {p.message.split(';')[0]}")


def _repair_store(store: str, res: RepairResult, dry_run: bool) -> None:
    name = _fix_current(store, res, dry_run)
    state = _load(store, name, res, dry_run) if name is not None else None
    if state is not None and name is not None:
        _check_named_tables(store, state, res)
        _remove_orphans(store, name, state, res, dry_run)
    else:
        res.refused.append(("remove unreferenced files", "needs a manifest that replays"))
    wal = os.path.join(store, "wal")
    if os.path.isdir(wal) and any(n.endswith(".log") for n in os.listdir(wal)):
        _fix_log(wal, res, dry_run, lock=False)


def repair(path: str, *, dry_run: bool = False) -> RepairResult:
    """Repair the store or log at ``path``; StoreLockedError if a writer has it open."""
    kind = detect_kind(path)
    res = RepairResult()
    if kind == "log":
        _fix_log(path, res, dry_run, lock=True)
        return res
    if kind != "store":
        raise UsageError(f"{path}: not a banyanstore store or log ({kind})")
    lock = make_env().lock(os.path.join(path, "LOCK"))
    try:
        _repair_store(path, res, dry_run)
    finally:
        lock.release()
    return res


def cmd_repair(args: argparse.Namespace, out: Output) -> int:
    try:
        res = repair(args.path, dry_run=args.dry_run)
    except BanyanStoreError as exc:
        out.warn(f"error: cannot repair {args.path}: {exc}")
        return EXIT_PROBLEMS
    after = verify_path(args.path)
    if out.json:
        out.pretty({"path": args.path, "dry_run": args.dry_run, "done": res.done,
                    "not_repaired": [{"what": w, "why": y} for w, y in res.refused],
                    "after": after.to_json()})
    else:
        verb = "would do" if args.dry_run else "repaired"
        for line in res.done:
            out.line(f"{verb}: {line}")
        for what, why in res.refused:
            out.line(f"NOT repaired: {what}: {why}")
        if not res.done and not res.refused:
            out.line("nothing to repair")
        out.line("after repair:" if not args.dry_run else "current state:")
        print_report(after, out)
    return EXIT_OK if after.ok or (args.dry_run and not res.refused) else EXIT_PROBLEMS
