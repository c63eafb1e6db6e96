"""The manifest rolls to a fresh file after a bounded amount of edits -- and not on
every edit once the store's whole state is larger than the roll size.

Before: a manifest rolled whenever its file exceeded ROLL_BYTES (4 MiB), counted from
the start of the file, which includes the whole-state edit the file begins with; a store
whose state alone passed 4 MiB (some 32,000 tables, e.g. 5,000 keyspaces of 7 tables)
rewrote and fsynced the whole state on every edit -- every flush, merge and keyspace
creation (0.3 s each, measured). The state is scaled down here by lowering ROLL_BYTES.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import banyanstore
from banyanstore.lsm import manifest as manifest_mod

ROLL = 2048


def _manifests(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.startswith("MANIFEST-"))


def test_a_state_larger_than_the_roll_size_does_not_roll_on_every_edit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_mod, "ROLL_BYTES", ROLL)
    path = tmp_path / "db"
    with banyanstore.open(path, compaction=False) as store:
        for i in range(40):  # 40 tables: a whole-state edit of several KiB
            store.keyspace(f"ks{i:03d}").put(b"k", b"v%d" % i)
        store.flush()
    with banyanstore.open(path, compaction=False) as store:
        first = _manifests(path)
        base = os.path.getsize(path / first[0])
        assert base > 2 * ROLL  # the premise: the state alone is past the roll size
        names = set()
        for i in range(20):  # ~20 small edits, far fewer bytes than the state
            store.keyspace(f"new{i:03d}")
            names.update(_manifests(path))
        assert names == set(first), "small edits rolled the manifest"
        # it still rolls once the edits reach the state's size: the file stays bounded
        first_size: dict[str, int] = {first[0]: base}  # each file's size when first seen
        for i in range(400):
            store.keyspace(f"more{i:03d}")
            [current] = _manifests(path)
            size = os.path.getsize(path / current)
            first_size.setdefault(current, size)
            # its whole-state edit (plus one edit) at most doubled, plus the edit that
            # crossed the line
            assert size <= 2 * first_size[current] + 100
        assert len(first_size) > 1
    with banyanstore.open(path, read_only=True) as store:
        assert len(store.keyspaces()) == 1 + 40 + 20 + 400
        assert store.keyspace("ks039").get(b"k") == b"v39"
