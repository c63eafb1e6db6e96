"""A real ``kill -9`` during rotation (format 3): at each step between creating the
successor and sealing, and at random times.  Every acknowledged record survives, the
open finishes an interrupted seal, and verify finds nothing worse than a warning before
the open and nothing at all after it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from log_helpers import payload, run_killed_child

from banyanstore.log import Log
from banyanstore.log.format import HEADER_SIZE, parse_header
from banyanstore.log.segment import read_seal
from banyanstore.tools import verify_path


def _run(directory: Path, step: str, kill_after: float | None) -> list[int]:
    return run_killed_child("log_seal_kill_child.py", [str(directory), step], kill_after=kill_after,
                            timeout=120, drop_env="BANYANSTORE_TEST")


def _seal_of(p: Path) -> int | None:
    data = p.read_bytes()
    seal = read_seal(lambda o, n: data[o:o + n], len(data), parse_header(data[:HEADER_SIZE], str(p))[1])
    return None if seal is None else seal[0]


def _check_recovers(directory: Path, acked: list[int]) -> None:
    before = verify_path(str(directory))
    assert before.ok, before.problems  # warnings only: an open repairs them
    with Log.open(directory, read_only=True) as log:
        assert log.last_seq >= max(acked, default=0)
    with Log.open(directory) as log:
        last = log.last_seq
        assert last >= max(acked, default=0)
        assert [(s, r) for s, r in log.read(1)] == [(s, payload(s, 3000)) for s in range(1, last + 1)]
    segs = sorted(p for p in directory.iterdir() if p.name.endswith(".log"))
    for older, newer in zip(segs, segs[1:], strict=False):
        assert _seal_of(older) == int(newer.name[:20])
    after = verify_path(str(directory))
    assert after.ok and not after.problems, after.problems


@pytest.mark.parametrize("step", ["before-seal", "seal-stored"])
def test_kill_at_a_step_of_rotation_loses_nothing_acknowledged(tmp_path: Path, step: str) -> None:
    acked = _run(tmp_path, step, None)
    assert acked, "the child died before acknowledging anything"
    segs = sorted(p for p in tmp_path.iterdir() if p.name.endswith(".log"))
    assert len(segs) == 2  # the successor was created, then the kill
    assert (_seal_of(segs[0]) is None) == (step == "before-seal")
    _check_recovers(tmp_path, acked)
    with Log.open(tmp_path) as log:  # and the writer goes on in the successor
        first_new = int(segs[1].name[:20])
        assert log.last_seq == first_new - 1
        assert log.append(b"next") == first_new


def test_kill_at_random_times_during_rotations(tmp_path: Path) -> None:
    rng = random.Random(7)
    acked: list[int] = []
    for _round in range(6):
        acked += _run(tmp_path, "none", rng.uniform(0.05, 0.4))
        _check_recovers(tmp_path, acked)
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".log")]) > 2
