"""``banyanstore repair PATH``: the conservative repair, then salvage when that is not enough.

What it does (holding the store's LOCK, so no writer runs meanwhile):

* rewrites ``CURRENT`` when it is missing or garbage *and* exactly one
  ``MANIFEST-*`` file exists *and* that file replays cleanly (it is then the
  only manifest CURRENT can ever have named that still exists);
* after making the manifest, CURRENT and the directory durable (fsync), removes
  the files the manifest does not name *and* can prove are leftovers (unfinished
  outputs, removed tables, ``tables/*.tmp``, ``CURRENT.tmp``, stale ``MANIFEST-NNNNNN``
  files; a name the store does not write is foreign and stays) -- the same files an
  open for writing removes;
* cuts a torn last manifest record (never acknowledged; recovery ignores it) when
  nothing else in the store is damaged (else it may be an acknowledged edit cut by
  damage, whose bytes are its only record: they stay);
* stores again a WAL or Log segment header that is gone (all zeros) while records
  follow it, from the segment's name, once those records read whole under it;
* cuts a torn WAL tail (and a last segment whose header never became durable)
  by opening the WAL as a Log, whose recovery does exactly that.

When the manifest cannot be used (CURRENT unfixable, the manifest missing or not
replaying), a table it names is missing or damaged, a table exists that it does
not name and cannot explain, or it calls tables unfinished outputs while being older
than its WAL (its later edits lost: those tables may be the only copy of their
writes), repair **salvages** instead (tools/salvage.py): it
rebuilds the manifest from the tables and the WAL, moves everything it does not use
into ``lost/`` (never deletes), and reports exactly what it could not recover.

What it refuses, saying why: WAL damage followed by intact records, or WAL records
the (intact) manifest still needs that are gone -- open with
``skip_damaged_records=True`` or ``wal_recovery="skip_missing"`` to accept the loss
knowingly; foreign files (not ours, left alone).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

from ..arguments import as_path, check_bool
from ..errors import BanyanStoreError, CorruptionError, NotAStoreError, StoreLockedError, StoreNotFoundError
from ..log.format import HEADER_SIZE, encode_header, parse_header
from ..log.log import Log
from ..log.opening import writer_lock_path
from ..log.segment import create_segment, read_seal, segment_name
from ..lsm.manifest import ManifestState, replay
from .common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    NOT_A_FILE,
    SEGMENT_NAME,
    Failure,
    Output,
    Report,
    UsageError,
    detect_kind,
    io_errors,
    make_env,
)
from .files import current_text, manifest_files, read_current, table_file, take_inventory, walk_manifest
from .salvage import Loss, salvage
from .tables import verify_table
from .verify import print_report, verify_path
from .verify_log import reads_under_header, segment_names, verify_log_dir

__all__ = ["RepairResult", "repair", "cmd_repair"]


@dataclass
class RepairResult:
    done: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    lost: list[Loss] = field(default_factory=list)  # what a salvage could not recover


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fix_current(store: str, res: RepairResult, dry_run: bool) -> tuple[str | None, str]:
    """The manifest name to use, after rewriting CURRENT if that is provably safe; or
    None and why not."""
    try:
        return read_current(store), ""
    except FileNotFoundError:
        why = "CURRENT is missing"
    except CorruptionError:
        why = "CURRENT is garbage"
    except IsADirectoryError:  # not rewritten over it: a salvage moves it to lost/
        return None, f"CURRENT is {NOT_A_FILE}"
    candidates = manifest_files(store)
    if len(candidates) != 1:
        return None, (f"{why} and {len(candidates)} MANIFEST-* files exist, so which one is "
                      "current cannot be proven")
    name = candidates[0]
    try:
        with open(os.path.join(store, name), "rb") as f:
            replay(f.read(), name)
    except CorruptionError as exc:
        return None, f"{why} and the only manifest, {name}, does not replay: {exc}"
    if not dry_run:
        make_env().write_file_atomic(os.path.join(store, "CURRENT"), current_text(name).encode())
    res.done.append(f"{why}: rewrote CURRENT to name {name}, the only manifest, which replays cleanly")
    return name, ""


def _load(store: str, name: str) -> tuple[ManifestState | None, str, int | None]:
    """Replay the manifest: ``(state, "", offset of a torn last record or None)``, or
    ``(None, why it cannot be used, None)``.  A torn record is only found here: it is cut
    by :func:`_cut_torn_edit` once the rest of the store shows it was never needed."""
    path = os.path.join(store, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
        state = replay(data, path)
        torn = [r.offset for r in walk_manifest(data, path) if r.torn is not None]
        return state, "", (torn[0] if torn else None)
    except FileNotFoundError:
        return None, f"CURRENT names {name}, which is missing", None
    except IsADirectoryError:
        return None, f"CURRENT names {name}, which is {NOT_A_FILE}", None
    except CorruptionError as exc:
        return None, f"the manifest does not replay ({exc})", None


def _cut_torn_edit(store: str, name: str, offset: int, res: RepairResult, dry_run: bool,
                   wal_refused: bool) -> None:
    """Cut the manifest's torn last record at ``offset`` (recovery ignores it anyway) --
    only when the store is otherwise undamaged.  A torn write is an edit a crash
    interrupted, never acknowledged; but a manifest cut by damage inside an edit that was
    acknowledged looks the same, and then the store shows it (WAL records writing to the
    keyspace it created, a WAL cut after the flush it recorded: a salvage or a refusal).
    Its bytes are then the only record of that edit: they stay, in place (or in lost/)."""
    path = os.path.join(store, name)
    size = os.path.getsize(path)
    if wal_refused or verify_path(store).errors:
        res.refused.append((f"cut the torn last edit of {path} at offset {offset}",
                            "the store has other damage, so that edit may have been "
                            "acknowledged: its bytes are left in place"))
        return
    if not dry_run:
        with open(path, "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())
    res.done.append(f"cut the torn last edit of {path} at offset {offset} "
                    f"({size - offset} bytes, never acknowledged)")


def _remove_orphans(store: str, name: str, state: ManifestState, res: RepairResult,
                    dry_run: bool) -> None:
    inv = take_inventory(store, state, name)
    doomed = inv.removable  # REQUIRES: no unexplained table (those are salvaged instead)
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


def _damaged_named_tables(store: str, state: ManifestState) -> list[str]:
    """The tables the manifest names that are missing or damaged, with the first problem."""
    out = []
    for tables in state.tables.values():
        for info in tables.values():
            path = table_file(store, info.file_no)
            report = Report(path, "table")
            verify_table(path, report, info)
            if report.problems:
                p = report.problems[0]
                out.append(f"{path}: {p.message}" + (f" (offset {p.offset})" if p.offset is not None else ""))
    return out


def _unexplained_tables(store: str, name: str, state: ManifestState) -> list[str]:
    inv = take_inventory(store, state, name)
    return [p for p in inv.orphan_tables if state.unexplained(int(os.path.basename(p).split(".")[0]))]


def _unfinished_tables(store: str, name: str, state: ManifestState) -> list[str]:
    """The tables no edit names or removed: leftovers only because they are numbered at
    or above what the manifest calls unfinished."""
    inv = take_inventory(store, state, name)
    return [p for p in inv.orphan_tables if int(os.path.basename(p).split(".")[0]) not in state.obsolete]


def _behind_its_wal(store: str, state: ManifestState) -> str | None:
    """Why the manifest is older than its WAL (it needs records the WAL no longer
    holds: its later edits are gone), or None.  An unfinished output's writes are in the
    WAL only when the WAL holds what the manifest needs; else the table may be their
    only copy (a flush whose edit was lost)."""
    wal = os.path.join(store, "wal")
    if not os.path.isdir(wal):
        return "the WAL directory is missing"
    summary = verify_log_dir(wal, Report(wal, "log"))
    if summary.first_seq is not None and summary.first_seq > state.wal_seq:
        return f"the WAL starts at seq {summary.first_seq}, after seq {state.wal_seq} the manifest needs"
    last = summary.last_seq or 0
    if state.wal_seq > last + 1:
        return f"the WAL ends at seq {last}, before seq {state.wal_seq} the manifest needs"
    return None


def _restore_headers(directory: str, res: RepairResult, dry_run: bool) -> None:
    """Store again the header of every segment that lost it (all zeros) while records
    follow it, from the segment's name (its first seq), if the records read whole under
    it (reads_under_header): a header holds nothing else a segment's name does not say."""
    env = make_env()
    names = segment_names(directory)
    for i, name in enumerate(names):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue  # damage verify reports; no header to restore
        header = encode_header(int(SEGMENT_NAME.match(name).group(1)))  # type: ignore[union-attr]
        f = env.open_readable(path)
        try:
            size, head = f.size, f.read(0, HEADER_SIZE)
            if (size <= HEADER_SIZE or any(head)
                    or not reads_under_header(f.read, path, size, header, i == len(names) - 1)):
                continue
        finally:
            f.close()
        if not dry_run:
            with open(path, "r+b") as fh:
                fh.write(header)
                fh.flush()
                os.fsync(fh.fileno())
        res.done.append(f"restored the header of {path} from its name (its records read "
                        "whole under it)")


