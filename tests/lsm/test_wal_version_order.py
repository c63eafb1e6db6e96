"""WAL replay refuses a record whose version is below the one before it.

The writer takes each record's version under its lock, in log order, so versions
never go down from one WAL record to the next.  A record that does (damage behind a
valid frame checksum, found by the decoder fuzzer: ``wal.record``, seed 75964265) used
to reach the memtable out of order and failed later, at flush, as a ``ValueError``
of the table builder; it is a CorruptionError naming the record, on every open and
in both modes (pure Python and the compiled core).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import CorruptionError
from banyanstore.io.memory import MemoryEnv
from banyanstore.log import format as logfmt
from banyanstore.lsm import wal
from tests.torture import mutate
from tests.torture.fuzz import materialize

ROOT = "/db"
OPTS: dict[str, Any] = dict(compaction=False, compression="none")
VERSION = struct.Struct("<Q")


def wal_files(env: MemoryEnv) -> dict[str, bytes]:
    return {p: d for p, d in env.snapshot_state().items()
            if p.startswith(ROOT + "/") and not p.endswith("/LOCK")}


def store_with_versions(n: int = 5) -> dict[str, bytes]:
    """The files of a store after a crash, its WAL holding ``n`` synced puts of one key
    (versions 1..n) that no table holds."""
    env = MemoryEnv()
    env.mkdir(ROOT)
    store = banyanstore.open(ROOT, env=env, **OPTS)
    try:
        for i in range(n):
            store.put(b"k", b"v%d" % i, sync=True)
        assert store.version == n
        return wal_files(env.clone())  # before close flushes the memtable
    finally:
        store.close()


def reopen(files: dict[str, bytes]) -> MemoryEnv:
    """A fresh env holding ``files`` (and the empty tables/ directory)."""
    return materialize(files, (f"{ROOT}/tables",))


def _rewrite(files: dict[str, bytes], record_no: int, edit: Callable[[bytearray], None]) -> dict[str, bytes]:
    """``files`` with the ``record_no``-th WAL record's payload (0-based; the record's seq
    first) changed by ``edit``, behind a recomputed fragment checksum (the Log accepts
    the frame)."""
    [seg] = [p for p in files if p.startswith(f"{ROOT}/wal/") and p.endswith(".log")]
    data = files[seg]
    off, length, kind = mutate.segment_fragments(data)[record_no]
    assert kind == 1  # FULL
    start = off + logfmt.FRAG_HEADER_SIZE
    payload = bytearray(data[start:start + length])
    edit(payload)
    header = logfmt.FRAG_HEADER.pack(logfmt.frame_crc(kind, bytes(payload)), length, kind)
    return dict(files, **{seg: data[:off] + header + bytes(payload) + data[start + length:]})


def set_byte(files: dict[str, bytes], record_no: int, at: int, value: int) -> dict[str, bytes]:
    """``files`` with byte ``at`` of the ``record_no``-th WAL record (after its seq) set
    to ``value``."""
    def edit(payload: bytearray) -> None:
        payload[8 + at] = value
    return _rewrite(files, record_no, edit)


def set_version(files: dict[str, bytes], record_no: int, version: int) -> dict[str, bytes]:
    """``files`` with the version of the ``record_no``-th WAL record set to ``version``."""
    def edit(payload: bytearray) -> None:
        VERSION.pack_into(payload, 8 + wal.VERSION_OFFSET, version)  # after the record's seq
    return _rewrite(files, record_no, edit)


@pytest.mark.parametrize("read_only", [True, False], ids=["read_only", "writer"])
def test_record_older_than_the_one_before_is_corruption(read_only: bool) -> None:
    # Record 3 (version 3) claims version 9: record 4 (version 4) then goes backwards.
    files = set_version(store_with_versions(), 2, 9)
    with pytest.raises(CorruptionError, match=r"version 4 is below version 9") as info:
        with banyanstore.open(ROOT, env=reopen(files), read_only=read_only, **OPTS) as store:
            store.flush()  # before the fix: ValueError "out of order" from the table builder
    assert info.value.path == f"{ROOT}/wal (record 4)"
    assert info.value.offset == wal.VERSION_OFFSET


def test_equal_versions_replay() -> None:
    """A write interrupted after its record reached the WAL leaves its version
    unpublished and the next write reuses it: equal versions replay, the later wins."""
    files = set_version(store_with_versions(), 3, 3)  # record 4 reuses version 3
    with banyanstore.open(ROOT, env=reopen(files), **OPTS) as store:
        assert store.get(b"k") == b"v4"
        store.flush()
        assert store.get(b"k") == b"v4"


def test_intact_wal_replays() -> None:
    """The check passes every record the store itself wrote (the test above is not vacuous)."""
    files = store_with_versions()
    for read_only in (True, False):
        with banyanstore.open(ROOT, env=reopen(files), read_only=read_only, **OPTS) as store:
            assert store.get(b"k") == b"v4" and store.version == 5


def test_flags_must_be_zero() -> None:
    record = bytearray(wal.encode_one(1, 0, 1, b"k", b"v"))
    record[1] = 0x40
    with pytest.raises(CorruptionError, match="flags 0x40") as info:
        wal.decode(bytes(record), "w")
    assert info.value.offset == 1


@pytest.mark.parametrize("read_only", [True, False], ids=["read_only", "writer"])
def test_a_newer_record_format_names_the_record_and_offset(read_only: bool) -> None:
    """A record of a format above the newest (a newer banyanstore wrote it) is refused
    like any other damage: by record and offset (its format byte, offset 0)."""
    files = set_byte(store_with_versions(), 2, 0, wal.WAL_FORMAT_RANGES + 1)
    with pytest.raises(CorruptionError, match="WAL record format 3 is not supported") as info:
        with banyanstore.open(ROOT, env=reopen(files), read_only=read_only, **OPTS):
            pass
    assert info.value.path == f"{ROOT}/wal (record 3)"
    assert info.value.offset == 0
