"""Salvage: how ``banyanstore repair`` rebuilds a store from its tables and its WAL when
the manifest cannot be used (missing, damaged, CURRENT unusable), when a table the
manifest names is missing or damaged, or when tables exist that no edit names and no
rule explains (docs/format/manifest.md, "Salvage").

What it reads:

* **tables** -- every ``tables/NNNNNN.sst``, checked block by block.  A format-2
  table records its keyspace and the versions it stands for (``TableOrigin`` in
  sstable/meta.py); a format-1 table's keyspace comes from a manifest that names it;
* **hints** -- every manifest file (``MANIFEST-*``, and those an earlier salvage
  moved to ``lost/``), replayed up to its first damaged edit: keyspace names, TTLs,
  the history floor, what its edits prove about write times, the keyspaces of
  format-1 tables;
* **the WAL** -- every intact record of every segment (each with its write time).

How it decides: per keyspace, tables are taken newest (highest file number) first,
skipping one whose covered versions overlap a table already taken -- a merge's output
covers its inputs' versions, so the output is kept and inputs a crash left behind are
set aside, while a damaged output leaves its inputs to stand in for it.  That order
trusts a file's number only while the file is the table its number stands for: a file
whose properties contradict what a manifest recorded for its number (another table's
data copied over it) is taken after every other table, and set aside when they hold its
versions.  WAL records whose versions no kept table of their keyspace covers are
written to new tables (one per gap between kept tables, so version ranges stay
disjoint).  Every table the manifest names must be accounted for: when its versions are
in no kept table and not in the WAL -- the file is missing or holds another table --
they are reported lost (a kept file that contradicts its number's record holds
them only if it is a copy of a table a manifest records: another store's table does not).
A damaged table whose versions no kept table overlaps is rescued block by block
(tools/rescue.py): a new table in its place holds the entries of its intact blocks and
the WAL records of its versions; each lost block is reported (older tables' versions of
its keys may show again, as after LevelDB's repair).  The new manifest names exactly the kept and the
new tables, and the store gets an empty WAL.

Write times (the time map behind TTLs and ``history_retention``, lsm/timemap.py): the
samples of lost manifest edits are gone, and a version the map cannot place would
count as written before every sample -- expired under any TTL.  So the new map dates
each version by an upper bound on its write time that the surviving edits and WAL
records prove (``_TimeChain``, ``_wal_bounds``, ``_time_samples``), and a version nothing
bounds as written when the salvage runs: entries expire late, never early, and the report says
which versions were dated so.

What it never does is delete: damaged, superseded and unplaceable tables, every old
manifest, CURRENT and the old WAL are moved to ``lost/<UTC time>/``.  The result lists
what could not be recovered -- each file with its keyspace, key range and versions,
damaged or missing WAL records -- and what was set aside without loss; the losses are
also kept in ``lost/<UTC time>/NOT-RECOVERED.txt`` before anything changes.

Crash safety: a crash part-way leaves a store that a second ``repair`` salvages the
same way.  New tables are durable before anything moves; the old WAL's segments move
aside only after them (they hold its records, and a later salvage skips what they
cover), newest first, leaving ``wal/`` in place; old manifests move before the new one
is written, which is complete before CURRENT names it (``Manifest.create``).  A store
left with ``tables/`` and ``lost/`` but no CURRENT or manifest is still taken for a
store, so the second ``repair`` can finish it.
"""

from __future__ import annotations

import bisect
import errno
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from ..errors import CorruptionError, StorageIOError
from ..lsm.edits import EditError, ManifestState, TableInfo, expand_snapshot
from ..lsm.manifest import FILE_HEADER, Manifest, walk_manifest
from ..lsm.wal import decode
from ..options import Options, table_options
from ..sstable.builder import TableBuilder
from ..sstable.meta import TableMeta, TableOrigin
from ..sstable.reader import TableReader
from .common import SEGMENT_NAME, TABLE_NAME, Report, make_env, show_bytes
from .rescue import Rescued, rescue_table
from .tables import disagreements, verify_table
from .verify_log import verify_log_dir

__all__ = ["Loss", "Salvaged", "Hints", "read_hints", "salvage"]

LOST_DIR = "lost"
MANIFEST_NAME = re.compile(r"^MANIFEST-(\d{6,})$")


@dataclass
class Loss:
    """Something salvage could not recover, said as precisely as the files allow."""

    what: str  # a file (where it was) or a WAL place
    why: str
    keyspace: str | None = None
    keys: tuple[bytes, bytes] | None = None
    versions: tuple[int, int] | None = None
    moved_to: str | None = None

    def __str__(self) -> str:
        parts = [self.what]
        if self.keyspace is not None:
            parts.append(f"keyspace {self.keyspace!r}")
        if self.keys is not None:
            parts.append(f"keys {show_bytes(self.keys[0])!r}..{show_bytes(self.keys[1])!r}")
        if self.versions is not None:
            parts.append(f"versions {self.versions[0]}..{self.versions[1]}")
        moved = f" (moved to {self.moved_to})" if self.moved_to else ""
        return f"{', '.join(parts)}: {self.why}{moved}"

    def to_json(self, show: Callable[[bytes], str] = show_bytes) -> dict[str, Any]:
        """As JSON; ``show`` writes the keys (the command passes its base64/hex encoder)."""
        return {"what": self.what, "why": self.why, "keyspace": self.keyspace,
                "keys": None if self.keys is None else [show(k) for k in self.keys],
                "versions": None if self.versions is None else list(self.versions),
                "moved_to": self.moved_to}


@dataclass
class Salvaged:
    """What a salvage did (``done``) and could not recover (``lost``)."""

    done: list[str] = field(default_factory=list)
    lost: list[Loss] = field(default_factory=list)


# -- hints from manifests ----------------------------------------------------------------------

