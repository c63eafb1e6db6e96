"""Recovery and bad input: each case gives its specific error, never a hang or a stray exception."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import struct
import subprocess
import sys
import textwrap

import pytest
from crc32c import crc32c
from log_helpers import SMALL, open_log, payload, rewrite, segments

from banyanstore.errors import (
    BanyanStoreError,
    ConfigError,
    CorruptionError,
    StorageIOError,
    StoreLockedError,
    StoreNotFoundError,
)
from banyanstore.log import Log, LogExistsError, LogNotFoundError
from banyanstore.log.format import BLOCK_SIZE, HEADER_SIZE, VERSION, encode_header


def _fill(env, root, n=2000, **kw):  # type: ignore[no-untyped-def]
    with open_log(env, root, **kw) as log:
        log.append_many([payload(s) for s in range(1, n + 1)])
    return f"{root}/log"


@pytest.mark.parametrize("cut", [1, 5, 7, 20, 300])
def test_torn_tail_is_cut_and_reported(env_dir, caplog, cut):
    env, root = env_dir
    d = _fill(env, root, options=SMALL.replace(segment_size=1 << 20))
    last = segments(env, d)[-1]
    data = env.read_file(last)
    rewrite(env, last, data[:-cut])
    with caplog.at_level(logging.WARNING, logger="banyanstore.log"), open_log(env, root) as log:
        st = log.stats()
        assert st["torn_tail_repairs"] == 1 and st["torn_tail_bytes"] > 0
        n = log.last_seq
        assert 1900 < n < 2000
        assert all(r == payload(s) for s, r in log.read())
        assert log.append(b"after") == n + 1
    assert "torn tail" in caplog.text
    with open_log(env, root) as log:
        assert log.stats()["torn_tail_repairs"] == 0 and log.get(n + 1) == b"after"


@pytest.mark.parametrize("garbage", [b"\xff" * 33, b"\x00" * 100 + b"\x01"])
def test_garbage_tail_is_cut(env_dir, garbage):
    env, root = env_dir
    d = _fill(env, root, n=50)
    last = segments(env, d)[-1]
    rewrite(env, last, env.read_file(last) + garbage)
    with open_log(env, root) as log:
        assert log.last_seq == 50 and log.stats()["torn_tail_bytes"] == len(garbage)


@pytest.mark.parametrize("zeros", [1, 5000, 3 * BLOCK_SIZE + 11])
def test_zero_tail_of_a_version_2_segment_is_reserved_space_not_damage(env_dir, zeros):
    """Zeros after the last record are what a writer that died leaves (its reserved,
    mapped space): the end of the data -- no torn tail, nothing cut, appends go on."""
    env, root = env_dir
    d = _fill(env, root, n=50)
    last = segments(env, d)[-1]
    rewrite(env, last, env.read_file(last) + bytes(zeros))
    with open_log(env, root, options=SMALL.replace(read_only=True)) as log:
        assert log.last_seq == 50 and log.stats()["torn_tail_repairs"] == 0
    with open_log(env, root) as log:
        st = log.stats()
        assert log.last_seq == 50 and st["torn_tail_repairs"] == st["torn_tail_bytes"] == 0
        assert log.append(b"after") == 51
    with open_log(env, root) as log:
        assert [r for _, r in log.read()] == [payload(s) for s in range(1, 51)] + [b"after"]


def test_zero_tail_of_a_version_1_segment_is_a_torn_tail(env_dir):
    """Version 1 never reserved space: zeros after its last record are a torn write (cut),
    and the log goes on in a new segment of the current version."""
    env, root = env_dir
    d = _fill(env, root, n=50)
    last = segments(env, d)[-1]
    _as_version_1(env, last)
    rewrite(env, last, env.read_file(last) + bytes(5000))
    with open_log(env, root) as log:
        assert log.last_seq == 50 and log.stats()["torn_tail_bytes"] == 5000
        assert log.append(b"after") == 51
    names = segments(env, d)
    assert len(names) == 2 and names[-1].endswith(f"{51:020d}.log")
    assert env.read_file(names[-1])[8] == VERSION
    with open_log(env, root) as log:
        assert [r for _, r in log.read()] == [payload(s) for s in range(1, 51)] + [b"after"]


def _as_version_1(env, path):  # type: ignore[no-untyped-def]
    data = bytearray(env.read_file(path))
    struct.pack_into("<H", data, 8, 1)  # version 1, header CRC recomputed
    struct.pack_into("<I", data, HEADER_SIZE - 4, crc32c(bytes(data[:HEADER_SIZE - 4])))
    rewrite(env, path, bytes(data))


def test_a_staged_segment_left_by_a_crash_is_removed(env_dir):
    """Replacing an empty format-1 last segment writes the new one under a staged name
    first; a crash before the rename leaves that file (a header only) beside the log.
    The next open removes it and opens the log -- it is not 'somebody else's file'."""
    env, root = env_dir
    d = _fill(env, root, n=30)
    with open_log(env, root) as log:
        assert log.rotate() == 31  # the empty last segment a format-1 writer would leave
    staged = f"{d}/{31:020d}.log.new"
    rewrite(env, staged, encode_header(31))
    with open_log(env, root, read_only=True) as log:
        assert log.last_seq == 30
    with open_log(env, root) as log:
        assert log.last_seq == 30 and log.append(b"x") == 31
    assert not env.exists(staged)


