"""Fault injection over every IO operation kind (:mod:`tests.torture.faults`), bounded.

Default: 60 cycles; ``BANYANSTORE_SOAK=1``: 600.  ``python -m tests.torture`` runs thousands.
"""

from __future__ import annotations

import os

from tests.lsm.crashenv import soak

from .faults import run_subprocess


def test_fault_cycles_lose_nothing_acknowledged() -> None:
    """Every operation under injected EIO/ENOSPC/short writes returns a correct answer
    or a clear error; after a healthy reopen (with or without a power loss) nothing
    acknowledged is lost and no batch is partial; no cycle hangs."""
    seed = int.from_bytes(os.urandom(4), "little")
    cycles = 600 if soak() else 60
    figures = run_subprocess(cycles, seed)
    assert not figures["problems"], figures["problems"]
    assert figures["cycles"] == cycles
    assert figures["faults_injected"] > cycles // 4, figures["faults"]
    assert figures["durable_writes_checked"] > 0
