"""A middle segment cut short must be damage, never a silently shorter log.

Found by the long torture run (tests/torture/fuzz.py, decoder ``log.segment``): with
records larger than a segment, truncating a segment that is not the last one to 44 or
60 bytes opened without error and ``read()`` returned fewer records between the first
and the last, in the middle of the log.  Now every read checks that each segment ends
where the next one begins (log/catalog.py)."""

from __future__ import annotations

import random

import pytest

from banyanstore.errors import CorruptionError
from banyanstore.io.memory import MemoryEnv
from banyanstore.log import Log


def _big_record_log() -> MemoryEnv:
    env = MemoryEnv()
    rng = random.Random(1)
    with Log.open("/log", env=env, segment_size=64 * 1024, wal_sync="never") as log:
        for _ in range(rng.choice((150, 400))):
            log.append(bytes([rng.randrange(256)]) * rng.choice((5000, 40_000, 70_000, 1)))
        log.truncate_before(log.first_seq + 5)
    return env


def test_a_middle_segment_cut_short_is_corruption() -> None:
    env = _big_record_log()
    with Log.open("/log", env=env, read_only=True) as log:
        want = list(log.read())
    state = env.snapshot_state()
    segments = sorted(p for p in state if p.endswith(".log"))
    middle = segments[0]
    assert middle != segments[-1]
    f = env.open_writable(middle, append=True)  # keep its first 60 bytes
    try:
        f.truncate(60)
    finally:
        f.close()
    with pytest.raises(CorruptionError):
        with Log.open("/log", env=env, read_only=True) as log:
            got = list(log.read())
            assert got == want  # if it opens, nothing may be missing


def _segments(env: MemoryEnv) -> list[str]:
    return sorted(p for p in env.snapshot_state() if p.endswith(".log"))


def test_a_removed_middle_segment_is_corruption_naming_the_missing_records() -> None:
    env = _big_record_log()
    segments = _segments(env)
    env.remove(segments[1])
    with Log.open("/log", env=env, read_only=True) as log:
        with pytest.raises(CorruptionError, match=r"records \d+\.\.\d+ are missing") as err:
            list(log.read())
    assert segments[0] in str(err.value)


def test_skip_damaged_records_counts_the_gap_and_reads_on() -> None:
    env = _big_record_log()
    with Log.open("/log", env=env, read_only=True) as log:
        want = list(log.read())
    env.remove(_segments(env)[1])
    with Log.open("/log", env=env, read_only=True, skip_damaged_records=True) as log:
        got = list(log.read())
        assert log.stats()["damaged_records_skipped"] >= 1
    assert got and set(got) < set(want)
    assert got[-1] == want[-1]


def test_check_gaps_false_leaves_the_gap_to_the_caller() -> None:
    env = _big_record_log()
    with Log.open("/log", env=env, read_only=True) as log:
        want = [seq for seq, _ in log.read()]
    env.remove(_segments(env)[1])
    with Log.open("/log", env=env, read_only=True) as log:
        got = [seq for seq, _ in log.read(check_gaps=False)]
        with pytest.raises(TypeError, match="check_gaps"):
            log.read(check_gaps="no")  # type: ignore[arg-type]
    assert got[0] == want[0] and got[-1] == want[-1]
    assert len(got) < len(want)
    assert any(b - a > 1 for a, b in zip(got, got[1:], strict=False))