def test_an_empty_version_1_last_segment_is_replaced_keeping_its_first_seq(env_dir):
    """A log left by the format-1 writer with an empty last segment (just rotated, or
    emptied by truncation): its first seq is all it carries, so it is replaced by a
    format-2 segment of the same name, never removed."""
    env, root = env_dir
    d = _fill(env, root, n=30)
    with open_log(env, root) as log:
        assert log.rotate() == 31
        log.truncate_before(31)  # only the empty segment is left
    (empty,) = segments(env, d)
    _as_version_1(env, empty)
    with open_log(env, root) as log:
        assert (log.first_seq, log.last_seq) == (31, 30)
        assert log.append(b"after") == 31
    assert segments(env, d) == [empty] and env.read_file(empty)[8] == VERSION
    with open_log(env, root) as log:
        assert list(log.read()) == [(31, b"after")]


def test_flipped_byte_in_the_middle_raises_naming_file_and_offset(env_dir):
    env, root = env_dir
    d = _fill(env, root, options=SMALL.replace(segment_size=1 << 20))
    last = segments(env, d)[-1]
    data = bytearray(env.read_file(last))
    assert len(data) > 3 * BLOCK_SIZE
    data[BLOCK_SIZE + 100] ^= 0x40
    rewrite(env, last, bytes(data))
    with pytest.raises(CorruptionError) as info:
        open_log(env, root)
    assert info.value.path == last and BLOCK_SIZE - 2000 < info.value.offset <= BLOCK_SIZE + 100
    # skip_damaged_records=True: skipped, counted, seqs of the rest intact
    with open_log(env, root, options=SMALL.replace(skip_damaged_records=True)) as log:
        st = log.stats()
        assert st["damaged_records_skipped"] >= 1 and log.last_seq == 2000
        got = dict(log.read())
        missing = sorted(set(range(1, 2001)) - set(got))
        assert 1 <= len(missing) < 300 and all(got[s] == payload(s) for s in got)
        with pytest.raises(CorruptionError):
            log.get(missing[0])
        assert log.append(b"x") == 2001


def test_damage_in_an_older_segment_is_found_on_read(env_dir):
    env, root = env_dir
    d = _fill(env, root)
    first = segments(env, d)[0]
    data = bytearray(env.read_file(first))
    data[HEADER_SIZE + 50] ^= 1
    rewrite(env, first, bytes(data))
    with open_log(env, root) as log:  # only the last segment is scanned at open
        with pytest.raises(CorruptionError) as info:
            list(log.read())
        assert info.value.path == first
        with pytest.raises(CorruptionError):
            log.get(1)
        assert log.get(2000) == payload(2000)


