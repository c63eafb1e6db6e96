"""The randomized model test of keyspaces and time (tests/lsm/keyspace_model.py):
per-keyspace TTLs lowered and keyspaces dropped as it runs, every read and view,
snapshots, read-only stores and checkpoints, with and without history retention."""

from __future__ import annotations

import pytest

from .keyspace_model import Workload


@pytest.mark.parametrize("retention", [None, 3.0], ids=["reclaim", "retain-3s"])
def test_keyspaces_match_the_model(tmp_path, retention):
    Workload(str(tmp_path / "db"), seed=11 if retention is None else 12, retention=retention).run(1000)
