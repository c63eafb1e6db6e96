"""The decoder fuzzer (:mod:`tests.torture.fuzz`), bounded: a few hundred mutated
inputs per decoder, each decoder in a memory-limited subprocess.

Decoders that still fail because of a finding of issue 9 that is being fixed are
marked ``xfail(strict=True)`` with the finding; they run with a fixed seed, so the
mark flips to a failure the moment the fix lands (then the mark goes).
"""

from __future__ import annotations

import os

import pytest

from tests.lsm.crashenv import soak

from .fuzz import DECODERS, run_subprocess

KNOWN: dict[str, str] = {}
"""Decoders with a known, not yet fixed finding (xfail strict until the fix lands)."""
INPUTS = 2000 if soak() else 300


def _params() -> list[object]:
    out: list[object] = []
    for name in DECODERS:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[name])] if name in KNOWN else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("decoder", _params())
def test_decoder_fuzz(decoder: str) -> None:
    """Mutated real files give CorruptionError or a correct answer: never another
    exception, a hang, an allocation sized by a corrupt length, or silent loss."""
    seed = 9 if decoder in KNOWN else int.from_bytes(os.urandom(4), "little")
    result = run_subprocess(decoder, INPUTS, seed)
    assert result.inputs == INPUTS
    bad = {v: n for v, n in result.verdicts.items() if v in ("wrong", "crash", "hang")}
    assert not bad, f"{decoder} (seed {seed}): {bad}\n" + "\n".join(result.failures)
    assert result.verdicts["corruption"] > 0, "no input was even detected: the fuzzer proved nothing"


def test_deep_table_mutations_reach_the_decoders() -> None:
    """The deep mutator's re-tiling, with nothing changed, gives a table that reads
    exactly as the original: so deep inputs get past every checksum and layout check
    and meet the block decoders (a format change that breaks this would silently turn
    every deep input into a checksum failure)."""
    from banyanstore.sstable import format as tf

    from . import fuzz, mutate

    for sample in fuzz.prepare("sstable.data"):
        data = sample.files[sample.target]
        regions = mutate.table_regions(data)
        for region, blocks in regions.items():
            for no, (off, length) in enumerate(blocks[:2]):
                stored = data[off:off + length + tf.TRAILER_SIZE]
                same = mutate._rewrap(stored, tf.unwrap_block(stored, "t", off))
                files = {sample.target: mutate._retile(data, regions, region, no, same)}
                assert fuzz.DECODERS["sstable.data"].run(sample, files) == sample.answer, (region, no)


def test_deep_segment_mutations_find_every_record() -> None:
    """The deep Log mutator sees every record of a real segment (one FULL or FIRST
    fragment each), so its inputs are records behind valid checksums, not noise."""
    from . import fuzz, mutate

    for sample in fuzz.prepare("log.segment"):
        first, last, records, _gets = sample.answer
        starts = sum(1 for path, data in sample.files.items()
                     for _off, _len, kind in mutate.segment_fragments(data) if kind in (1, 2))
        assert starts == len(records) == last - first + 1


REGRESSIONS = [
    # A deep flip of a WAL record's version (seed 75964265, input 154): the next record
    # went backwards and reached the pure-Python memtable out of order; the table
    # builder failed at flush with ValueError instead of a CorruptionError
    # (lsm/wal.py check_version_order; tests/lsm/test_wal_version_order.py).
    pytest.param("wal.record", 75964265, 160, id="wal.record-75964265"),
]


@pytest.mark.parametrize(("decoder", "seed", "inputs"), REGRESSIONS)
def test_decoder_fuzz_regression(decoder: str, seed: int, inputs: int,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A seed that once found a defect, replayed (pure Python: the mode it failed in)."""
    monkeypatch.setenv("BANYANSTORE_PURE_PYTHON", "1")  # inherited by the fuzz child
    result = run_subprocess(decoder, inputs, seed)
    assert result.inputs == inputs
    bad = {v: n for v, n in result.verdicts.items() if v in ("wrong", "crash", "hang")}
    assert not bad, f"{decoder} (seed {seed}): {bad}\n" + "\n".join(result.failures)