def test_bad_header_in_older_segment(env_dir):
    env, root = env_dir
    d = _fill(env, root)
    first = segments(env, d)[0]
    data = bytearray(env.read_file(first))
    data[20] ^= 1  # inside first_seq: header checksum fails
    rewrite(env, first, bytes(data))
    with pytest.raises(CorruptionError, match="header checksum") as info:
        open_log(env, root)
    assert info.value.path == first


@pytest.mark.parametrize("first", [(1 << 63), (1 << 64) - 3])
def test_a_first_seq_no_log_reaches_is_damage(env_dir, first):
    """A segment header (checksum right) whose first_seq is past 2**63 - 1 -- no log
    appends that many records -- ran the seqs into 2**64: appends failed part-way
    (the compiled core wrote a record, then raised OverflowError, and wrote its seq
    again), a reopen cut acknowledged records as a torn tail, and the compiled core's
    read() yielded nothing.  It is damage: CorruptionError naming the file, offset 0."""
    env, root = env_dir
    d = _fill(env, root, n=3)
    path = f"{d}/{first:020d}.log"
    rewrite(env, path, encode_header(first))
    with pytest.raises(CorruptionError, match="first seq") as info:
        open_log(env, root)
    assert info.value.path == path and info.value.offset == 0


def test_foreign_file_named_like_a_segment(env_dir):
    env, root = env_dir
    d = _fill(env, root, n=10)
    rewrite(env, f"{d}/00000000000000000005.log", b"segment from another program\n" * 10)
    with pytest.raises(CorruptionError, match="not a banyanstore log segment") as info:
        open_log(env, root)
    assert info.value.path == f"{d}/00000000000000000005.log"


def test_a_segment_running_past_the_next_ones_first_seq_is_damage(env_dir):
    """Segment i holds seqs [first(i), first(i+1)).  A segment holding more (a file of
    another log put in its place) made read() yield seqs 21..25 twice, with different
    records, and no error.  It is damage: CorruptionError naming the segment and the
    offset of the first record past its end -- or, skipped, each seq once."""
    env, root = env_dir
    with open_log(env, root) as log:
        for first in (1, 11, 21):
            log.append_many([b"ours %d" % s for s in range(first, first + 10)])
            log.rotate()
    with open_log(env, root, name="other") as other:
        other.append_many([b"other %d" % s for s in range(1, 11)])
        other.rotate()
        other.append_many([b"other %d" % s for s in range(11, 26)])  # runs to 25
    name = f"{11:020d}.log"
    rewrite(env, f"{root}/log/{name}", env.read_file(f"{root}/other/{name}"))
    # (format 3: the open already sees it -- the segment has no seal naming its successor)
    with pytest.raises(CorruptionError, match="next segment") as info:
        with open_log(env, root) as log:
            list(log.read())
    assert info.value.path == f"{root}/log/{name}" and info.value.offset > HEADER_SIZE
    with open_log(env, root, options=SMALL.replace(skip_damaged_records=True)) as log:
        assert [s for s, _ in log.read()] == list(range(1, 31))


def test_a_missing_segment_before_an_empty_newest_one_is_damage(env_dir):
    """Segments 1 (seqs 1..10), 11 (11..14) and an empty 15; 11 is lost.  last_seq stays
    14, so reads up to it must not end quietly at 10 (the empty segment after the gap is
    never read, so no join is checked), nor may follow() jump to 15: CorruptionError
    naming the segment that ends short -- or, skipped, counted."""
    env, root = env_dir
    with open_log(env, root) as log:
        log.append_many([b"a"] * 10)
        log.rotate()
        log.append_many([b"b"] * 4)
        log.rotate()
    d = f"{root}/log"
    env.remove(f"{d}/{11:020d}.log")
    first = f"{d}/{1:020d}.log"
    for read_only in (False, True):
        with open_log(env, root, read_only=read_only) as log:
            assert (log.first_seq, log.last_seq) == (1, 14)
            for reader in (lambda: log.read(), lambda: log.read(5, 13),
                           lambda: log.follow(1, timeout=0)):
                with pytest.raises(CorruptionError, match="missing") as info:
                    list(reader())
                assert info.value.path == first and info.value.offset > HEADER_SIZE
    with open_log(env, root, options=SMALL.replace(skip_damaged_records=True)) as log:
        assert [s for s, _ in log.read()] == list(range(1, 11))
        assert log.stats()["damaged_records_skipped"] == 1


