"""Format 3: a segment with a successor ends with a SEAL naming it, so a deleted newest
segment and a segment cut at a record boundary are damage, not a shorter clean log.

Each crash state of a rotation is built on disk and opened (docs/format/log.md,
"Rotation and the seal"); test_log_seal_kill9.py makes the same states with a real
kill -9.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from log_helpers import payload

from banyanstore.cli import main as cli_main
from banyanstore.errors import CorruptionError, StorageIOError
from banyanstore.io.faults import FaultEnv
from banyanstore.io.memory import MemoryEnv
from banyanstore.log import Log
from banyanstore.log.format import (
    BLOCK_SIZE,
    HEADER_SIZE,
    SEAL_SIZE,
    MissingSegmentError,
    encode_header,
    fragment,
    parse_header,
    parse_seal,
    seal_bytes,
)
from banyanstore.log.reader import iter_records
from banyanstore.log.segment import read_seal
from banyanstore.tools import repair, verify_path

SEG = 64 * 1024
N = 2000  # records of payload(seq): several segments of SEG bytes


def _write(d: Path, n: int = N) -> None:
    with Log.open(d, segment_size=SEG, wal_sync="never") as log:
        for seq in range(1, n + 1):
            assert log.append(payload(seq)) == seq


def _segments(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name.endswith(".log"))


def _seal_of(p: Path) -> int | None:
    """The seq the SEAL ending ``p`` names (zeros after it allowed), or None."""
    data = p.read_bytes()
    seal = read_seal(lambda o, n: data[o:o + n], len(data), 3)
    return None if seal is None else seal[0]


def _record_bounds(p: Path) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of the records of segment ``p``."""
    data = p.read_bytes()
    return [(start, end) for _s, _d, start, end in
            iter_records(lambda o, n: data[o:o + n], HEADER_SIZE, len(data), int(p.name[:20]))]


def _records_end(p: Path) -> int:
    """Offset where the records of segment ``p`` end (before its SEAL and any zeros
    padding the block before it)."""
    return _record_bounds(p)[-1][1]


def _unseal(p: Path, tail: bytes = b"") -> None:
    """Cut the SEAL (and the zeros padding its block) off ``p``, then append ``tail``:
    the segment as a rotation interrupted before its seal left it."""
    assert _seal_of(p) is not None
    end = _records_end(p)
    with open(p, "r+b") as f:
        f.truncate(end)
        f.seek(end)
        f.write(tail)


def _read_all(d: Path, **kw: object) -> list[tuple[int, bytes]]:
    with Log.open(d, **kw) as log:  # type: ignore[arg-type]
        return list(log.read(log.first_seq))


