"""A real ``kill -9``: every acknowledged record survives, intact, and the log goes on.

Rounds rotate over the IO modes available here (the child writes with one, the
parent recovers with the next), so every backend's writes meet a real kill.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from log_helpers import payload

from banyanstore.io.testing import available_real_modes
from banyanstore.log import Log

SOAK = os.environ.get("BANYANSTORE_SOAK") == "1"
HERE = Path(__file__).resolve().parent


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANYANSTORE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *sys.path])
    return env


def _round(directory: Path, rng: random.Random, threads: int, io_mode: str) -> list[int]:
    child = subprocess.Popen([sys.executable, str(HERE / "log_kill_child.py"), str(directory), str(threads),
                              io_mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_child_env())
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == b"ready\n", (line, child.stderr.read() if child.stderr else b"")
        time.sleep(rng.uniform(0.02, 0.4))
        child.send_signal(signal.SIGKILL)
        out, _err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    # The last line may be cut by the kill: only whole lines are acknowledgements.
    return [int(x) for x in out.split(b"\n")[:-1] if x]


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
