"""A writer that runs long does not carry every table number it ever removed.

Before: each merge input (and expired or dropped table) joined the manifest state's
``obsolete`` set -- the tables removed by an edit whose files may still exist -- and
only an open emptied it; so the whole-state edit every manifest roll writes listed
every table a writer had ever merged away (200 numbers after 40 merges of a small
store; millions after months), and the set grew in memory as long. Now a number is
forgotten once its file is gone and the tables directory was synced after that.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import banyanstore
from banyanstore.io.memory import MemoryEnv
from banyanstore.lsm import manifest as manifest_mod
from banyanstore.lsm.manifest import Manifest, walk_manifest


def _merges(store: banyanstore.Store, rounds: int, model: dict[bytes, bytes]) -> None:
    for r in range(rounds):
        for i in range(4):  # four tables, merged into one
            for k in range(20):
                key, value = b"k%03d" % (k * 7 + i), b"v%d.%d" % (r, i)
                store.put(key, value)
                model[key] = value
            store.flush()
        store.compact()
    index = store.keyspace("index")
    for r in range(3):  # a keyspace's tables dropped with it
        index.put(b"x", b"%d" % r)
        store.flush()
        store.drop_keyspace("index")
        index = store.keyspace("index")


def _whole_state_obsolete(env: object, root: str) -> list[int]:
    name = Manifest.current_name(env, root)  # type: ignore[arg-type]
    path = f"{root}/{name}"
    first = next(walk_manifest(env.read_file(path), path))  # type: ignore[attr-defined]
    assert first.edit is not None
    return list(first.edit["_obsolete"])


def test_a_roll_does_not_carry_the_tables_merges_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_mod, "ROLL_BYTES", 0)  # roll as soon as the state allows
    root = str(tmp_path / "db")
    model: dict[bytes, bytes] = {}
    env = MemoryEnv()
    env.mkdir(root)
    with banyanstore.open(root, env=env, compaction=False) as store:  # merges: compact()
        opened = Manifest.current_name(env, root)
        _merges(store, 12, model)
        assert Manifest.current_name(env, root) != opened  # it rolled
        assert _whole_state_obsolete(env, root) == []
        assert dict(store.items()) == model
    env.crash()  # only what was synced: no removed table comes back unexplained
    with banyanstore.open(root, env=env) as store:
        assert dict(store.items()) == model
        assert store.keyspace("index").get(b"x") is None
