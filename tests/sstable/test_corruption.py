"""Damaged tables: every case is a CorruptionError naming the file and offset --
never a wrong answer and never an unrelated exception."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from banyanstore.errors import CorruptionError
from banyanstore.io.base import Env
from banyanstore.sstable import TableReader
from banyanstore.sstable.format import FOOTER, FOOTER_SIZE, TRAILER_SIZE, crc32c

from .helpers import build, new_path, offsets_damaged_table, open_table, read_paths, with_payload

EnvDir = tuple[Env, str]
TOP = 2**64 - 1


def rewrite(env: Env, path: str, data: bytes) -> None:
    f = env.open_writable(path)
    try:
        f.write(data)
    finally:
        f.close()


def small_table(env: Env, root: str, compression: str = "lz4") -> tuple[str, list, bytes]:
    entries = [(b"key%03d" % i, v, None if (i + v) % 9 == 0 else b"value-%d-%d" % (i, v) * 3)
               for i in range(40) for v in (2, 1)]
    path, _ = build(env, root, entries, block_size=1024, compression=compression)
    return path, entries, env.read_file(path)


def read_everything(env: Env, path: str, entries: list) -> None:
    """Open and read every entry every way; CorruptionError is the only allowed failure."""
    with open_table(env, path, cache_bytes=0) as r:
        assert list(r.scan()) == entries
        assert list(r.scan(reverse=True)) == entries[::-1]
        for k, v, val in entries:
            assert r.get(k, v) == (True, val, v)


def footer_fields(data: bytes) -> tuple:
    return FOOTER.unpack_from(data, len(data) - FOOTER_SIZE)


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_every_single_byte_flip_is_detected(env_dir: EnvDir, compression: str) -> None:
    env, root = env_dir
    if compression != "lz4" and env.mode not in ("sync", "memory"):
        pytest.skip("one backend per compression keeps the test fast")
    path, entries, good = small_table(env, root, compression)
    read_everything(env, path, entries)
    bad = new_path(root, "bad")
    step = 1 if env.mode in ("sync", "memory") else 7
    for pos in range(0, len(good), step):
        for mask in (0x01, 0x80):
            damaged = bytearray(good)
            damaged[pos] ^= mask
            rewrite(env, bad, bytes(damaged))
            with pytest.raises(CorruptionError) as info:
                read_everything(env, bad, entries)
            err = info.value
            assert err.path == bad and err.offset is not None and 0 <= err.offset < len(good), (pos, err)


def test_flip_in_each_region_names_that_region(env_dir: EnvDir) -> None:
    env, root = env_dir
    path, entries, good = small_table(env, root)
    (index_off, index_len, filter_off, filter_len, props_off, props_len, *_rest) = footer_fields(good)
    regions = {
        "data block 0": (0, 5),
        "filter block": (filter_off, filter_off + 20),
        "index block": (index_off, index_off + 3),
        "properties block": (props_off, props_off + 1),
    }
    for what, (expect_off, pos) in regions.items():
        damaged = bytearray(good)
        damaged[pos] ^= 0x10
        bad = new_path(root, "bad")
        rewrite(env, bad, bytes(damaged))
        with pytest.raises(CorruptionError, match=what) as info:
            read_everything(env, bad, entries)
        assert info.value.offset == expect_off and info.value.path == bad
    # footer handle damage
    damaged = bytearray(good)
    damaged[len(good) - FOOTER_SIZE + 2] ^= 0x01
    bad = new_path(root, "bad")
    rewrite(env, bad, bytes(damaged))
    with pytest.raises(CorruptionError, match="footer checksum") as info:
        TableReader.open(env, bad)
    assert info.value.offset == len(good) - FOOTER_SIZE


def test_corrupt_data_block_found_lazily_and_reported_on_every_path(env_dir: EnvDir) -> None:
    env, root = env_dir
    path, entries, good = small_table(env, root, "none")
    damaged = bytearray(good)
    damaged[30] ^= 0xFF  # inside data block 0
    rewrite(env, path, bytes(damaged))
    with open_table(env, path, cache_bytes=0) as r:  # opening does not read data blocks
        assert r.get(entries[-1][0], TOP)[0]          # other blocks still serve
        for call in (lambda: r.get(entries[0][0], TOP), lambda: list(r.scan()),
                     lambda: r.load_blocks([0]), lambda: r.history(entries[0][0])):
            with pytest.raises(CorruptionError) as info:
                call()
            assert info.value.offset == 0
        # verify=False skips the checksum: the caller opted out of detection
    with open_table(env, path, cache_bytes=0, verify=False) as r:
        r.get(entries[-1][0], TOP)


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
@pytest.mark.parametrize("damage", ["body", "type"])
def test_damaged_data_block_message_names_block_file_and_offset(env_dir: EnvDir, compression: str,
                                                                 damage: str) -> None:
    """A data block's damage reads as unwrap_block reports it (the reader's inline unwrap of
    intact blocks hands every other block to it): checksum or compression type, the block's
    number, the file and the block's offset -- whatever the block's compression."""
    env, root = env_dir
    path, entries, good = small_table(env, root, compression)
    with open_table(env, path, cache_bytes=0) as r:
        end = r.block_request(1)[1] + r.block_request(1)[2]  # block 1's stored end
        start = r.block_request(1)[1]
    damaged = bytearray(good)
    if damage == "body":
        damaged[start + 3] ^= 0xFF
        want = "data block 1 checksum mismatch"
    else:  # an unknown compression type, with a checksum that matches it
        damaged[end - TRAILER_SIZE] = 9
        crc = crc32c(bytes(damaged[start:end - 4]))
        damaged[end - 4:end] = struct.pack("<I", crc)
        want = "data block 1 has unknown compression type 9"
    rewrite(env, path, bytes(damaged))
    with open_table(env, path, cache_bytes=0) as r, pytest.raises(CorruptionError) as info:
        list(r.scan())
    assert want in str(info.value)
    assert (info.value.path, info.value.offset) == (path, start)


@pytest.mark.parametrize("cut", [0, 1, 8, FOOTER_SIZE - 1, FOOTER_SIZE, FOOTER_SIZE + 1, 200, -1, -8, -100])
def test_truncated_table(env_dir: EnvDir, cut: int) -> None:
    env, root = env_dir
    path, _, good = small_table(env, root)
    keep = cut if cut >= 0 else len(good) + cut
    rewrite(env, path, good[:keep])
    with pytest.raises(CorruptionError) as info:
        TableReader.open(env, path)
    assert info.value.path == path
    assert "truncated" in str(info.value) or "magic" in str(info.value)


def test_not_a_table(env_dir: EnvDir) -> None:
    env, root = env_dir
    path = new_path(root, "text")
    rewrite(env, path, b"hello, this is a text file and not a table at all\n" * 10)
    with pytest.raises(CorruptionError, match="bad magic"):
        TableReader.open(env, path)
    with pytest.raises(FileNotFoundError):
        TableReader.open(env, new_path(root, "missing"))


def test_unknown_future_format_version(env_dir: EnvDir) -> None:
    env, root = env_dir
    path, _, good = small_table(env, root)
    fields = list(footer_fields(good))
    fields[7] = 4  # format_version, with a valid checksum as a future writer would make
    footer = FOOTER.pack(*fields)
    fields[6] = crc32c(struct.pack("<I", 4), crc32c(footer[:36]))
    rewrite(env, path, good[:-FOOTER_SIZE] + FOOTER.pack(*fields))
    with pytest.raises(CorruptionError, match="unknown table format version 4") as info:
        TableReader.open(env, path)
    assert info.value.offset == len(good) - 12


def test_inconsistent_handles_with_valid_checksum(env_dir: EnvDir) -> None:
    """A footer whose checksum matches but whose handles do not tile the file."""
    env, root = env_dir
    path, _, good = small_table(env, root)
    fields = list(footer_fields(good))
    fields[1] -= 1  # index_len
    footer = FOOTER.pack(*fields)
    fields[6] = crc32c(struct.pack("<I", fields[7]), crc32c(footer[:36]))
    rewrite(env, path, good[:-FOOTER_SIZE] + FOOTER.pack(*fields))
    with pytest.raises(CorruptionError, match="inconsistent"):
        TableReader.open(env, path)
    assert TRAILER_SIZE == 5


def test_origin_is_recorded_and_checked(env_dir: EnvDir) -> None:
    """Format version 2: the keyspace and covered versions a store gives a table are in
    its properties; version 1 tables (no origin) stay readable; a damaged origin (valid
    checksums, impossible values) is CorruptionError naming the properties block."""
    from banyanstore.sstable.builder import TableBuilder
    from banyanstore.sstable.meta import TableOrigin
    env, root = env_dir
    path = new_path(root, "origin")
    with TableBuilder(env, path, origin=TableOrigin(3, "idx")) as b:
        b.add(b"a", 5, b"x")
        b.add(b"b", 7, None)
        b.finish()
    with TableReader.open(env, path) as r:
        assert r.meta.origin == TableOrigin(3, "idx", 5, 7, 0)
        assert footer_fields(env.read_file(path))[7] == 2
    merged = new_path(root, "merged")
    with TableBuilder(env, merged, origin=TableOrigin(3, "idx", 1, 9, 4)) as b:
        b.add(b"a", 5, b"x")
        b.finish()
    with TableReader.open(env, merged) as r:
        assert r.meta.origin == TableOrigin(3, "idx", 1, 9, 4)
    v1, _, _ = small_table(env, root)
    with TableReader.open(env, v1) as r:
        assert r.meta.origin is None
    bad = new_path(root, "bad-origin")
    with TableBuilder(env, bad, origin=TableOrigin(3, "idx", 6, 9, 0)) as b:  # 5 not covered
        b.add(b"a", 5, b"x")
        b.finish()
    with pytest.raises(CorruptionError, match="origin covers versions 6..9"):
        TableReader.open(env, bad)


@pytest.mark.parametrize("layout, section", [("variable", "key"), ("variable", "value"),
                                             ("fixed-keys", "value")])
@pytest.mark.parametrize("how", ["above the next", "past the heap"])
def test_offsets_out_of_order_behind_a_valid_checksum(env_dir: EnvDir, layout: str, section: str,
                                                      how: str) -> None:
    """A data block whose key or value offsets are out of order, re-checksummed so that only
    field validation can see it, is CorruptionError naming the file and the block on every
    read path -- not an empty or garbled value (the value of entry 3 here would read as
    empty) -- while the other blocks still serve."""
    env, root = env_dir
    if env.mode not in ("sync", "memory"):
        pytest.skip("the damage is in the payload, not in how it is read")
    path, entries, off, keys = offsets_damaged_table(env, root, layout, section, how)
    with open_table(env, path) as r:
        names = list(read_paths(r, keys, root))
    for name in names:
        with open_table(env, path, cache_bytes=1 << 20) as r:  # a fresh reader and cache each
            with pytest.raises(CorruptionError, match=f"{section} offsets are out of order") as info:
                read_paths(r, keys, root)[name]()
            assert (info.value.path, info.value.offset) == (path, off), name
            assert r.get(entries[0][0], TOP) == (True, entries[0][2], 1)  # block 0 still serves


def index_payload(env: Any, root: str, entries: list[tuple[bytes, int, bytes]]
                  ) -> tuple[str, bytes, int, bytearray]:
    """A table of ``entries`` (1 KiB blocks, uncompressed) and its index block's payload
    to damage: ``(path, file bytes, index offset, payload)``.  Skips the backends that
    only read differently (the damage is in the payload)."""
    if env.mode not in ("sync", "memory"):
        pytest.skip("the damage is in the payload, not in how it is read")
    path, _ = build(env, root, entries, block_size=1024, compression="none")
    data = env.read_file(path)
    index_off, index_len = footer_fields(data)[:2]
    return path, data, index_off, bytearray(data[index_off:index_off + index_len])


@pytest.mark.parametrize("how", ["above the next", "past the heap"])
def test_index_key_offsets_out_of_order_behind_a_valid_checksum(env_dir: EnvDir, how: str) -> None:
    """The index block's key offsets out of order (its checksum recomputed) are refused when
    the table opens -- in either engine, naming the file and the index block's offset --
    instead of giving blocks wrong last keys (lookups then answer from the wrong block)."""
    env, root = env_dir
    entries = [(b"key%04d" % i, 1, b"value") for i in range(300)]
    path, data, index_off, payload = index_payload(env, root, entries)
    count = struct.unpack_from("<I", payload, 0)[0]
    assert count > 3
    at = 8 + 8 * (count + 1) + 8 * count  # the key offsets
    offs = struct.unpack_from(f"<{count + 1}I", payload, at)
    struct.pack_into("<I", payload, at + 4 * 2, offs[3] + 1 if how == "above the next" else 0xFFFFFFFF)
    rewrite(env, path, with_payload(data, index_off, bytes(payload)))
    with pytest.raises(CorruptionError, match="index key offsets are not increasing") as info:
        TableReader.open(env, path)
    assert (info.value.path, info.value.offset) == (path, index_off)


@pytest.mark.parametrize("how", ["keys swapped", "first key below the smallest", "versions swapped"])
def test_index_last_keys_out_of_order_behind_a_valid_checksum(env_dir: EnvDir, how: str) -> None:
    """The index's last keys (or a key's last versions) out of order, its checksum
    recomputed, are refused when the table opens -- in either engine, naming the file and
    the index block's offset.  Before, the lookups bisected them and read keys the table
    holds as absent (45 of 2,000 keys for one swap), and a first key below the table's
    smallest sent the engines to different answers."""
    env, root = env_dir
    if how == "versions swapped":  # one key whose versions end several blocks
        entries = [(b"key", v, b"value%04d" % v) for v in range(300, 0, -1)] + [(b"last", 1, b"v")]
    else:
        entries = [(b"key%04d" % i, 1, b"value") for i in range(300)]
    path, data, index_off, payload = index_payload(env, root, entries)
    count = struct.unpack_from("<I", payload, 0)[0]
    assert count > 4
    versions_at = 8 + 8 * (count + 1)
    offs_at = versions_at + 8 * count
    offs = struct.unpack_from(f"<{count + 1}I", payload, offs_at)
    heap = offs_at + 4 * (count + 1)
    keys = [bytes(payload[heap + a:heap + b]) for a, b in zip(offs, offs[1:], strict=False)]
    if how == "keys swapped":
        assert len(keys[1]) == len(keys[count - 2])
        payload[heap + offs[1]:heap + offs[2]] = keys[count - 2]
        payload[heap + offs[count - 2]:heap + offs[count - 1]] = keys[1]
        match = "index last keys are out of order"
    elif how == "first key below the smallest":
        payload[heap:heap + offs[1]] = b"\x00" * len(keys[0])
        match = "index block disagrees with the table layout"
    else:
        assert keys[1] == keys[2] == b"key"
        v1, v2 = struct.unpack_from("<QQ", payload, versions_at + 8)
        struct.pack_into("<QQ", payload, versions_at + 8, v2, v1)
        match = "index last versions of a key are out of order"
    rewrite(env, path, with_payload(data, index_off, bytes(payload)))
    with pytest.raises(CorruptionError, match=match) as info:
        TableReader.open(env, path)
    assert (info.value.path, info.value.offset) == (path, index_off)
