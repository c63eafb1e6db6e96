"""Version edits: their schema, and the :class:`ManifestState` that replaying them builds.

A manifest record's CRC proves that its bytes are the ones written, not that a
banyanstore of this version wrote them, so every decoded edit is checked field by
field before anything is applied: known tags only, integers that are ``int`` (never
``bool`` or ``float``) within range, hex keys, known keyspaces, fences in order.
A violation raises :class:`EditError`; the manifest reader turns it into a
:class:`~banyanstore.errors.CorruptionError` naming the file and the record's offset.

Tags (docs/format/manifest.md has the table): ``format``, ``add_keyspace`` [id, name],
``keyspace_ttl`` [id, seconds or null], ``drop_keyspace`` id, ``next_file``, ``unfinished_from``,
``last_version``, ``flushed_version``, ``wal_seq``, ``history_floor``,
``remove_tables`` [[keyspace, file]...], ``add_tables`` [table...], ``time_map``
[[version, second]...], ``expiry_time`` seconds.  The first edit of a manifest file (the whole state) also
holds ``_keyspaces``, ``_ttls``, ``_obsolete`` and ``_dropped``, which no other edit
may hold.

A dropped keyspace's id is never given out again (``dropped``): WAL records written
to it before the drop are skipped by recovery, not mistaken for a newer keyspace's.

File numbers: ``next_file`` is above every number ever handed out (tables and
manifests share it).  ``unfinished_from`` is the lowest table number that may still
belong to an unfinished flush or merge output: a table file that no edit names is
provably such an output (safe to delete) if its number is at least this, or if an
edit removed it (``obsolete``: merge inputs and expired tables whose deletion may not
have happened).  Any other unnamed table is unexplained, and a writer open refuses to
delete it.

>>> s = ManifestState()
>>> s.apply({"add_keyspace": [1, "idx"], "next_file": 5})
>>> sorted(s.keyspaces.items()), s.next_file
([(0, 'default'), (1, 'idx')], 5)
>>> s.apply({"drop_keyspace": 1}); s.apply({"add_keyspace": [2, "idx"]})
>>> sorted(s.keyspaces.items()), s.dropped, s.next_keyspace_id()
([(0, 'default'), (2, 'idx')], {1}, 3)
>>> s.apply({"next_file": "5"})
Traceback (most recent call last):
...
banyanstore.lsm.edits.EditError: next_file must be an integer in 1 .. 2**64-1, not '5'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from ..arguments import is_finite_number
from .timemap import TimeMap

__all__ = ["EditError", "ManifestState", "TableInfo", "STORE_FORMAT", "KNOWN_TAGS", "SNAPSHOT_KEYS",
           "expand_snapshot"]

STORE_FORMAT: Final = 1
MAX_U64: Final = (1 << 64) - 1
MAX_KEYSPACE_ID: Final = (1 << 32) - 1  # a WAL entry stores the keyspace as u32
MAX_KEYSPACE_NAME: Final = 1024
COUNTERS: Final = ("next_file", "unfinished_from", "last_version", "flushed_version", "wal_seq",
                   "history_floor")
KNOWN_TAGS: Final = frozenset({"format", "add_keyspace", "keyspace_ttl", "drop_keyspace",
                               "remove_tables", "add_tables", "time_map", "expiry_time",
                               *COUNTERS})
SNAPSHOT_KEYS: Final = frozenset({"_keyspaces", "_ttls", "_obsolete", "_dropped"})
TABLE_KEYS: Final = frozenset({"ks", "file", "size", "smallest", "largest", "min_v", "max_v",
                               "entries", "tombstones"})
_COUNTER_MIN: Final = {"next_file": 1, "unfinished_from": 1, "wal_seq": 1}


class EditError(ValueError):
    """A decoded edit does not follow the schema (the message says which field)."""


def _int(value: object, what: str, lo: int = 0, hi: int = MAX_U64) -> int:
    if type(value) is not int or not lo <= value <= hi:
        top = "2**64-1" if hi == MAX_U64 else str(hi)
        raise EditError(f"{what} must be an integer in {lo} .. {top}, not {value!r}")
    return value


def _pair(value: object, what: str) -> list[Any]:
    if type(value) is not list or len(value) != 2:
        raise EditError(f"{what} must be a list of two items, not {value!r}")
    return value


def _list(value: object, what: str) -> list[Any]:
    if type(value) is not list:
        raise EditError(f"{what} must be a list, not {value!r}")
    return value


def _hex(value: object, what: str) -> bytes:
    if type(value) is not str:
        raise EditError(f"{what} must be a hex string, not {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise EditError(f"{what} is not a hex string: {value!r}") from None


def _ttl(value: object, what: str) -> float | None:
    if value is None:
        return None
    if not is_finite_number(value) or value < 0:
        raise EditError(f"{what} must be null or a finite number >= 0, not {value!r:.80}")
    return value


@dataclass(frozen=True)
class TableInfo:
    """What the manifest records about one live table."""

    keyspace: int
    file_no: int
    file_size: int
    smallest: bytes
    largest: bytes
    min_version: int
    max_version: int
    entries: int
    tombstones: int

    def differences(self, meta: Any) -> list[tuple[str, Any, Any]]:
        """``(what, in the table, in this record)`` for each property where a table's own
        ``meta`` (its TableMeta) differs from this record of it, the file size aside.
        Both come from the same TableMeta when the table is written."""
        pairs = [("smallest key", meta.smallest_key, self.smallest),
                 ("largest key", meta.largest_key, self.largest),
                 ("min version", meta.min_version, self.min_version),
                 ("max version", meta.max_version, self.max_version),
                 ("entry count", meta.entry_count, self.entries),
                 ("tombstone count", meta.tombstone_count, self.tombstones)]
        if meta.origin is not None:  # tables of format 2 record the keyspace they were written for
            pairs.append(("keyspace", meta.origin.keyspace, self.keyspace))
        return [(what, mine, said) for what, mine, said in pairs if mine != said]

    def to_json(self) -> dict[str, Any]:
        return {"ks": self.keyspace, "file": self.file_no, "size": self.file_size,
                "smallest": self.smallest.hex(), "largest": self.largest.hex(),
                "min_v": self.min_version, "max_v": self.max_version,
                "entries": self.entries, "tombstones": self.tombstones}

    @classmethod
    def from_json(cls, d: object, what: str = "table") -> TableInfo:
        """Decode and check one ``add_tables`` item (EditError if it is malformed)."""
        if type(d) is not dict:
            raise EditError(f"{what} must be an object, not {d!r}")
        if set(d) != TABLE_KEYS:
            raise EditError(f"{what} has keys {sorted(d)}, expected {sorted(TABLE_KEYS)}")
        info = cls(_int(d["ks"], f"{what} ks", 0, MAX_KEYSPACE_ID), _int(d["file"], f"{what} file", 1),
                   _int(d["size"], f"{what} size", 1), _hex(d["smallest"], f"{what} smallest"),
                   _hex(d["largest"], f"{what} largest"), _int(d["min_v"], f"{what} min_v", 1),
                   _int(d["max_v"], f"{what} max_v", 1), _int(d["entries"], f"{what} entries", 1),
                   _int(d["tombstones"], f"{what} tombstones"))
        if info.smallest > info.largest:
            raise EditError(f"{what} smallest key is above its largest key")
        if info.min_version > info.max_version:
            raise EditError(f"{what} min_v {info.min_version} is above max_v {info.max_version}")
        if info.tombstones > info.entries:
            raise EditError(f"{what} has more tombstones than entries")
        return info


@dataclass
class ManifestState:
    """The state a manifest describes (rebuilt by replaying edits).

    ``in_flight`` (never persisted) holds the table numbers this process handed out
    that no applied edit names yet; ``obsolete`` the tables an edit removed whose files
    may still exist; ``dropped`` the ids of dropped keyspaces (never reused);
    ``edits_end`` (never persisted) the offset in the manifest file read where its
    complete edits end, and ``torn_tail`` whether bytes of a cut (torn) record follow.
    """

    keyspaces: dict[int, str] = field(default_factory=lambda: {0: "default"})
    keyspace_ttl: dict[int, float | None] = field(default_factory=dict)
    tables: dict[int, dict[int, TableInfo]] = field(default_factory=lambda: {0: {}})
    next_file: int = 1
    unfinished_from: int = 0  # 0: not recorded (a manifest written before the tag existed)
    last_version: int = 0
    flushed_version: int = 0
    wal_seq: int = 1
    history_floor: int = 0
    time_map: TimeMap = field(default_factory=TimeMap)
    expiry_time: float = 0.0  # the latest time expiry was judged at (0: not recorded)
    obsolete: set[int] = field(default_factory=set)
    in_flight: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    edits_end: int = 0
    torn_tail: bool = False

    # -- file numbers ----------------------------------------------------------------
    def allocate_file_no(self) -> int:
        """A new table number; it counts as an unfinished output until an edit names it."""
        n = self.next_file
        self.next_file += 1
        self.in_flight.add(n)
        return n

    def unfinished_floor(self, edit: Mapping[str, Any] | None = None) -> int:
        """``unfinished_from`` for an edit about to be written: the lowest number handed
        out that no edit names (not counting the tables ``edit`` itself adds)."""
        named = {d["file"] for d in (edit or {}).get("add_tables", ())}
        return min((self.in_flight - named) | {self.next_file})

    def unexplained(self, file_no: int) -> bool:
        """Whether a table file no edit names cannot be proven a leftover: below every
        number that may be unfinished, and not removed by an edit."""
        live = any(file_no in ts for ts in self.tables.values())
        floor = self.unfinished_from or self.next_file
        return not live and file_no < floor and file_no not in self.obsolete

    def next_keyspace_id(self) -> int:
        """The id of the next new keyspace: above every id in use or ever dropped."""
        return max(self.keyspaces.keys() | self.dropped) + 1

    def forget_dropped(self, ids: Iterable[int]) -> None:
        """Stop carrying the dropped keyspace ids ``ids`` -- but the highest ever dropped,
        which keeps :meth:`next_keyspace_id` above every id given out.  An id is needed
        only while WAL records of its keyspace may be replayed (recovery skips them): the
        caller's to judge.  Without this a store that creates and drops keyspaces
        carried every id for ever, in memory and in every manifest's whole-state edit."""
        highest = max(self.dropped, default=0)
        self.dropped.difference_update(i for i in ids if i != highest)

    def live_files(self) -> set[int]:
        return {n for ts in self.tables.values() for n in ts}

    # -- applying edits ---------------------------------------------------------------
    def apply(self, edit: object) -> None:
        """Check ``edit`` against the schema and this state, then apply it.
        Raises EditError (and changes nothing) if it does not conform."""
        self.prepare(edit)()

    def prepare(self, edit: object) -> Callable[[], None]:
        """Check ``edit`` now; return the function that applies it.  REQUIRES: the
        state does not change in between."""
        if type(edit) is not dict:
            raise EditError(f"edit must be a JSON object, not {type(edit).__name__}")
        if not edit:
            raise EditError("edit is empty")
        unknown = set(edit) - KNOWN_TAGS
        if unknown:
            raise EditError(f"edit has unknown tags {sorted(unknown)} (written by a newer "
                            "banyanstore, or damaged)")
        ops = self._check(edit)

        def commit() -> None:
            for op in ops:
                op()
        return commit

    def _check(self, edit: dict[str, Any]) -> list[Any]:
        """Validate every tag first (so a bad edit changes nothing); return the updates."""
        ops: list[Any] = []
        if "format" in edit:
            fmt = _int(edit["format"], "format", 1)
            if fmt > STORE_FORMAT:
                raise EditError(f"store format {fmt} is newer than this banyanstore supports "
                                f"({STORE_FORMAT})")
        keyspaces = self.keyspaces  # copied before this edit's new keyspace joins it
        if "add_keyspace" in edit:
            ks_id, name = self._check_keyspace(edit["add_keyspace"], keyspaces)
            keyspaces = {**keyspaces, ks_id: name}
            ops.append(partial(self._add_keyspace, ks_id, name))
        if "drop_keyspace" in edit:
            gone = self._known(edit["drop_keyspace"], "drop_keyspace", keyspaces)
            if gone == 0:
                raise EditError("drop_keyspace names the default keyspace, which cannot be dropped")
            # the rest of this edit may not name it any more
            keyspaces = {i: n for i, n in keyspaces.items() if i != gone}
            ops.append(partial(self._drop_keyspace, gone))
        if "keyspace_ttl" in edit:
            ks_raw, ttl_raw = _pair(edit["keyspace_ttl"], "keyspace_ttl")
            ttl_ks = self._known(ks_raw, "keyspace_ttl keyspace", keyspaces)
            ttl = _ttl(ttl_raw, "keyspace_ttl seconds")
            ops.append(partial(self.keyspace_ttl.__setitem__, ttl_ks, ttl))
        if "expiry_time" in edit:
            when = edit["expiry_time"]
            if not is_finite_number(when) or when < 0:
                raise EditError(f"expiry_time must be a finite number >= 0, not {when!r:.80}")
            ops.append(partial(self._raise_expiry_time, when))
        for counter in COUNTERS:
            if counter in edit:
                value = _int(edit[counter], counter, _COUNTER_MIN.get(counter, 0))
                ops.append(partial(self._raise_counter, counter, value))
        removed = [self._check_ref(r, i, keyspaces)
                   for i, r in enumerate(_list(edit.get("remove_tables", []), "remove_tables"))]
        added = [TableInfo.from_json(d, f"add_tables[{i}]")
                 for i, d in enumerate(_list(edit.get("add_tables", []), "add_tables"))]
        self._check_added(added, removed, keyspaces)
        samples = [tuple(_int(x, "time_map sample") for x in _pair(p, "time_map sample"))
                   for p in _list(edit.get("time_map", []), "time_map")]
        ops.append(partial(self._apply_tables, removed, added, samples))
        return ops

    def _check_keyspace(self, raw: object, keyspaces: dict[int, str]) -> tuple[int, str]:
        ks_raw, name = _pair(raw, "add_keyspace")
        ks_id = _int(ks_raw, "add_keyspace id", 0, MAX_KEYSPACE_ID)
        if type(name) is not str or not name or len(name) > MAX_KEYSPACE_NAME:
            raise EditError(f"add_keyspace name must be a non-empty string, not {name!r}")
        if keyspaces.get(ks_id, name) != name or (ks_id == 0) != (name == "default"):
            raise EditError(f"add_keyspace [{ks_id}, {name!r}] conflicts with keyspace "
                            f"{keyspaces.get(ks_id, 'default')!r}")
        # names are unique, so only an id not already called ``name`` can clash (a scan of
        # the values in C: this runs once per keyspace when a manifest is replayed)
        if keyspaces.get(ks_id) != name and name in keyspaces.values():
            raise EditError(f"add_keyspace names a second keyspace {name!r}")
        if ks_id in self.dropped:
            raise EditError(f"add_keyspace [{ks_id}, {name!r}] reuses the id of a dropped keyspace")
        return ks_id, name

    @staticmethod
    def _known(raw: object, what: str, keyspaces: dict[int, str]) -> int:
        ks_id = _int(raw, what, 0, MAX_KEYSPACE_ID)
        if ks_id not in keyspaces:
            raise EditError(f"{what} {ks_id} is not a known keyspace")
        return ks_id

    def _check_ref(self, raw: object, i: int, keyspaces: dict[int, str]) -> tuple[int, int]:
        ks, file_no = _pair(raw, f"remove_tables[{i}]")
        return (self._known(ks, f"remove_tables[{i}] keyspace", keyspaces),
                _int(file_no, f"remove_tables[{i}] file", 1))

    def _check_added(self, added: list[TableInfo], removed: list[tuple[int, int]],
                     keyspaces: dict[int, str]) -> None:
        gone = set(removed)
        owner: dict[int, int] = {}
        # Which keyspace already holds an added number: scanning the keyspaces costs
        # O(keyspaces) per table -- fine for a flush of one keyspace, but quadratic for a
        # whole-state edit or a flush of thousands of keyspaces (an open of 35,000 tables
        # in 5,000 keyspaces spent 27 s here).  So once that exceeds the live tables,
        # index them instead: an edit costs O(keyspaces + min(added x keyspaces, live)),
        # and replay stays linear in the edits for small ones.
        held: dict[int, int] | None = None
        if len(added) > 1 and len(added) * len(self.tables) > sum(map(len, self.tables.values())):
            held = {n: ks for ks, ts in self.tables.items() for n in ts}
        for info in added:
            if info.keyspace not in keyspaces:
                raise EditError(f"add_tables names table {info.file_no} of unknown keyspace "
                                f"{info.keyspace}")
            if held is None:
                others = [ks for ks, ts in self.tables.items() if ks != info.keyspace
                          and info.file_no in ts and (ks, info.file_no) not in gone]
            else:
                ks = held.get(info.file_no, info.keyspace)
                others = [ks] if ks != info.keyspace and (ks, info.file_no) not in gone else []
            if others or owner.setdefault(info.file_no, info.keyspace) != info.keyspace:
                raise EditError(f"add_tables puts table {info.file_no} in a second keyspace")

    def _raise_counter(self, counter: str, value: int) -> None:
        setattr(self, counter, max(getattr(self, counter), value))

    def _raise_expiry_time(self, when: float) -> None:
        self.expiry_time = max(self.expiry_time, when)

    def expiry_time_news(self, when: float) -> bool:
        """Whether ``when``, a time expiry was judged at, says more than this state: an
        open judges expiry at the second of the last commit (the time map's) at least."""
        return when > max(self.expiry_time, self.time_map.last_second)

    def _add_keyspace(self, ks_id: int, name: str) -> None:
        self.keyspaces[ks_id] = name
        self.tables.setdefault(ks_id, {})

    def _drop_keyspace(self, ks_id: int) -> None:
        """The keyspace is gone; its tables become obsolete (their files may still exist)."""
        del self.keyspaces[ks_id]
        self.keyspace_ttl.pop(ks_id, None)
        self.obsolete.update(self.tables.pop(ks_id, {}))
        self.dropped.add(ks_id)

    def _apply_tables(self, removed: list[tuple[int, int]], added: list[TableInfo],
                      samples: list[tuple[int, ...]]) -> None:
        for ks_id, file_no in removed:
            if self.tables.get(ks_id, {}).pop(file_no, None) is not None:
                self.obsolete.add(file_no)
        for info in added:
            self.tables.setdefault(info.keyspace, {})[info.file_no] = info
            self.in_flight.discard(info.file_no)
            self.obsolete.discard(info.file_no)
        for v, second in samples:
            self.time_map.add(v, second)

    # -- whole-state edits ---------------------------------------------------------------
    def snapshot_edit(self) -> dict[str, Any]:
        """One edit that rebuilds this whole state (first record of a new manifest)."""
        edit: dict[str, Any] = {
            "format": STORE_FORMAT, "next_file": self.next_file,
            "unfinished_from": self.unfinished_floor(), "last_version": self.last_version,
            "flushed_version": self.flushed_version, "wal_seq": self.wal_seq,
            "history_floor": self.history_floor, "time_map": [list(p) for p in self.time_map.samples],
            "add_tables": [t.to_json() for ts in self.tables.values() for t in ts.values()],
            # Keyspaces would take one edit each: fold them into lists here.
            "_keyspaces": [[i, n] for i, n in sorted(self.keyspaces.items())],
            "_ttls": [[i, t] for i, t in sorted(self.keyspace_ttl.items())],
            "_obsolete": sorted(self.obsolete),
        }
        if self.dropped:  # only then: a store that never dropped one stays readable by older code
            edit["_dropped"] = sorted(self.dropped)
        if self.expiry_time > self.time_map.last_second:  # (likewise: only stores with a TTL)
            edit["expiry_time"] = self.expiry_time
        return edit

    def check_tables(self) -> None:
        """Whole-state checks after a replay: file numbers below ``next_file``."""
        top = max(self.live_files(), default=0)
        if top >= self.next_file:
            raise EditError(f"table {top} is not below next_file {self.next_file}: file numbers "
                            "could be handed out twice")