def _lost_newest(directory: str) -> tuple[str, int, int] | None:
    """``(sealed segment, offset of its SEAL, the missing successor's first seq)`` when
    the newest segment present is sealed (format 3): its successor, the newest segment,
    was deleted.  None otherwise."""
    names = segment_names(directory)
    if not names:
        return None
    env = make_env()
    path = os.path.join(directory, names[-1])
    try:
        f = env.open_readable(path)
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        try:
            _first, version = parse_header(f.read(0, HEADER_SIZE), path)
        except CorruptionError:
            return None  # damage verify reports
        seal = read_seal(f.read, f.size, version)
    finally:
        f.close()
    return None if seal is None else (path, seal[1], seal[0])


def _accept_lost_newest(directory: str, res: RepairResult, dry_run: bool) -> None:
    """The newest segment was deleted (log/chain.py): store an empty segment in its
    place, so the log ends where the sealed segment does and the writer goes on from
    the missing segment's first seq.  Its records are lost, and their seqs given out
    again; only on request (``accept_lost_segment``)."""
    lost = _lost_newest(directory)
    if lost is None:
        return
    sealed, offset, next_seq = lost
    missing = os.path.join(directory, segment_name(next_seq))
    if not dry_run:
        env = make_env()
        create_segment(env, missing, next_seq).close()
        env.sync_dir(directory)
    res.done.append(f"accepted the loss of the newest segment {missing} (named by the seal of "
                    f"{sealed} at offset {offset}): its records, from seq {next_seq} on, are gone; "
                    f"an empty segment takes its place and the log goes on from seq {next_seq}")


