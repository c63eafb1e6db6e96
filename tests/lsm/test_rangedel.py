"""delete_range: range tombstones on Store, Keyspace and batches, through every read,
version, snapshot, flush, merge, reopen, checkpoint and follower (lsm/rangedel.py)."""

from __future__ import annotations

import os

import pytest

import banyanstore
from banyanstore.errors import EntryTooLargeError, ReadOnlyError, StoreClosedError
from banyanstore.lsm.wal import KIND_RANGE, WAL_FORMAT_RANGES, decode

SMALL = dict(memtable_size=64 * 1024, block_size=1024, wal_sync="never", compaction=False,
             history_retention=1e9)
KEYS = [b"k%03d" % i for i in range(100)]


def fill(store, keys=KEYS, value=b"v"):
    for k in keys:
        store.put(k, value + k)


def live(store, **kw):
    return [k for k, _ in store.scan(**kw)]


def expected(lo, hi, keys=KEYS):
    return [k for k in keys if not lo <= k < hi]


def where(store):
    """Flush and merge steps to check a store at: memtable, table, merged table."""
    yield "memtable"
    store.flush()
    yield "table"
    store.compact()
    yield "merged"


@pytest.fixture
def store(tmp_path):
    s = banyanstore.open(tmp_path / "db", **SMALL)
    yield s
    s.close()


def test_every_read_honours_a_range_tombstone(store):
    fill(store)
    before = store.version
    v = store.delete_range(b"k010", b"k020")
    assert v == before + 1
    want = expected(b"k010", b"k020")
    for stage in where(store):
        assert live(store) == want, stage
        assert live(store, reverse=True) == want[::-1], stage
        assert live(store, start=b"k005", limit=10) == want[5:15], stage  # a seek across it
        assert live(store, start=b"k015", limit=3) == [b"k020", b"k021", b"k022"], stage
        assert live(store, end=b"k015", reverse=True, limit=2) == [b"k009", b"k008"], stage
        assert list(store.scan(start=b"k010", end=b"k020")) == [], stage
        assert list(store.scan(keys_only=True)) == want, stage
        assert list(store) == want, stage
        assert store.get(b"k010") is None and store.get(b"k019") is None, stage
        assert store.get(b"k009") == b"vk009" and store.get(b"k020") == b"vk020", stage
        assert store.multi_get([b"k009", b"k010", b"k015", b"k020"]) == [
            b"vk009", None, None, b"vk020"], stage
        # reads at an older version still see the keys
        assert store.get(b"k015", version=before) == b"vk015", stage
        assert store.multi_get([b"k015"], version=before) == [b"vk015"], stage
        assert live(store, version=before) == KEYS, stage
        assert live(store, version=before, reverse=True, limit=3) == KEYS[::-1][:3], stage
        assert list(store.history(b"k015")) == [(v, None), (1 + KEYS.index(b"k015"), b"vk015")]


def test_writes_after_the_range_tombstone_are_kept(store):
    fill(store)
    store.delete_range(b"k010", b"k020")
    store.put(b"k012", b"new")
    store.put(b"k0125", b"fresh")  # a key that did not exist before
    for stage in where(store):
        assert store.get(b"k012") == b"new", stage
        assert store.get(b"k011") is None, stage
        assert live(store, start=b"k010", end=b"k020") == [b"k012", b"k0125"], stage


def test_overlapping_and_nested_ranges_at_many_versions(store):
    fill(store)
    v0 = store.version
    v1 = store.delete_range(b"k020", b"k060")
    store.put(b"k030", b"back")
    v2 = store.delete_range(b"k025", b"k035")
    v3 = store.delete_range(b"k000", b"k001")
    for stage in where(store):
        assert live(store, version=v0) == KEYS
        assert live(store, version=v1) == expected(b"k020", b"k060")
        assert live(store, version=v2 - 1) == sorted(expected(b"k020", b"k060") + [b"k030"])
        assert live(store, version=v2) == expected(b"k020", b"k060")
        assert live(store, version=v3) == expected(b"k020", b"k060")[1:], stage


