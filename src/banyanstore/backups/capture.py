"""A consistent copy of a store's files, taken while the store keeps running.

The backup reads the store's *files*, never its memory, so the same code works
for a store open in this process, a store a writer in another process holds,
and a closed one; nothing is flushed and the writer is never blocked.

The capture, in the order that makes it safe:

1. hard-link every WAL segment into the scratch directory (a link pins the file:
   records the writer appends to it later are seen through the link too);
2. read the manifest ``CURRENT`` names: state *S* (live tables, ``flushed_version``
   F, ``wal_seq``);
3. hard-link every table S names.  Tables are immutable, so a link pins exactly
   the bytes S means;
4. read the linked WAL from S's ``wal_seq`` up to its last intact record (a
   writer may be appending: its half-written last record is a torn tail here) and
   copy every record with a version above F into the WAL tail object, stopping
   at the first record of a keyspace S does not know (created after step 2);
5. read the manifest again: a keyspace of S dropped meanwhile starts the round over
   (see :func:`_check_no_drop_since`).

Why step 1 comes first: the writer cuts the WAL only after the manifest edit naming
the new ``wal_seq`` is durable, and cuts whole segments holding only records below
it.  So a segment removed before step 2 held only records below S's ``wal_seq``:
every segment holding a record from S's ``wal_seq`` on was linked in step 1.  A
flush finishing at any moment of the capture therefore costs nothing.  (A segment
found gone in step 1 took the older ones with it -- the writer cuts oldest first --
so those links are dropped; if it was the newest listed one, a newer one exists:
the directory is listed again.)

Step 3 is the only race left: a merge may delete a table S names before it is
linked.  A merge deletes its inputs only after the edit dropping them is durable,
so the capture reads the manifest again (a newer S, still read after step 1) and
links only the tables it lacks -- the links it holds pin the same immutable bytes
whichever state names them, and those the new S no longer names are dropped.  A
round costs one manifest read plus the links of the tables merges wrote since the
last one, so even a store merging all the time lets it finish; a store whose
tables vanish under ``MAX_ATTEMPTS`` rounds in a row is a StorageIOError.  A table
missing that a fresh manifest read still names is damage (CorruptionError).

The manifest can run ahead of the files: a merge or ``set_history_floor`` records a
history floor at the writer's version, whose newest writes a power loss may have
taken from the WAL (they were not synced yet).  The capture lowers a floor above V to V (the merges behind
it kept, for every key, its newest write at or below the floor, so reads at V are
exact), and keeps the time samples up to V only (a sample of a later version
would date new writes of the restored store too early).

Every version up to F is in the tables of S; every version in ``(F, V]`` is in
the tail, because WAL records are appended in version order and the tail is a
prefix of the WAL from S's ``wal_seq``.  So the capture holds exactly the writes
with version <= V -- one version across every keyspace.  Every write whose call
returned is in the WAL file (log/writer.py), so a backup holds every write
acknowledged before step 1; a backup of a store open in this process also syncs it
first (``store.sync()``), which makes those writes durable.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from dataclasses import dataclass

from ..errors import CorruptionError, StorageIOError, StoreNotFoundError
from ..io.posix import PosixEnv
from ..log.format import HEADER_SIZE, MissingSegmentError, parse_header
from ..log.log import Log
from ..log.segment import (
    HeaderNotWritten,
    Seal,
    create_segment,
    list_segments,
    read_missing_header,
    read_seal,
    segment_name,
)
from ..lsm.manifest import Manifest, ManifestState, TableInfo
from ..lsm.recovery import lost_manifest_edits
from ..lsm.wal import decode, encode_batch, encode_with_ranges
from .waltail import TailWriter

__all__ = ["Capture", "StagedTail", "capture", "MAX_ATTEMPTS"]

MAX_ATTEMPTS = 100


@dataclass(frozen=True)
class StagedTail:
    path: str
    sha256: str
    size: int
    records: int
    first_version: int
    last_version: int


@dataclass(frozen=True)
class Capture:
    """What a backup holds: the manifest state S the tables were pinned for (tables,
    counters, keyspaces), the staged files and the version."""

    state: ManifestState
    keyspaces: dict[int, str]
    keyspace_ttl: dict[int, float | None]
    tables: list[tuple[TableInfo, str]]  # (the manifest's record, the staged copy)
    tail: StagedTail | None
    version: int
    history_floor: int
    time_map: list[tuple[int, int]]


class _Raced(Exception):
    """The store changed under this round: read the manifest again."""


def capture(store_dir: str, staging: str, *, known_version: int = 0) -> Capture:
    """Capture the store in ``store_dir`` into the directory ``staging``.

    ``known_version``: a version every write up to which is already in the store's
    files (the caller synced it); the capture's version is at least that."""
    if not os.path.exists(os.path.join(store_dir, "CURRENT")):
        raise StoreNotFoundError(f"no store at {store_dir} (no CURRENT)")
    if not os.path.isdir(os.path.join(store_dir, "wal")):  # every open refuses it too
        raise CorruptionError("the WAL directory is missing: the writes not yet in tables are "
                              "lost", path=os.path.join(store_dir, "wal"))
    wal_dir = _fresh(os.path.join(staging, "wal"))
    try:
        return _capture(store_dir, staging, wal_dir, known_version)
    except CorruptionError as exc:
        # Damage found through a link names the store's file: the link's scratch
        # directory is removed when the backup ends (wal/ and tables/ in both).
        raise exc.relocated(wal_dir, os.path.join(store_dir, "wal")).relocated(
            os.path.join(staging, "tables"), os.path.join(store_dir, "tables")) from exc


