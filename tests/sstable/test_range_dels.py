"""Format version 3: the range-tombstone block of a table (sstable/rangedels.py)."""

from __future__ import annotations

import struct

import pytest

from banyanstore.errors import CorruptionError
from banyanstore.io.memory import MemoryEnv
from banyanstore.options import Options
from banyanstore.sstable import TableBuilder, TableReader
from banyanstore.sstable.format import FOOTER, FOOTER_SIZE
from banyanstore.sstable.meta import TableOrigin
from banyanstore.sstable.rangedels import decode_range_dels, encode_range_dels

RANGES = [(b"key010", b"key020", 7), (b"key015", b"key090", 9), (b"key015", b"key016", 3),
          (b"a", b"b", 5)]
ENTRIES = [(b"key%03d" % i, v, None if i % 11 == 0 else b"value-%d" % i) for i in range(60)
           for v in (8, 4)]


def build(env, path, entries=ENTRIES, ranges=RANGES, origin=None, **opts):
    with TableBuilder(env, path, Options(block_size=1024, **opts), origin) as b:
        b.add_many(entries)
        b.add_range_dels(ranges)
        return b.finish()


def footer_version(data: bytes) -> int:
    return FOOTER.unpack_from(data, len(data) - FOOTER_SIZE)[7]


@pytest.fixture
def env():
    e = MemoryEnv()
    e.mkdir("/t")
    return e


def test_round_trip_and_version(env):
    meta = build(env, "/t/1.sst", origin=TableOrigin(2, "idx"))
    assert footer_version(env.read_file("/t/1.sst")) == 3
    assert meta.range_del_count == 4 and meta.range_del_bounds == (b"a", b"key090")
    assert (meta.min_version, meta.max_version) == (3, 9)  # the range tombstones' versions count
    with TableReader.open(env, "/t/1.sst") as r:
        assert r.range_dels == ((b"a", b"b", 5), (b"key010", b"key020", 7),
                                (b"key015", b"key090", 9), (b"key015", b"key016", 3))
        assert r.meta.origin == TableOrigin(2, "idx", 3, 9, 0)
        assert list(r.scan()) == sorted(ENTRIES, key=lambda e: (e[0], -e[1]))  # not applied here
    build(env, "/t/2.sst", origin=None)  # a version-3 table without an origin
    with TableReader.open(env, "/t/2.sst") as r:
        assert r.meta.origin is None and len(r.range_dels) == 4


def test_tables_without_range_tombstones_keep_their_versions(env):
    build(env, "/t/1.sst", ranges=[])
    build(env, "/t/2.sst", ranges=[], origin=TableOrigin(0, "default"))
    assert footer_version(env.read_file("/t/1.sst")) == 1
    assert footer_version(env.read_file("/t/2.sst")) == 2
    with TableReader.open(env, "/t/2.sst") as r:
        assert r.range_dels == ()


def test_a_table_of_range_tombstones_only(env):
    meta = build(env, "/t/1.sst", entries=[], ranges=[(b"m", b"p", 4), (b"a", b"c", 6)])
    assert meta.entry_count == 1 and meta.tombstone_count == 1
    with TableReader.open(env, "/t/1.sst") as r:
        assert list(r.scan()) == [(b"a", 6, None)]  # the stand-in point tombstone
        assert r.range_dels == ((b"a", b"c", 6), (b"m", b"p", 4))


@pytest.mark.parametrize("bad, message", [
    ((b"b", b"a", 1), "not a non-empty range"),
    ((b"a", b"a", 1), "not a non-empty range"),
    ((b"a", b"b", 0), "outside"),
    ((b"a", b"b", 2**64), "outside"),
    (("a", b"b", 1), "bytes"),
    ((b"a", b"b" * 70000, 1), "max_key_size"),
])
def test_builder_refuses_bad_range_tombstones(env, bad, message):
    with TableBuilder(env, "/t/1.sst", Options()) as b, pytest.raises(ValueError, match=message):
        b.add_range_dels([bad])


def test_every_single_byte_flip_is_detected(env):
    build(env, "/t/good.sst", compression="lz4", bloom_bits_per_key=10)
    good = env.read_file("/t/good.sst")
    with TableReader.open(env, "/t/good.sst") as r:
        want = (r.range_dels, list(r.scan()))
    assert want[0]
    for pos in range(len(good)):
        for mask in (0x01, 0x80):
            damaged = bytearray(good)
            damaged[pos] ^= mask
            f = env.open_writable("/t/bad.sst")
            f.write(bytes(damaged))
            f.close()
            with pytest.raises(CorruptionError) as info:
                with TableReader.open(env, "/t/bad.sst") as r:
                    list(r.scan())
                    raise AssertionError(f"flip at {pos} went unnoticed")
            assert info.value.path == "/t/bad.sst" and info.value.offset is not None, pos


def entry(start: bytes, end: bytes, version: int) -> bytes:
    return struct.pack("<IIQ", len(start), len(end), version) + start + end


@pytest.mark.parametrize("payload, count, message", [
    (b"\x01\x00\x00", 1, "shorter than its header"),
    (struct.pack("<II", 2, 0) + entry(b"a", b"b", 5), 1, "the properties say 1"),
    (struct.pack("<II", 1, 7) + entry(b"a", b"b", 5), 1, "reserved 7"),
    (struct.pack("<II", 1, 0) + entry(b"b", b"a", 5), 1, "does not end after its start"),
    (struct.pack("<II", 1, 0) + entry(b"a", b"b", 50), 1, "outside the table's"),
    (struct.pack("<II", 1, 0) + entry(b"a", b"b", 5) + b"x", 1, "trailing"),
    (struct.pack("<II", 1, 0) + entry(b"a", b"b", 5)[:-1], 1, "past the block's end"),
    (struct.pack("<II", 1, 0) + entry(b"a", b"b", 5)[:10], 1, "entry header past"),
    (struct.pack("<II", 2, 0) + entry(b"b", b"c", 5) + entry(b"a", b"c", 5), 2, "out of order"),
    (struct.pack("<II", 2, 0) + entry(b"a", b"c", 5) + entry(b"a", b"c", 5), 2, "out of order"),
])
def test_decoder_checks_every_field(payload, count, message):
    with pytest.raises(ValueError, match=message):
        decode_range_dels(payload, count, 1, 9)


def test_encoder_and_decoder_agree():
    dels = [(b"", b"\x00", 1), (b"a", b"z", 9), (b"a", b"b", 2)]
    assert decode_range_dels(encode_range_dels(dels), 3, 1, 9) == tuple(dels)
