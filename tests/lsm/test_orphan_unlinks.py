"""A removed table file stays removed across a power loss once a manifest edit counts
on it: an unlink is durable only when its directory is synced, and a leftover table
that comes back after the manifest has moved past its number is unexplained -- the
writer open then refuses the store (found by the fault torture, seed 1684008036: a
failed merge's output was removed, the next open's manifest took the number after it,
and a power loss brought the file back).

The disk states are made by hand on a MemoryEnv (``crash()`` keeps only what was
synced): a table file that was durable, then unlinked without a directory sync, is
what a flush or merge leaves when its output is removed after a failure.
"""

from __future__ import annotations

import pytest

import banyanstore
from banyanstore.io.memory import MemoryEnv
from banyanstore.lsm import manifest as manifest_mod

ROOT = "/db"


def _store_with_one_table() -> tuple[MemoryEnv, int]:
    """A store holding one table; returns the env and the next file number."""
    env = MemoryEnv()
    env.mkdir(ROOT)
    with banyanstore.open(ROOT, env=env, compaction=False) as store:
        store.put(b"k", b"v")
        store.flush()
        next_no = max(int(n[:6]) for n in env.listdir(f"{ROOT}/tables")) + 1
    return env, max(next_no, _manifest_next(env))


def _manifest_next(env: MemoryEnv) -> int:
    names = [n for n in env.listdir(ROOT) if n.startswith("MANIFEST-")]
    return max(int(n[len("MANIFEST-"):]) for n in names) + 1


def _durable_table_file(env: MemoryEnv, no: int) -> str:
    """A table file written and made durable (name included), as a build leaves it."""
    path = f"{ROOT}/tables/{no:06d}.sst"
    f = env.open_writable(path)
    f.write(b"an unfinished table build" * 10)
    f.sync()
    f.close()
    env.sync_dir(f"{ROOT}/tables")
    return path


def _reopens_whole(env: MemoryEnv) -> None:
    with banyanstore.open(ROOT, env=env) as store:
        assert store.get(b"k") == b"v"


def test_an_unlink_made_before_the_open_stays_done_after_a_power_loss() -> None:
    env, no = _store_with_one_table()
    path = _durable_table_file(env, no)
    env.remove(path)  # the failed build's output removed; the directory is not synced
    with banyanstore.open(ROOT, env=env, compaction=False):
        pass  # its manifest takes numbers past ``no``
    env.crash()
    _reopens_whole(env)


def test_orphans_the_open_removes_stay_removed_after_a_power_loss(
        monkeypatch: pytest.MonkeyPatch) -> None:
    env, no = _store_with_one_table()
    _durable_table_file(env, no)  # a leftover the open accepts and removes
    monkeypatch.setattr(manifest_mod, "ROLL_BYTES", 0)  # roll as soon as the state allows
    with banyanstore.open(ROOT, env=env, compaction=False) as store:
        assert f"{no:06d}.sst" not in env.listdir(f"{ROOT}/tables")
        opened = manifest_mod.Manifest.current_name(env, ROOT)
        i = 0
        while manifest_mod.Manifest.current_name(env, ROOT) == opened:
            # edits until one rolls: the fresh manifest no longer lists the leftover
            store.keyspace(f"another{i}")
            i += 1
    env.crash()
    _reopens_whole(env)