def _capture(store_dir: str, staging: str, wal_dir: str, known_version: int) -> Capture:
    """:func:`capture`'s steps, reading the store's WAL through links in ``wal_dir``."""
    env = PosixEnv()
    # step 1: before any manifest read
    newest_unsealed = _link_wal(env, os.path.join(store_dir, "wal"), wal_dir)
    pinned = _PinnedTables(env, store_dir, _fresh(os.path.join(staging, "tables")))
    cause: BaseException | None = None
    for attempt in range(MAX_ATTEMPTS):
        try:
            state = _load(env, store_dir)
            tables = pinned.pin(state)
        except _Raced as exc:
            cause = exc.__cause__ or exc
            time.sleep(min(0.05, 0.001 * attempt))  # let the merge that raced us finish
            continue
        result = _finish(store_dir, wal_dir, staging, state, tables, known_version, newest_unsealed)
        try:
            _check_no_drop_since(env, store_dir, state)
        except _Raced as exc:
            cause = exc.__cause__ or exc
            continue
        return result
    if isinstance(cause, CorruptionError):
        raise cause  # it was not a race after all
    raise StorageIOError(f"store {store_dir} changed under every one of {MAX_ATTEMPTS} attempts "
                         f"to capture it (last: {cause})", path=store_dir, op="backup")


def _finish(store_dir: str, wal_dir: str, staging: str, state: ManifestState,
            tables: list[tuple[TableInfo, str]], known_version: int, newest_unsealed: bool) -> Capture:
    """Steps 4 and on: the WAL tail above S's ``flushed_version``, the version, the floor."""
    tail = _copy_tail(store_dir, wal_dir, os.path.join(staging, "wal-tail"), state,
                      set(state.keyspaces), newest_unsealed)
    version = max(state.flushed_version, tail.last_version if tail else 0, known_version)
    floor = min(state.history_floor, version)
    samples = [(v, second) for v, second in state.time_map.samples if v <= version]
    return Capture(state, dict(state.keyspaces), dict(state.keyspace_ttl), tables, tail, version,
                   floor, samples)


def _check_no_drop_since(env: PosixEnv, store_dir: str, state: ManifestState) -> None:
    """_Raced if a keyspace live in ``state`` has been dropped since it was read.

    A drop is a manifest edit, not a WAL record: the tail, read after ``state``, may
    hold writes made after the drop beside the keyspace's own records, which a
    restore would bring back with them -- a state the store never had.  A drop seen
    after the tail was read came after every record in it, so the capture stands."""
    try:
        now = Manifest.load(env, store_dir)
    except (CorruptionError, FileNotFoundError, StorageIOError) as exc:  # a roll: see _load
        _raise_unless_a_roll(exc)
        raise _Raced(str(exc)) from exc
    # Gone from the keyspaces, not "in now.dropped": ids are never reused, and a store
    # stops carrying a dropped id once its WAL no longer holds the keyspace's records.
    dropped = sorted(state.keyspaces.keys() - now.keyspaces.keys())
    if dropped:
        raise _Raced(f"keyspace(s) {dropped} dropped during the capture")


def _fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.mkdir(path)
    return path


def _load(env: PosixEnv, store_dir: str) -> ManifestState:
    try:
        return Manifest.load(env, store_dir)
    except (CorruptionError, FileNotFoundError, StorageIOError) as exc:
        _raise_unless_a_roll(exc)
        # A manifest roll replaces CURRENT and then removes the old file: a reader
        # between the two finds it missing.  Real damage persists over every attempt.
        raise _Raced(str(exc)) from exc


def _raise_unless_a_roll(exc: Exception) -> None:
    """Raise ``exc`` at once when no manifest roll can explain it: a roll makes a file
    missing (ENOENT) or a manifest read half-written, never a directory in a file's place
    or a permission refused -- those say the same for every attempt, and are said as
    they are, not as a store changing under 100 attempts."""
    if (isinstance(exc, StorageIOError) and not isinstance(exc, FileNotFoundError)
            and getattr(exc, "errno", None) not in (None, errno.ENOENT)):
        raise exc


