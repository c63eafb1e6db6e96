"""A flipped bit in the last block of the last segment is corruption, not a torn
tail, when intact records follow it: recovery must refuse rather than cut synced
records (regression: it used to resynchronise at the next block and cut them)."""

from __future__ import annotations

import os

import pytest

import banyanstore
from banyanstore.errors import CorruptionError


def _segment(path: str) -> str:
    names = sorted(n for n in os.listdir(path) if n.endswith(".log"))
    return os.path.join(path, names[-1])


@pytest.mark.parametrize("where", ["payload", "length"])
def test_damage_followed_by_intact_records_is_not_cut(tmp_path, where):
    path = str(tmp_path / "log")
    with banyanstore.open_log(path, wal_sync="always") as log:
        for i in range(50):
            log.append(b"record-%03d" % i + b"." * 40)
    seg = _segment(path)
    size_before = os.path.getsize(seg)
    with open(seg, "r+b") as f:
        data = bytearray(f.read())
        first = data.index(b"record-000")
        at = first + 5 if where == "payload" else first - 11  # inside the length field
        data[at] ^= 0x40
        f.seek(0)
        f.write(data)
    with pytest.raises(CorruptionError) as info:
        banyanstore.open_log(path)
    assert info.value.path == seg and "not a torn write" in str(info.value)
    assert os.path.getsize(seg) == size_before  # nothing was cut
    with banyanstore.open_log(path, skip_damaged_records=True) as log:
        records = [r for _, r in log.read()]
        assert len(records) == 49 and records[-1].startswith(b"record-049")
        assert log.stats()["damaged_records_skipped"] >= 1


def test_a_real_torn_tail_is_still_cut(tmp_path):
    path = str(tmp_path / "log")
    with banyanstore.open_log(path, wal_sync="always") as log:
        for i in range(20):
            log.append(b"r%02d" % i * 10)
    seg = _segment(path)
    with open(seg, "r+b") as f:
        f.truncate(os.path.getsize(seg) - 7)
    with banyanstore.open_log(path) as log:
        assert log.last_seq == 19 and log.stats()["torn_tail_repairs"] == 1
        assert log.append(b"next") == 20


@pytest.mark.parametrize("seal", [False, True], ids=["zero-tail", "cut-file"])
def test_a_torn_record_carrying_framed_records_of_another_log_is_a_torn_tail(tmp_path, seal):
    """A record whose bytes hold framed records (a log of another log's segments) torn by
    a crash: the resynchronising scan finds those frames inside its stored part.  Their
    seqs lie further ahead than the bytes skipped could hold (every record takes at least
    15 bytes), so they are not this log's records: the tail is cut as torn, not refused
    as damage -- and skip_damaged_records=True does not make one of them record 2**40."""
    from banyanstore.log.format import BLOCK_SIZE, fragment

    path = str(tmp_path / "log")
    nested = b"".join(f for _, f in fragment(1 << 40, b"a record of another log", BLOCK_SIZE))
    with banyanstore.open_log(path, wal_sync="always") as log:
        log.append_many([b"a", b"b"])
        log.append(b"x" * 10 + nested * 20 + b"y" * 1000)
    seg = _segment(path)
    size = os.path.getsize(seg)
    with open(seg, "r+b") as f:  # the record's last 500 bytes never reached the file
        if seal:
            f.truncate(size - 500)
        else:
            f.seek(size - 500)
            f.write(bytes(500))
    for kwargs in ({"read_only": True}, {}, {"skip_damaged_records": True}):
        with banyanstore.open_log(path, **kwargs) as log:
            assert log.last_seq == 2 and [r for _, r in log.read()] == [b"a", b"b"]


# A complete last frame failing its checksum, with no zero-filled 512-byte sector in it,
# is what a crash can leave too -- so it stays a torn tail (cut), never a refused open.
# These two crash states are why "complete + no zero sector + bad CRC = damage" does not
# hold for this writer (which stores through a shared mapping, log/writer.py).

PAGE = 4096
LAST = b"L" * 6000  # the last record: it crosses two page boundaries of its block


def _killed_log(path: str) -> tuple[str, int]:
    """A log whose writer died in the middle of storing LAST: (segment, frame offset).
    The segment ends with reserved zeros, as a killed writer's does."""
    with banyanstore.open_log(path, wal_sync="always") as log:
        for i in range(40):
            log.append(b"record-%03d-" % i + b"." * 60)
        log.append(LAST)
    seg = _segment(path)
    with open(seg, "ab") as f:
        f.write(bytes(64 * 1024))
    with open(seg, "rb") as f:
        frame = f.read().rindex(LAST) - 15  # FULL fragment header: crc, length, type, seq
    assert frame // 512 != (frame + 15 + len(LAST)) // 512  # (several sectors)
    return seg, frame


def _zero(seg: str, start: int, end: int) -> None:
    with open(seg, "r+b") as f:
        f.seek(start)
        f.write(bytes(end - start))


def _assert_cut_as_torn(path: str, seg: str, frame: int) -> None:
    with banyanstore.open_log(path) as log:
        assert log.last_seq == 40 and log.stats()["torn_tail_repairs"] == 1
        assert [r for _, r in log.read(40)] == [b"record-039-" + b"." * 60]
    assert os.path.getsize(seg) == frame


def test_a_kill_between_the_length_and_checksum_stores_is_a_torn_tail(tmp_path):
    """The compiled writer (native/logframe.c fw_store) stores the type, seq, data and
    length, then the CRC: a process killed before that last store leaves every byte of
    the frame but the CRC field, which still holds the reserved space's zeros."""
    path = str(tmp_path / "log")
    seg, frame = _killed_log(path)
    _zero(seg, frame, frame + 4)
    _assert_cut_as_torn(path, seg, frame)


def test_a_page_written_back_mid_store_is_a_torn_tail(tmp_path):
    """A power loss after the kernel wrote back one page of the frame while the writer
    was still storing into it (a shared mapping is written back whenever the kernel
    likes) and the next page after the store ended: the first page's share of the frame
    ends in zeros -- fewer than a sector -- and every other byte is there."""
    path = str(tmp_path / "log")
    seg, frame = _killed_log(path)
    boundary = (frame // PAGE + 1) * PAGE
    _zero(seg, boundary - 100, boundary)
    _assert_cut_as_torn(path, seg, frame)
