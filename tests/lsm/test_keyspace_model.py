"""The randomized model test of keyspaces and time (tests/lsm/keyspace_model.py):
per-keyspace TTLs lowered and keyspaces dropped as it runs, every read and view,
snapshots, read-only stores and checkpoints, with and without history retention."""

from __future__ import annotations

import pytest

from .crashenv import soak
from .keyspace_model import ExtendedWorkload, Workload


@pytest.mark.parametrize("retention", [None, 3.0], ids=["reclaim", "retain-3s"])
def test_keyspaces_match_the_model(tmp_path, retention):
    Workload(str(tmp_path / "db"), seed=11 if retention is None else 12, retention=retention).run(1000)


@pytest.mark.parametrize("seed", range(200 if soak() else 1))
def test_reopens_checkpoints_and_reverse_scans_match_the_model(tmp_path, seed):
    """Reopens with other options and retention, checkpoints opened as writers, reverse
    scans against forward ones, sweeps of readable versions (tests/lsm/keyspace_model.py's
    ExtendedWorkload); 200 seeds of 1,500 steps with BANYANSTORE_SOAK=1."""
    workload = ExtendedWorkload(str(tmp_path / "db"), seed=21 + seed, retention=(None, 3.0, 1e9)[seed % 3])
    workload.run(1500 if soak() else 300)