def _verify_json(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = cli_main(["--json", "verify", str(path)])
    return code, json.loads(capsys.readouterr().out)


# -- what a rotation writes ---------------------------------------------------------------

def test_rotation_seals_each_segment_naming_its_successor(tmp_path: Path) -> None:
    _write(tmp_path)
    segs = _segments(tmp_path)
    assert len(segs) >= 4
    for older, newer in zip(segs, segs[1:], strict=False):
        assert _seal_of(older) == int(newer.name[:20])
        assert parse_header(older.read_bytes()[:HEADER_SIZE], str(older))[1] == 3
    assert _seal_of(segs[-1]) is None  # the newest segment has no successor
    assert [s for s, _ in _read_all(tmp_path)] == list(range(1, N + 1))


def test_seal_bytes_pad_to_the_next_block_when_the_seal_does_not_fit() -> None:
    for room in range(1, SEAL_SIZE + 2):
        offset = 3 * BLOCK_SIZE - room
        data = seal_bytes(offset, 77)
        assert parse_seal(data[-SEAL_SIZE:]) == 77
        if room < SEAL_SIZE:  # zeros to the block's end, the SEAL starts the next block
            assert data[:room] == bytes(room) and len(data) == room + SEAL_SIZE
            assert (offset + room) % BLOCK_SIZE == 0
        else:
            assert len(data) == SEAL_SIZE


def test_a_seal_after_a_padded_block_end_reads_back(tmp_path: Path) -> None:
    """Records that leave 7..14 bytes in a block, then a rotation: the zeros before the
    SEAL are a trailer, not damage, for open, read and verify."""
    d = tmp_path / "log"
    with Log.open(d, segment_size=SEG, wal_sync="never") as log:
        # one record leaving exactly 10 bytes in block 0: 15 framing + data
        first = BLOCK_SIZE - HEADER_SIZE - 10 - 15
        log.append(b"a" * first)
        log.rotate()
        log.append(b"b")
    segs = _segments(d)
    data = segs[0].read_bytes()
    assert len(data) == BLOCK_SIZE + SEAL_SIZE and data[BLOCK_SIZE - 10:BLOCK_SIZE] == bytes(10)
    assert _seal_of(segs[0]) == 2
    assert [s for s, _ in _read_all(d)] == [1, 2]
    assert [s for s, _ in _read_all(d, read_only=True)] == [1, 2]
    assert verify_path(str(d)).ok


# -- the losses versions 1 and 2 cannot see ----------------------------------------------

@pytest.mark.parametrize("read_only", [False, True])
def test_deleted_newest_segment_is_corruption_naming_it(tmp_path: Path, read_only: bool) -> None:
    _write(tmp_path)
    newest = _segments(tmp_path)[-1]
    newest.unlink()
    with pytest.raises(MissingSegmentError) as info:
        Log.open(tmp_path, read_only=read_only)
    assert info.value.path == str(newest)
    assert newest.name in str(info.value)


def test_deleted_middle_segment_is_corruption_on_read(tmp_path: Path) -> None:
    """A SEAL naming a segment missing from the middle: the seqs between are missing,
    which every read across the gap reports, naming the segment before it."""
    _write(tmp_path)
    before, middle = _segments(tmp_path)[1:3]
    middle.unlink()
    for read_only in (False, True):
        with pytest.raises(CorruptionError, match="missing") as info:
            _read_all(tmp_path, read_only=read_only)
        assert info.value.path == str(before)


@pytest.mark.parametrize("cut", ["seal only", "seal and last record"])
def test_non_last_segment_cut_at_a_record_boundary_is_corruption(tmp_path: Path, cut: str) -> None:
    _write(tmp_path)
    victim = _segments(tmp_path)[1]
    end = _records_end(victim) if cut == "seal only" else _record_bounds(victim)[-1][0]
    with open(victim, "r+b") as f:
        f.truncate(end)
    for read_only in (False, True):
        with pytest.raises(CorruptionError) as info:
            Log.open(tmp_path, read_only=read_only).close()
        assert not isinstance(info.value, MissingSegmentError)
        assert info.value.path == str(victim)
        assert info.value.offset == end
        assert "no seal" in str(info.value)


def test_verify_reports_the_missing_newest_segment(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path)
    newest = _segments(tmp_path)[-1]
    newest.unlink()
    code, report = _verify_json(tmp_path, capsys)
    assert code == 1
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert [p["file"] for p in errors] == [str(newest)]


def test_verify_reports_a_cut_segment_with_file_and_offset(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path)
    victim = _segments(tmp_path)[0]
    end = _records_end(victim)
    with open(victim, "r+b") as f:
        f.truncate(end)
    code, report = _verify_json(tmp_path, capsys)
    assert code == 1
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert [(p["file"], p["offset"]) for p in errors] == [(str(victim), end)]


def test_dump_log_fails_on_a_missing_newest_segment(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path)
    newest = _segments(tmp_path)[-1]
    newest.unlink()
    assert cli_main(["dump-log", str(tmp_path)]) == 1
    assert newest.name in capsys.readouterr().err


# -- crash states of a rotation ------------------------------------------------------------

def _interrupted_rotation(d: Path, tail: bytes) -> tuple[Path, int]:
    """The state a rotation leaves when it stops between creating the successor and
    sealing: the newest segment holds only its header, its predecessor has no SEAL
    (``tail``: what follows its records -- reserved zeros, a torn SEAL)."""
    _write(d)
    segs = _segments(d)
    with Log.open(d, segment_size=SEG) as log:
        last = log.last_seq
    newest_first = int(segs[-1].name[:20])
    # Drop the newest segment's records: rewrite it as just created (a header, zeros).
    segs[-1].write_bytes(encode_header(newest_first) + bytes(4096 - HEADER_SIZE))
    _unseal(segs[-2], tail)
    assert last >= newest_first
    return segs[-2], newest_first


@pytest.mark.parametrize("tail", ["none", "reserved zeros", "torn seal", "seal then zeros"])
def test_rotation_interrupted_before_the_seal_is_finished_on_open(tmp_path: Path, tail: str) -> None:
    tails = {"none": b"", "reserved zeros": bytes(1 << 20), "torn seal": b"", "seal then zeros": b""}
    sealed, next_first = _interrupted_rotation(tmp_path, tails[tail])
    records_end = sealed.stat().st_size
    if tail in ("torn seal", "seal then zeros"):
        seal = seal_bytes(records_end, next_first)
        with open(sealed, "ab") as f:
            f.write(seal[:len(seal) - 6] if tail == "torn seal" else seal + bytes(1 << 16))
    want = list(range(1, next_first))
    # A reader beside the (interrupted) writer reads every record and changes nothing.
    before = sealed.read_bytes()
    assert [s for s, _ in _read_all(tmp_path, read_only=True)] == want
    assert sealed.read_bytes() == before
    # The writer's open finishes the seal and loses nothing.
    with Log.open(tmp_path, segment_size=SEG) as log:
        assert log.last_seq == next_first - 1
        assert log.append(b"after") == next_first
    assert _seal_of(sealed) == next_first
    assert [s for s, _ in _read_all(tmp_path)] == [*want, next_first]
    assert verify_path(str(tmp_path)).ok


@pytest.mark.parametrize("fault", ["truncate", "sync"])
def test_seal_a_failed_rotation_left_unsynced_is_made_durable_before_records_follow(fault: str) -> None:
    """A rotation stores the SEAL, then its cut or its sync fails: the SEAL is in the
    page cache only, and the failed log closes without writing.  The next writer's open
    reads the SEAL; records it acknowledges in the successor must not outlive the SEAL
    at a power loss (the predecessor would look cut: CorruptionError, seed 2 of
    tests/torture/faults.py)."""
    disk = MemoryEnv()
    fenv = FaultEnv(disk)
    log = Log.open("/log", env=fenv, segment_size=SEG, wal_sync="never")
    for seq in range(1, 301):
        assert log.append(payload(seq)) == seq
    old = sorted(n for n in disk.listdir("/log") if n.endswith(".log"))[-1]
    # Fail the rotation's own step on the old segment: its cut after the SEAL, or the
    # sync after that cut (the first sync of it, before the successor exists, passes).
    fenv.inject(fault, path_contains=old, after=0 if fault == "truncate" else 1)
    with pytest.raises(StorageIOError):
        log.rotate()
    log.close()  # a failed log closes without writing
    fenv.clear()
    with Log.open("/log", env=disk, segment_size=SEG, wal_sync="never") as log:  # no power loss yet
        assert log.last_seq == 300
        for seq in range(301, 311):
            assert log.append(payload(seq), sync=True) == seq
    disk.crash()  # everything not synced is gone; the acknowledged records are not
    with Log.open("/log", env=disk, segment_size=SEG) as log:
        assert [s for s, _ in log.read()] == list(range(1, 311))


def test_verify_calls_an_interrupted_rotation_a_warning(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    sealed, _next_first = _interrupted_rotation(tmp_path, bytes(1 << 20))
    code, report = _verify_json(tmp_path, capsys)
    assert code == 0
    assert str(sealed) in [p["file"] for p in report["problems"] if p["severity"] == "warning"]


def test_successor_without_a_durable_header_is_removed_and_the_log_goes_on(tmp_path: Path) -> None:
    sealed, next_first = _interrupted_rotation(tmp_path, bytes(1 << 20))
    newest = _segments(tmp_path)[-1]
    newest.write_bytes(bytes(4096))  # the header never reached the disk
    with Log.open(tmp_path, segment_size=SEG) as log:
        assert log.last_seq == next_first - 1
        assert log.append(b"after") == next_first
    assert [s for s, _ in _read_all(tmp_path)] == list(range(1, next_first + 1))


@pytest.mark.parametrize("damage", ["cut to 14 bytes", "header zeroed"])
def test_newest_segment_without_its_header_after_a_seal_is_damage(
        tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Its predecessor is sealed naming it, so its header was durable (stored before the
    SEAL): a missing header is damage -- not a creation a crash interrupted, which an
    open would remove (with its records), and not one in progress a reader waits for."""
    _write(tmp_path)
    newest = _segments(tmp_path)[-1]
    data = newest.read_bytes()
    newest.write_bytes(data[:14] if damage == "cut to 14 bytes" else bytes(HEADER_SIZE) + bytes(4096))
    kept = newest.read_bytes()
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match="sealed naming it") as info:
            Log.open(tmp_path, read_only=read_only)
        assert info.value.path == str(newest) and info.value.offset == 0
    assert newest.read_bytes() == kept  # not removed, not changed
    code, report = _verify_json(tmp_path, capsys)
    assert code == 1
    assert [p["file"] for p in report["problems"] if p["severity"] == "error"] == [str(newest)]


def test_follower_refresh_meets_a_headerless_successor_as_damage(tmp_path: Path) -> None:
    _write(tmp_path, 100)
    with Log.open(tmp_path, read_only=True) as reader:
        with Log.open(tmp_path, segment_size=SEG, wal_sync="never") as log:
            while len(_segments(tmp_path)) < 3:
                log.append(payload(log.last_seq + 1))
        newest = _segments(tmp_path)[-1]
        newest.write_bytes(bytes(4096))
        with pytest.raises(CorruptionError, match="sealed naming it") as info:
            reader.refresh()
        assert info.value.path == str(newest)


def test_unsealed_segment_missing_its_last_records_is_corruption(tmp_path: Path) -> None:
    """An interrupted rotation, but the older segment also lost its last record: the
    records do not reach the successor's first seq -- damage, never sealed over."""
    sealed, next_first = _interrupted_rotation(tmp_path, b"")
    end = _record_bounds(sealed)[-1][0]
    with open(sealed, "r+b") as f:
        f.truncate(end)
    with pytest.raises(CorruptionError) as info:
        Log.open(tmp_path, segment_size=SEG)
    assert info.value.path == str(sealed) and info.value.offset == end


def test_sealed_segment_with_zeros_after_its_seal_reads(tmp_path: Path) -> None:
    """A crash between storing the SEAL and cutting the reserved space after it."""
    _write(tmp_path)
    segs = _segments(tmp_path)
    with open(segs[-2], "ab") as f:
        f.write(bytes(1 << 16))
    assert [s for s, _ in _read_all(tmp_path)] == list(range(1, N + 1))
    assert [s for s, _ in _read_all(tmp_path, read_only=True)] == list(range(1, N + 1))
    assert verify_path(str(tmp_path)).ok


# -- older formats -------------------------------------------------------------------------

def _v2_segment(first: int, seqs: range, version: int = 2) -> bytes:
    data = bytearray(encode_header(first, version=version))
    for seq in seqs:
        room = BLOCK_SIZE - len(data) % BLOCK_SIZE
        if room < 7:
            data += bytes(room)
            room = BLOCK_SIZE
        for _kind, framed in fragment(seq, payload(seq), room):
            data += framed
            room = BLOCK_SIZE - len(data) % BLOCK_SIZE or BLOCK_SIZE
    return bytes(data)


def test_v2_log_opens_and_its_writer_goes_on_in_v3_segments(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000001.log").write_bytes(_v2_segment(1, range(1, 101)))
    (tmp_path / "00000000000000000101.log").write_bytes(_v2_segment(101, range(101, 201)))
    assert [s for s, _ in _read_all(tmp_path, read_only=True)] == list(range(1, 201))
    assert verify_path(str(tmp_path)).ok
    _write_more = range(201, 1501)
    with Log.open(tmp_path, segment_size=SEG, wal_sync="never") as log:
        assert log.last_seq == 200
        for seq in _write_more:
            assert log.append(payload(seq)) == seq
    segs = _segments(tmp_path)
    versions = [parse_header(p.read_bytes()[:HEADER_SIZE], str(p))[1] for p in segs]
    assert versions[:2] == [2, 2] and set(versions[2:]) == {3} and len(versions) > 3
    assert _seal_of(segs[1]) is None  # a v2 segment gets no SEAL
    assert all(_seal_of(p) == int(q.name[:20]) for p, q in zip(segs[2:], segs[3:], strict=False))
    assert [(s, r) for s, r in _read_all(tmp_path)] == [(s, payload(s)) for s in range(1, 1501)]
    segs[-1].unlink()
    with pytest.raises(MissingSegmentError):
        Log.open(tmp_path)


def test_a_follower_reads_past_the_empty_v1_segment_its_writer_replaced(tmp_path: Path) -> None:
    """A version-1 log whose last segment holds no record (an older writer rotated and
    closed): the writer replaces that segment, by a rename, with a newer-format one of the
    same name.  A read-only log opened before kept reading the replaced file: refresh
    found none of the writer's records, and after its next rotation reported them
    missing (CorruptionError "log records 101..130 are missing")."""
    (tmp_path / "00000000000000000001.log").write_bytes(_v2_segment(1, range(1, 101), version=1))
    (tmp_path / "00000000000000000101.log").write_bytes(encode_header(101, version=1))
    with Log.open(tmp_path, read_only=True) as follower:
        assert follower.last_seq == 100
        with Log.open(tmp_path, segment_size=SEG, wal_sync="never") as log:
            for seq in range(101, 131):
                assert log.append(payload(seq)) == seq
            assert follower.refresh() == 130
            assert [s for s, _ in follower.read(101)] == list(range(101, 131))
            assert log.rotate() == 131 and log.append(payload(131)) == 131
            assert follower.refresh() == 131
        assert [(s, r) for s, r in follower.read()] == [(s, payload(s)) for s in range(1, 132)]


# -- repair accepts the loss on request ------------------------------------------------------

def test_repair_accepts_a_lost_newest_segment_only_on_request(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path)
    newest = _segments(tmp_path)[-1]
    lost_from = int(newest.name[:20])
    newest.unlink()
    assert cli_main(["repair", str(tmp_path)]) == 1
    assert "NOT repaired" in capsys.readouterr().out
    assert not newest.exists()
    assert cli_main(["repair", "--dry-run", "--accept-lost-segment", str(tmp_path)]) == 0
    assert not newest.exists()
    res = repair(str(tmp_path), accept_lost_segment=True)
    assert any("accepted the loss" in line for line in res.done) and not res.refused
    assert verify_path(str(tmp_path)).ok
    with Log.open(tmp_path) as log:
        assert log.last_seq == lost_from - 1
        assert log.append(b"x") == lost_from
    capsys.readouterr()


# -- the store's WAL ------------------------------------------------------------------------

def test_store_with_its_newest_wal_segment_deleted_does_not_open(tmp_path: Path) -> None:
    import banyanstore

    d, copy = tmp_path / "store", tmp_path / "copy"
    db = banyanstore.open(d, segment_size=SEG, wal_sync="never", memtable_size=64 << 20)
    try:
        for i in range(3000):
            db.put(f"k{i:05d}".encode(), b"v" * 60)
        shutil.copytree(d, copy)  # the store as a crash would leave it: the WAL holds the writes
    finally:
        db.close()
    wal = _segments(copy / "wal")
    assert len(wal) >= 2
    wal[-1].unlink()
    with pytest.raises(CorruptionError) as info:
        banyanstore.open(copy)
    assert str(wal[-1]) in str(info.value)


def test_seal_format_struct() -> None:
    data = seal_bytes(HEADER_SIZE, 0x0102030405060708)
    crc, length, kind, seq = struct.unpack("<IHBQ", data)
    assert (length, kind, seq) == (8, 5, 0x0102030405060708)
    assert parse_seal(data[:-1] + b"\0") is None  # a damaged SEAL is no SEAL


@pytest.mark.parametrize("killed", [False, True])
def test_a_record_ending_like_a_seal_is_not_taken_for_one(env_dir, killed: bool) -> None:
    """A record's data is anything: one ending with the 15 bytes of a SEAL naming the
    next seq, as the last record of the newest segment (after a clean close, or before
    the reserved zeros a killed writer leaves), made every open -- writer and read-only
    -- and every refresh raise MissingSegmentError for a healthy log.  The open's SEAL
    check now requires the SEAL to start a fragment."""
    env, root = env_dir
    directory = f"{root}/log"
    log = Log.open(directory, env=env, segment_size=64 * 1024, wal_sync="never")
    log.append_many([payload(s) for s in range(1, 40)])
    ro = Log.open(directory, env=env, read_only=True)
    for _ in range(3):  # also at a block boundary and across one
        seq = log.last_seq + 1
        tricky = [payload(seq, 32768 - 7 - 8 - 15), payload(seq, 3000) + seal_bytes(0, seq + 1)]
        for data in tricky:
            seq = log.last_seq + 1
            data = data[:-SEAL_SIZE] + seal_bytes(0, seq + 1)[-SEAL_SIZE:]
            assert log.append(data) == seq
            expected = [(s, r) for s, r in log.read()]
            if killed:
                log.sync()  # what a killed writer leaves: its records, then reserved zeros
                again = Log.open(directory, env=env, read_only=True)
            else:
                log.close()
                again = Log.open(directory, env=env)
            with again:
                assert list(again.read()) == expected
            assert ro.refresh() == seq and list(ro.read()) == expected
            if not killed:
                log = Log.open(directory, env=env, segment_size=64 * 1024, wal_sync="never")
    log.close()
    ro.close()


def test_a_rotation_stopped_before_its_seal_is_sealed_though_the_last_record_ends_like_one() -> None:
    """The rotation's successor exists, the old segment has no SEAL yet, and its last
    record's data ends with the bytes of a SEAL naming the successor.  The writer's open
    took them for the SEAL and "stored it again" where they were: the segment stayed
    without one, and verify (which parses) called it cut from then on.  The open now
    finishes the seal after that record."""
    disk = MemoryEnv()
    fenv = FaultEnv(disk)
    log = Log.open("/log", env=fenv, segment_size=SEG, wal_sync="never")
    log.append_many([payload(seq) for seq in range(1, 11)])
    old = sorted(n for n in disk.listdir("/log") if n.endswith(".log"))[-1]
    log.append(payload(11, 50) + seal_bytes(0, 12)[-SEAL_SIZE:])
    fenv.inject("map", path_contains=old)  # the SEAL's store fails; the successor exists
    with pytest.raises(StorageIOError):
        log.rotate()
    log.close()
    fenv.clear()
    with Log.open("/log", env=disk, segment_size=SEG, wal_sync="never") as log:
        assert log.last_seq == 11
        assert log.append(b"after", sync=True) == 12
    f = disk.open_readable(f"/log/{old}")
    try:
        data = f.read(0, f.size)
    finally:
        f.close()
    seals: list[tuple[int, ...]] = []  # parsed, as verify does: a SEAL after the last record
    records = list(iter_records(lambda off, n: data[off:off + n], HEADER_SIZE, len(data), 1,
                                on_seal=lambda *seal: seals.append(seal)))
    assert len(records) == 11 and len(seals) == 1
    with Log.open("/log", env=disk) as log:
        assert [s for s, _ in log.read()] == list(range(1, 13))


def test_verify_of_a_damaged_record_in_an_older_segment_says_what_an_open_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verify said of a damaged record in a sealed (older) segment "an open refuses this
    unless skip_damaged_records=True": the open succeeds -- recovery reads the newest
    segment only -- and a read that reaches the damaged record raises CorruptionError
    instead (the records before it stay readable)."""
    _write(tmp_path)
    older = _segments(tmp_path)[0]
    start, end = _record_bounds(older)[3]
    data = bytearray(older.read_bytes())
    data[end - 1] ^= 0xFF  # the fourth record's last payload byte
    older.write_bytes(bytes(data))
    code, report = _verify_json(tmp_path, capsys)
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert code == 1 and [(p["file"], p["offset"]) for p in errors] == [(str(older), start)]
    assert "an open refuses" not in errors[0]["message"], errors[0]["message"]
    assert "reads that reach this record raise CorruptionError" in errors[0]["message"]
    with Log.open(tmp_path) as log:  # what the message says: the open works...
        assert log.get(1) is not None  # ...a record before the damage reads...
        with pytest.raises(CorruptionError):
            log.get(4)  # ...and the damaged one does not
    # The newest segment's damage is what an open refuses (the wording stays).
    _write(tmp_path / "newest")
    newest = _segments(tmp_path / "newest")[-1]
    start, end = _record_bounds(newest)[3]
    data = bytearray(newest.read_bytes())
    data[end - 1] ^= 0xFF
    newest.write_bytes(bytes(data))
    code, report = _verify_json(tmp_path / "newest", capsys)
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert code == 1 and "an open refuses this" in errors[0]["message"], errors
    with pytest.raises(CorruptionError):
        Log.open(tmp_path / "newest").close()
