"""A real ``kill -9``: every acknowledged record survives, intact, and the log goes on.

Rounds rotate over the IO modes available here (the child writes with one, the
parent recovers with the next), so every backend's writes meet a real kill.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from log_helpers import payload, run_killed_child

from banyanstore.io.testing import available_real_modes
from banyanstore.log import Log

SOAK = os.environ.get("BANYANSTORE_SOAK") == "1"


def _round(directory: Path, rng: random.Random, threads: int, io_mode: str) -> list[int]:
    return run_killed_child("log_kill_child.py", [str(directory), str(threads), io_mode],
                            kill_after=rng.uniform(0.02, 0.4), timeout=60, drop_env="BANYANSTORE_TEST")


def _kill_rounds(tmp_path: Path, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    directory = tmp_path / "log"
    acked_total = 0
    modes = available_real_modes()
    for r in range(rounds):
        acked = _round(directory, rng, threads=rng.choice([1, 4]), io_mode=modes[r % len(modes)])
        acked_total += len(acked)
        with Log.open(directory, io_mode=modes[(r + 1) % len(modes)]) as log:
            last = log.last_seq
            if acked:
                assert max(acked) <= last, f"round {r}: acknowledged seq {max(acked)} lost (last {last})"
            for seq, rec in log.read():
                assert rec == payload(seq), f"round {r}: record {seq} damaged"
            assert log.append(payload(last + 1), sync=True) == last + 1
    assert acked_total > 0, "the child never acknowledged anything: the test proved nothing"


def test_kill9_rounds(tmp_path):
    _kill_rounds(tmp_path, rounds=6, seed=1)


@pytest.mark.soak
@pytest.mark.skipif(not SOAK, reason="long form: set BANYANSTORE_SOAK=1")
def test_kill9_soak(tmp_path):
    _kill_rounds(tmp_path, rounds=60, seed=2)
