"""Two-process runs: read-only opens beside a running writer (:mod:`tests.torture.readers`).

Default: 10 s with 2 reader processes; ``BANYANSTORE_SOAK=1``: 2 min.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.lsm.crashenv import soak

from .readers import run


def test_readers_beside_a_writer_see_exact_prefixes(tmp_path: Path) -> None:
    """Readers opening (and refreshing, and following) beside a writer never fail,
    never go back, see every durable write acknowledged before they opened, and see
    exactly the writes up to their version -- whole batches; Log readers read intact
    records."""
    seed = int.from_bytes(os.urandom(4), "little")
    figures = run(tmp_path, seed, 120.0 if soak() else 10.0)
    assert figures["opens"] > 0 and figures["versions_checked"] > 0, figures
    assert figures["writes"] > 0, figures
