"""A damaged record in an older segment costs that record, not the segment: the intact
records before it (and after it, where the reader's resync finds them) stay readable;
reads that reach the damage raise CorruptionError naming the file and the offset."""

from __future__ import annotations

from collections import Counter

import pytest
from log_helpers import SMALL, open_log, payload, rewrite, segments

from banyanstore.errors import CorruptionError
from banyanstore.io.hooked import HookedEnv, HookedReadable
from banyanstore.log.format import BLOCK_SIZE

N = 3000  # records in the first (older) segment
BIG = SMALL.replace(segment_size=1 << 20)
DAMAGE_AT = 5 * BLOCK_SIZE + 100  # five blocks into the first segment


class _CountedFile(HookedReadable):
    def read(self, offset: int, length: int) -> bytes:
        data = super().read(offset, length)
        self.env.bytes_read[self.path] += len(data)  # type: ignore[attr-defined]
        return data


class CountingReads(HookedEnv):
    """Counts the bytes read from each file."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        super().__init__(inner)
        self.bytes_read: Counter[str] = Counter()

    def open_readable(self, path: str) -> HookedReadable:
        return _CountedFile(self, super().open_readable(path).inner)


def _damaged_log(env, root, *, flips=(DAMAGE_AT,)):  # type: ignore[no-untyped-def]
    """A log of two segments whose first one has a byte flipped at each of ``flips``;
    returns the first segment's path and the seqs a skipping reader does not get."""
    with open_log(env, root, options=BIG) as log:
        log.append_many([payload(s) for s in range(1, N + 1)])
        log.rotate()
        log.append_many([payload(s) for s in range(N + 1, N + 11)])
    first = segments(env, f"{root}/log")[0]
    data = bytearray(env.read_file(first))
    assert len(data) > max(flips) + 2 * BLOCK_SIZE  # damage in the middle of the segment
    for at in flips:
        data[at] ^= 0x40
    rewrite(env, first, bytes(data))
    with open_log(env, root, options=BIG.replace(skip_damaged_records=True)) as log:
        got = dict(log.read())
    assert all(got[s] == payload(s) for s in got)
    missing = sorted(set(range(1, N + 11)) - set(got))
    assert missing and missing[-1] < N
    return first, missing


def _raises_at_the_damage(info, first) -> None:  # type: ignore[no-untyped-def]
    assert info.value.path == first
    assert DAMAGE_AT - 2 * BLOCK_SIZE < info.value.offset <= DAMAGE_AT


def test_intact_records_of_a_damaged_older_segment_stay_readable(env_dir):
    env, root = env_dir
    first, missing = _damaged_log(env, root)
    for read_only in (False, True):
        with open_log(env, root, options=BIG.replace(read_only=read_only)) as log:
            assert log.get(5) == payload(5)  # before: CorruptionError (the segment was scanned whole)
            assert log.get(missing[0] - 1) == payload(missing[0] - 1)
            assert log.get(missing[-1] + 1) == payload(missing[-1] + 1)  # found by the resync
            assert log.get(N) == payload(N) and log.get(N + 10) == payload(N + 10)
            for _ in range(2):
                with pytest.raises(CorruptionError) as info:
                    log.get(missing[0])
                _raises_at_the_damage(info, first)


def test_a_read_reaching_the_damage_raises_at_every_next(env_dir):
    env, root = env_dir
    first, missing = _damaged_log(env, root)
    with open_log(env, root, options=BIG) as log:
        for records in (log.read(), log.follow(1, timeout=0), log.read(missing[0] - 3)):
            got = []
            with pytest.raises(CorruptionError) as info:
                for seq, record in records:
                    assert record == payload(seq)
                    got.append(seq)
            _raises_at_the_damage(info, first)
            assert got[-1] == missing[0] - 1
            for _ in range(2):
                with pytest.raises(CorruptionError):
                    next(records)


def test_a_read_starting_after_the_damage_reads_on(env_dir):
    env, root = env_dir
    _first, missing = _damaged_log(env, root)
    after = missing[-1] + 1
    with open_log(env, root, options=BIG) as log:
        assert list(log.read(after)) == [(s, payload(s)) for s in range(after, N + 11)]
        assert [s for s, _ in log.follow(after + 1, timeout=0)] == list(range(after + 1, N + 11))
        assert list(log.read(after, after + 2)) == [(s, payload(s)) for s in (after, after + 1)]


def test_skip_damaged_records_still_reads_everything_else(env_dir):
    env, root = env_dir
    _first, missing = _damaged_log(env, root)
    with open_log(env, root, options=BIG.replace(skip_damaged_records=True)) as log:
        assert log.get(5) == payload(5) and log.get(missing[-1] + 1) == payload(missing[-1] + 1)
        with pytest.raises(CorruptionError, match="missing"):
            log.get(missing[0])
        assert [s for s, _ in log.read()] == [s for s in range(1, N + 11) if s not in missing]
        assert log.stats()["damaged_records_skipped"] >= 1


def test_after_a_second_damage_only_the_records_before_the_first_are_trusted(env_dir):
    """Two damaged spots: the records after the first are not served (a resync that lands
    inside a damaged record's payload shows as more damage after it); those before are."""
    env, root = env_dir
    first, missing = _damaged_log(env, root, flips=(DAMAGE_AT, DAMAGE_AT + 4 * BLOCK_SIZE))
    with open_log(env, root, options=BIG) as log:
        assert log.get(5) == payload(5) and log.get(missing[0] - 1) == payload(missing[0] - 1)
        for seq in (missing[0], missing[0] + 1 + (missing[0] + 1 in missing), missing[-1] + 1):
            with pytest.raises(CorruptionError) as info:
                log.get(seq)
            _raises_at_the_damage(info, first)
        assert log.get(N + 1) == payload(N + 1)  # the next segment is not concerned


def test_a_damaged_segment_is_scanned_once(env_dir):
    """The index of a damaged segment is kept: a lookup does not scan the segment again."""
    inner, root = env_dir
    _first, missing = _damaged_log(inner, root)
    env = CountingReads(inner)
    with open_log(env, root, options=BIG) as log:
        first = segments(env, f"{root}/log")[0]
        assert log.get(1) == payload(1)
        scanned = env.bytes_read[first]
        assert scanned > DAMAGE_AT  # the first lookup builds the index: one scan
        for seq in range(2, 12):
            assert log.get(seq) == payload(seq)
        for _ in range(5):
            with pytest.raises(CorruptionError):
                log.get(missing[0])
        assert env.bytes_read[first] - scanned < 40 * BLOCK_SIZE  # a rescan each: 15 * 5 blocks

