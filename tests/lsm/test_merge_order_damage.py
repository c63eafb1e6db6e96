"""A merge (compaction) of a table damaged behind a good checksum in ways only the entries
tell.  Out of order: the compiled merge checks each input as it reads it and raised
CorruptionError naming the table and block; the pure-Python merge passed the entries to
the table builder, whose order check raised a ValueError naming neither ("out of order:
key b'k07' after b'k03'"), or over several tables sorted them back into order and wrote
the damage into a well-formed table.  A version 0: both merges raised the builder's
ValueError ("version 0 is outside 1 .. 2**64-1") out of ``compact()``."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

import banyanstore
from banyanstore.errors import CorruptionError
from banyanstore.io.posix import PosixEnv
from banyanstore.sstable.block import Block
from banyanstore.sstable.cache import BlockCache
from banyanstore.sstable.format import TRAILER, crc32c
from banyanstore.sstable.reader import TableReader


def damage(table: Path, change: Callable[[bytearray, int, Block], None]) -> int:
    """``change(data, block_offset, block)`` applied to the table's first data block
    (uncompressed) and its checksum stamped again; returns the block's offset."""
    reader = TableReader.open(PosixEnv(), str(table), BlockCache(0))
    try:
        _, off, length = reader.block_request(0)
    finally:
        reader.close()
    data = bytearray(table.read_bytes())
    body_end = off + length - TRAILER.size
    change(data, off, Block(bytes(data[off:body_end])))
    struct.pack_into("<I", data, off + length - 4,
                     crc32c(data[body_end:off + length - 4], crc32c(bytes(data[off:body_end]))))
    table.write_bytes(bytes(data))
    return off


def swap_keys(i: int, j: int) -> Callable[[bytearray, int, Block], None]:
    """Entries ``i`` and ``j`` of a block of fixed-width keys swap keys."""
    def change(data: bytearray, off: int, block: Block) -> None:
        width = block.kw
        a, b = off + block.keys_at + i * width, off + block.keys_at + j * width
        data[a:a + width], data[b:b + width] = data[b:b + width], data[a:a + width]
    return change


def version_zero(i: int) -> Callable[[bytearray, int, Block], None]:
    def change(data: bytearray, off: int, block: Block) -> None:
        struct.pack_into("<Q", data, off + 16 + 8 * i, 0)  # the versions follow the header
    return change


@pytest.mark.parametrize(("change", "says"), [
    (swap_keys(3, 7), "entry 4 is out of order"),  # k00 k01 k02 k07 k04 ...: entry 4 too early
    (version_zero(2), "entry 2 has version 0, outside the table's versions 1 .. 20"),
], ids=["out-of-order", "version-0"])
def test_a_damaged_merge_input_is_corruption_naming_table_and_block(
        tmp_path: Path, change: Callable[[bytearray, int, Block], None], says: str) -> None:
    path = tmp_path / "db"
    with banyanstore.open(path, compression="none", compaction=False) as store:
        for i in range(20):
            store.put(b"k%02d" % i, b"v%02d" % i)
        store.flush()
        store.put(b"k05", b"newer")
        store.flush()
    tables = sorted((path / "tables").glob("*.sst"))
    assert len(tables) == 2
    off = damage(tables[0], change)
    with banyanstore.open(path, compaction=False) as store:
        with pytest.raises(CorruptionError) as info:
            store.compact()
        assert info.value.path == str(tables[0]) and info.value.offset == off
        assert says in str(info.value)
        assert store.get(b"k05") == b"newer"  # the inputs stand