def _fix_log(directory: str, res: RepairResult, dry_run: bool, *,
             accept_lost_segment: bool = False) -> None:
    """Store lost segment headers again (_restore_headers), then cut a torn tail by
    opening the Log for writing (its recovery cuts it).  ``accept_lost_segment``: a
    deleted newest segment is accepted as lost (_accept_lost_newest).  REQUIRES: the
    caller holds the writer's lock (the store's, or the log's: :func:`repair`)."""
    _restore_headers(directory, res, dry_run)
    if accept_lost_segment:
        _accept_lost_newest(directory, res, dry_run)
    report = Report(directory, "log")
    verify_log_dir(directory, report)
    errors = [p for p in report.problems if p.severity == "error"]
    if dry_run and accept_lost_segment and _lost_newest(directory) is not None:
        errors = [p for p in errors if "is sealed at offset" not in p.message]  # (would be done)
    if errors:
        res.refused.append((f"repair the log {directory}",
                            f"{errors[0]}; skipping damaged records would lose acknowledged writes"))
        return
    if not report.problems:
        return
    if not dry_run:
        log = Log.open(directory, io_mode="sync", wal_sync="always", create_if_missing=False,
                       lock=False)  # (held by the caller)
        log.close()
    for p in report.problems:
        res.done.append(f"log recovery fixed: {p.file} @ offset {p.offset}: {p.message.split(';')[0]}")


def _repair_store(store: str, res: RepairResult, dry_run: bool, accept_lost_segment: bool) -> None:
    name, why = _fix_current(store, res, dry_run)
    state, torn = None, None
    if name is not None:
        state, why, torn = _load(store, name)
    if state is not None and name is not None:
        damaged = _damaged_named_tables(store, state)
        unexplained = _unexplained_tables(store, name, state)
        unfinished = _unfinished_tables(store, name, state)
        behind = _behind_its_wal(store, state) if unfinished else None
        if damaged:
            why = f"a table the manifest names is missing or damaged: {damaged[0]}"
        elif unexplained:
            why = (f"{unexplained[0]} is named by no manifest edit and is not provably a leftover "
                   "(an edit naming it may have been lost)")
        elif behind:
            why = (f"{behind}: the manifest is older than its WAL, so {unfinished[0]}, which it "
                   "calls an unfinished output, may hold writes no other file has")
        else:
            _remove_orphans(store, name, state, res, dry_run)
            wal = os.path.join(store, "wal")
            refused = len(res.refused)  # (foreign files, refused above, are no damage)
            if os.path.isdir(wal) and any(n.endswith(".log") for n in os.listdir(wal)):
                _fix_log(wal, res, dry_run, accept_lost_segment=accept_lost_segment)
            if torn is not None:
                _cut_torn_edit(store, name, torn, res, dry_run, len(res.refused) > refused)
            return
    salvaged = salvage(store, name, why, dry_run=dry_run)
    res.done += salvaged.done
    res.lost += salvaged.lost