def test_batch_range_deletes_its_earlier_writes_only(store):
    fill(store, KEYS[:10])
    idx = store.keyspace("index")
    with store.batch() as b:
        b.put(b"k003", b"before")      # deleted by the range below
        b.put(b"x", b"other", keyspace="index")
        b.delete_range(b"k002", b"k006")
        b.put(b"k004", b"after")       # written after it: kept
        b.put(b"k002", b"index-side", keyspace="index")  # another keyspace: kept
    for stage in where(store):
        assert live(store, end=b"k010") == [b"k000", b"k001", b"k004", b"k006", b"k007",
                                            b"k008", b"k009"], stage
        assert store.get(b"k004") == b"after" and store.get(b"k003") is None, stage
        assert dict(idx.scan()) == {b"k002": b"index-side", b"x": b"other"}, stage
        # the range's version is the batch's: k004 has an entry there, k003 shows the tombstone
        assert list(store.history(b"k004"))[0] == (b.version, b"after")
        assert list(store.history(b"k003"))[0] == (b.version, None)


def test_len_of_a_batch_counts_every_operation_added(store):
    """len(batch) is the number of operations added -- each put, delete and delete_range
    one -- also when a delete_range drops the batch's earlier writes it covers; a
    failed call adds none, and a committed or discarded batch is empty."""
    store.keyspace("index")
    b = store.batch()
    b.put(b"a", b"1")
    b.put(b"b", b"2")
    b.put(b"a", b"3")
    b.delete(b"c", keyspace="index")
    assert len(b) == 4
    b.delete_range(b"a", b"c")
    assert len(b) == 5
    b.put(b"a", b"4")
    with pytest.raises(ValueError, match="end"):
        b.delete_range(b"b", b"a")
    with pytest.raises(TypeError, match="key"):
        b.put("k", b"v")
    assert len(b) == 6
    b.commit()
    assert len(b) == 0 and dict(store.scan()) == {b"a": b"4"}
    d = store.batch()
    d.put(b"x", b"1")
    d.delete_range(b"x", b"y")
    assert len(d) == 2
    d.discard()
    assert len(d) == 0


def test_keyspaces_are_separate(store):
    idx = store.keyspace("index")
    fill(store, KEYS[:5])
    fill(idx, KEYS[:5])
    idx.delete_range(b"k000", b"k003")
    for stage in where(store):
        assert live(store) == KEYS[:5], stage
        assert live(idx) == KEYS[3:5], stage


def test_one_wal_record_one_memtable_entry(store):
    fill(store)
    mem = store._ks.view.mem
    entries, seq = mem.entries, store._wal.last_seq
    store.delete_range(b"k000", b"k099")
    assert mem.entries == entries + 1 and store._wal.last_seq == seq + 1
    store.sync()
    (_seq, record), = store._wal.read(seq + 1)
    assert record[0] == WAL_FORMAT_RANGES and record[22] == KIND_RANGE
    rec = decode(record)
    assert rec.ops == [] and rec.ranges == [(0, b"k000", b"k099")]