def test_interrupted_segment_creation_is_dropped(env_dir):
    env, root = env_dir
    d = _fill(env, root, n=10)
    rewrite(env, f"{d}/00000000000000000011.log", b"")
    with open_log(env, root) as log:
        assert log.last_seq == 10 and log.stats()["torn_tail_repairs"] == 1
        assert log.append(b"x") == 11


def test_interrupted_creation_of_a_reserved_segment_is_dropped(env_dir):
    """A crash between reserving a segment's space and storing its header leaves zeros
    only: nothing was ever stored there, so the open removes it."""
    env, root = env_dir
    d = _fill(env, root, n=10)
    rewrite(env, f"{d}/00000000000000000011.log", bytes(64 * 1024))
    with open_log(env, root) as log:
        assert log.last_seq == 10 and log.stats()["torn_tail_repairs"] == 1
        assert log.append(b"x") == 11


def test_only_the_newest_segment_can_be_an_interrupted_creation(env_dir):
    """A segment is created only after the one before it was sealed and synced, so a crash
    leaves at most the newest without a header.  An empty segment before it held sealed
    records: both opens refuse (naming it, offset 0) and keep it -- the log is not
    silently shorter, with the lost segment's seqs given out again."""
    env, root = env_dir
    with open_log(env, root) as log:
        for n in range(3):
            log.append_many([payload(s) for s in range(10 * n + 1, 10 * n + 11)])
            log.rotate()
    d = f"{root}/log"
    names = sorted(segments(env, d))
    assert len(names) == 4
    rewrite(env, names[-2], b"")  # sealed, with records 21..30
    rewrite(env, names[-1], b"")  # the newest: its creation may have been cut
    for read_only in (True, False):
        with pytest.raises(CorruptionError) as info:
            open_log(env, root, read_only=read_only)
        assert info.value.path == names[-2] and info.value.offset == 0
    assert sorted(segments(env, d))[:3] == names[:3]  # the newest held nothing


@pytest.mark.parametrize("only", [False, True], ids=["last-of-several", "only-segment"])
def test_zeroed_header_before_records_is_damage_not_an_interrupted_creation(env_dir, only):
    """Records after a zeroed header were stored after the header was: the header was
    damaged, not never written.  Both opens refuse (naming the segment and offset 0) and
    the segment is left exactly as it was, never removed with its records."""
    env, root = env_dir
    d = _fill(env, root, n=40 if only else 2000)
    last = segments(env, d)[-1]
    assert only == (len(segments(env, d)) == 1)
    data = env.read_file(last)
    assert len(data) > HEADER_SIZE and any(data[HEADER_SIZE:])
    damaged = bytes(HEADER_SIZE) + data[HEADER_SIZE:]
    rewrite(env, last, damaged)
    for read_only in (True, False):
        with pytest.raises(CorruptionError, match="header") as info:
            open_log(env, root, read_only=read_only)
        assert info.value.path == last and info.value.offset == 0
    assert env.read_file(last) == damaged


def test_missing_directory(env_dir):
    env, root = env_dir
    with pytest.raises(LogNotFoundError) as info:
        open_log(env, root, create_if_missing=False)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, BanyanStoreError)
    with pytest.raises(LogNotFoundError):
        open_log(env, root, read_only=True)
    assert not env.exists(f"{root}/log")


