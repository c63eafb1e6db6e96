"""Size-tiered compaction, off the caller's thread.

Policy (per keyspace): tables are ordered by version range, newest first, and
only *adjacent* tables are merged, so version ranges stay disjoint (the read
path and scans rely on it).  A window of ``compaction_min_width`` ..
``compaction_max_width`` adjacent tables is eligible when its total size is at
least ``compaction_size_ratio`` x its largest table (BanyanDB: output >= 1.7 x
the largest input), so a big table is not rewritten to absorb a small one;
among eligible windows the one with the most tables per byte wins.  When a
keyspace has ``max_tables_before_slowdown`` tables or more, the cheapest
window of maximal width is merged regardless of the ratio, which bounds the
tables a point read may consult.  Tables entirely past their TTL are dropped
from the manifest without being read.

Reads make merges due too (LevelDB's seek compaction, by keyspace): every scan or seek
positions each table, so each table past the first costs it a block read that one table
would not, and a get that reaches several tables probes each one's filter (and reads a
block where a filter errs or the key is in an older table); ``View.read_charge`` counts
those -- a table past the first per scan or seek, one per get when there are several
tables, as LevelDB charges a get that consults more than one file -- while the
keyspace's view stands. Once it reaches :func:`read_allowance` of the keyspace's tables
(one per ``READ_CHARGE_BYTES`` of them, as LevelDB allows a file one seek per 16 KiB
before compacting it; at least ``READ_CHARGE_MIN``), the cheapest window of two or more
tables is merged regardless of the width and ratio rules. A new view (a memtable switch,
a flush, a merge) starts the charge again, so only reads between two changes of the
keyspace count: a keyspace that is read more than it is written ends in one table
without an explicit ``compact()`` (the size rules alone leave up to
``compaction_min_width`` - 1 tables, or a big one beside small ones, for ever), while
under steady writes (a flush every few seconds) a big table is not rewritten for every
small one the flushes add. A merge so rewrites at most 16 KiB per charge the reads
already paid.

Closing: :meth:`Compactor.stop` cancels a merge in flight instead of waiting for it (the
worker process is killed, or the thread's merge stops at its next chunk) and removes
its partial output, as LevelDB does at close; the merge is not lost: the inputs stay
live, and a store opened with ``compaction=True`` picks due merges as its compactor
starts.  So ``close()`` is prompt, and the tables it leaves do not depend on whether a
merge happened to finish first.

Failure handling: a merge checks free disk for its worst case (the inputs'
size) first; a failing merge removes its partial output and is retried with
back-off; an input involved in ``merge_max_failures`` consecutive failures
(other than a full disk) is quarantined -- kept live and readable, never
merged again in this process -- and reported in ``stats()``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..errors import BanyanStoreError, DiskFullError, StorageIOError, StoreClosedError
from .background import BackgroundThread
from .manifest import TableInfo
from .merge import MergeSpec, build_merged, merged_origin, run_merge
from .tree import Change, Tree, table_path
from .view import KeyspaceState, View
from .workers import WorkerPools, offload

__all__ = ["Compactor", "overlaps", "pick_window", "read_allowance"]

logger = logging.getLogger("banyanstore.compaction")
BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
READ_CHARGE_BYTES = 16 * 1024  # table bytes a merge may rewrite per charge (View.read_charge)
READ_CHARGE_MIN = 1000


def read_allowance(table_sizes: list[int]) -> int:
    """How much reads may pay for many tables (``View.read_charge``) before a merge of
    the keyspace's tables is due.

    >>> read_allowance([64 << 20, 16 << 20])  # 80 MiB: 5,120
    5120
    >>> read_allowance([4096, 4096])
    1000
    """
    return max(READ_CHARGE_MIN, sum(table_sizes) // READ_CHARGE_BYTES)


def pick_window(sizes: list[int], blocked: list[bool], min_w: int, max_w: int, ratio: float,
                force: bool) -> tuple[int, int] | None:
    """``(start, end)`` of the adjacent tables to merge, or None.

    >>> pick_window([10, 10, 10, 10, 1000], [False] * 5, 4, 8, 1.7, False)
    (0, 4)
    >>> pick_window([1000, 10, 10], [False] * 3, 2, 8, 1.7, False)
    (1, 3)
    """
    best: tuple[float, int, int] | None = None
    n = len(sizes)
    for i in range(n):
        total, biggest = 0, 0
        for j in range(i, min(n, i + max_w)):
            if blocked[j]:
                break
            total += sizes[j]
            biggest = max(biggest, sizes[j])
            width = j - i + 1
            if width < min_w:
                continue
            if force or total >= ratio * biggest:
                score = width / max(total, 1)
                if best is None or score > best[0]:
                    best = (score, i, j + 1)
    return None if best is None else (best[1], best[2])


def overlaps(table: Any, start: bytes | None, end: bytes | None) -> bool:
    """Whether ``table`` holds a key of ``[start, end)`` (None: unbounded): an entry, or a
    range tombstone covering one -- what a tombstone hides is reclaimed only by a merge
    that takes its table, so compact() of a deleted range must take it too.  An empty
    range (``end <= start``) holds no key: no table overlaps it, however wide the table."""
    if start is not None and end is not None and end <= start:
        return False

    def meets(lo: bytes, ends_before_start: bool) -> bool:
        return not ends_before_start and (end is None or lo < end)
    return (meets(table.smallest_key, start is not None and table.largest_key < start)
            or any(meets(lo, start is not None and hi <= start)
                   for lo, hi, _v in table.range_dels))


class Compactor(BackgroundThread):
    """Picks and runs merges; one at a time per store."""

    thread_name = "banyanstore-compact"

    def __init__(self, tree: Tree, workers: WorkerPools) -> None:
        self._tree = tree
        self._workers = workers
        super().__init__()
        self._merge_lock = threading.RLock()  # one merge (pick + run + install) at a time
        self._failures: dict[int, int] = {}  # file_no -> consecutive failed merges
        self.quarantined: set[int] = set()
        self.error: BaseException | None = None
        self.error_at = 0.0  # time.monotonic() of the last failure
        self.merges = 0
        # merges begun: finished (merges), failed, cancelled by close, or running now
        self.merges_started = 0
        self.failed_merges = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.tables_dropped_by_ttl = 0
        self.read_merges = 0  # merges made due by reads (read_charge)
        self.entries_in = 0
        self.entries_out = 0

    # -- thread ----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_START
        while not self._stopping:
            try:
                worked = self.step()
                backoff = BACKOFF_START
            except Exception as exc:  # noqa: BLE001 - a merge failure must not kill the thread
                if self._stopping:
                    break  # a merge cancelled by stop(): not a failure
                self.error = exc
                self.error_at = time.monotonic()
                logger.error("merge failed, retrying in %.1fs: %s", backoff, exc)
                worked = False
                with self._cv:
                    self._cv.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if not worked:
                with self._cv:
                    if not self._stopping:
                        self._cv.wait(1.0)

    def stop(self) -> None:
        """Stop the thread without waiting for a merge in flight: it is cancelled (see
        the module docstring), and so is an explicit compact() running meanwhile (it
        raises StoreClosedError).  Later merges raise StoreClosedError."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._workers.cancel("merge")
        super().stop()
        with self._merge_lock:  # a merge on another thread (compact()) has unwound
            pass

    def cancelled(self) -> bool:
        """Whether merges must stop (asked between chunks by a merge on this thread)."""
        return self._stopping

    def can_relieve(self, limit: int) -> bool:
        """Whether a merge may still take a table from a keyspace with ``limit`` tables or
        more: one of them has two adjacent tables outside quarantine (quarantined tables
        are never merged again, so a writer waiting for them would wait for ever)."""
        return any(len(ks.view.tables) >= limit and self._has_mergeable_pair(ks.view.tables)
                   for ks in self._tree.keyspaces())

    def _has_mergeable_pair(self, tables: tuple[Any, ...]) -> bool:
        free = [getattr(t, "file_no", -1) not in self.quarantined for t in tables]
        return any(a and b for a, b in zip(free, free[1:], strict=False))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No merge runs (or installs) while this is held: for a change of the tree a
        merge must not race, such as dropping a keyspace (Store.drop_keyspace)."""
        with self._merge_lock:
            yield

    # -- one round -------------------------------------------------------------------
    def step(self) -> bool:
        """Drop expired tables, then run at most one merge.  True if it did work."""
        with self._merge_lock:
            return self._step()

    def _step(self) -> bool:
        tree, opts = self._tree, self._tree.options
        did = False
        for ks in tree.keyspaces():
            did |= self._drop_expired(ks)
        for ks in tree.keyspaces():
            tables = ks.view.tables
            if len(tables) < 2:
                continue
            sizes = [t.file_size for t in tables]
            blocked = [getattr(t, "file_no", -1) in self.quarantined for t in tables]
            window = None
            force = len(tables) >= opts.max_tables_before_slowdown
            if len(tables) >= opts.compaction_min_width:
                window = pick_window(sizes, blocked, opts.compaction_min_width,
                                     opts.compaction_max_width, opts.compaction_size_ratio, force)
            if window is None and force:
                # Writers are held back: any two adjacent tables beat none (a min width
                # above the stall limit, or quarantine cutting the runs short, would
                # leave them stalled for ever; see Compactor.can_relieve).
                window = pick_window(sizes, blocked, 2, max(2, opts.compaction_max_width),
                                     opts.compaction_size_ratio, True)
            read_made = False
            if window is None and ks.view.read_charge >= read_allowance(sizes):
                window = pick_window(sizes, blocked, 2, max(2, opts.compaction_max_width),
                                     opts.compaction_size_ratio, True)
                read_made = window is not None
            if window is not None:
                self.merge(ks, tables[window[0]:window[1]])
                if read_made:  # counted once done: a failed attempt is retried
                    self.read_merges += 1
                return True
        return did

    def _drop_expired(self, ks: KeyspaceState) -> bool:
        if ks.ttl is None:
            return False
        tree = self._tree
        floor = tree.ttl_floor(ks, tree.version)
        expired = tuple(t for t in ks.view.tables if t.max_version < floor)
        if not expired:
            return False
        gone = {id(t) for t in expired}

        def drop(old: View) -> View:
            return View(old.mem, old.imms, tuple(t for t in old.tables if id(t) not in gone))
        tree.apply(Change(edit={"remove_tables": [[ks.id, t.file_no] for t in expired]},
                          views={ks.id: drop}, dropped=expired))
        self.tables_dropped_by_ttl += len(expired)
        logger.info("dropped %d tables of keyspace %r past their TTL", len(expired), ks.name)
        return True

    def _spec(self, ks: KeyspaceState, inputs: tuple[Any, ...]) -> MergeSpec:
        floors = self._tree.floors(ks)
        bottom = ks.view.tables[-1] is inputs[-1]
        return MergeSpec(floors.history, floors.pinned, floors.ttl, bottom,
                         merged_origin(ks.id, ks.name, inputs, floors.history))

    def merge(self, ks: KeyspaceState, inputs: tuple[Any, ...]) -> TableInfo | None:
        """Merge adjacent ``inputs`` (newest first) of ``ks`` into one table."""
        tree = self._tree
        with self._merge_lock:
            self.merges_started += 1
            need = sum(t.file_size for t in inputs)
            free = tree.env.free_space(tree.path)
            if free < need:
                full = DiskFullError(f"merge of {len(inputs)} tables needs up to {need} bytes, "
                                     f"{free} are free on {tree.path}", path=tree.path,
                                     op="merge", errno=errno.ENOSPC)
                # Like every DiskFullError, it carries the OSError a write would have got.
                full.__cause__ = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tree.path)
                self._note_failure(inputs, full)  # count it in stats (never quarantines)
                raise full
            spec = self._spec(ks, inputs)
            file_no = tree.allocate_file_no()
            out_path = table_path(tree.path, file_no)
            try:
                meta = self._build(inputs, out_path, spec)
                reader = None
                if meta is not None:
                    tree.env.sync_dir(f"{tree.path}/tables")
                    reader = tree.open_table(out_path)
                    reader.file_no = file_no
            except BaseException as exc:
                self._remove_quietly(out_path)
                if self._stopping:  # cancelled by stop(): the inputs are not at fault
                    if isinstance(exc, StoreClosedError):
                        raise
                    raise StoreClosedError(f"merge of {len(inputs)} tables cancelled: store "
                                           f"{tree.path} is closing") from exc
                self._note_failure(inputs, exc)
                raise
            info = None
            if meta is not None:
                info = TableInfo(ks.id, file_no, meta.file_size, meta.smallest_key, meta.largest_key,
                                 meta.min_version, meta.max_version, meta.entry_count,
                                 meta.tombstone_count)
            self._install(ks, inputs, reader, info, spec.floor)
            for t in inputs:
                self._failures.pop(getattr(t, "file_no", -1), None)
            self.merges += 1
            self.error = None
            self.bytes_read += need
            self.bytes_written += meta.file_size if meta is not None else 0
            self.entries_in += sum(t.meta.entry_count for t in inputs)
            self.entries_out += meta.entry_count if meta is not None else 0
            return info

    def _build(self, inputs: tuple[Any, ...], out_path: str, spec: MergeSpec) -> Any:
        tree = self._tree
        if offload(tree.options, tree.env):
            paths = [table_path(tree.path, t.file_no) for t in inputs]
            return self._workers.submit("merge", run_merge, paths, out_path, tree.table_options,
                                        spec)
        return build_merged(tree.env, inputs, out_path, tree.table_options, spec, self.cancelled)

    def _install(self, ks: KeyspaceState, inputs: tuple[Any, ...], reader: Any,
                 info: TableInfo | None, floor: int) -> None:
        edit: dict[str, Any] = {"remove_tables": [[ks.id, t.file_no] for t in inputs],
                                "history_floor": floor}
        if info is not None:
            edit["add_tables"] = [info.to_json()]

        def replace(old: View) -> View:
            tables = list(old.tables)
            i = next(k for k, t in enumerate(tables) if t is inputs[0])
            # REQUIRES (held by _merge_lock): inputs are still adjacent in the view
            assert all(a is b for a, b in zip(tables[i:i + len(inputs)], inputs, strict=True))
            tables[i:i + len(inputs)] = [reader] if reader is not None else []
            return View(old.mem, old.imms, tuple(tables))
        self._tree.apply(Change(edit=edit, added=[] if info is None else [(info, reader)],
                                views={ks.id: replace}, dropped=inputs, history_floor=floor))

    def _remove_quietly(self, path: str) -> None:
        try:
            self._tree.env.remove(path)
        except FileNotFoundError:
            pass
        except (BanyanStoreError, OSError) as exc:
            logger.warning("could not remove %s: %s", path, exc)

    def _note_failure(self, inputs: tuple[Any, ...], exc: BaseException) -> None:
        """A merge failed, background or explicit: count it, keep it for stats(), and
        quarantine inputs that failed too often."""
        self.failed_merges += 1
        self.error = exc
        self.error_at = time.monotonic()
        if isinstance(exc, DiskFullError):
            return  # not the inputs' fault: retry when space returns
        for t in inputs:
            n = self._failures.get(t.file_no, 0) + 1
            self._failures[t.file_no] = n
            if n >= self._tree.options.merge_max_failures and t.file_no not in self.quarantined:
                self.quarantined.add(t.file_no)
                logger.error("table %06d quarantined after %d failed merges (last: %s); it stays "
                             "readable but is not merged again", t.file_no, n, exc)

    # -- explicit compaction ----------------------------------------------------------
    def compact_all(self, ks: KeyspaceState | None, *, start: bytes | None = None,
                    end: bytes | None = None, progress: Any = None) -> dict[str, Any]:
        """Merge each keyspace's (non-quarantined) tables overlapping ``[start, end)``
        into one; ``progress(info_dict)`` is called after each merge."""
        with self._merge_lock:
            return self._compact_all(ks, start, end, progress)

    def _compact_all(self, ks: KeyspaceState | None, start: bytes | None, end: bytes | None,
                     progress: Any) -> dict[str, Any]:
        tree = self._tree
        targets = [ks] if ks is not None else tree.keyspaces()
        summary: dict[str, Any] = {"merges": 0, "tables_before": 0, "tables_after": 0}
        for k in targets:
            self._raise_if_stopping()
            summary["tables_before"] += len(k.view.tables)  # the expired ones dropped next too
            self._drop_expired(k)
            tables = k.view.tables
            for run in self._runs(tables, start, end):
                self._raise_if_stopping()
                if len(run) > 1 or self._reclaimable(k, run[0]):
                    self._merge_outliving_worker_death(k, run)
                    summary["merges"] += 1
                    if progress is not None:
                        progress({"keyspace": k.name, "merged_tables": len(run),
                                  "tables_now": len(k.view.tables)})
            summary["tables_after"] += len(k.view.tables)
        self._raise_if_stopping()  # else the summary would count a closed store's views
        return summary

    def _merge_outliving_worker_death(self, ks: KeyspaceState, inputs: tuple[Any, ...]) -> None:
        """merge(), tried once more when its worker process died under it -- killed from
        outside (the OOM killer, an operator), as a flush is retried; a second death in
        a row is raised.  The first death still counts toward quarantine."""
        try:
            self.merge(ks, inputs)
            return
        except StorageIOError as exc:
            if exc.op != "worker" or self._stopping:
                raise
            logger.warning("merge worker died during compact(); trying once more: %s", exc)
        self.merge(ks, inputs)

    def _reclaimable(self, ks: KeyspaceState, table: Any) -> bool:
        """Whether merging ``table`` alone could drop something now: history below a
        floor that moved since it was written, versions or tombstones a closed snapshot
        kept, or entries past the keyspace's TTL.  (A floor at the latest version is no
        proof: the table may have been written while snapshots pinned older versions.)"""
        tree = self._tree
        if tree.history_floor < tree.version:
            return True
        floors = tree.floors(ks)
        meta = table.meta
        if meta.min_version < floors.ttl:
            return True
        if floors.pinned:
            return False  # what a live snapshot sees stays; the rest was dropped when written
        # Tombstones go only at the bottom and below the floor (one at it still hides).
        deletes = ((meta.tombstone_count > 0 or meta.range_del_count > 0)
                   and meta.max_version < floors.history and ks.view.tables[-1] is table)
        return meta.entry_count > meta.key_count or deletes

    def _raise_if_stopping(self) -> None:
        """StoreClosedError once :meth:`stop` began -- also where close() was called by
        compact()'s own progress callback, which the merge lock does not hold off."""
        if self._stopping:
            raise StoreClosedError(f"compaction of store {self._tree.path} cut short: the "
                                   "store is closing")

    def _runs(self, tables: tuple[Any, ...], start: bytes | None,
              end: bytes | None) -> list[tuple[Any, ...]]:
        """Maximal runs of adjacent, non-quarantined tables spanning the key range."""
        idx = [i for i, t in enumerate(tables) if overlaps(t, start, end)]
        if not idx:
            return []
        runs: list[tuple[Any, ...]] = []
        cur: list[Any] = []
        for t in tables[idx[0]:idx[-1] + 1]:
            if t.file_no in self.quarantined:
                if cur:
                    runs.append(tuple(cur))
                cur = []
            else:
                cur.append(t)
        if cur:
            runs.append(tuple(cur))
        return runs

    def stats(self) -> dict[str, Any]:
        return {"merges": self.merges, "merges_started": self.merges_started,
                "failed_merges": self.failed_merges,
                "bytes_read": self.bytes_read, "bytes_written": self.bytes_written,
                "entries_in": self.entries_in, "entries_out": self.entries_out,
                "reclaimed_entries": self.entries_in - self.entries_out,
                "tables_dropped_by_ttl": self.tables_dropped_by_ttl,
                "read_merges": self.read_merges,
                "quarantined": sorted(self.quarantined),
                "last_error": repr(self.error) if self.error else None,
                "mode": self._tree.options.compaction_mode}
