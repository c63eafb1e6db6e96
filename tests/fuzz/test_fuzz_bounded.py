"""A bounded run of the atheris harness over the compiled core's decoders (the long run
is documented in fuzz_native.py).  Fails on any crash or unexpected exception."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys

import pytest

from banyanstore import accel

HARNESS = os.path.join(os.path.dirname(__file__), "fuzz_native.py")
RUNS = int(os.environ.get("BANYANSTORE_TEST_FUZZ_RUNS", "4000"))
SEEDS = 128


def seed_corpus(path: str) -> None:
    """Random inputs of 256 B to 4 KiB, each run once before the mutations.  From an empty
    corpus libFuzzer found no input "interesting" and mutated a 1-byte one the whole run:
    every structure the harness splits an input into came out empty or zero.  Under
    AddressSanitizer (libasan preloaded, as ``make test-asan`` does) atheris gets no Python
    coverage at all, and the seeds are the only inputs of any size that run."""
    os.makedirs(path)
    rng = random.Random(7)
    for i in range(SEEDS):
        with open(os.path.join(path, f"seed{i:02d}"), "wb") as f:
            f.write(rng.randbytes(rng.choice([256, 1024, 4096])))


@pytest.mark.skipif(accel.load_native() is None, reason="the compiled core is not built")
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_fuzz_native_decoders_bounded(tmp_path):
    corpus = str(tmp_path / "corpus")
    seed_corpus(corpus)
    proc = subprocess.run([sys.executable, HARNESS, f"-runs={RUNS}", "-seed=7", "-len_control=0",
                           f"-artifact_prefix={tmp_path}/", corpus],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Done {RUNS} runs" in proc.stderr
    assert f"seed corpus: files: {SEEDS} " in proc.stderr  # each ran once