def test_log_open_errors_are_the_store_open_errors(env_dir):
    """The same except clause serves a store's open and a log's (docs/api.md): a missing
    log is a ``StoreNotFoundError``, as a missing store is, and ``error_if_exists`` on an
    existing log a ``ConfigError``, as on a store.  Before, only the log's own classes
    (and ``StorageIOError``, ``FileNotFoundError``/``FileExistsError``) caught them."""
    env, root = env_dir
    with pytest.raises(StoreNotFoundError) as missing:
        open_log(env, root, create_if_missing=False)
    assert isinstance(missing.value, (LogNotFoundError, StorageIOError, FileNotFoundError))
    assert missing.value.path == f"{root}/log"
    _fill(env, root, n=1)
    with pytest.raises(ConfigError, match="error_if_exists") as exists:
        open_log(env, root, error_if_exists=True)
    assert isinstance(exists.value, (LogExistsError, StorageIOError, FileExistsError))


def test_error_if_exists(env_dir):
    env, root = env_dir
    _fill(env, root, n=1)
    with pytest.raises(LogExistsError):
        open_log(env, root, error_if_exists=True)
    with open_log(env, root) as log:  # the failed open released the lock
        assert log.last_seq == 1


def test_a_stores_wal_opened_as_a_log_takes_the_stores_lock(tmp_path):
    """A store's ``wal/`` opened as a Log for writing is a second writer of that store:
    it takes the store's LOCK, so it and the store exclude each other (in this process or
    another); a read-only Log open beside the store is fine."""
    import banyanstore
    path = str(tmp_path / "db")
    store = banyanstore.open(path)
    store.put(b"a", b"1")
    with pytest.raises(StoreLockedError):
        banyanstore.open_log(f"{path}/wal")
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import banyanstore
        try:
            banyanstore.open_log({path + "/wal"!r})
        except banyanstore.StoreLockedError:
            print("locked")
        """)], capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "locked", child.stderr
    with banyanstore.open_log(f"{path}/wal", read_only=True) as log:
        assert log.last_seq >= 1
    store.close()
    with banyanstore.open_log(f"{path}/wal") as log:
        with pytest.raises(StoreLockedError):
            banyanstore.open(path)
        assert log.last_seq >= 1
    with banyanstore.open(path) as store:
        assert store.get(b"a") == b"1"


def test_second_writer_in_process(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        with pytest.raises(StoreLockedError):
            open_log(env, root)
        log.append(b"still fine")
        with open_log(env, root, lock=False) as embedded:  # the embedding caller holds its own lock
            assert embedded.last_seq >= 0
    with open_log(env, root) as log:
        assert log.get(1) == b"still fine"


def test_second_writer_from_another_process(tmp_path):
    d = tmp_path / "log"
    with Log.open(d, io_mode="sync") as log:
        log.append(b"a")
        code = textwrap.dedent(f"""
            import banyanstore
            try:
                banyanstore.open_log({str(d)!r}, io_mode="sync")
            except banyanstore.StoreLockedError:
                print("locked")
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env={"PYTHONPATH": ":".join(sys.path)})
        assert out.stdout.strip() == "locked", out.stderr


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "writer"])
def test_a_failed_open_closes_the_segments_it_opened(real_env_dir, read_only):
    """A read-only open keeps every segment open (pinned) while it recovers, and a
    writer's recovery reads them: damage found in the last one raised CorruptionError
    with every segment's descriptor still open until the exception's traceback was
    collected (6 of 6 held by a read-only open).  Now the failed open closes them."""
    env, root = real_env_dir
    d = _fill(env, root)
    paths = segments(env, d)
    assert len(paths) > 3
    data = bytearray(env.read_file(paths[-1]))
    data[HEADER_SIZE + 100] ^= 0x40  # intact records follow: damage, not a torn tail
    rewrite(env, paths[-1], bytes(data))
    gc.collect()
    gc.disable()  # closed by the failed open itself, not by a collection
    try:
        for _ in range(2):
            with pytest.raises(CorruptionError) as info:
                open_log(env, root, options=SMALL.replace(read_only=read_only))
            # ``info`` keeps the traceback -- and every frame of the failed open -- alive
            assert info.value.path == paths[-1]
            held = [p for p in paths if _descriptors_of(p)]
            assert not held, f"{len(held)} of {len(paths)} segments left open by the failed open"
    finally:
        gc.enable()


def _descriptors_of(path: str) -> int:
    """How many of this process's descriptors point at ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == path
    return count
