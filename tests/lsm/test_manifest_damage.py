"""A damaged MANIFEST is a CorruptionError naming file and offset -- never a store that
silently opens with fewer tables, and never a writer open that deletes them.

Only what a crash can leave behind counts as a torn tail (docs/format/manifest.md,
"What a crash can leave"): a last record cut short, or one whose unwritten sectors read
back as zeros.  Everything else -- a complete last record failing its checksum, a bad
length, damage followed by intact records, a table no edit names that cannot be proven
an unfinished output -- is refused.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import crc32c
import pytest

import banyanstore
from banyanstore.errors import CorruptionError
from banyanstore.lsm.manifest import walk_manifest

OPTS: dict[str, Any] = dict(io_mode="sync", compaction=False, compression="none")
N = 1000
SECTOR = 512  # the unit a power loss writes or loses (docs/format/manifest.md)


def key(i: int) -> bytes:
    return b"k%05d" % i


def manifest_of(path: Path) -> Path:
    return path / (path / "CURRENT").read_text().split()[2]


def records(path: Path) -> list[Any]:
    m = manifest_of(path)
    return list(walk_manifest(m.read_bytes(), str(m)))


def table_files(path: Path) -> list[str]:
    return sorted(os.listdir(path / "tables"))


@pytest.fixture
def flushed(tmp_path: Path) -> Path:
    """The issue's store: 1,000 synced puts, flush(), close."""
    path = tmp_path / "db"
    with banyanstore.open(path, wal_sync="always", **OPTS) as store:
        for i in range(N):
            store.put(key(i), b"v%d" % i)
        store.flush()
    return path


def patch(path: Path, offset: int, new: bytes) -> None:
    m = manifest_of(path)
    data = bytearray(m.read_bytes())
    data[offset:offset + len(new)] = new
    m.write_bytes(bytes(data))


def flip(path: Path, offset: int, bit: int = 0x01) -> None:
    data = manifest_of(path).read_bytes()
    patch(path, offset, bytes([data[offset] ^ bit]))


def assert_refused(path: Path, offset: int | None = None) -> None:
    """Every open (read-only and writer) raises CorruptionError naming the manifest,
    and nothing in tables/ is removed."""
    before = table_files(path)
    name = manifest_of(path).name
    for ro in (True, False):
        with pytest.raises(CorruptionError) as info:
            banyanstore.open(path, read_only=ro, **OPTS)
        assert name in str(info.value), info.value
        if offset is not None:
            assert info.value.offset == offset, info.value
    assert table_files(path) == before


def assert_intact(path: Path) -> None:
    with banyanstore.open(path, read_only=True, **OPTS) as store:
        assert store.version >= N
        assert [k for k in store] == [key(i) for i in range(N)]


# -- finding 1: damage in the last record --------------------------------------------------

