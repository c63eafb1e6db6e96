"""Keyspaces: a TTL given at creation outlives reopening, a bad TTL is refused at the
API and in the manifest, and batches never create keyspaces by naming them."""

from __future__ import annotations

import math
import shutil
import struct
from pathlib import Path
from typing import Any

import crc32c
import pytest

import banyanstore
import banyanstore.tools
from banyanstore.errors import CorruptionError, KeyspaceNotFoundError
from banyanstore.io import PosixEnv
from banyanstore.lsm.manifest import Manifest
from banyanstore.lsm.timemap import TimeMap

from .model import FakeClock

OPTS: dict[str, Any] = dict(io_mode="sync", memtable_size=64 * 1024, compaction=False, wal_sync="never")


def _reads(store: Any, name: str) -> dict[str, Any]:
    ks = store.keyspace(name)
    with store.snapshot() as snap:
        return {"get": ks.get(b"k"), "multi_get": ks.multi_get([b"k"]), "scan": list(ks.scan()),
                "history": list(ks.history(b"k")), "in": b"k" in ks,
                "snap.get": snap.get(b"k", keyspace=name), "snap.scan": list(snap.scan(keyspace=name)),
                "snap.history": list(snap.history(b"k", keyspace=name))}


EXPIRED = {"get": None, "multi_get": [None], "scan": [], "history": [], "in": False, "snap.get": None,
           "snap.scan": [], "snap.history": []}


@pytest.mark.parametrize("flush", [False, True], ids=["in-wal", "in-table"])
def test_ttl_given_at_creation_survives_reopen(tmp_path: Path, flush: bool) -> None:
    """keyspace("hot", ttl=2): after close and reopen the TTL is still 2 and expired
    values never come back (from the WAL or from a table, through every read)."""
    clock = FakeClock()
    path = tmp_path / "db"
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        hot = s.keyspace("hot", ttl=2)
        hot.put(b"k", b"v")
        if flush:
            s.flush()
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        assert s.stats()["keyspaces"]["hot"]["ttl"] == 2
        assert s.keyspace("hot").get(b"k") == b"v"  # not expired yet
        clock.now += 10
        assert _reads(s, "hot") == EXPIRED
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        assert _reads(s, "hot") == EXPIRED
        s.compact()
        assert _reads(s, "hot") == EXPIRED


@pytest.mark.parametrize("flush", [False, True], ids=["in-memtable", "in-table"])
def test_a_clock_stepping_back_brings_no_expired_entry_back(tmp_path: Path, flush: bool) -> None:
    """Expired entries stay expired when the wall clock steps back (an NTP correction):
    every read -- snapshots and history too -- answers as before, so what a merge
    already dropped and what it has not yet dropped read alike.  So does a reopen by a
    clock earlier than the store's last commit."""
    clock = FakeClock()
    path = tmp_path / "db"
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        hot = s.keyspace("hot", ttl=10)
        hot.put(b"k", b"v")
        if flush:
            s.flush()
        clock.now += 20
        s.put(b"other", b"o")  # the store's last commit: 20 s after k's
        assert _reads(s, "hot") == EXPIRED
        clock.now -= 15  # k was written 5 s ago by the clock now
        assert _reads(s, "hot") == EXPIRED
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        assert _reads(s, "hot") == EXPIRED
    with banyanstore.open(path, read_only=True, clock=clock, io_mode="sync") as r:
        assert _reads(r, "hot") == EXPIRED


