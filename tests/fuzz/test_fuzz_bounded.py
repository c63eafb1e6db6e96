"""A bounded run of the atheris harness over the compiled core's decoders (the long run
is documented in fuzz_native.py).  Fails on any crash or unexpected exception."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from banyanstore import accel

HARNESS = os.path.join(os.path.dirname(__file__), "fuzz_native.py")
RUNS = int(os.environ.get("BANYANSTORE_TEST_FUZZ_RUNS", "4000"))


@pytest.mark.skipif(accel.load_native() is None, reason="the compiled core is not built")
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_fuzz_native_decoders_bounded(tmp_path):
    proc = subprocess.run([sys.executable, HARNESS, f"-runs={RUNS}", "-seed=7", "-len_control=0",
                           f"-artifact_prefix={tmp_path}/"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Done {RUNS} runs" in proc.stderr