@dataclass
class Hints:
    """What the manifest files still say, damaged or not."""

    state: ManifestState | None = None  # the best manifest's replay (maybe up to damage)
    source: str | None = None
    complete: bool = False  # whether that manifest replayed to its end
    names: dict[int, str] = field(default_factory=dict)  # keyspace names, any manifest
    dropped: set[int] = field(default_factory=set)  # keyspace ids any manifest dropped
    table_info: dict[int, TableInfo] = field(default_factory=dict)  # live in any manifest
    numbers: set[int] = field(default_factory=set)  # manifest file numbers seen
    times: list[tuple[int, int]] = field(default_factory=list)  # write-time bounds, any manifest


@dataclass
class _TimeChain:
    """What one manifest's edits, walked in order, prove about write times: bounds
    ``(version, second)`` meaning "committed in ``second`` or earlier".

    Only a flush edit (and a manifest's first edit, the whole state) carries time
    samples: those noted since the last persisted one -- for every version up to its
    ``flushed_version``, noted as the version was written (lsm/writer.py).  Between two
    samples of one edit no second began, and so up to the edit's ``flushed_version``
    after its last sample at or below it.  Across edits this holds only when no flush
    edit between them is lost: the first version of a flush edit's tables is one past
    the previous flush's ``flushed_version`` exactly when that flush came right before
    it.  A manifest read only up to its damage, or missing an edit, so proves nothing
    for the versions after its last provable bound.
    """

    bounds: list[tuple[int, int]] = field(default_factory=list)
    last: tuple[int, int] | None = None  # the newest sample persisted, while the chain holds
    flushed: int | None = None  # the flushed_version of the last edit carrying samples

    def add(self, edit: dict[str, Any], first: bool) -> None:
        """Take one applied edit (``first``: the manifest's first, the whole state)."""
        raw, flushed = edit.get("time_map"), edit.get("flushed_version")
        if not isinstance(raw, list) or type(flushed) is not int:
            return  # not a flush: it persists no samples
        run = [(int(v), int(s)) for v, s in raw]
        self.bounds += run
        self.bounds += [(nxt[0] - 1, cur[1]) for cur, nxt in pairwise(run)]
        below = [p for p in run if p[0] <= flushed]
        if below:
            self.bounds.append((flushed, below[-1][1]))
        follows = not first and self.flushed is not None and _first_version(edit) == self.flushed + 1
        if follows and self.last is not None:  # the last persisted sample's second goes on
            self.bounds.append((run[0][0] - 1 if run else flushed, self.last[1]))
        if run:
            self.last = run[-1]
        elif not (first or follows):
            self.last = None
        self.flushed = flushed


def _first_version(edit: dict[str, Any]) -> int | None:
    """The oldest version among the tables a flush edit adds."""
    tables = edit.get("add_tables")
    versions = [t.get("min_v") for t in tables if isinstance(t, dict)] if isinstance(tables, list) else []
    return min((v for v in versions if type(v) is int), default=None)


def _replay_prefix(data: bytes, path: str) -> tuple[ManifestState | None, bool, list[tuple[int, int]]]:
    """The state of a manifest's edits up to its first damaged one; whether it got to
    the end; the write-time bounds those edits prove.  None if not even the first edit
    is usable."""
    state, applied, times = ManifestState(), 0, _TimeChain()
    try:
        for rec in walk_manifest(data, path):
            if rec.edit is None:
                break
            first = rec.offset == FILE_HEADER.size
            edits = expand_snapshot(rec.edit, state) if first else [rec.edit]
            for e in edits:
                state.apply(e)
            times.add(rec.edit, first)
            applied += 1
    except (CorruptionError, EditError):
        return (state if applied else None), False, times.bounds
    return (state if applied else None), True, times.bounds


def _manifest_paths(store: str) -> list[tuple[str, bool]]:
    """``(path, in the store directory)`` of every manifest file, old salvages' too."""
    out = [(os.path.join(store, n), True) for n in sorted(os.listdir(store)) if MANIFEST_NAME.match(n)]
    lost = os.path.join(store, LOST_DIR)
    for stamp in sorted(os.listdir(lost)) if os.path.isdir(lost) else []:
        d = os.path.join(lost, stamp)
        if os.path.isdir(d):
            out += [(os.path.join(d, n), False) for n in sorted(os.listdir(d)) if MANIFEST_NAME.match(n)]
    return [(p, in_store) for p, in_store in out if os.path.isfile(p)]  # a directory hints nothing


def read_hints(store: str, current: str | None) -> Hints:
    """Replay every manifest file as far as it goes; the best one (complete first, then
    in the store directory, then the one CURRENT names, then the newest) is ``state``."""
    hints = Hints()
    ranked: list[tuple[tuple[bool, bool, bool, int], str, ManifestState]] = []
    for path, in_store in _manifest_paths(store):
        m = MANIFEST_NAME.match(os.path.basename(path))
        assert m is not None
        number = int(m.group(1))
        hints.numbers.add(number)
        with open(path, "rb") as f:
            state, complete, times = _replay_prefix(f.read(), path)
        hints.times += times
        if state is None:
            continue
        ranked.append(((complete, in_store, os.path.basename(path) == current, number), path, state))
        for ks, name in state.keyspaces.items():
            hints.names.setdefault(ks, name)
        hints.dropped |= state.dropped
        for ts in state.tables.values():
            for n, info in ts.items():
                hints.table_info.setdefault(n, info)
    if ranked:
        (complete, *_rest), hints.source, hints.state = max(ranked, key=lambda r: r[0])
        hints.complete = complete
        hints.names.update(hints.state.keyspaces)
        for ts in hints.state.tables.values():
            hints.table_info.update(ts)
    return hints


# -- tables ----------------------------------------------------------------------------------------

@dataclass
class Found:
    """One table file and what is known about it."""

    file_no: int
    path: str
    meta: TableMeta | None  # None: its properties are unreadable
    problem: str | None  # the first damage found, None if intact
    keyspace: int | None
    covers: tuple[int, int] | None
    replaced: str | None = None  # how it contradicts the manifest's record of its number

    @property
    def origin_name(self) -> str | None:
        return self.meta.origin.keyspace_name if self.meta and self.meta.origin else None