def test_a_thinned_time_map_persists_every_second_it_dates(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's time map thins its older half (lsm/timemap.py) -- here past 16
    samples -- merging a sample into the one before it.  When that one is the last the
    manifest holds, the next flush must still persist the merged sample's second: else
    readers and the next open date its versions at the earlier second, and entries
    still inside their TTL (here by 500 s) vanish there while the writer shows them."""
    monkeypatch.setattr("banyanstore.lsm.timemap.LIMIT", 16)
    clock = FakeClock()
    path = tmp_path / "db"
    written = {}
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        hot = s.keyspace("hot", ttl=10000)
        for i in range(17):  # one version a second: one sample each
            clock.now += 1000 if i == 3 else 1  # a quiet gap before the fourth
            hot.put(b"k%02d" % i, b"v")
            written[b"k%02d" % i] = clock.now
            if i == 2:
                s.flush()  # three samples persisted; the 17th thins the map
        s.flush()
        clock.now = written[b"k03"] + 9500
        assert hot.get(b"k03") == b"v"
        with banyanstore.open(path, read_only=True, clock=clock, io_mode="sync") as r:
            assert r.keyspace("hot").get(b"k03") == b"v"
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        assert s.keyspace("hot").get(b"k03") == b"v"


def test_ttl_change_on_existing_keyspace_persists(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with banyanstore.open(path, **OPTS) as s:
        s.keyspace("hot")
        s.keyspace("hot", ttl=5.5)
    with banyanstore.open(path, **OPTS) as s:
        assert s.stats()["keyspaces"]["hot"]["ttl"] == 5.5


@pytest.mark.parametrize("ttl, error", [
    ("x", TypeError), (True, TypeError), ([1], TypeError),
    (math.nan, ValueError), (math.inf, ValueError), (-math.inf, ValueError), (-1, ValueError),
    (10 ** 400, ValueError),
], ids=["str", "bool", "list", "nan", "inf", "-inf", "negative", "int-beyond-float"])
def test_bad_ttl_is_refused_and_never_persisted(tmp_path: Path, ttl: Any, error: type) -> None:
    """A bad ttl raises TypeError/ValueError naming ``ttl`` -- for a new keyspace and for
    an existing one -- and nothing is persisted: reads and compaction keep working."""
    path = tmp_path / "db"
    with banyanstore.open(path, **OPTS) as s:
        s.keyspace("old").put(b"k", b"v")
        for name in ("new", "old"):
            with pytest.raises(error, match="ttl"):
                s.keyspace(name, ttl=ttl)
        assert s.keyspaces() == ["default", "old"]
        assert s.keyspace("old").get(b"k") == b"v"
        s.compact()
    with banyanstore.open(path, **OPTS) as s:
        assert s.stats()["keyspaces"]["old"]["ttl"] is None and s.keyspace("old").get(b"k") == b"v"


def _append_raw_edit(path: Path, edit_json: str) -> None:
    """Append one edit, serialised exactly as given, to the store's manifest (what an
    older banyanstore wrote for an unchecked TTL)."""
    name = Manifest.current_name(PosixEnv(), str(path))
    payload = edit_json.encode()
    with open(path / name, "ab") as f:
        f.write(struct.pack("<II", len(payload), crc32c.crc32c(payload)) + payload)


@pytest.mark.parametrize("raw", ['"x"', "NaN", "Infinity", "-1", "[2]", "true", "1" + "0" * 400])
def test_persisted_bad_ttl_is_corruption_at_open(tmp_path: Path, raw: str) -> None:
    """A manifest holding a bad keyspace TTL (written before TTLs were checked) fails
    the open with CorruptionError naming the manifest -- not later reads or merges."""
    path = tmp_path / "db"
    with banyanstore.open(path, **OPTS) as s:
        s.keyspace("hot").put(b"k", b"v")
        ks_id = s.stats()["keyspaces"]["hot"]["id"]
    _append_raw_edit(path, f'{{"keyspace_ttl":[{ks_id},{raw}]}}')
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match="keyspace_ttl") as info:
            banyanstore.open(path, **OPTS, read_only=read_only)
        assert info.value.path is not None and "MANIFEST-" in info.value.path


def test_batch_naming_an_unknown_keyspace_raises_and_creates_nothing(tmp_path: Path) -> None:
    """A batch op naming a keyspace that was never created raises KeyspaceNotFoundError
    naming it (a typo must not fill a new keyspace); nothing of the batch is written.
    Snapshot reads and compact() naming it raise the same, and never create it."""
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        s.keyspace("index")
        before = s.version
        with pytest.raises(KeyspaceNotFoundError, match="'indx'"):
            with s.batch() as b:
                b.put(b"a", b"1")
                b.put(b"a", b"1", keyspace="indx")
        with pytest.raises(KeyspaceNotFoundError, match="'indx'"):
            s.batch().delete(b"a", keyspace="indx")
        with s.snapshot() as snap, pytest.raises(KeyspaceNotFoundError, match="'indx'"):
            snap.get(b"a", keyspace="indx")
        with pytest.raises(KeyspaceNotFoundError, match="'indx'"):
            s.compact("indx")
        assert s.version == before and s.get(b"a") is None
        assert s.keyspaces() == ["default", "index"]
        with s.batch() as b:  # existing keyspaces, by name or handle, work
            b.put(b"a", b"1", keyspace="index")
            b.put(b"b", b"2", keyspace=s.keyspace("index"))
        assert list(s.keyspace("index").scan()) == [(b"a", b"1"), (b"b", b"2")]
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        assert s.keyspaces() == ["default", "index"]


def test_keyspace_handle_of_another_store_is_refused(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "a", **OPTS) as a, banyanstore.open(tmp_path / "b", **OPTS) as b:
        other = b.keyspace("index")
        a.keyspace("index")
        with pytest.raises(ValueError, match="another store"):
            a.batch().put(b"k", b"v", keyspace=other)


@pytest.mark.parametrize("write", ["put", "batch"])
def test_read_racing_a_write_never_expires_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              write: str) -> None:
    """A TTL read running while a write commits (here: from inside the write, where the
    commit time is recorded) must not take the new version for one past its TTL -- nor
    leave that answer cached for the reads after the write returned."""
    clock = FakeClock()
    store = banyanstore.open(tmp_path / "db", clock=clock, **OPTS)
    hot = store.keyspace("hot", ttl=10)
    hot.put(b"old", b"1")
    clock.now += 20  # "old" expired; the next write is the first of a later second
    note = TimeMap.note

    def note_after_a_racing_read(self: TimeMap, version: int, ms: int) -> None:
        hot.get(b"other")  # a read on another thread, landing just before the commit time
        note(self, version, ms)

    monkeypatch.setattr(TimeMap, "note", note_after_a_racing_read)
    if write == "put":
        hot.put(b"k", b"new")
    else:
        with store.batch() as b:
            b.put(b"k", b"new", keyspace="hot")
    monkeypatch.undo()
    assert hot.get(b"k") == b"new"
    assert list(hot.scan()) == [(b"k", b"new")]
    store.close()


@pytest.mark.parametrize("name", ["\udcff", "é" * 513, "\U0001F600" * 300, "x" * 1025],
                         ids=["lone-surrogate", "1026-utf8-bytes", "1200-utf8-bytes", "1025-chars"])
def test_a_keyspace_name_tables_cannot_hold_is_refused_before_anything_is_written(
        tmp_path: Path, name: str) -> None:
    """A table records its keyspace's name as at most 1024 bytes of UTF-8: a name that
    is not UTF-8 text (a lone surrogate, as os.fsdecode makes) or longer than that is a
    ValueError naming the keyspace name -- not a keyspace whose every flush fails (a
    store that then cannot be closed) or whose tables read back as corrupt."""
    path = tmp_path / "db"
    with banyanstore.open(path, **OPTS) as s:
        s.put(b"k", b"v")
        with pytest.raises(ValueError, match="keyspace name"):
            s.keyspace(name)
        with pytest.raises(ValueError, match="keyspace name"):
            s.keyspace(name, ttl=5)
        assert s.keyspaces() == ["default"]
        longest = s.keyspace("é" * 512)  # 1024 bytes: the limit itself is allowed
        longest.put(b"k", b"v")
        s.flush()
    with banyanstore.open(path, **OPTS) as s:
        assert s.keyspaces() == ["default", "é" * 512]
        assert s.keyspace("é" * 512).get(b"k") == b"v" and s.get(b"k") == b"v"


def test_set_ttl_none_removes_a_keyspace_ttl_durably(tmp_path: Path) -> None:
    """``keyspace(name, ttl=None)`` leaves a TTL as it is, so removing one needs
    ``set_ttl(None)``: entries the TTL had not expired yet never expire then -- in the
    writer, after a reopen (also one whose ``ttl`` option would expire them), in a
    read-only store, a checkpoint and a restored backup.  ``set_ttl(seconds)`` sets one."""
    clock = FakeClock()
    path = tmp_path / "db"
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        hot = s.keyspace("hot", ttl=10)
        hot.put(b"k", b"v")
        s.flush()
        with banyanstore.open(path, read_only=True, clock=clock, io_mode="sync") as r:
            assert r.keyspace_info()["hot"]["ttl"] == 10
            hot.set_ttl(None)
            assert s.keyspace_info()["hot"] == {"id": hot.id, "ttl": None}
            clock.now += 100
            assert hot.get(b"k") == b"v"
            r.refresh()
            assert r.keyspace_info()["hot"]["ttl"] is None and r.keyspace("hot").get(b"k") == b"v"
            with pytest.raises(banyanstore.errors.ReadOnlyError):
                r.keyspace("hot").set_ttl(5)
        s.checkpoint(tmp_path / "cp")
        banyanstore.backup(s, str(tmp_path / "bk"))
    banyanstore.restore(str(tmp_path / "bk"), tmp_path / "restored")
    for copy in ("db", "cp", "restored"):
        with banyanstore.open(tmp_path / copy, clock=clock, ttl=1, **OPTS) as s:
            assert s.keyspace_info()["hot"]["ttl"] is None, copy
            assert s.keyspace("hot").get(b"k") == b"v", copy
            s.compact()
            assert s.keyspace("hot").get(b"k") == b"v", copy
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        s.keyspace("hot").set_ttl(5)  # a TTL again: k, 100 s old, expires
        assert s.keyspace("hot").get(b"k") is None
        s.set_ttl(7)  # the default keyspace too
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        assert s.keyspace_info() == {"default": {"id": 0, "ttl": 7}, "hot": {"id": 1, "ttl": 5}}


@pytest.mark.parametrize("ttl, error", [("x", TypeError), (True, TypeError), (math.inf, ValueError),
                                         (-1, ValueError)])
def test_set_ttl_refuses_a_bad_ttl_and_a_dropped_keyspace(tmp_path: Path, ttl: Any, error: type) -> None:
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        hot = s.keyspace("hot", ttl=3)
        with pytest.raises(error, match="ttl"):
            hot.set_ttl(ttl)
        assert s.keyspace_info()["hot"]["ttl"] == 3
        s.drop_keyspace("hot")
        with pytest.raises(KeyspaceNotFoundError, match="hot"):
            hot.set_ttl(None)
        assert s.keyspaces() == ["default"]


def test_a_reopen_by_an_earlier_clock_brings_no_expired_entry_back(tmp_path: Path) -> None:
    """The time expiry was last judged at is persisted with the manifest (every flush,
    merge and TTL edit, and a clean close): a reopen -- a writer, a read-only store, a
    checkpoint, a restored backup, a copy of the files after a merge without close --
    by a clock earlier than that time shows no entry that had expired there.  (The
    clock runs ahead of the real one: a salvage dates nothing later than now.)"""
    clock = FakeClock(4e9)
    path = tmp_path / "db"
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        hot = s.keyspace("hot", ttl=10)
        hot.put(b"k", b"v")
        hot.put(b"m", b"w")
        s.flush()
        clock.now += 1
        s.put(b"other", b"o")  # the last commit: 1 s after k's
        s.flush()  # the close has nothing to flush: it records the time itself
        clock.now += 19
        assert _reads(s, "hot") == EXPIRED  # judged 20 s after k was written
    clock.now -= 15  # 5 s after k's write: inside its TTL by this clock
    with banyanstore.open(path, read_only=True, clock=clock, io_mode="sync") as r:
        assert _reads(r, "hot") == EXPIRED
    with banyanstore.open(path, clock=clock, **OPTS) as s:
        assert _reads(s, "hot") == EXPIRED
        s.checkpoint(tmp_path / "cp")
        banyanstore.backup(s, str(tmp_path / "bk"))
        other_table = s.stats()["keyspaces"]["default"]["table_list"][0]["file"]
    banyanstore.restore(str(tmp_path / "bk"), tmp_path / "restored")
    shutil.copytree(path, tmp_path / "salvaged")
    # a damaged table of another keyspace: repair salvages the store from its files
    (tmp_path / "salvaged" / "tables" / f"{other_table:06d}.sst").write_bytes(b"damaged")
    assert banyanstore.tools.repair(tmp_path / "salvaged").lost
    for copy in ("cp", "restored", "salvaged"):
        with banyanstore.open(tmp_path / copy, clock=clock, **OPTS) as s:
            assert _reads(s, "hot") == EXPIRED, copy


def test_a_merge_persists_the_time_it_expired_entries_at(tmp_path: Path) -> None:
    """A merge judged at a later clock drops a table of expired entries; the files as
    they are right after it (no close: a crash) opened by an earlier clock do not show
    the entries that expired with them and that no merge reached (another keyspace's),
    nor does a read-only store with that clock once it has refreshed."""
    clock, behind = FakeClock(), FakeClock()
    path = tmp_path / "db"
    with banyanstore.open(path, clock=clock, **OPTS) as s, \
            banyanstore.open(path, read_only=True, clock=behind, io_mode="sync") as r:
        hot, cold = s.keyspace("hot", ttl=10), s.keyspace("cold", ttl=10)
        hot.put(b"a", b"1")
        cold.put(b"k", b"v")
        s.flush()
        clock.now += 20
        s.compact("hot")  # drops a's table, judged 20 s after the writes
        assert s.stats()["keyspaces"]["hot"]["tables"] == 0
        assert s.stats()["keyspaces"]["cold"]["tables"] == 1 and _reads(s, "cold") == EXPIRED
        shutil.copytree(path, tmp_path / "crashed")
        behind.now += 5
        r.refresh()
        assert _reads(r, "cold") == EXPIRED
    clock.now -= 15
    with banyanstore.open(tmp_path / "crashed", clock=clock, **OPTS) as s:
        assert _reads(s, "cold") == EXPIRED and list(s.keyspace("hot").scan()) == []


@pytest.mark.parametrize("raw", ['"x"', "NaN", "-1", "[2]", "true", "null", "1" + "0" * 400])
def test_persisted_bad_expiry_time_is_corruption_at_open(tmp_path: Path, raw: str) -> None:
    path = tmp_path / "db"
    with banyanstore.open(path, **OPTS) as s:
        s.keyspace("hot", ttl=5).put(b"k", b"v")
    _append_raw_edit(path, f'{{"expiry_time":{raw}}}')
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match="expiry_time") as info:
            banyanstore.open(path, **OPTS, read_only=read_only)
        assert info.value.path is not None and "MANIFEST-" in info.value.path


@pytest.mark.parametrize("ttl", [0.25, 0.5, 1.5])
def test_a_fractional_ttl_counts_as_given(tmp_path: Path, ttl: float) -> None:
    """docs/api.md: an entry goes ``ttl`` to ``ttl + 1`` s after its write (its second
    dates it) -- a fraction is neither dropped nor rounded up to a whole second."""
    clock = FakeClock()
    with banyanstore.open(tmp_path / "db", clock=clock, **OPTS) as s:
        for offset in (0.0, 0.3, 0.9):  # where in its second the write falls
            clock.now = 1_700_000_100.0 + 10 * offset + offset
            hot = s.keyspace(f"hot-{offset}", ttl=ttl)
            hot.put(b"k", b"v")
            written, gone = clock.now, None
            for step in range(1, 300):
                clock.now = written + step / 100
                if hot.get(b"k") is None:
                    gone = step / 100
                    break
            assert gone is not None and ttl <= gone <= ttl + 1, (offset, gone)
            second_ends = math.floor(written) + 1 - written
            assert gone == pytest.approx(second_ends + ttl, abs=0.011), (offset, gone)


def test_a_ttl_equal_to_the_option_is_stored_all_the_same(tmp_path: Path) -> None:
    """``keyspace(name, ttl=60)`` stores the TTL (docs/api.md) also when the keyspace
    already follows a ``ttl=60`` option -- the option is not stored, so the next open
    without it would find no TTL and never expire its entries."""
    path = tmp_path / "db"
    with banyanstore.open(path, **OPTS) as s:
        s.keyspace("a")
    with banyanstore.open(path, ttl=60, **OPTS) as s:
        s.keyspace("a", ttl=60)
        s.keyspace("default", ttl=60)
        s.keyspace("b", ttl=60)  # new: stored at creation
        with banyanstore.open(path, read_only=True, ttl=60, io_mode="sync") as r:
            r.keyspace("a", ttl=60)  # what it has already: no write, no ReadOnlyError
    with banyanstore.open(path, **OPTS) as s:
        assert {n: i["ttl"] for n, i in s.keyspace_info().items()} == {"a": 60, "b": 60, "default": 60}


def test_a_checkpoint_keeps_the_time_reads_judged_expiry_at(tmp_path: Path) -> None:
    """Reads judged k expired after the last manifest edit; a checkpoint taken then,
    opened by an earlier clock, does not show k."""
    clock = FakeClock()
    with banyanstore.open(tmp_path / "db", clock=clock, **OPTS) as s:
        hot = s.keyspace("hot", ttl=10)
        hot.put(b"k", b"v")
        s.flush()
        clock.now += 20
        assert _reads(s, "hot") == EXPIRED
        s.checkpoint(tmp_path / "cp")
    clock.now -= 15
    with banyanstore.open(tmp_path / "cp", clock=clock, **OPTS) as s:
        assert _reads(s, "hot") == EXPIRED