def test_bit_flip_in_the_last_record_payload_is_corruption(flushed: Path) -> None:
    """The issue's reproduction: one flipped bit inside the last record (the flush's
    edit) opened read-only with 0 keys and a writer open deleted the table."""
    last = records(flushed)[-1]
    flip(flushed, last.offset + 8 + last.length // 2)
    assert_refused(flushed, last.offset)


@pytest.mark.parametrize("field_offset", [0, 1, 4], ids=["length-low", "length-high", "crc"])
def test_bit_flip_in_the_last_record_header_is_corruption(flushed: Path, field_offset: int) -> None:
    """A flipped bit of the last record's length (up: it looks cut short; the bytes
    present are the whole record under its checksum) or of its CRC."""
    last = records(flushed)[-1]
    flip(flushed, last.offset + field_offset, 0x10)
    assert_refused(flushed, last.offset)


def test_bad_length_of_a_middle_record_is_corruption(flushed: Path) -> None:
    """A middle record's length made longer: once taken for a torn tail that dropped
    every later (intact) edit."""
    with banyanstore.open(flushed, **OPTS) as store:
        store.keyspace("extra").put(b"x", b"y")  # edits: whole state, add_keyspace, flush
    recs = records(flushed)
    assert len(recs) == 3 and "add_keyspace" in recs[1].edit
    flip(flushed, recs[1].offset + 2, 0x01)  # +65536 bytes: "runs past the end"
    assert_refused(flushed, recs[1].offset)


def test_record_cut_short_at_the_end_is_a_torn_tail(flushed: Path) -> None:
    """What a process crash mid-append leaves: the last record cut short (in its header,
    in its payload, one byte short).  The edit was never acknowledged: it is ignored."""
    with banyanstore.open(flushed, **OPTS) as store:
        store.keyspace("extra")  # a last edit nothing depends on
    last = records(flushed)[-1]
    assert last.edit == {"add_keyspace": [1, "extra"]}
    m = manifest_of(flushed)
    data = m.read_bytes()
    for cut in (3, 8 + 5, last.length + 8 - 1):
        m.write_bytes(data[:last.offset + cut])
        assert records(flushed)[-1].torn is not None
        assert_intact(flushed)
        with banyanstore.open(flushed, read_only=True, **OPTS) as store:
            assert store.keyspaces() == ["default"]


def _append_record(path: Path, payload: bytes, *, crc: int | None = None) -> int:
    m = manifest_of(path)
    data = m.read_bytes()
    rec = struct.pack("<II", len(payload), crc32c.crc32c(payload) if crc is None else crc) + payload
    m.write_bytes(data + rec)
    return len(data)


@pytest.mark.parametrize("lead", [0, 3, 8, 200, 511])
def test_unwritten_sector_in_the_last_record_is_a_torn_tail(flushed: Path, lead: int) -> None:
    """Power loss during the append's fsync: the file has its full length but a sector
    of the record was never written and reads back as zeros.  ``lead``: where the record
    starts within its sector (the manifest's length before it varies with the time map's
    samples; the zeroed sector once ran past a record starting 0-4 bytes into one --
    zeros after the record, another case -- in about 1 run of 100)."""
    _pad_to(flushed, lead)
    payload = b'{"add_keyspace":[1,"%s"]}' % (b"x" * 1500)
    at = _append_record(flushed, payload)
    assert at % SECTOR == lead
    m = manifest_of(flushed)
    data = bytearray(m.read_bytes())
    sector = -(-(at + 8) // SECTOR) * SECTOR  # the first whole sector of the payload
    assert at + 8 <= sector and sector + SECTOR <= len(data)
    data[sector:sector + SECTOR] = bytes(SECTOR)
    m.write_bytes(bytes(data))
    assert records(flushed)[-1].torn is not None
    assert_intact(flushed)


def _pad_to(path: Path, lead: int) -> None:
    """Append an intact edit (a keyspace, id 2) so the next record starts ``lead`` bytes
    into a sector."""
    size = manifest_of(path).stat().st_size
    empty = len(b'{"add_keyspace":[2,""]}') + 8
    _append_record(path, b'{"add_keyspace":[2,"%s"]}' % (b"y" * ((lead - size - empty) % SECTOR)))


def test_zero_filled_tail_is_a_torn_tail(flushed: Path) -> None:
    """The size reached the disk, none of the data did: zeros after the last record."""
    m = manifest_of(flushed)
    m.write_bytes(m.read_bytes() + bytes(300))
    assert records(flushed)[-1].torn is not None
    assert_intact(flushed)


def test_zeroed_sector_followed_by_intact_records_is_corruption(flushed: Path) -> None:
    """Zeros where a record should start, then intact records: damage to durable data,
    not a torn tail (a crash loses at most the last, unsynced append)."""
    recs = records(flushed)
    first = recs[0]
    patch(flushed, first.offset, bytes(8))
    assert_refused(flushed, first.offset)


def test_writer_open_refuses_to_delete_an_unexplained_table(flushed: Path) -> None:
    """A table no edit names, whose number the manifest had already handed out, and that
    no edit removed: the writer open refuses (pointing at repair) and deletes nothing."""
    tdir = flushed / "tables"
    live = table_files(flushed)
    n = int(live[0].split(".")[0])
    stray = tdir / f"{n - 1:06d}.sst" if n > 1 else None
    assert stray is not None
    stray.write_bytes((tdir / live[0]).read_bytes())
    with pytest.raises(CorruptionError, match="banyanstore repair") as info:
        banyanstore.open(flushed, **OPTS)
    assert stray.name in str(info.value)
    assert stray.exists()


def test_unfinished_outputs_are_removed(flushed: Path) -> None:
    """A table numbered at or above every number the manifest handed out is an
    unfinished flush or merge output: the writer open removes it."""
    state_next = max(r.edit.get("next_file", 0) for r in records(flushed) if r.edit)
    tdir = flushed / "tables"
    orphan = tdir / f"{state_next + 3:06d}.sst"
    orphan.write_bytes(b"partial")
    with banyanstore.open(flushed, **OPTS) as store:
        assert store.get(key(7)) == b"v7"
    assert not orphan.exists()


def test_durable_flush_edit_lost_is_corruption(flushed: Path) -> None:
    """The flush's edit (durable, after which the WAL was cut) removed from the end of the
    manifest: the manifest alone looks intact, but replay would start before the WAL
    does -- once an open with 0 keys at version 0, then CorruptionError blaming the WAL
    (which is intact); now CorruptionError naming the manifest, where its edits end and
    the table no edit names (test_manifest_cut.py cuts at every record)."""
    last = records(flushed)[-1]
    assert "add_tables" in last.edit
    m = manifest_of(flushed)
    m.write_bytes(m.read_bytes()[:last.offset])
    for ro in (True, False):
        with pytest.raises(CorruptionError, match=r"\.sst are named by no edit") as info:
            banyanstore.open(flushed, read_only=ro, **OPTS)
        assert info.value.path == str(m) and info.value.offset == last.offset
    assert len(table_files(flushed)) == 1


def test_a_table_swapped_for_another_of_the_same_size_is_corruption(tmp_path: Path) -> None:
    """A table file replaced by another table of exactly the size the manifest records
    (here the newest flush by a copy of the oldest): its own properties (key range,
    versions, entries) disagree with the manifest's, so both opens refuse it, naming the
    file -- never serve the older table's values as the newer's."""
    path = tmp_path / "db"
    with banyanstore.open(path, **OPTS) as store:
        for r in range(3):
            for i in range(100):
                store.put(key(i), b"round%d" % r)
            store.flush()
    files = table_files(path)
    sizes = {(path / "tables" / f).stat().st_size for f in files}
    assert len(files) == 3 and len(sizes) == 1
    newest = path / "tables" / files[-1]
    newest.write_bytes((path / "tables" / files[0]).read_bytes())
    for ro in (True, False):
        with pytest.raises(CorruptionError, match="the manifest says") as info:
            banyanstore.open(path, read_only=ro, **OPTS)
        assert info.value.path == str(newest)
