"""Concurrency stress with invariant checks (:mod:`tests.torture.stress`), bounded.

Default: 10 s each; ``BANYANSTORE_SOAK=1``: 2 min.  ``python -m tests.torture`` runs it long.
"""

from __future__ import annotations

import os

from tests.lsm.crashenv import soak

from .stress import run_subprocess

SECONDS = 120.0 if soak() else 10.0


def test_stress_threads_keep_every_invariant() -> None:
    """Owners, batchers, readers and a flush/compact thread on one store: exact
    per-owner histories, monotone versions, whole batches, repeatable snapshots,
    sorted scans; the same state after a reopen."""
    seed = int.from_bytes(os.urandom(4), "little")
    figures = run_subprocess(seed, SECONDS, sync_share=0.0)
    assert figures["write"] > 0 and figures["batch"] > 0 and figures["snapshot_read"] > 0, figures


def test_stress_with_synced_writers_never_hangs() -> None:
    """The same with every write synced from eight writer threads (group commit under
    segment rotations and merges): no thread may stop making progress (issue 9
    finding 3 hung here within seconds)."""
    figures = run_subprocess(3, max(SECONDS, 15.0), sync_share=1.0, hang_seconds=8.0, owners=6, batchers=2,
                             readers=1)
    assert figures["write"] > 0, figures