def test_survives_reopen_from_wal_and_from_tables(tmp_path):
    """One range tombstone in a table, one only in the WAL of a process that died
    without closing (replayed at the next open, by a writer and by a reader)."""
    import subprocess
    import sys
    path = tmp_path / "db"
    child = f"""
import os, banyanstore
s = banyanstore.open({str(path)!r}, memtable_size=64 * 1024, block_size=1024, wal_sync="never",
                     compaction=False, history_retention=1e9)
for i in range(100):
    s.put(b"k%03d" % i, b"vk%03d" % i)
print(s.delete_range(b"k050", b"k080"))
s.flush()
s.delete_range(b"k000", b"k010", sync=True)
os._exit(0)  # no close: the last range tombstone is in the WAL only
"""
    out = subprocess.run([sys.executable, "-c", child], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    v = int(out.stdout)
    with banyanstore.open(path, read_only=True) as r:
        assert live(r) == expected(b"k050", b"k080")[10:]
    with banyanstore.open(path, **SMALL) as s:
        assert live(s) == expected(b"k050", b"k080")[10:]
        assert live(s, version=v) == expected(b"k050", b"k080")
        assert live(s, version=v - 1) == KEYS


def test_snapshot_keeps_seeing_the_keys(store):
    fill(store)
    with store.snapshot() as snap:
        store.delete_range(b"k000", b"k050")
        for stage in where(store):
            assert [k for k, _ in snap.scan()] == KEYS, stage
            assert snap.get(b"k001") == b"vk001", stage
            assert live(store) == KEYS[50:], stage
    with store.snapshot() as snap:
        assert [k for k, _ in snap.scan()] == KEYS[50:]
        assert snap.multi_get([b"k001", b"k051"]) == [None, b"vk051"]


def test_checkpoint_and_follower_see_it(tmp_path, store):
    fill(store)
    with banyanstore.open(store.path, read_only=True) as follower:
        store.delete_range(b"k000", b"k090")
        store.sync()
        follower.refresh()
        assert live(follower) == KEYS[90:]
        store.flush()
        follower.refresh()
        assert live(follower) == KEYS[90:]
    store.checkpoint(tmp_path / "cp")
    with banyanstore.open(tmp_path / "cp", **SMALL) as cp:
        assert live(cp) == KEYS[90:]


def test_ttl_and_range_tombstones(tmp_path):
    clock = [1_700_000_000.0]
    with banyanstore.open(tmp_path / "db", clock=lambda: clock[0], ttl=100.0, **SMALL) as s:
        fill(s, KEYS[:10])
        clock[0] += 50
        s.delete_range(b"k000", b"k005")
        s.put(b"k001", b"again")
        assert live(s) == [b"k001"] + KEYS[5:10]
        clock[0] += 60  # the first writes expired; the range tombstone and k001 did not
        for stage in where(s):
            assert live(s) == [b"k001"], stage
            assert s.get(b"k001") == b"again", stage


def test_bad_arguments_name_them(store):
    with pytest.raises(TypeError, match="start"):
        store.delete_range("a", b"b")
    with pytest.raises(TypeError, match="end"):
        store.delete_range(b"a", None)
    with pytest.raises(ValueError, match="end .* must be greater than start"):
        store.delete_range(b"b", b"a")
    with pytest.raises(ValueError, match="empty"):
        store.delete_range(b"a", b"a")
    with pytest.raises(EntryTooLargeError, match="end"):
        store.delete_range(b"a", b"b" * (store.options.max_key_size + 1))
    with store.batch() as b:
        with pytest.raises(ValueError, match="empty"):
            b.delete_range(b"x", b"x")
        with pytest.raises(TypeError, match="start"):
            b.delete_range(1, b"x")
    assert b.version is None  # nothing was written
    assert store.version == 0
    store.delete_range(bytearray(b"a"), memoryview(b"b"))  # bytes-like is fine
    assert store.version == 1


def test_closed_and_read_only_stores_refuse(tmp_path):
    path = tmp_path / "db"
    s = banyanstore.open(path, **SMALL)
    s.put(b"a", b"1")
    s.close()
    with pytest.raises(StoreClosedError):
        s.delete_range(b"a", b"b")
    with banyanstore.open(path, read_only=True) as r, pytest.raises(ReadOnlyError):
        r.delete_range(b"a", b"b")


def test_stats_count_range_tombstones(store):
    store.delete_range(b"a", b"b")
    assert store.stats()["keyspaces"]["default"]["range_tombstones"] == 1
    store.flush()
    st = store.stats()["keyspaces"]["default"]
    assert st["range_tombstones"] == 1 and st["table_list"][0]["range_tombstones"] == 1


def test_a_table_of_range_tombstones_only(store):
    """A memtable holding nothing but a range tombstone still becomes a table."""
    fill(store)
    store.flush()
    store.delete_range(b"k000", b"k100")
    store.flush()
    assert len(store._ks.view.tables) == 2
    assert live(store) == []
    store.compact()
    assert live(store) == []
    assert store.get(b"k000") is None


def test_merges_reclaim_what_range_tombstones_hide(tmp_path):
    """At the bottom of the tree and below every reader point, a merge drops the
    entries a range tombstone hides and then the tombstone itself; a snapshot keeps
    both; a merge above older tables keeps the tombstone."""
    opts = dict(SMALL, history_retention=None)
    with banyanstore.open(tmp_path / "db", **opts) as s:
        fill(s)
        s.flush()
        s.put(b"k050", b"newer")
        s.flush()
        snap = s.snapshot()
        v = s.delete_range(b"k000", b"k060")
        s.put(b"k055", b"after")
        s.flush()
        newest = s._ks.view.tables[0]
        s._compactor.merge(s._ks, (newest,))  # not the bottom: the tombstone stays
        assert [t.range_dels for t in s._ks.view.tables][0] == ((b"k000", b"k060", v),)
        s.compact()  # the bottom, but the snapshot still sees k000..k059
        (t,) = s._ks.view.tables
        assert t.range_dels == ((b"k000", b"k060", v),)
        assert [k for k, _ in snap.scan()] == KEYS
        assert snap.get(b"k050") == b"newer"
        assert live(s) == [b"k055"] + KEYS[60:]
        snap.close()
        s.put(b"z", b"moves the version on")  # so that compact() has a merge to do
        s.compact()
        (t,) = s._ks.view.tables
        assert t.range_dels == ()
        assert t.meta.entry_count == 42  # k055, k060..k099 and z; nothing hidden is left
        assert live(s) == [b"k055"] + KEYS[60:] + [b"z"]
        assert list(s.history(b"k010")) == []


def test_compact_of_a_deleted_range_merges_the_table_of_its_range_tombstone(tmp_path):
    """compact(start, end) takes a table whose range tombstone overlaps [start, end), even
    where none of its point keys does: the merge then reclaims what the tombstone hides.
    (It used to look at point keys only: the old table was rewritten alone, every hidden
    entry kept.)"""
    opts = dict(SMALL, history_retention=None)
    with banyanstore.open(tmp_path / "db", **opts) as s:
        fill(s)
        s.flush()
        s.delete_range(b"k010", b"k090")
        s.put(b"a", b"outside the range")  # the tombstone below the floor: it goes too
        s.flush()
        s.compact(start=b"k010", end=b"k090")
        (t,) = s._ks.view.tables
        assert t.range_dels == ()
        assert t.meta.entry_count == 21  # a, k000..k009, k090..k099
        assert live(s) == [b"a"] + KEYS[:10] + KEYS[90:]


def test_merge_keeps_a_tombstone_that_hides_retained_history(tmp_path):
    with banyanstore.open(tmp_path / "db", **SMALL) as s:  # history_retention=1e9
        fill(s, KEYS[:10])
        v = s.delete_range(b"k000", b"k005")
        s.compact()
        (t,) = s._ks.view.tables
        assert t.range_dels == ((b"k000", b"k005", v),)
        assert live(s) == KEYS[5:10] and live(s, version=v - 1) == KEYS[:10]


def test_wal_record_decoder_checks_range_entries():
    import struct

    from banyanstore.errors import CorruptionError
    from banyanstore.lsm.wal import ENTRY, HEADER, encode_with_ranges

    rec = encode_with_ranges(5, 1000, [(0, b"k", b"v"), (1, b"d", None)], [(1, b"a", b"c")])
    assert decode(rec) == (5, 1000, [(0, b"k", b"v"), (1, b"d", None)], [(1, b"a", b"c")])

    def record(fmt: int, kind: int, key: bytes, value: bytes) -> bytes:
        return (HEADER.pack(fmt, 0, 1, 5, 1000) + ENTRY.pack(kind, 0, len(key), len(value))
                + key + value)
    assert decode(record(2, KIND_RANGE, b"a", b"b")).ranges == [(0, b"a", b"b")]
    with pytest.raises(CorruptionError, match="kind 3"):
        decode(record(1, KIND_RANGE, b"a", b"b"))  # a range tombstone needs format 2
    with pytest.raises(CorruptionError, match="does not end after its start"):
        decode(record(2, KIND_RANGE, b"b", b"b"))
    with pytest.raises(CorruptionError, match="kind 2"):
        decode(record(1, 2, b"a", b"junk"))  # a tombstone carries no value bytes
    with pytest.raises(CorruptionError, match="format 3"):
        decode(struct.pack("<B", 3) + record(2, KIND_RANGE, b"a", b"b")[1:])


def test_dropped_keyspace_refuses_and_forgets_range_tombstones(tmp_path):
    from banyanstore.errors import KeyspaceNotFoundError
    path = tmp_path / "db"
    with banyanstore.open(path, **SMALL) as s:
        gone = s.keyspace("gone")
        fill(gone, KEYS[:5])
        gone.delete_range(b"k000", b"k002")
        s.drop_keyspace("gone")
        with pytest.raises(KeyspaceNotFoundError):
            gone.delete_range(b"k000", b"k001")
        again = s.keyspace("gone")
        fill(again, KEYS[:3])
        assert live(again) == KEYS[:3]
    with banyanstore.open(path, **SMALL) as s:  # the WAL replay skips the dropped one's writes
        assert live(s.keyspace("gone")) == KEYS[:3]


def test_backup_and_restore_carry_range_tombstones(tmp_path):
    url = str(tmp_path / "backup")
    with banyanstore.open(tmp_path / "db", **SMALL) as s:
        fill(s)
        v = s.delete_range(b"k010", b"k030")
        s.flush()
        s.delete_range(b"k050", b"k060")  # still in the WAL: the backup's WAL tail
        banyanstore.backup(s, url)
        want = (live(s), live(s, version=v - 1), list(s.history(b"k055")))
    banyanstore.restore(url, tmp_path / "copy")
    with banyanstore.open(tmp_path / "copy", **SMALL) as c:
        assert (live(c), live(c, version=v - 1), list(c.history(b"k055"))) == want
        assert want[0] == [k for k in KEYS if not (b"k010" <= k < b"k030" or b"k050" <= k < b"k060")]


def test_repair_rebuilds_range_tombstones_from_tables(tmp_path):
    """Salvage from tables alone (the manifest lost): the format-3 tables' origins place
    them, their range tombstones come along (tests/test_salvage.py has them in the WAL)."""
    from banyanstore.tools.repair import repair
    path = tmp_path / "db"
    with banyanstore.open(path, **SMALL) as s:
        fill(s)
        s.flush()
        s.delete_range(b"k000", b"k040")
        s.put(b"k001", b"back")
    for p in path.iterdir():
        if p.name.startswith("MANIFEST-") or p.name == "CURRENT":
            p.unlink()
    repair(str(path))
    with banyanstore.open(path, **SMALL) as s:
        assert live(s) == [b"k001"] + KEYS[40:]


def test_dump_wal_and_dump_table_show_range_tombstones(tmp_path, capsys):
    from banyanstore.cli import main
    path = tmp_path / "db"
    with banyanstore.open(path, **SMALL) as s:
        s.put(b"a", b"1")
        s.delete_range(b"a", b"c")
        s.sync()
        assert main(["dump-wal", str(path)]) == 0
        assert "[default] [a, c) = RANGE TOMBSTONE" in capsys.readouterr().out
    (table,) = (path / "tables").iterdir()
    assert main(["dump-table", str(table)]) == 0
    out = capsys.readouterr().out
    assert "[a, c) @2" in out and "format: 3" in out


def test_history_shows_no_delete_a_key_never_had_after_merges_drop_its_write(tmp_path):
    """A batch deleting a range and then writing a key in it: the key's write wins at
    that version, so history() shows the write, never the range's delete.  Once a newer
    delete shadows the write and a merge above the bottom table drops it (nothing reads
    that old version), the range tombstone stays (other keys need it) -- and history()
    used to show it as a delete of the key at that version, a write the key never had
    (found by the model test, seed 14598)."""
    with banyanstore.open(tmp_path / "db", compaction=False, compaction_mode="thread") as s:
        s.put(b"zz", b"bottom")  # the bottom table, outside the range compacted below
        s.flush()
        with s.batch() as b:
            b.delete_range(b"a", b"z")
            b.put(b"k", b"written")
        v_batch = b.version
        assert list(s.history(b"k")) == [(v_batch, b"written")]
        s.flush()
        v_delete = s.delete(b"k")
        s.put(b"zz", b"newer")
        s.flush()
        s.compact(start=b"k", end=b"k\x00")  # the two newer tables: not the bottom
        assert s.history_floor > v_delete
        assert s.stats()["keyspaces"]["default"]["tables"] == 2
        got = list(s.history(b"k"))
        assert (v_batch, None) not in got, got
        assert all(e in [(v_delete, None), (v_batch, b"written")] for e in got), got
        with s.snapshot() as snap:
            assert (v_batch, None) not in list(snap.history(b"k"))
        assert s.get(b"k") is None and s.get(b"zz") == b"newer"