def _examine(path: str, file_no: int, hints: Hints) -> Found:
    report = Report(path, "table")
    verify_table(path, report)
    errors = [p for p in report.problems if p.severity == "error"]
    problem = None if not errors else (
        f"{errors[0].message}" + (f" (offset {errors[0].offset})" if errors[0].offset is not None else ""))
    meta: TableMeta | None = None
    try:
        if os.path.isfile(path):  # (a directory in its place is damage verify_table reported)
            with TableReader.open(make_env(), path, None) as reader:
                meta = reader.meta
    except CorruptionError:
        pass
    info = hints.table_info.get(file_no)
    replaced = _replaced(meta, info)
    keyspace, covers = None, None
    if meta is not None and meta.origin is not None:
        keyspace, covers = meta.origin.keyspace, (meta.origin.covers_min, meta.origin.covers_max)
    elif info is not None and replaced is None:
        keyspace, covers = info.keyspace, (info.min_version, info.max_version)
    if covers is None and meta is not None:
        covers = (meta.min_version, meta.max_version)
    return Found(file_no, path, meta, problem, keyspace, covers, replaced)


def _replaced(meta: TableMeta | None, info: TableInfo | None) -> str | None:
    """How a readable table contradicts what a manifest recorded for its file number,
    or None.  File numbers are never reused, so a contradiction means the file holds
    another table's data (a copy over it), not the table its number stands for."""
    if meta is None or info is None:
        return None
    found = disagreements(meta, info)
    if meta.file_size != info.file_size:
        found.append(f"table is {meta.file_size} bytes, the manifest says {info.file_size}")
    return "; ".join(found[:2]) if found else None


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _uncovered(span: tuple[int, int], covers: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``span`` no range of ``covers`` includes."""
    out, lo = [], span[0]
    for a, b in sorted(covers):
        if b < lo or a > span[1]:
            continue
        if a > lo:
            out.append((lo, a - 1))
        lo = max(lo, b + 1)
    if lo <= span[1]:
        out.append((lo, span[1]))
    return out


class _Plan:
    """Everything a salvage decides before it changes anything."""

    def __init__(self, store: str, hints: Hints) -> None:
        self.store, self.hints = store, hints
        self.kept: dict[int, list[Found]] = {}
        self.aside: list[tuple[Found, str]] = []  # set aside without loss
        self.lost: list[Loss] = []
        self.names: dict[int, str] = {}
        self.notes: list[str] = []
        self.wal_entries: dict[int, list[tuple[bytes, int, bytes | None]]] = {}
        self.wal_ranges: dict[int, list[tuple[bytes, bytes, int]]] = {}  # range tombstones
        self.wal_records = 0
        self.wal_times: list[tuple[int, int]] = []  # (version, second): each second's first and last
        self.time_map: list[tuple[int, int]] = []  # the salvaged store's (date_versions)
        self.wal_spans: list[tuple[int, int]] = []  # runs of consecutive versions the WAL holds
        self.top_version = 0
        self.found: list[Found] = []
        self.rebuilds: list[tuple[Found, Found, Rescued]] = []  # (damaged, its stand-in, blocks)
        # WAL records the rebuilt tables cover, by keyspace: entries, range tombstones
        self.rebuild_wal: dict[int, list[tuple[bytes, int, bytes | None]]] = {}
        self.rebuild_wal_ranges: dict[int, list[tuple[bytes, bytes, int]]] = {}

    # -- tables ---------------------------------------------------------------------------
    def choose_tables(self) -> None:
        tdir = os.path.join(self.store, "tables")
        names = sorted(os.listdir(tdir)) if os.path.isdir(tdir) else []
        found = [_examine(os.path.join(tdir, n), int(m.group(1)), self.hints)
                 for n in names if (m := TABLE_NAME.match(n))]
        self.found = found
        candidates: dict[int, list[Found]] = {}
        for f in found:
            if f.keyspace is not None and f.keyspace in self.hints.dropped:
                self.aside.append((f, f"a table of keyspace {f.keyspace}, which was dropped "
                                      "(its files were not deleted yet)"))
                continue
            if f.problem is None and f.keyspace is not None and f.covers is not None:
                if self._named_only(f):
                    continue
                candidates.setdefault(f.keyspace, []).append(f)
        for ks, tables in candidates.items():
            kept = self.kept.setdefault(ks, [])
            # Newest first, as a merge's output outranks its inputs -- but a file that is
            # not the table its number stands for has no place in that order: last.
            for f in sorted(tables, key=lambda t: (t.replaced is None, t.file_no), reverse=True):
                self._take(f, kept)
        for f in found:
            if f.keyspace is not None and f.keyspace in self.hints.dropped:
                continue  # set aside above
            if f.problem is not None:
                self._damaged(f)
            elif f.keyspace is None:
                self.lost.append(self._loss(f, "a format-1 table (no origin) that no readable "
                                               "manifest names: its keyspace is unknown"))

    def _take(self, f: Found, kept: list[Found]) -> None:
        """Keep ``f`` unless the tables already kept (newer, and not contradicted by a
        manifest, unless ``f`` is) hold versions it stands for."""
        assert f.covers is not None
        newer = [k for k in kept if k.covers is not None and _overlaps(k.covers, f.covers)]
        if not newer:
            kept.append(f)
            return
        by = ", ".join(f"{k.file_no:06d}" for k in newer)
        gaps = _uncovered(f.covers, [k.covers for k in kept if k.covers is not None])
        if f.replaced is not None and not gaps:
            self.aside.append((f, f"not the table the manifest names under its number "
                                  f"({f.replaced}); the versions it holds, "
                                  f"{f.covers[0]}..{f.covers[1]}, are in table {by}"))
        elif not gaps:
            # Origins are laminar -- a table's covered versions hold or lie apart from
            # another's -- so a newer table covering these descends from this one.
            self.aside.append((f, f"superseded by table {by}, which covers its versions "
                                  "(a merge left its input behind)"))
        else:
            self.aside.append((f, f"overlaps newer table {by}"))
            for lo, hi in gaps:
                self.lost.append(self._loss(f, f"versions only this table held, but it "
                                               f"overlaps newer table {by}", (lo, hi)))

    def account_for_named(self) -> None:
        """Tables the best manifest names whose versions no kept table and no WAL record
        holds: their file is missing, or holds another table's data (a damaged one is
        reported as damaged).  REQUIRES: choose_tables and read_wal ran."""
        h = self.hints.state
        found = {f.file_no: f for f in self.found}
        for ks, ts in (h.tables.items() if h is not None else ()):
            if ks in self.hints.dropped:
                continue  # a manifest from before the drop: its tables are deleted on purpose
            held = [k.covers for k in self.kept.get(ks, []) if k.covers is not None and self._ours(k)]
            held += self.wal_spans
            for n, info in sorted(ts.items()):
                f = found.get(n)
                span = (info.min_version, info.max_version)
                if (f is not None and f.replaced is None) or not _uncovered(span, held):
                    continue
                why = ("named by the manifest, but missing" if f is None else
                       f"named by the manifest, but the file holds another table ({f.replaced}): "
                       "the table the manifest names is gone")
                self.lost.append(Loss(os.path.join(self.store, "tables", f"{n:06d}.sst"), why,
                                      self.keyspace_name(ks), (info.smallest, info.largest), span))

    def _ours(self, f: Found) -> bool:
        """Whether a kept table may stand for the versions of a table a manifest names:
        one that contradicts the record of its own number does only when it is a copy of
        another table a manifest records (properties and size alike) -- else it may be
        another store's table, whose values are not the ones written here."""
        if f.replaced is None:
            return True
        meta = f.meta
        return meta is not None and any(
            info.file_size == meta.file_size and not disagreements(meta, info)
            for n, info in self.hints.table_info.items() if n != f.file_no)

    def _named_only(self, f: Found) -> bool:
        """A format-1 table, when a complete manifest exists, counts only if it names it."""
        h = self.hints
        if f.meta is None or f.meta.origin is not None or not h.complete or h.state is None:
            return False
        if any(f.file_no in ts for ts in h.state.tables.values()):
            return False
        if h.state.unexplained(f.file_no):
            self.lost.append(self._loss(f, "a format-1 table the manifest does not name and cannot "
                                           "explain: its keyspace is unknown"))
        else:
            self.aside.append((f, "a leftover the manifest does not name (an unfinished output "
                                  "or a removed table)"))
        return True

    def _damaged(self, f: Found) -> None:
        h = self.hints.state
        if h is not None and f.file_no not in h.live_files() and not h.unexplained(f.file_no):
            self.aside.append((f, f"damaged ({f.problem}), a leftover the manifest does not name "
                                  "(an unfinished output or a removed table)"))
            return
        kept = [k.covers for k in self.kept.get(f.keyspace, []) if k.covers is not None] \
            if f.keyspace is not None else []
        if f.covers is not None and f.keyspace is not None and not _uncovered(f.covers, kept):
            self.aside.append((f, f"damaged ({f.problem}), but tables kept cover all its versions"))
            return
        why = self._why_not_rescued(f, kept)
        if why is None:
            assert f.covers is not None
            rescued = rescue_table(f.path, f.covers, self._bounds(f))
            if isinstance(rescued, Rescued):
                self._rebuild(f, rescued)
                return
            why = rescued
        self.lost.append(self._loss(f, f"damaged: {f.problem}; not rescued block by block: {why}"))

    @staticmethod
    def _why_not_rescued(f: Found, kept: list[tuple[int, int]]) -> str | None:
        """Why damaged ``f`` cannot stand for its versions in a table rebuilt from its
        blocks (the versions ``kept`` tables of its keyspace cover given), or None."""
        if f.covers is None or f.keyspace is None:
            return "its keyspace or versions are unknown"
        if f.replaced is not None:
            return f"it is not the table the manifest names under its number ({f.replaced})"
        if any(_overlaps(f.covers, c) for c in kept):
            return "it overlaps tables kept"
        return None

    def _bounds(self, f: Found) -> tuple[bytes, bytes] | None:
        info = self.hints.table_info.get(f.file_no)
        if f.meta is not None:
            return f.meta.smallest_key, f.meta.largest_key
        return (info.smallest, info.largest) if info is not None and f.replaced is None else None

    def _rebuild(self, f: Found, rescued: Rescued) -> None:
        """Keep the intact blocks of damaged ``f`` (written by _write_rebuilt, which puts
        the new table in ``f``'s place among the kept); report what is lost."""
        assert f.keyspace is not None and f.covers is not None
        stand_in = Found(f.file_no, f"{f.path} (rebuilt)", f.meta, None, f.keyspace, f.covers)
        self.kept.setdefault(f.keyspace, []).append(stand_in)
        self.rebuilds.append((f, stand_in, rescued))
        self.top_version = max(self.top_version, f.covers[1])  # dated, though no meta says so yet
        info = self.hints.table_info.get(f.file_no)
        meta = rescued.meta or f.meta
        total = meta.entry_count if meta is not None else (info.entries if info is not None else None)
        count = "" if total is None else \
            f" (the table lost {total - len(rescued.entries)} of its {total} entries in all)"
        for lost in rescued.lost:
            assert lost.first is not None and lost.last is not None  # (rescue_table fills them)
            self.lost.append(Loss(
                f.path, f"damaged: {lost.why}{count}; older tables' versions of these keys may "
                        "show again (the lost block may have held their newest value or a "
                        "tombstone)",
                self.keyspace_name(f.keyspace, f.origin_name), (lost.first, lost.last), f.covers))

    def _loss(self, f: Found, why: str, versions: tuple[int, int] | None = None) -> Loss:
        info = self.hints.table_info.get(f.file_no)
        keys = (f.meta.smallest_key, f.meta.largest_key) if f.meta is not None else (
            (info.smallest, info.largest) if info is not None else None)
        return Loss(f.path, why, self.keyspace_name(f.keyspace, f.origin_name), keys,
                    versions if versions is not None else f.covers)

    def keyspace_name(self, ks: int | None, origin_name: str | None = None) -> str | None:
        if ks is None:
            return None
        return self.names.get(ks) or origin_name or self.hints.names.get(ks) or f"keyspace-{ks}"

    def name_keyspaces(self) -> None:
        """Keyspace names: from the newest kept table's origin, else the manifests, else
        ``salvaged-<id>``; a name two ids claim goes to the first, the other gets a suffix."""
        ids = set(self.kept) | set(self.wal_entries) | set(self.wal_ranges) | {0}
        if self.hints.state is not None:
            ids |= set(self.hints.state.keyspaces)
        ids -= self.hints.dropped
        used: dict[str, int] = {}
        for ks in sorted(ids):
            origins = [f.origin_name for f in sorted(self.kept.get(ks, []), key=lambda t: -t.file_no)
                       if f.origin_name]
            name = "default" if ks == 0 else (origins[0] if origins else self.hints.names.get(ks))
            if name is None:
                name = f"salvaged-{ks}"
                self.notes.append(f"keyspace id {ks} is named by no table or manifest: called {name!r}")
            if name in used:
                fresh = f"{name}~{ks}"
                self.notes.append(f"keyspace ids {used[name]} and {ks} are both called {name!r}: "
                                  f"id {ks} is now {fresh!r}")
                name = fresh
            used[name] = ks
            self.names[ks] = name

    # -- the WAL ----------------------------------------------------------------------------
    def read_wal(self) -> None:
        wal = os.path.join(self.store, "wal")
        if not os.path.isdir(wal):
            self.lost.append(Loss(wal, "the WAL directory is missing: writes not yet in tables are lost"))
            return
        covers = {ks: sorted(k.covers for k in ts if k.covers is not None) for ks, ts in self.kept.items()}
        report = Report(wal, "log")

        def on_record(seq: int, data: bytes, seg: str, offset: int) -> None:
            try:
                version, ms, ops, ranges = decode(data, f"{seg} (record {seq})")
            except CorruptionError as exc:
                self.lost.append(Loss(f"{seg} @ offset {offset}", f"WAL record {seq} does not decode: {exc}"))
                return
            self.wal_records += 1
            self.top_version = max(self.top_version, version)
            spans = self.wal_spans
            if spans and spans[-1][1] + 1 == version:
                spans[-1] = (spans[-1][0], version)
            else:
                spans.append((version, version))
            self._note_time(version, ms // 1000)
            def held(ks: int) -> bool:  # whether a kept table holds this record's writes to ks
                spans = covers.get(ks, [])
                i = bisect.bisect_right(spans, (version, 1 << 64)) - 1
                return i >= 0 and spans[i][0] <= version <= spans[i][1]

            for ks, key, value in ops:  # (a dropped keyspace's writes predate its drop)
                if ks not in self.hints.dropped and not held(ks):
                    self.wal_entries.setdefault(ks, []).append((key, version, value))
                elif self._rebuilt_holds(ks, version):
                    self.rebuild_wal.setdefault(ks, []).append((key, version, value))
            for ks, start, end in ranges:
                if ks not in self.hints.dropped and not held(ks):
                    self.wal_ranges.setdefault(ks, []).append((start, end, version))
                elif self._rebuilt_holds(ks, version):
                    self.rebuild_wal_ranges.setdefault(ks, []).append((start, end, version))

        summary = verify_log_dir(wal, report, on_record)
        for p in report.problems:
            if p.severity == "error" and not _moved_aside(self.store, p.file):
                where = p.file if p.offset is None else f"{p.file} @ offset {p.offset}"
                self.lost.append(Loss(where, f"WAL: {p.message}"))
        h = self.hints.state  # a manifest read only up to its damage may predate WAL cuts
        if h is not None and self.hints.complete and summary.first_seq is not None \
                and summary.first_seq > h.wal_seq and self._cut_records_unheld(h.flushed_version):
            self.lost.append(Loss(wal, f"WAL records {h.wal_seq}..{summary.first_seq - 1} are missing "
                                       "(the manifest still needed them)"))

    def _rebuilt_holds(self, ks: int, version: int) -> bool:
        """Whether a table rebuilt from a damaged one's intact blocks covers ``version`` of
        ``ks``: a WAL record of it may hold what a lost block did, and goes into it."""
        return any(d.keyspace == ks and d.covers is not None and d.covers[0] <= version <= d.covers[1]
                   for d, _stand_in, _r in self.rebuilds)

    def wal_records_of(self, damaged: Found) -> int:
        """How many WAL entries and range tombstones go into the table rebuilt from
        ``damaged`` (those of its keyspace within its versions)."""
        assert damaged.keyspace is not None and damaged.covers is not None
        lo, hi = damaged.covers
        return (sum(lo <= e[1] <= hi for e in self.rebuild_wal.get(damaged.keyspace, []))
                + sum(lo <= r[2] <= hi for r in self.rebuild_wal_ranges.get(damaged.keyspace, [])))

    def rebuilt_contents(self, damaged: Found, rescued: Rescued) -> tuple[
            list[tuple[bytes, int, bytes | None]], list[tuple[bytes, bytes, int]]]:
        """What the table rebuilt from ``damaged`` holds: the entries and range tombstones
        of its intact blocks and those of the WAL records in its versions (keys
        ascending, newest first)."""
        assert damaged.keyspace is not None and damaged.covers is not None
        lo, hi = damaged.covers
        merged = {(k, v): val for k, v, val in rescued.entries}
        merged.update({(k, v): val for k, v, val in self.rebuild_wal.get(damaged.keyspace, [])
                       if lo <= v <= hi})
        ranges = set(rescued.ranges) | {r for r in self.rebuild_wal_ranges.get(damaged.keyspace, [])
                                        if lo <= r[2] <= hi}
        ordered = sorted(merged.items(), key=lambda e: (e[0][0], -e[0][1]))
        return [(k, v, val) for (k, v), val in ordered], sorted(ranges)

    def _cut_records_unheld(self, flushed: int) -> bool:
        """Whether the WAL records cut before the first one present may hold writes no
        kept table holds.  Their versions lie above the manifest's ``flushed``, below the
        first record present: a flush whose edit was lost cut them, after its tables took
        them.  A flush switches every keyspace's memtable at once (one flushed_version),
        so a version a kept table of any keyspace covers was flushed; only versions none
        covers may be lost.  With no intact record to bound them: unknown, so lost."""
        if not self.wal_spans:
            return True
        first_version = self.wal_spans[0][0]
        if first_version <= flushed + 1:
            return False  # no version between: the cut records were flushed ones
        held = [k.covers for ts in self.kept.values() for k in ts
                if k.covers is not None and self._ours(k)]
        return bool(_uncovered((flushed + 1, first_version - 1), held))

    def _note_time(self, version: int, second: int) -> None:
        """A WAL record's write time: kept as the first and the last version of each
        second (between them, the versions of that second)."""
        times = self.wal_times
        if len(times) >= 2 and times[-1][1] == times[-2][1] == second:
            times[-1] = (version, second)
        else:
            times.append((version, second))

    def date_versions(self, now: int) -> None:
        """The salvaged store's time map (``time_map``): every version dated no earlier
        than it was written; a note names the versions nothing dates, counted as
        written ``now``."""
        top = max([self.top_version] + [f.meta.max_version for ts in self.kept.values() for f in ts
                                        if f.meta is not None])
        known = self.hints.state.time_map.samples if self.hints.state is not None else []
        bounds = self.hints.times + _wal_bounds(self.wal_times, known)
        self.time_map, undated = _time_samples(bounds, top, now)
        if undated is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(undated[2]))
            self.notes.append(f"no surviving manifest edit or WAL record says when versions "
                              f"{undated[0]}..{undated[1]} were written: they count as written at "
                              f"{when} (this salvage), so TTLs and history_retention run from then")

    def wal_tables(self) -> list[tuple[int, list[tuple[bytes, int, bytes | None]],
                                       list[tuple[bytes, bytes, int]]]]:
        """The WAL entries and range tombstones no kept table holds, grouped into new
        tables: per keyspace, one per gap between the kept tables' covered versions
        (entries: keys ascending, newest first)."""
        out = []
        for ks in sorted(set(self.wal_entries) | set(self.wal_ranges)):
            bounds = sorted(k.covers[0] for k in self.kept.get(ks, []) if k.covers is not None)
            groups: dict[int, dict[tuple[bytes, int], bytes | None]] = {}
            range_groups: dict[int, set[tuple[bytes, bytes, int]]] = {}
            for key, version, value in self.wal_entries.get(ks, []):
                groups.setdefault(bisect.bisect_right(bounds, version), {})[(key, version)] = value
            for r in self.wal_ranges.get(ks, []):
                range_groups.setdefault(bisect.bisect_right(bounds, r[2]), set()).add(r)
            for gap in sorted(set(groups) | set(range_groups)):
                ordered = sorted(groups.get(gap, {}).items(), key=lambda e: (e[0][0], -e[0][1]))
                out.append((ks, [(k, v, val) for (k, v), val in ordered],
                            sorted(range_groups.get(gap, ()))))
        return out


