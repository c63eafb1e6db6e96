"""A missing WAL segment (or a missing ``wal/``) is a CorruptionError on every open,
never a store that opens with fewer keys -- unless ``wal_recovery="skip_missing"``.

The WAL's segments are removed oldest first and only once a manifest edit no longer
needs them (docs/format/wal.md), so on a healthy store the segments from the
manifest's ``wal_seq`` on are all present and contiguous.
"""

from __future__ import annotations

from typing import Any

import pytest

import banyanstore
from banyanstore.errors import CorruptionError
from banyanstore.io.memory import MemoryEnv

from .crashenv import CrashEnv, abandon

ROOT = "/db"
N = 3000
OPTS: dict[str, Any] = dict(segment_size=64 * 1024, compaction=False, compression="none")


def key(i: int) -> bytes:
    return b"k%05d" % i


def crashed_store(flush_at: int | None = None) -> MemoryEnv:
    """3,000 acknowledged synced puts over several WAL segments, then power loss."""
    disk = MemoryEnv()
    disk.mkdir(ROOT)
    env = CrashEnv(disk)
    store = banyanstore.open(ROOT, env=env, wal_sync="always", **OPTS)
    try:
        for i in range(N):
            store.put(key(i), b"value-%05d-" % i + b"x" * 60)
            if i == flush_at:
                store.flush()
    finally:
        env.crash_at = env.ops  # the next mutating IO is the power loss
        abandon(store)
    assert env.dead
    return disk


def segments(disk: MemoryEnv) -> list[str]:
    return sorted(n for n in disk.listdir(f"{ROOT}/wal") if n.endswith(".log"))


def assert_refused(disk: MemoryEnv, match: str) -> None:
    for ro in (True, False):
        with pytest.raises(CorruptionError, match=match):
            banyanstore.open(ROOT, env=disk, read_only=ro, **OPTS)


def count_keys(disk: MemoryEnv, **kwargs: Any) -> int:
    with banyanstore.open(ROOT, env=disk, **OPTS, **kwargs) as store:
        return sum(1 for _ in store)


def test_healthy_crashed_store_has_every_key() -> None:
    disk = crashed_store()
    assert len(segments(disk)) >= 4
    assert count_keys(disk, read_only=True) == N


def test_missing_oldest_segment_is_corruption() -> None:
    disk = crashed_store()
    disk.remove(f"{ROOT}/wal/{segments(disk)[0]}")
    assert_refused(disk, "WAL starts at seq")
    assert count_keys(disk, wal_recovery="skip_missing", read_only=True) < N
    assert count_keys(disk, wal_recovery="skip_missing") < N


def test_missing_middle_segment_is_corruption() -> None:
    disk = crashed_store()
    disk.remove(f"{ROOT}/wal/{segments(disk)[2]}")
    assert_refused(disk, "missing")
    assert count_keys(disk, wal_recovery="skip_missing") < N
    assert count_keys(disk, wal_recovery="skip_missing", read_only=True) < N


def test_missing_last_segment_after_a_flush_is_corruption() -> None:
    """The flush's edit says replay starts at the newest segment; that one is gone."""
    disk = crashed_store(flush_at=N - 200)
    segs = segments(disk)
    disk.remove(f"{ROOT}/wal/{segs[-1]}")
    assert_refused(disk, "WAL ends at seq")
    assert count_keys(disk, wal_recovery="skip_missing", read_only=True) == N - 200 + 1


def test_missing_wal_directory_is_corruption() -> None:
    """Once reopened as an empty store at version 0 (and a writer open recreated wal/)."""
    disk = crashed_store()
    for name in disk.listdir(f"{ROOT}/wal"):
        disk.remove(f"{ROOT}/wal/{name}")
    disk.rmdir(f"{ROOT}/wal")
    assert_refused(disk, "wal")
    assert not disk.exists(f"{ROOT}/wal")
    with banyanstore.open(ROOT, env=disk, wal_recovery="skip_missing", **OPTS) as store:
        assert store.version == 0
    assert disk.exists(f"{ROOT}/wal")


def test_wal_recovery_option_is_validated() -> None:
    with pytest.raises(banyanstore.ConfigError, match="wal_recovery"):
        banyanstore.Options(wal_recovery="sometimes")


def test_skip_missing_never_deletes_tables_an_older_manifest_does_not_name(tmp_path: Any) -> None:
    """The manifest cut back to its first edit (its flush edits gone) names no table,
    and the WAL was trimmed long ago: wal_recovery="skip_missing" accepts losing WAL
    records, not the tables that hold them -- the open refuses (pointing at repair)
    rather than removing them as unfinished outputs."""
    import os

    from banyanstore.lsm.manifest import walk_manifest
    path = tmp_path / "db"
    with banyanstore.open(path, memtable_size=64 * 1024, compaction=False) as s:
        for i in range(3000):
            s.put(key(i), b"v" * 40)
    manifest = next(path.glob("MANIFEST-*"))
    data = manifest.read_bytes()
    second = [r.offset for r in walk_manifest(data, str(manifest))][1]
    manifest.write_bytes(data[:second])
    tables = sorted(os.listdir(path / "tables"))
    assert tables
    with pytest.raises(CorruptionError, match="banyanstore repair"):
        banyanstore.open(path, wal_recovery="skip_missing")
    assert sorted(os.listdir(path / "tables")) == tables


def _flip_in_the_middle(disk: MemoryEnv, name: str) -> None:
    path = f"{ROOT}/wal/{name}"
    data = bytearray(disk.read_file(path))
    data[len(data) // 2] ^= 0x40
    f = disk.open_writable(path)
    f.write(bytes(data))
    f.sync()
    f.close()


def test_damage_in_an_older_segment_the_replay_needs_is_corruption() -> None:
    """The Log serves the intact records of a damaged segment, but a replay reaching the
    damaged one still refuses: a store never opens short."""
    disk = crashed_store()
    _flip_in_the_middle(disk, segments(disk)[1])
    assert_refused(disk, "damaged log record")

