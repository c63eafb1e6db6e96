"""kill -9 of a writer whose every batch mixes prefix views of two keyspaces
(tests/lsm/prefixed_kill_child.py): after each kill the store holds every
acknowledged batch and at most one more, each wholly -- the same generations in every
view, one ``latest`` for all, one generation under ``c/gone/`` -- in both engines.

The parent kills the child once it has read a random number of acknowledgements from
the child's stdout (a blocking read: no timing).  Default 3 rounds,
``BANYANSTORE_SOAK=1``: 20."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import banyanstore

from .crashenv import soak

CHILD = str(Path(__file__).with_name("prefixed_kill_child.py"))
SRC = str(Path(banyanstore.__file__).resolve().parent.parent)


def _kill_after(path: str, acks: int, wal_sync: str) -> int:
    """Run the child until it acknowledged ``acks`` more batches, SIGKILL it; returns
    the last generation it acknowledged (the pipe holds what it wrote before dying)."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, CHILD, path, wal_sync], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    seen = [proc.stdout.readline() for _ in range(acks)]
    proc.send_signal(signal.SIGKILL)
    # Read through the same buffered reader as the lines above: communicate() reads the
    # pipe's descriptor and would miss what readline() already buffered.
    out = proc.stdout.read()
    err = proc.stderr.read() if proc.stderr is not None else b""
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
    lines = [line for line in b"".join(seen).split(b"\n") + out.split(b"\n") if line.strip()]
    assert len(lines) >= acks, err.decode()[-3000:]
    return int(lines[-1])


def _generations(view: Any) -> list[int]:
    return [int(k) for k in view.keys(end=b":")]  # the digit keys


def _check(store: Any, acked: int) -> int:
    """The batches the store holds are whole, and every acknowledged one is there."""
    views = (store.prefixed(b"a/"), store.keyspace("idx").prefixed(b"\xff"), store.prefixed(b"c/"))
    held = _generations(views[0])
    assert held == list(range(len(held))), "a generation is missing in the middle"
    assert acked + 1 <= len(held) <= acked + 2, f"acknowledged {acked}, the store holds {len(held) - 1}"
    last = held[-1]
    for view in views:
        assert _generations(view) == held
        assert view.get(b"latest") == b"%d" % last
        assert view.get(b"%08d" % last) == b"%d" % last * 20
    assert list(views[2].prefixed(b"gone/").items()) == [(b"%08d" % last, b"%d" % last)]
    assert store.get(b"latest") is None and store.keyspace("idx").get(b"latest") is None
    return last


def test_batches_mixing_prefix_views_survive_kill9_whole(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    path = str(tmp_path / "db")
    last = -1
    for round_no in range(20 if soak() else 3):
        acked = _kill_after(path, rng.randrange(20, 400), rng.choice(("always", "never")))
        assert acked > last, f"seed {seed}, round {round_no}: the child started below {last}"
        with banyanstore.open(path) as store:
            try:
                last = _check(store, acked)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}, round {round_no}: {exc}") from exc