def _wal_bounds(wal_times: list[tuple[int, int]],
                samples: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Write-time bounds from WAL records' seconds ``wal_times``, each raised to the
    latest second the store's map (whose known ``samples`` are given) or an older
    record gives a version at or below it.  The map never dates a version before an
    older one (TimeMap ignores a second that is not later than its last), so after the
    clock stepped back a record's own second is earlier than the map's for it -- taken
    as it is, it would date the versions before it early, and make them expire early.

    >>> _wal_bounds([(5, 100), (6, 320), (7, 310)], [(1, 300)])
    [(5, 300), (6, 320), (7, 320)]
    """
    points = sorted(samples + wal_times)
    out, latest, i = [], -1, 0
    for v, s in sorted(wal_times):
        while i < len(points) and points[i][0] <= v:
            latest = max(latest, points[i][1])
            i += 1
        out.append((v, max(s, latest)))
    return out


def _time_samples(bounds: list[tuple[int, int]], top: int,
                  now: int) -> tuple[list[tuple[int, int]], tuple[int, int, int] | None]:
    """Time-map samples (lsm/timemap.py) dating each version ``1..top`` the earliest
    second a bound ``(version, second)`` at or above it allows -- no earlier than it was
    written -- and the versions above every bound ``now`` (or later, to stay ascending);
    and those versions with their second, if any.

    >>> _time_samples([(1, 100), (5, 100), (9, 103)], 12, 200)
    ([(1, 100), (6, 103), (10, 200)], (10, 12, 200))
    >>> _time_samples([], 50, 200)
    ([(1, 200)], (1, 50, 200))
    """
    limits: list[tuple[int, int]] = []
    for v, s in sorted(bounds, reverse=True):  # each version's bound: the least at or above it
        limits.append((v, min(s, limits[-1][1]) if limits else s))
    samples: list[tuple[int, int]] = []
    lo = 1  # the lowest version not dated yet
    for v, s in reversed(limits):
        if v < lo:
            continue
        if not samples or s > samples[-1][1]:
            samples.append((lo, s))
        lo = v + 1
    if lo > top:
        return samples, None
    if not samples or now > samples[-1][1]:
        samples.append((lo, now))
    return samples, (lo, top, samples[-1][1])


# -- the salvage --------------------------------------------------------------------------------

def salvage(store: str, current: str | None, reason: str, *, dry_run: bool) -> Salvaged:
    """Rebuild ``store`` from its tables and WAL (see the module docstring).
    REQUIRES: the caller holds the store's LOCK."""
    lost = os.path.join(store, LOST_DIR)
    if os.path.lexists(lost) and not os.path.isdir(lost):
        # Checked before anything is planned or changed (a dry run too): everything a
        # salvage sets aside goes there, and that file is not the store's to move.
        raise StorageIOError(f"{lost} is not a directory: a salvage sets aside in it what it "
                             "does not use; move that file away and repair again", path=lost,
                             op="salvage", errno=errno.ENOTDIR)
    out = Salvaged()
    hints = read_hints(store, current)
    plan = _Plan(store, hints)
    plan.choose_tables()
    plan.read_wal()
    plan.account_for_named()
    plan.name_keyspaces()
    plan.date_versions(int(time.time()))
    new_tables = plan.wal_tables()
    verb = "would " if dry_run else ""
    out.done.append(f"salvage ({reason}): {verb}rebuild the manifest from "
                    f"{sum(len(t) for t in plan.kept.values())} tables and "
                    f"{plan.wal_records} WAL records, with hints from "
                    f"{hints.source or 'no readable manifest'}"
                    f"{'' if hints.complete or hints.source is None else ' (read up to its damage)'}")
    out.done += [f"note: {n}" for n in plan.notes]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    lost_dir = _fresh_dir(os.path.join(store, LOST_DIR, stamp))
    moves = _moves(plan, store, lost_dir)
    for loss in plan.lost:
        loss.moved_to = moves.get(loss.what)
    out.lost = plan.lost
    for f, why in plan.aside:
        out.done.append(f"{verb}set aside {f.path} to {moves[f.path]}: {why}")
    misplaced = _not_directories(store, lost_dir)
    for src, dst in misplaced.items():
        out.done.append(f"{verb}set aside {src} to {dst}: not a directory, where the store "
                        "keeps one")
    out.done += [_rebuild_line(verb, f, r, plan.wal_records_of(f)) for f, _stand_in, r in plan.rebuilds]
    if dry_run:
        out.done += [f"would write a table of {len(e)} WAL entries and {len(r)} range tombstones "
                     f"for keyspace {plan.names[ks]!r}" for ks, e, r in new_tables]
        return out
    if plan.lost:
        out.done.append(f"wrote {_keep_report(lost_dir, plan.lost)}: the NOT recovered lines below, kept")
    if misplaced:  # before a directory of that name is made (_write_tables, wal/ below)
        os.makedirs(lost_dir, exist_ok=True)
        for src, dst in misplaced.items():
            os.rename(src, dst)
        make_env().sync_dir(lost_dir)
        make_env().sync_dir(store)
    next_no = 1 + max([f.file_no for f in plan.found] + list(hints.numbers)
                      + ([hints.state.next_file] if hints.state is not None else []) + [0])
    rebuilt, next_no = _write_rebuilt(store, plan, next_no)
    out.done += rebuilt
    built, next_no = _write_tables(store, plan, new_tables, next_no)
    out.done += [f"wrote {path} from {n} WAL entries of keyspace {name!r}" for path, n, name in built]
    env = make_env()
    reported = {f.path for f, _why in plan.aside} | {loss.what for loss in plan.lost}
    for src, dst in moves.items():  # tables, the old WAL, the old manifests and CURRENT
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(src, dst)
        if src not in reported:
            out.done.append(f"moved {src} to {dst}")
    os.makedirs(os.path.join(store, "wal"), exist_ok=True)
    sources = {store, os.path.join(store, "tables"), os.path.join(store, "wal")}
    for d in {os.path.dirname(p) for p in moves.values()} | sources:
        env.sync_dir(d)
    state = _new_state(plan, next_no)
    m = Manifest.create(env, store, state)
    m.close()
    out.done.append(f"wrote {m.name} naming {len(state.live_files())} tables in keyspaces "
                    f"{sorted(state.keyspaces.values())}, version {state.last_version}, and "
                    "pointed CURRENT at it")
    return out


LOSS_REPORT = "NOT-RECOVERED.txt"


def _rebuild_line(verb: str, damaged: Found, rescued: Rescued, wal: int) -> str:
    also = f", with {wal} WAL entries of its versions" if wal else ""
    return (f"{verb}rebuild {damaged.path} from the {len(rescued.entries)} entries of its "
            f"intact blocks{also}")


def _keep_report(lost_dir: str, lost: list[Loss]) -> str:
    """Write the losses to ``lost_dir`` (durable) before anything changes, so that a
    salvage killed before it could print them -- even after its new manifest, when a
    second repair has nothing left to do -- does not lose data silently."""
    path = os.path.join(lost_dir, LOSS_REPORT)
    os.makedirs(lost_dir, exist_ok=True)
    make_env().write_file_atomic(path, "".join(f"NOT recovered: {loss}\n" for loss in lost).encode())
    return path


def _fresh_dir(path: str) -> str:
    n, candidate = 1, path
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate


def _moves(plan: _Plan, store: str, lost_dir: str) -> dict[str, str]:
    """``{source: destination in lost/}`` of everything salvage sets aside."""
    moves: dict[str, str] = {}
    kept = {f.path for ts in plan.kept.values() for f in ts}
    for f in plan.found:
        if f.path not in kept:
            moves[f.path] = os.path.join(lost_dir, "tables", os.path.basename(f.path))
    moves.update(_wal_moves(os.path.join(store, "wal"), os.path.join(lost_dir, "wal")))
    for name in sorted(os.listdir(store)):
        if MANIFEST_NAME.match(name) or name in ("CURRENT", "CURRENT.tmp"):
            moves[os.path.join(store, name)] = os.path.join(lost_dir, name)
    return moves


def _not_directories(store: str, lost_dir: str) -> dict[str, str]:
    """``{tables or wal: destination in lost/}`` for each of the two that something other
    than a directory (a file) holds: set aside, never removed, so the store gets its
    directory back.  A file there made every salvage fail on "File exists"."""
    out = {}
    for name in ("tables", "wal"):
        path = os.path.join(store, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            out[path] = os.path.join(lost_dir, name)
    return out


def _moved_aside(store: str, path: str) -> bool:
    """Whether ``path``, a WAL segment a problem names, is gone from ``wal/`` because an
    earlier salvage moved it to ``lost/<time>/wal/`` (_wal_moves, newest first): its
    records are in that salvage's tables, so the segment before it, sealed naming it
    (segment format 3), is no loss."""
    lost = os.path.join(store, "lost")
    name = os.path.basename(path)
    if os.path.exists(path) or SEGMENT_NAME.fullmatch(name) is None or not os.path.isdir(lost):
        return False
    return any(os.path.exists(os.path.join(lost, d, "wal", name)) for d in os.listdir(lost))


def _wal_moves(wal: str, dest: str) -> dict[str, str]:
    """The WAL's files, newest segment first, to ``dest``.  The directory itself stays:
    a salvage killed part-way then leaves the oldest segments in place, from the seq the
    manifest replays from, and no gap a second salvage would report as lost records (the
    moved ones are in the new tables; the newest one left is sealed naming a moved one,
    which _moved_aside tells from a lost one)."""
    if not os.path.isdir(wal):
        return {}
    names = sorted((n for n in os.listdir(wal) if n != "LOCK"), reverse=True)
    return {os.path.join(wal, n): os.path.join(dest, n) for n in names}


def _write_tables(store: str, plan: _Plan, groups: list[tuple[int, list[Any], list[Any]]],
                  next_no: int) -> tuple[list[tuple[str, int, str]], int]:
    """Write the WAL entries' tables (durable, named in ``plan.kept``); return
    ``(path, entries, keyspace)`` of each, and the next free file number."""
    env, built = make_env(), []
    os.makedirs(os.path.join(store, "tables"), exist_ok=True)
    for ks, entries, ranges in groups:
        path = os.path.join(store, "tables", f"{next_no:06d}.sst")
        options = table_options(Options())  # the WAL may hold keys over the default limit
        with TableBuilder(env, path, options, TableOrigin(ks, plan.names[ks])) as builder:
            builder.add_many(entries)
            builder.add_range_dels(ranges)
            meta = builder.finish()
        assert meta.origin is not None
        plan.kept.setdefault(ks, []).append(Found(next_no, path, meta, None, ks,
                                                  (meta.origin.covers_min, meta.origin.covers_max)))
        built.append((path, len(entries), plan.names[ks]))
        next_no += 1
    env.sync_dir(os.path.join(store, "tables"))
    return built, next_no


def _write_rebuilt(store: str, plan: _Plan, next_no: int) -> tuple[list[str], int]:
    """Write the tables rebuilt from damaged tables' intact blocks (durable), each in its
    damaged table's place among the kept; return what was done and the next free number."""
    env, done = make_env(), []
    for damaged, stand_in, rescued in plan.rebuilds:
        assert damaged.keyspace is not None and damaged.covers is not None
        path = os.path.join(store, "tables", f"{next_no:06d}.sst")
        floor = damaged.meta.origin.history_floor if damaged.meta and damaged.meta.origin else 0
        origin = TableOrigin(damaged.keyspace, plan.names[damaged.keyspace], *damaged.covers, floor)
        entries, ranges = plan.rebuilt_contents(damaged, rescued)
        with TableBuilder(env, path, table_options(Options()), origin) as builder:
            builder.add_many(entries)
            builder.add_range_dels(ranges)
            meta = builder.finish()
        kept = plan.kept[damaged.keyspace]
        kept[kept.index(stand_in)] = Found(next_no, path, meta, None, damaged.keyspace, damaged.covers)
        done.append(f"wrote {path} from the intact blocks of {damaged.path}")
        next_no += 1
    if plan.rebuilds:
        env.sync_dir(os.path.join(store, "tables"))
    return done, next_no


def _new_state(plan: _Plan, next_no: int) -> ManifestState:
    """The whole state of the salvaged store, built through the edit schema."""
    h = plan.hints.state
    state = ManifestState()
    state.dropped = set(plan.hints.dropped)  # their ids stay unused
    for ks, name in sorted(plan.names.items()):
        if ks:
            state.apply({"add_keyspace": [ks, name]})
    if h is not None:
        for ks, ttl in sorted(h.keyspace_ttl.items()):
            if ks in plan.names:
                state.apply({"keyspace_ttl": [ks, ttl]})
    infos = [TableInfo(ks, f.file_no, f.meta.file_size, f.meta.smallest_key, f.meta.largest_key,
                       f.meta.min_version, f.meta.max_version, f.meta.entry_count,
                       f.meta.tombstone_count)
             for ks, ts in plan.kept.items() for f in ts if f.meta is not None]
    top = max([plan.top_version] + [i.max_version for i in infos]
              + ([h.last_version, h.flushed_version] if h is not None else []))
    floor = max([f.meta.origin.history_floor for ts in plan.kept.values() for f in ts
                 if f.meta is not None and f.meta.origin is not None]
                + [h.history_floor if h is not None else 0])
    state.apply({"add_tables": [i.to_json() for i in infos], "next_file": next_no,
                 "last_version": top, "flushed_version": top, "wal_seq": 1,
                 "history_floor": min(floor, top), "time_map": [list(s) for s in plan.time_map]})
    if h is not None and h.expiry_time:  # what the store had judged expired stays so
        state.apply({"expiry_time": h.expiry_time})
    return state
