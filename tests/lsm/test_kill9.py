"""A real ``kill -9`` of a writing process, over several rounds.

A child process (:mod:`tests.lsm.kill9_child`) commits batches over two keyspaces with
``sync=True`` and a small memtable, so flushes and merges run all the time, and prints
each acknowledged ``(version, batch id)``.  The parent SIGKILLs it at a random moment
(in some rounds while ``compact()`` runs), reopens the store and proves: every
acknowledged batch is fully present and readable at its version, no batch is partially
present, versions did not go backwards, ``tables/`` holds only files the manifest
names; then the next round continues writing on the same store.  Rounds rotate over
the IO modes available here, and each is verified with the next one.

Default: 6 rounds (~1 s each); ``BANYANSTORE_SOAK=1``: 25 rounds.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import banyanstore
from banyanstore.io.testing import available_real_modes

from .crashenv import soak
from .kill9_child import OPTIONS, PARTS, expected

CHILD = Path(__file__).with_name("kill9_child.py")
SRC = str(Path(banyanstore.__file__).resolve().parent.parent)


def run_round(path: Path, first: int, mode: str, rng: random.Random, io_mode: str) -> list[tuple[int, int]]:
    """Start a child writing from batch ``first``; kill -9 it at a random moment;
    return the acknowledged ``(version, batch)`` pairs it printed."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(CHILD), str(path), str(first), mode, io_mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    acks: list[tuple[int, int]] = []
    try:
        line = proc.stdout.readline()
        assert line.startswith("open "), (line, proc.stderr.read() if proc.stderr else "")
        # run for a random time; in "compact" mode, prefer to kill inside a compact()
        deadline = time.monotonic() + rng.uniform(0.3, 1.2)
        in_compact_kill = mode == "compact" and rng.random() < 0.7
        while True:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"child died: {proc.stderr.read() if proc.stderr else ''}")
            if m := re.fullmatch(r"ack (\d+) (\d+)\n", line):
                acks.append((int(m.group(1)), int(m.group(2))))
            elif line == "compact start\n" and in_compact_kill and time.monotonic() > deadline - 0.5:
                time.sleep(rng.uniform(0.0, 0.05))
                break
            if time.monotonic() > deadline and not in_compact_kill:
                break
            if time.monotonic() > deadline + 5:
                break
        proc.send_signal(signal.SIGKILL)
        # acks already written to the pipe before the kill were acknowledged too
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    acks += [(int(v), int(b)) for v, b in re.findall(r"^ack (\d+) (\d+)$", rest, re.M)]
    assert proc.returncode == -signal.SIGKILL, err
    return acks


def verify(path: Path, acks: list[tuple[int, int]], min_version: int, io_mode: str) -> tuple[int, int]:
    """Check the store after a kill; return ``(store version, highest batch present)``."""
    # No background merges while checking, so tables/ can be compared exactly (with
    # merges and flushes both in worker processes, an in-flight output may carry any
    # newly allocated file number).  The next round's child merges again.
    with banyanstore.open(path, **dict(OPTIONS, compaction=False, io_mode=io_mode)) as store:
        index = store.keyspace("index")
        assert store.version >= min_version, "version went backwards"
        present: dict[int, set[bytes]] = {}
        for k, v in store.scan():
            b = int(k.split(b":")[1])
            assert expected(b)[0][k] == v, (k, v)
            present.setdefault(b, set()).add(k)
        index_present = {}
        for k, v in index.scan():
            b = int(k.split(b":")[1])
            assert expected(b)[1][k] == v
            index_present[b] = k
        assert set(present) == set(index_present), "a batch is present in one keyspace only"
        for b, keys in present.items():
            assert len(keys) == PARTS, f"batch {b} is partially present"
        for version, b in acks:
            assert b in present, f"acknowledged batch {b} (version {version}) lost"
            default, idx = expected(b)
            for k, v in default.items():
                assert store.get(k, version=version) == v
            for k, v in idx.items():
                assert index.get(k, version=version) == v
        named = {f"{t['file']:06d}.sst" for ks in store.stats()["keyspaces"].values()
                 for t in ks["table_list"]}
        assert set(os.listdir(path / "tables")) == named
        return store.version, max(present, default=0)


@pytest.mark.soak
def test_kill9_during_writes_flushes_and_merges(tmp_path: Path) -> None:
    """Rounds of SIGKILL during synced batch writes with flushes and merges running,
    some of them during ``compact()``: nothing acknowledged is lost, nothing partial
    appears, and writing continues across rounds."""
    path = tmp_path / "db"
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    rounds = 25 if soak() else 6
    version, next_batch = 0, 1
    all_acks: list[tuple[int, int]] = []
    compact_rounds = 0
    io_modes = available_real_modes()
    for r in range(rounds):
        mode = "compact" if r % 2 == 1 else "write"
        compact_rounds += mode == "compact"
        acks = run_round(path, next_batch, mode, rng, io_modes[r % len(io_modes)])
        assert acks, f"round {r}: the child acknowledged nothing"
        assert [v for v, _ in acks] == sorted(v for v, _ in acks)
        assert acks[0][0] > version, "a new round reused an acknowledged version"
        assert acks[0][1] == next_batch
        all_acks += acks
        version, highest = verify(path, all_acks, max(v for v, _ in acks), io_modes[(r + 1) % len(io_modes)])
        next_batch = highest + 1
    assert compact_rounds >= 2
