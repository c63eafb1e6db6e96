"""A merge (compaction) of a table whose entries are out of order behind a good checksum:
damage only the order tells.  The compiled merge checks each input as it reads it and
raised CorruptionError naming the table and block; the pure-Python merge passed the
entries to the table builder, whose order check raised a ValueError naming neither
("out of order: key b'k07' after b'k03'"), out of ``compact()``."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import banyanstore
from banyanstore.errors import CorruptionError
from banyanstore.io.posix import PosixEnv
from banyanstore.sstable.block import Block
from banyanstore.sstable.cache import BlockCache
from banyanstore.sstable.format import TRAILER, crc32c
from banyanstore.sstable.reader import TableReader


def swap_keys(table: Path, i: int, j: int) -> int:
    """Swap entries ``i`` and ``j``'s keys in the table's first data block (uncompressed,
    fixed-width keys) and stamp its checksum again; returns the block's offset."""
    reader = TableReader.open(PosixEnv(), str(table), BlockCache(0))
    try:
        _, off, length = reader.block_request(0)
    finally:
        reader.close()
    data = bytearray(table.read_bytes())
    body_end = off + length - TRAILER.size
    block = Block(bytes(data[off:body_end]))
    width = block.kw
    a, b = off + block.keys_at + i * width, off + block.keys_at + j * width
    data[a:a + width], data[b:b + width] = data[b:b + width], data[a:a + width]
    struct.pack_into("<I", data, off + length - 4,
                     crc32c(data[body_end:off + length - 4], crc32c(bytes(data[off:body_end]))))
    table.write_bytes(bytes(data))
    return off


def test_a_merge_input_out_of_order_is_corruption_naming_table_and_block(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with banyanstore.open(path, compression="none", compaction=False) as store:
        for i in range(20):
            store.put(b"k%02d" % i, b"v%02d" % i)
        store.flush()
        store.put(b"k05", b"newer")
        store.flush()
    tables = sorted((path / "tables").glob("*.sst"))
    assert len(tables) == 2
    off = swap_keys(tables[0], 3, 7)  # k00 k01 k02 k07 k04 ...: entry 4 comes too early
    with banyanstore.open(path, compaction=False) as store:
        with pytest.raises(CorruptionError) as info:
            store.compact()
        assert info.value.path == str(tables[0]) and info.value.offset == off
        assert "entry 4 is out of order" in str(info.value)
        assert store.get(b"k05") == b"newer"  # the inputs stand