def expand_snapshot(edit: object, state: ManifestState) -> list[Any]:
    """The first edit of a manifest as ordinary edits: its ``_keyspaces``/``_ttls`` lists
    become one ``add_keyspace``/``keyspace_ttl`` edit each (applied first), and
    ``_obsolete`` and ``_dropped`` go straight into ``state.obsolete`` and
    ``state.dropped``.  EditError if malformed."""
    if type(edit) is not dict:
        raise EditError(f"edit must be a JSON object, not {type(edit).__name__}")
    if "format" not in edit:
        raise EditError("the first edit of a manifest must hold the whole state (no format tag)")
    rest = {k: v for k, v in edit.items() if k not in SNAPSHOT_KEYS}
    edits: list[Any] = [{"add_keyspace": ks} for ks in _list(edit.get("_keyspaces", []), "_keyspaces")]
    edits += [{"keyspace_ttl": t} for t in _list(edit.get("_ttls", []), "_ttls")]
    state.obsolete.update(_int(n, "_obsolete item", 1) for n in _list(edit.get("_obsolete", []),
                                                                     "_obsolete"))
    dropped = {_int(n, "_dropped item", 1, MAX_KEYSPACE_ID) for n in _list(edit.get("_dropped", []),
                                                                          "_dropped")}
    state.dropped.update(dropped)
    return edits + [rest]
