"""TableBuilder.add_sorted_columns (the memtable flush path) writes exactly the
table add_many writes, and rejects input that is not in internal order."""

from __future__ import annotations

import random

import pytest

from banyanstore.io.posix import PosixEnv
from banyanstore.options import Options
from banyanstore.sstable import TableBuilder


def _entries(seed: int) -> list[tuple[bytes, int, bytes | None]]:
    """Random keys in order, some with several versions (newest first), tombstones."""
    rng = random.Random(seed)
    out: list[tuple[bytes, int, bytes | None]] = []
    for k in sorted({rng.randbytes(rng.randrange(1, 12)) for _ in range(3000)}):
        newest = rng.randrange(100, 10_000)
        for v in range(newest, newest - rng.choice((1, 1, 1, 2, 5)), -1):
            value = None if rng.random() < 0.1 else rng.randbytes(rng.choice((0, 3, 100, 900)))
            out.append((k, v, value))
    return out


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_columns_build_the_same_file_as_add_many(tmp_path, compression):
    env = PosixEnv()
    opts = Options(block_size=1024, compression=compression)
    entries = _entries(1)
    a = TableBuilder(env, str(tmp_path / "a.sst"), opts)
    a.add_many(entries)
    meta_a = a.finish()
    b = TableBuilder(env, str(tmp_path / "b.sst"), opts)
    b.add_sorted_columns([e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries])
    meta_b = b.finish()
    assert (tmp_path / "a.sst").read_bytes() == (tmp_path / "b.sst").read_bytes()
    assert meta_a.entry_count == meta_b.entry_count == len(entries)
    assert meta_a.key_count == meta_b.key_count


@pytest.mark.parametrize("keys,versions,match", [
    ([b"b", b"a"], [1, 1], "ascending"),
    ([b"a", b"a"], [1, 2], "out of order"),
    ([b"a", b"b"], [0, 1], "versions"),
    ([b"a"], [1, 2], "length"),
])
def test_columns_reject_bad_input(tmp_path, keys, versions, match):
    b = TableBuilder(PosixEnv(), str(tmp_path / "t.sst"), Options())
    with pytest.raises(ValueError, match=match):
        b.add_sorted_columns(keys, versions, [b"v"] * len(keys))
    b.abandon()
