"""kill -9 around drop_keyspace: a child fills a keyspace, drops it and recreates it,
over and over, and is killed at a random moment; after every kill the keyspace holds
one generation of entries, whole if the child had filled it, and never one whose drop
returned."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import banyanstore

from .crashenv import soak

N = 60
# The child says each step with ONE write of a whole line (os.write): print() under
# PYTHONUNBUFFERED=1 writes its arguments one by one, and a kill between them left the
# parent a torn line ("filled" without its number).
CHILD = r"""
import os, sys, banyanstore
N = int(sys.argv[3])
store = banyanstore.open(sys.argv[1], memtable_size=64 * 1024, block_size=1024)
gen = int(sys.argv[2])
while True:
    gen += 1
    victim = store.keyspace("victim")
    for i in range(N):
        victim.put(b"k%03d" % i, b"%d" % gen)
    if gen % 3 == 0:
        store.flush()  # some generations reach tables, the others stay in the WAL
    os.write(1, b"filled %d\n" % gen)
    store.drop_keyspace("victim")
    os.write(1, b"dropped %d\n" % gen)
"""


def _round(path: str, start_gen: int, rng: random.Random) -> tuple[int, dict[str, int]]:
    """Run the child from generation ``start_gen`` and kill it; returns the last
    generation it started and what it printed last."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path, str(start_gen), str(N)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    said: dict[str, int] = {}
    deadline = time.monotonic() + rng.uniform(0.05, 0.6)
    first = proc.stdout.readline().split()  # the child runs (and opened the store)
    assert first, "the child died before filling anything"
    said[first[0]] = int(first[1])
    while time.monotonic() < deadline:
        line = proc.stdout.readline().split()
        if not line:
            break
        said[line[0]] = int(line[1])
    proc.send_signal(signal.SIGKILL)
    for line in proc.stdout:  # what it printed before the signal landed
        word, gen = line.split()
        said[word] = int(gen)
    proc.wait()
    return max(said.values()), said


def test_kill_9_around_drops(tmp_path):
    path = str(tmp_path / "s")
    rng = random.Random(11)
    gen = 0
    outcomes = set()
    for _ in range(30 if soak() else 6):
        last, said = _round(path, gen, rng)
        with banyanstore.open(path) as store:
            if "victim" not in store.keyspaces():
                outcomes.add("gone")
            else:
                values = set(store.keyspace("victim").values())
                assert len(values) <= 1, f"two generations in one keyspace: {values}"
                if values:
                    (value,) = values
                    g = int(value)
                    assert g > said.get("dropped", 0), f"generation {g} came back after its drop"
                    if g == said.get("filled"):
                        count = sum(1 for _ in store.keyspace("victim"))
                        assert count == N, f"filled generation {g} lost entries: {count} of {N}"
                        outcomes.add("whole")
                    else:
                        outcomes.add("partial fill")
        gen = last + 1
    assert "whole" in outcomes or "gone" in outcomes, outcomes
