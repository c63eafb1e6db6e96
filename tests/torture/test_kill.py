"""kill -9 rounds against the expected-state file (:mod:`tests.torture.kill`).

This replaces the Store's first kill -9 test (batches over two keyspaces, kills inside
``compact()``, ``tables/`` compared with the manifest, IO modes in rotation): the
harness does all of it, with every kind of operation and both compaction modes.

Default: 6 rounds; ``BANYANSTORE_SOAK=1``: 40.  ``python -m tests.torture`` runs thousands.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lsm.crashenv import soak

from .kill import KillHarness


@pytest.mark.soak
def test_kill9_rounds_against_expected_state(tmp_path: Path) -> None:
    """Random writes, batches, Log appends, snapshots, checkpoints, flushes and merges,
    killed at random moments (some inside ``compact()``): after each kill, exactly a
    prefix of the writes survived, covering every durable acknowledgement, and the
    store, Log and checkpoints match the expected state."""
    seed = int.from_bytes(os.urandom(4), "little")
    harness = KillHarness(tmp_path, seed)
    rounds = 40 if soak() else 6
    for _ in range(rounds):
        harness.run_round()
    figures = harness.figures
    assert figures.writes_checked > 0 and figures.log_records_checked > 0, figures