def _link(env: PosixEnv, src: str, dst: str) -> None:
    try:
        env.link(src, dst)
    except OSError as exc:
        if getattr(exc, "errno", None) == errno.ENOENT or isinstance(exc, FileNotFoundError):
            raise _Raced(f"{src} was removed") from exc
        raise


def _link_wal(env: PosixEnv, src_wal: str, wal_dir: str) -> bool:
    """Step 1: link every segment of ``src_wal`` into ``wal_dir``, oldest first.

    A segment gone before its link was cut, and the writer cuts oldest first: the
    links made so far hold only records below the cut too, so they are dropped
    (the linked segments stay contiguous).  The writer never cuts its active
    segment, so if the newest listed one is gone a newer one exists that the
    listing missed: list again.  So too if the newest one linked is sealed (format 3)
    while a newer segment exists: the writer rotated after the listing.

    Returns whether the newest segment linked was unsealed once linked: a SEAL seen
    in it later is a rotation after step 1 (see :func:`_open_links`).  False for a
    sealed one with nothing newer in the store: its successor is lost."""
    if not os.path.isdir(src_wal):
        return True
    for _listing in range(MAX_ATTEMPTS):
        segments = list_segments(env, src_wal)
        linked: list[str] = []
        for i, (_seq, name) in enumerate(segments):
            dst = os.path.join(wal_dir, name)
            try:
                _link(env, os.path.join(src_wal, name), dst)
            except _Raced:
                for older in linked:
                    os.remove(older)
                linked.clear()
                if i == len(segments) - 1:
                    break  # the newest listed one: list again
                continue
            linked.append(dst)
        else:
            if not linked or _seal_of(env, linked[-1]) is None:
                return True
            if not [seq for seq, _name in list_segments(env, src_wal) if seq > segments[-1][0]]:
                return False  # damage: the open of the links reports the missing segment
            for older in linked:  # rotated since the listing: list again
                os.remove(older)
    raise StorageIOError(f"the WAL segments of {src_wal} were cut under every one of {MAX_ATTEMPTS} "
                         "listings of the directory", path=src_wal, op="backup")


class _PinnedTables:
    """Step 3: the tables of the newest manifest state read, hard-linked into a
    staging directory.  Tables are immutable and their numbers never reused, so a
    link made for an earlier state pins the same bytes for a later one that still
    names it: a retry links only the tables it lacks."""

    def __init__(self, env: PosixEnv, store_dir: str, tables_dir: str) -> None:
        self.env, self.store_dir, self.tables_dir = env, store_dir, tables_dir
        self.linked: dict[int, str] = {}  # file number -> staged link

    def pin(self, state: ManifestState) -> list[tuple[TableInfo, str]]:
        """``(record, staged link)`` of every table ``state`` names, in its order.
        _Raced if one vanished (a merge deleted it); CorruptionError if one is lost
        or has another size than the manifest says."""
        out = [(info, self._pin_one(info)) for per_keyspace in state.tables.values()
               for info in per_keyspace.values()]
        named = {info.file_no for info, _ in out}
        for file_no in [n for n in self.linked if n not in named]:  # merged away since linked
            os.remove(self.linked.pop(file_no))
        return out

    def _pin_one(self, info: TableInfo) -> str:
        dst = self.linked.get(info.file_no)
        if dst is not None:
            return dst
        name = f"{info.file_no:06d}.sst"
        src, dst = os.path.join(self.store_dir, "tables", name), os.path.join(self.tables_dir, name)
        try:
            _link(self.env, src, dst)
        except _Raced:
            _check_still_named(self.env, self.store_dir, info, src)
            raise
        size = os.stat(dst).st_size
        if size != info.file_size:
            raise CorruptionError(f"table is {size} bytes, the manifest says {info.file_size}", path=src)
        self.linked[info.file_no] = dst
        return dst


def _check_still_named(env: PosixEnv, store_dir: str, info: TableInfo, src: str) -> None:
    """A merge removes its inputs only after the edit dropping them is durable, so a
    missing table that a fresh read of the manifest still names is lost, not raced."""
    now = _load(env, store_dir)
    if info.file_no in now.tables.get(info.keyspace, {}):
        raise CorruptionError("table named by the manifest is missing", path=src)


