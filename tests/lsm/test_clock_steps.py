"""Wall-clock steps (an NTP correction) and the time-based floors: history retention
must not reclaim, for good, history a forward step only made look old."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import VersionUnavailableError

from .model import FakeClock

OPTS: dict[str, Any] = dict(io_mode="sync", compaction=False, wal_sync="never")
DAY = 86400.0


def _history_writes(s: Any, clock: FakeClock) -> list[int]:
    versions = []
    for i in range(4):  # four tables holding four versions of k, a second apart
        versions.append(s.put(b"k", b"v%d" % i))
        s.flush()
        clock.now += 1
    return versions


def test_a_clock_step_forward_does_not_reclaim_retained_history(tmp_path: Path) -> None:
    """history_retention=3600: the wall clock steps a day ahead and back while the
    monotonic clock (which no step moves) shows 10 s passing.  A merge meanwhile keeps
    every version of the last hour; once an hour has really passed, merges reclaim
    them as before."""
    wall, steady = FakeClock(), FakeClock(5000.0)
    with banyanstore.open(tmp_path / "db", clock=wall, monotonic=steady,
                          history_retention=3600, **OPTS) as s:
        versions = _history_writes(s, wall)
        steady.now += 4
        wall.now += DAY  # the step forward
        s.put(b"x", b"1")
        s.flush()
        s.compact()
        wall.now -= DAY  # the correction back
        steady.now += 2
        assert s.history_floor <= versions[0]
        assert [s.get(b"k", version=v) for v in versions] == [b"v0", b"v1", b"v2", b"v3"]
        wall.now += 3700
        steady.now += 3700
        s.put(b"y", b"1")
        s.flush()
        s.compact()
        assert s.history_floor > versions[-1]
        with pytest.raises(VersionUnavailableError):
            s.get(b"k", version=versions[0])
        assert s.get(b"k") == b"v3"


def test_without_a_monotonic_clock_an_injected_clock_is_trusted(tmp_path: Path) -> None:
    """A simulation injecting ``clock=`` alone moves time by it: its steps are taken as
    time passing (an hour later, the history is reclaimed)."""
    wall = FakeClock()
    with banyanstore.open(tmp_path / "db", clock=wall, history_retention=3600, **OPTS) as s:
        versions = _history_writes(s, wall)
        wall.now += 3700
        s.put(b"x", b"1")
        s.flush()
        s.compact()
        assert s.history_floor > versions[-1]


@pytest.mark.parametrize("monotonic, error", [(5, TypeError), (lambda: "x", TypeError),
                                              (lambda: float("nan"), ValueError)])
def test_a_bad_monotonic_clock_is_named(tmp_path: Path, monotonic: Any, error: type) -> None:
    with pytest.raises(error, match="monotonic"):
        with banyanstore.open(tmp_path / "db", monotonic=monotonic, history_retention=60,
                              **OPTS) as s:
            s.put(b"k", b"v")
            s.flush()
            s.compact()