def repair(path: str | bytes | os.PathLike[Any], *, dry_run: bool = False,
           accept_lost_segment: bool = False) -> RepairResult:
    """Repair the store or log at ``path``; StoreLockedError if a writer has it open.

    ``accept_lost_segment``: a log (or WAL) whose newest segment was deleted -- its
    predecessor is sealed naming it -- is accepted as having lost that segment's
    records (their seqs are given out again); without it repair refuses."""
    path = as_path(path)
    check_bool(dry_run, "dry_run")  # it decides whether files change: no truthy strings
    check_bool(accept_lost_segment, "accept_lost_segment")
    with io_errors("repair", path):
        return _repair_path(path, dry_run, accept_lost_segment)


def _repair_path(path: str, dry_run: bool, accept_lost_segment: bool) -> RepairResult:
    kind = detect_kind(path)
    res = RepairResult()
    if kind == "log":
        # The writer's lock before anything is read, as for a store: headers stored again
        # or a lost segment replaced beside a running writer would race its appends, and
        # a log found intact would be called "nothing to repair" while a writer has it.
        env = make_env()
        log_lock = env.lock(writer_lock_path(env, path))
        try:
            _fix_log(path, res, dry_run, accept_lost_segment=accept_lost_segment)
        finally:
            log_lock.release()
        return res
    if kind != "store":  # the library's errors, as verify_path raises them
        message = f"{path}: not a banyanstore store or log ({kind})"
        if kind == "missing":
            raise StoreNotFoundError(message)
        raise NotAStoreError(message, path=path)
    lock = make_env().lock(os.path.join(path, "LOCK"))
    try:
        _repair_store(path, res, dry_run, accept_lost_segment)
    finally:
        lock.release()
    return res


def _say_what_is_left(res: RepairResult, after: Report) -> None:
    """Damage left that no refusal or loss of this run accounts for (WAL records the
    manifest needs, gone) is a refusal too: the report says so, not "nothing to repair"."""
    if res.refused or res.lost:
        return
    for p in after.problems:
        if p.severity == "error":
            where = p.file if p.offset is None else f"{p.file} @ offset {p.offset}"
            res.refused.append((where, f"{p.message}; repair has no change it can prove safe "
                                       "(an open with wal_recovery='skip_missing' or "
                                       "skip_damaged_records=True accepts a loss knowingly)"))


def cmd_repair(args: argparse.Namespace, out: Output) -> int:
    """Exit 0 when the store is undamaged afterwards (warnings allowed), 1 when damage
    remains or something could not be recovered, 2 when a writer has it open."""
    try:
        res = repair(args.path, dry_run=args.dry_run, accept_lost_segment=args.accept_lost_segment)
    except StoreLockedError:
        raise UsageError(f"cannot repair {args.path}: another process has it open (stop the "
                         "writer first)") from None
    except (StoreNotFoundError, NotAStoreError):
        raise  # no store or log there: a usage error (exit 2), said as it is
    except BanyanStoreError as exc:
        raise Failure(f"cannot repair {args.path}: {exc}") from None
    after = verify_path(args.path)
    if not args.dry_run or not res.done:
        # A dry run that would do nothing leaves the damage as it is, as the run would:
        # said the same way (not "nothing to repair" above a DAMAGED report, exit 0).
        _say_what_is_left(res, after)
    if out.json:
        out.pretty({"path": args.path, "dry_run": args.dry_run, "done": res.done,
                    "not_repaired": [{"what": w, "why": y} for w, y in res.refused],
                    "not_recovered": [loss.to_json(out.show) for loss in res.lost],
                    "after": after.to_json()})
    else:
        verb = "would do" if args.dry_run else "repaired"
        for line in res.done:
            out.line(f"{verb}: {line}")
        for what, why in res.refused:
            out.line(f"NOT repaired: {what}: {why}")
        for loss in res.lost:
            out.line(f"NOT recovered: {loss}")
        if not res.done and not res.refused:
            out.line("nothing to repair")
        out.line("after repair:" if not args.dry_run else "current state:")
        print_report(after, out)
    if res.lost:
        return EXIT_PROBLEMS  # the store may open now, but data is gone: say so
    return EXIT_OK if after.ok or (args.dry_run and not res.refused) else EXIT_PROBLEMS