def _open_links(wal_dir: str, newest_unsealed: bool) -> Log:
    """The linked WAL ``wal_dir``, opened read-only.

    A link shares its file with the store's segment, so the writer may seal the newest
    linked segment after step 1 (format 3): it then names a successor created after
    the links, which holds only records written after step 1.  If that segment was
    unsealed once linked (``newest_unsealed``, see :func:`_link_wal`), an empty segment
    stands in for the successor among the links, so they read as the log they were;
    otherwise the missing successor is damage (MissingSegmentError)."""
    try:
        return Log.open(wal_dir, read_only=True, io_mode="sync")
    except MissingSegmentError:
        if not newest_unsealed or not _stand_in_for_successor(wal_dir):
            raise
    return Log.open(wal_dir, read_only=True, io_mode="sync")


def _seal_of(env: PosixEnv, path: str) -> Seal | None:
    """The SEAL ending the segment file ``path`` (format 3), or None.

    None too for a segment whose header is not written yet: the writer creates the
    file, then stores the header before any record, so such a (newest) segment is being
    created -- or its creation was cut by a crash -- and holds nothing; a read-only open
    of the links skips it too.  Records after a missing header are damage
    (CorruptionError, see :func:`read_missing_header`)."""
    f = env.open_readable(path)
    try:
        size, head = f.size, f.read(0, HEADER_SIZE)
        if len(head) < HEADER_SIZE or not any(head):
            try:
                head = read_missing_header(f.read, size, path)
            except HeaderNotWritten:
                return None
        _first, version = parse_header(head, path)
        return read_seal(f.read, size, version, confirm=True)  # not a record's last bytes
    finally:
        f.close()


def _stand_in_for_successor(wal_dir: str) -> bool:
    """Put an empty segment among the links for the successor the newest linked
    segment's SEAL names; False (nothing done) if it has none."""
    env = PosixEnv()
    segments = list_segments(env, wal_dir)
    seal = _seal_of(env, os.path.join(wal_dir, segments[-1][1])) if segments else None
    if seal is None:
        return False
    create_segment(env, os.path.join(wal_dir, segment_name(seal[0])), seal[0]).close()
    return True


def _copy_tail(store_dir: str, wal_dir: str, dest: str, state: ManifestState, keyspaces: set[int],
               newest_unsealed: bool) -> StagedTail | None:
    """Copy the WAL records above ``flushed_version`` into a tail object at ``dest``."""
    with _open_links(wal_dir, newest_unsealed) as log, open(dest, "wb") as out:
        writer = TailWriter(out)
        if log.first_seq > state.wal_seq:
            # The links hold every segment from S's wal_seq on (step 1 came first, and the
            # writer cuts only below a durable wal_seq), so this is damage -- records the
            # manifest needs are gone, which every open refuses; skipping them gave a
            # backup, and a restored store, silently without their writes.  Or the
            # manifest lost its newest edits: then the error names it, as the open's does.
            env = PosixEnv()
            manifest = os.path.join(store_dir, Manifest.current_name(env, store_dir))
            raise lost_manifest_edits(env, store_dir, state, manifest, log.first_seq) or \
                CorruptionError(f"the WAL starts at seq {log.first_seq}, but the manifest "
                                f"needs records from seq {state.wal_seq}: they are lost",
                                path=wal_dir)
        if log.last_seq + 1 < state.wal_seq:
            # The same for its newest segments (or every one, wal/ itself) gone: an empty
            # or short log reads as one that ends before the manifest's replay start.
            raise CorruptionError(f"the WAL ends at seq {log.last_seq}, but the manifest "
                                  f"needs records from seq {state.wal_seq}: they are lost",
                                  path=wal_dir)
        start = state.wal_seq
        if start <= log.last_seq:
            for seq, record in log.read(start):
                version, ms, ops, ranges = decode(record, f"{wal_dir} (record {seq})")
                if version <= state.flushed_version:
                    continue  # in the tables already (the WAL was not cut yet)
                if any(op[0] in state.dropped for op in (*ops, *ranges)):
                    # written before its keyspace was dropped: the restored store knows
                    # neither the keyspace nor the drop, so the record goes without those
                    # ops -- empty if it held nothing else, so that the tail still reaches
                    # the version (a restore must open at the backup's version)
                    ops = [op for op in ops if op[0] not in state.dropped]
                    ranges = [r for r in ranges if r[0] not in state.dropped]
                    record = (encode_with_ranges(version, ms, ops, ranges) if ranges
                              else encode_batch(version, ms, ops))
                if any(op[0] not in keyspaces for op in (*ops, *ranges)):
                    break  # its keyspace is younger than the manifest read: after the capture
                if writer.records and version <= writer.last_version:
                    raise CorruptionError(f"WAL record {seq} has version {version}, not above "
                                          f"{writer.last_version}", path=wal_dir)
                writer.add(record, version)
    if not writer.records:
        os.remove(dest)
        return None
    return StagedTail(dest, writer.sha256.hexdigest(), writer.size, writer.records,
                      writer.first_version, writer.last_version)
