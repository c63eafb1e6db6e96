"""Opening a store: the WAL, tables named by the manifest, orphan removal, WAL replay.

Rules (BanyanDB lost data by breaking them, see docs/facts.md):

* a writer's open makes every check -- the manifest, the WAL's bounds and records
  (read through a read-only open of the log, :func:`read_wal`), the tables and their
  leftovers, the replay -- before it changes anything (a new manifest, a cut WAL
  tail, removed leftovers): an open that refuses leaves the store as it found it,
  the damaged files the evidence ``banyanstore repair`` and a human need;
* a table the manifest names but that is missing, truncated or fails its
  checks is a :class:`CorruptionError` naming the file -- never skipped;
* a table file the manifest does *not* name is removed only if it is provably a
  leftover -- an unfinished flush or merge output (numbered at or above the
  manifest's ``unfinished_from``) or a table an edit removed (``obsolete``) --
  and only after the manifest this process writes is durable; any other is an
  unexplained table (the edit naming it may have been lost) and the writer open
  refuses, pointing at ``banyanstore repair``;
* so that a removed table cannot come back after a power loss as an unexplained one,
  the tables directory is synced before the open's manifest is written (unlinks an
  earlier process made) and after the leftovers are removed (before a later manifest
  stops listing them);
* the WAL must hold every record from the manifest's ``wal_seq`` on: a missing
  ``wal/``, a first segment after ``wal_seq``, a log ending before it, or a gap in
  the seqs replay reads is a :class:`CorruptionError` -- unless the open says
  ``wal_recovery="skip_missing"`` (then it is logged, and the records are lost);
* but a first segment after ``wal_seq`` while the manifest ends in a cut record, or
  while table files exist that no edit names, is the *manifest* missing its newest
  edits (:func:`lost_manifest_edits`): a :class:`CorruptionError` naming it, even with
  ``skip_missing`` -- those tables hold the records, and opening without them would
  give a store shorter than its files (``banyanstore repair`` rebuilds it from them);
* WAL records at or below ``flushed_version`` are already in tables and are
  skipped; the rest rebuild the memtables;
* versions never go down from one WAL record to the next (the writer takes each
  record's version under its lock, in log order): a record older than the one
  before it is damage (a :class:`CorruptionError` naming the record and the
  offset of its version), not something to insert into a memtable out of order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import CorruptionError
from ..io.base import Env
from ..log.log import Log
from ..options import Options
from ..sstable.reader import TableReader
from .edits import TableInfo
from .layout import is_manifest_name
from .manifest import Manifest, ManifestState
from .tree import Tree
from .wal import check_version_order, decode

__all__ = ["open_wal", "read_wal", "check_wal_bounds",
           "missing_records", "lost_manifest_edits", "unnamed_tables", "missing_table_hint",
           "check_orphans", "open_tables", "check_table", "remove_orphans", "replay_wal"]

logger = logging.getLogger("banyanstore.recovery")
TABLE_NAME = re.compile(r"^(\d{6,})\.sst$")
SKIP_MISSING = "skip_missing"


def missing_records(opts: Options, message: str, path: str) -> bool:
    """A piece of the WAL is missing: CorruptionError, or a warning when skipping was
    asked for (then True: the WAL lacks records the manifest needs)."""
    if opts.wal_recovery != SKIP_MISSING:
        raise CorruptionError(f"{message}; the records in it are lost (open with "
                              "wal_recovery='skip_missing' to open without them)", path=path)
    logger.warning("%s (%s): skipped, wal_recovery='skip_missing'", message, path)
    return True


def open_wal(env: Env, path: str, opts: Options, state: ManifestState, *,
             existing: bool, keep: Callable[[Log], None]) -> bool:
    """Open the store's WAL (for a writer), handing it to ``keep`` as it opens (so the
    store closes it whatever interrupts the open), and check it holds every record the
    manifest still needs; returns whether records it needs were missing (skipped, as the
    options allow).  A manifest that lost edits is CorruptionError naming it, whatever
    the options (:func:`lost_manifest_edits`).  (Read-only opens check the same in
    lsm/catchup.py.)"""
    wal_dir = f"{path}/wal"
    missing = False
    if existing and not env.exists(wal_dir):
        missing = missing_records(opts, "the WAL directory is missing", wal_dir)
        env.mkdir(wal_dir)
    wal_opts = opts.replace(create_if_missing=True, error_if_exists=False)
    wal = Log.open(wal_dir, options=wal_opts, env=env, lock=False, keep=keep)
    return check_wal_bounds(env, path, opts, state, wal) or missing


@contextmanager
def read_wal(env: Env, path: str, opts: Options, state: ManifestState) -> Iterator[tuple[Log | None, bool]]:
    """``(the store's WAL opened read-only, whether records the manifest needs are
    missing)`` for the checks and the replay a writer's open makes before it changes
    anything: a read-only open of a log changes nothing on disk, a writer's cuts and
    syncs.  The log is None when ``wal/`` is missing (CorruptionError unless the options
    skip missing records); it is closed on leaving."""
    wal_dir = f"{path}/wal"
    if not env.exists(wal_dir):
        yield None, missing_records(opts, "the WAL directory is missing", wal_dir)
        return
    wal_opts = opts.replace(read_only=True, create_if_missing=False, error_if_exists=False,
                            max_open_files=None)  # (the tables' cap: a writer's option only)
    wal = Log.open(wal_dir, options=wal_opts, env=env, lock=False)
    try:
        yield wal, check_wal_bounds(env, path, opts, state, wal)
    finally:
        wal.close()


def check_wal_bounds(env: Env, path: str, opts: Options, state: ManifestState, wal: Log) -> bool:
    """Check that ``wal`` holds every record the manifest still needs; returns whether
    some were missing (skipped, as the options allow).  A manifest that lost edits is
    CorruptionError naming it, whatever the options (:func:`lost_manifest_edits`)."""
    if wal.first_seq > state.wal_seq:
        manifest_path = f"{path}/{Manifest.current_name(env, path)}"
        lost = lost_manifest_edits(env, path, state, manifest_path, wal.first_seq)
        if lost is not None:
            raise lost
    return _check_wal_start(wal, opts, state, f"{path}/wal")


def lost_manifest_edits(env: Env, path: str, state: ManifestState, manifest_path: str,
                        wal_first_seq: int) -> CorruptionError | None:
    """The WAL starts at ``wal_first_seq``, after the manifest's ``wal_seq``: the error
    naming the manifest when it, not the WAL, lost something -- it ends in a cut record
    (a crash never leaves that before a WAL cut: every edit is synced before the WAL
    segments it retires are removed), or table files exist that no edit names (the
    edits naming them, whose records the WAL no longer holds, are gone).  None when
    neither is so: the WAL itself lost segments."""
    needs = f"the WAL starts at seq {wal_first_seq} where the manifest's last complete edit " \
            f"needs seq {state.wal_seq}"
    repair = f"run `banyanstore repair {path}` to rebuild it from the tables and the WAL"
    if state.torn_tail:
        return CorruptionError(
            f"the manifest ends with a cut record at offset {state.edits_end} and {needs}: the "
            "manifest lost edits (a crash does not do this: edits are synced before the WAL is "
            f"truncated); {repair}", path=manifest_path, offset=state.edits_end)
    unnamed = unnamed_tables(env, path, state)
    if not unnamed:
        return None
    names = ", ".join(f"{n:06d}.sst" for n in unnamed)
    return CorruptionError(
        f"the manifest's edits end at offset {state.edits_end} and {needs}, while table(s) "
        f"{names} are named by no edit: the manifest lost the edits naming them (or the WAL "
        f"lost segments), and they may hold records the WAL no longer has; {repair}",
        path=manifest_path, offset=state.edits_end)


def unnamed_tables(env: Env, path: str, state: ManifestState, *, removed: bool = False) -> list[int]:
    """The numbers of the table files in ``tables/`` that no applied edit names (live)
    or -- unless ``removed`` -- removed (obsolete)."""
    tdir = f"{path}/tables"
    live = state.live_files()
    return sorted(n for name in (env.listdir(tdir) if env.exists(tdir) else [])
                  if (m := TABLE_NAME.match(name)) and (n := int(m.group(1))) not in live
                  and (removed or n not in state.obsolete))


def missing_table_hint(env: Env, path: str, state: ManifestState) -> str:
    """What to add to "table named by the manifest is missing" when the manifest looks
    cut short: a merge's inputs are removed only after its edit is durable, so a lost
    merge edit leaves the manifest naming them.  Empty when nothing says so."""
    if state.torn_tail:
        why = f"the manifest ends with a cut record at offset {state.edits_end}"
    elif unnamed := unnamed_tables(env, path, state, removed=True):
        why = f"table(s) {', '.join(f'{n:06d}.sst' for n in unnamed)} are named by no edit"
    else:
        return ""
    return (f" ({why}: the manifest may have lost the edit that replaced this table; run "
            f"`banyanstore repair {path}` to rebuild it from the tables and the WAL)")


def _check_wal_start(wal: Log, opts: Options, state: ManifestState, wal_dir: str) -> bool:
    # Rotation makes the segment starting at a flush's wal_seq durable before the edit is
    # written, and truncation removes only older segments: first_seq <= wal_seq <= last_seq + 1.
    missing = False
    if wal.first_seq > state.wal_seq:
        missing = missing_records(opts, f"the WAL starts at seq {wal.first_seq}, but the manifest "
                                  f"needs records from seq {state.wal_seq}", wal_dir)
    if state.wal_seq > wal.last_seq + 1:
        missing = missing_records(opts, f"the WAL ends at seq {wal.last_seq}, before seq "
                                  f"{state.wal_seq} where the manifest says replay starts", wal_dir)
        state.wal_seq = wal.last_seq + 1  # continue from where the log now is
    return missing


def check_orphans(env: Env, path: str, state: ManifestState, *, wal_incomplete: bool = False) -> None:
    """For a writer open, before anything is changed: every table file no edit names must
    be a provable leftover (see the module docstring), else CorruptionError pointing at
    ``banyanstore repair``.  The leftovers join ``state.obsolete``, so the manifest the
    open writes still lists them until :func:`remove_orphans` has removed them.

    ``wal_incomplete``: the WAL lacks records the manifest needs (skipped by
    ``wal_recovery="skip_missing"``).  An unfinished output's writes are in the WAL only
    when it holds them, so then a table numbered as unfinished is no provable leftover
    either: it may be a flush whose edit was lost, the only copy of its writes."""
    tdir = f"{path}/tables"
    has_tables = env.exists(tdir)
    if has_tables:
        # An unlink is durable only once its directory is synced: a table an earlier
        # process removed (a failed build's output, a merge input) could come back after
        # a power loss -- below the numbers the manifest this open writes hands out, so
        # unexplained.  Make the directory as it is now the one a crash leaves.
        env.sync_dir(tdir)
    live = state.live_files()
    orphans = [n for name in (env.listdir(tdir) if has_tables else [])
               if (m := TABLE_NAME.match(name)) and (n := int(m.group(1))) not in live]
    unexplained = sorted(n for n in orphans if state.unexplained(n)
                         or (wal_incomplete and n not in state.obsolete))
    if unexplained:
        names = ", ".join(f"{n:06d}.sst" for n in unexplained)
        why = ("the WAL lacks records the manifest needs, so they may hold the only copy of "
               "writes it flushed" if wal_incomplete else "their numbers were handed out before "
               "the manifest's last edit and no edit removed them")
        raise CorruptionError(
            f"table(s) {names} are named by no manifest edit, but {why}: an edit naming them "
            f"may have been lost.  Refusing to delete them; run `banyanstore repair {path}`",
            path=f"{tdir}/{unexplained[0]:06d}.sst")
    state.obsolete.update(orphans)


def open_tables(env: Env, path: str, state: ManifestState,
                open_table: Callable[[str], TableReader]) -> dict[int, list[Any]]:
    """Open every live table with ``open_table`` (the store's: Tree.open_table); per
    keyspace, newest (highest versions) first."""
    out: dict[int, list[Any]] = {}
    opened: list[TableReader] = []
    try:
        for ks_id, tables in state.tables.items():
            readers = []
            for info in tables.values():
                tpath = f"{path}/tables/{info.file_no:06d}.sst"
                try:
                    size = env.file_size(tpath)
                except FileNotFoundError as exc:
                    raise CorruptionError("table named by the manifest is missing"
                                          + missing_table_hint(env, path, state), path=tpath) from exc
                if size != info.file_size:
                    raise CorruptionError(f"table is {size} bytes, the manifest says "
                                          f"{info.file_size}", path=tpath)
                reader = open_table(tpath)
                opened.append(reader)
                check_table(reader, info, tpath)
                reader.file_no = info.file_no
                readers.append(reader)
            readers.sort(key=lambda r: r.max_version, reverse=True)
            out[ks_id] = readers
    except BaseException:
        for reader in opened:  # now, not when the exception's traceback is collected
            reader.close()
        raise
    return out


def check_table(reader: TableReader, info: TableInfo, tpath: str) -> None:
    """CorruptionError if the table's own properties (key range, versions, entries) are
    not what the manifest recorded of it when it was written (both come from the same
    TableMeta): another table's file under its name -- one of the same size, which the
    size check cannot tell -- would otherwise serve that table's values as this one's."""
    found = info.differences(reader.meta)
    if found:
        what, mine, said = found[0]
        raise CorruptionError(f"table's {what} is {mine!r}, the manifest says {said!r}: not "
                              "the table the manifest names", path=tpath)


def remove_orphans(env: Env, path: str, state: ManifestState) -> list[str]:
    """Remove the leftover tables :func:`check_orphans` accepted (``state.obsolete``) and
    stale temporary/manifest files.  REQUIRES: the manifest describing ``state`` is durable."""
    live = state.live_files()
    removed = []
    tdir = f"{path}/tables"
    for name in env.listdir(tdir) if env.exists(tdir) else []:
        m = TABLE_NAME.match(name)
        n = int(m.group(1)) if m else None
        if (n is not None and n not in live and n in state.obsolete) or name.endswith(".tmp"):
            env.remove(f"{tdir}/{name}")
            removed.append(f"{tdir}/{name}")
    if removed:
        env.sync_dir(tdir)  # gone for good before a later manifest stops listing them
    state.obsolete.clear()  # every one is gone now (a failed remove or sync raised)
    current = Manifest.current_name(env, path) if env.exists(f"{path}/CURRENT") else None
    for name in env.listdir(path):
        if (is_manifest_name(name) and name != current) or name == "CURRENT.tmp":
            env.remove(f"{path}/{name}")
            removed.append(f"{path}/{name}")
    if removed:
        logger.info("removed %d unreferenced files: %s", len(removed), ", ".join(removed))
    return removed


def replay_wal(tree: Tree, wal: Log, opts: Options, state: ManifestState) -> tuple[int, int]:
    """Rebuild ``tree``'s memtables from WAL records newer than ``flushed_version``.
    Returns the number of records applied and the bytes they added to memtables."""
    applied = mem_bytes = 0
    start = max(state.wal_seq, wal.first_seq)
    if start > wal.last_seq:
        return 0, 0
    floor = state.flushed_version
    where = f"{tree.path}/wal"
    expected = start
    gaps_allowed = opts.skip_damaged_records  # the Log skipped damaged records
    previous = 0  # the version of the record before
    for seq, record in wal.read(start, check_gaps=False):
        if seq != expected and not gaps_allowed:
            missing_records(opts, f"WAL records {expected}..{seq - 1} are missing (a segment "
                     "was removed or lost)", where)
        expected = seq + 1
        version, ms, ops, ranges = decode(record, f"{where} (record {seq})")
        check_version_order(version, previous, f"{where} (record {seq})")
        previous = version
        if version <= floor:
            continue
        for ks_id, key, value in ops:
            ks = tree.keyspace_by_id(ks_id)
            if ks is None:
                if ks_id in state.dropped:
                    continue  # written before the keyspace was dropped
                raise CorruptionError(f"WAL record {seq} writes to unknown keyspace {ks_id}",
                                      path=where)
            mem_bytes += ks.view.mem.add(key, version, value)
        for ks_id, lo, hi in ranges:
            ks = tree.keyspace_by_id(ks_id)
            if ks is None:
                if ks_id in state.dropped:
                    continue  # written before the keyspace was dropped
                raise CorruptionError(f"WAL record {seq} deletes a range of unknown keyspace "
                                      f"{ks_id}", path=where)
            mem_bytes += ks.view.mem.add_range(lo, hi, version)
        if version > tree.version:
            tree.publish_version(version)  # one writer: the open itself
        tree.note_time(version, ms)
        applied += 1
    if applied:
        logger.info("replayed %d WAL records up to version %d", applied, tree.version)
    return applied, mem_bytes
