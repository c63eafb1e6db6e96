"""kill -9 of a writer making the operations the torture harness does not make
(tests/lsm/mixed_kill_child.py: keyspaces created, given a TTL, dropped and created
again, history floors, snapshots held, checkpoints, beside writes, range deletes,
batches across keyspaces, flushes and merges), then -- in some rounds -- of one or two
opens of the crashed store at a random step of recovery (WAL replay, orphan removal,
the new manifest) or of the merge and close after it: a double or triple crash.

After each round: the read-only and the writer open agree; every keyspace, its entries
and its TTL are exactly those of the acknowledged operations, plus possibly the one in
flight; every acknowledged checkpoint opens with the state it was taken at, and a
killed one is replaced by a new checkpoint to its directory; ``verify`` finds nothing.

Default: 4 rounds; ``BANYANSTORE_SOAK=1``: 30.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import banyanstore
from banyanstore.errors import NotAStoreError, StoreNotFoundError
from banyanstore.tools import verify_path

from .crashenv import soak

CHILD = str(Path(__file__).with_name("mixed_kill_child.py"))
SRC = str(Path(banyanstore.__file__).resolve().parent.parent)

Model = dict[str, dict[str, Any]]  # keyspace -> {"ttl": ..., "data": {key: value}}

OPENER = r"""
import os, sys, banyanstore
from banyanstore.io.hooked import MUTATING_OPS, HookedEnv
from banyanstore.io.posix import PosixEnv

class KillAtStep(HookedEnv):
    steps = 0
    def hook(self, op, paths, nbytes=0):
        if op in MUTATING_OPS:
            if self.steps == int(sys.argv[2]):
                os.kill(os.getpid(), 9)
            self.steps += 1

store = banyanstore.open(sys.argv[1], env=KillAtStep(PosixEnv()), compaction_mode="thread")
store.compact()
store.close()
"""


def apply(model: Model, op: dict[str, Any]) -> None:
    """What operation ``op`` (a journal intent) does to the model."""
    kind = op["op"]
    if kind == "put":
        model[op["ks"]]["data"][op["k"]] = op["v"]
    elif kind == "del":
        model[op["ks"]]["data"].pop(op["k"], None)
    elif kind == "range":
        data = model[op["ks"]]["data"]
        for k in [k for k in data if op["k"] <= k < op["end"]]:
            del data[k]
    elif kind == "batch":
        for ks, k, v in op["e"]:
            model[ks]["data"][k] = v
    elif kind == "keyspace":
        space = model.setdefault(op["name"], {"ttl": op["ttl"], "data": {}})
        if op["ttl"] is not None:
            space["ttl"] = op["ttl"]
    elif kind == "drop":
        del model[op["name"]]


def state_of(store: Any) -> Model:
    info = store.keyspace_info()
    return {name: {"ttl": info[name]["ttl"],
                   "data": {k.decode(): v.decode() for k, v in store.keyspace(name).scan()}}
            for name in store.keyspaces()}


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The whole lines (a kill may cut the last one short)."""
    lines = path.read_bytes().split(b"\n")[:-1]
    return [json.loads(line) for line in lines]


class Rounds:
    def __init__(self, root: Path, seed: int) -> None:
        self.root, self.rng = root, random.Random(seed)
        self.store = str(root / "store")
        self.checkpoints = root / "checkpoints"
        self.checkpoints.mkdir()
        self.model: Model = {"default": {"ttl": None, "data": {}}}
        self.env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.figures = {"rounds": 0, "acked": 0, "open_kills": 0, "checkpoints": 0, "retried": 0}

    def run_child(self, round_no: int) -> list[dict[str, Any]]:
        journal = self.root / f"journal-{round_no}"
        options = dict(memtable_size=64 * 1024, block_size=1024, segment_size=64 * 1024,
                       compaction_min_width=2, compaction_max_width=4,
                       wal_sync=self.rng.choice(("always", "interval", "never")),
                       compaction_mode=self.rng.choice(("thread", "process")))
        args = dict(store=self.store, journal=str(journal), checkpoints=str(self.checkpoints),
                    round=round_no, seed=self.rng.getrandbits(32), options=options)
        proc = subprocess.Popen([sys.executable, CHILD, json.dumps(args)], env=self.env,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(self.rng.uniform(0.1, 1.0))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
        records = read_journal(journal)
        journal.unlink()
        return records

    def kill_opens(self) -> None:
        """Open the crashed store and kill it at a random step, up to twice."""
        for _ in range(self.rng.choice((0, 1, 1, 2))):
            step = self.rng.randrange(40)
            proc = subprocess.run([sys.executable, "-c", OPENER, self.store, str(step)], env=self.env,
                                  capture_output=True, timeout=300)
            assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.decode()[-3000:]
            self.figures["open_kills"] += proc.returncode == -signal.SIGKILL

    def round(self, round_no: int) -> None:
        records = self.run_child(round_no)
        acked = {r["a"] for r in records if "a" in r}
        in_flight, taken, killed_checkpoint = None, [], None
        for op in (r for r in records if "i" in r):
            if op["i"] not in acked:
                in_flight = op
                killed_checkpoint = op.get("dir")
                break
            apply(self.model, op)
            self.figures["acked"] += 1
            if op["op"] == "checkpoint":
                taken.append((op["dir"], copy.deepcopy(self.model)))
        self.kill_opens()
        self.check_store(round_no, in_flight)
        self.check_checkpoints(taken, killed_checkpoint)
        self.figures["rounds"] += 1

    def check_store(self, round_no: int, in_flight: dict[str, Any] | None) -> None:
        with banyanstore.open(self.store, read_only=True) as ro:
            seen_read_only = state_of(ro)
        with banyanstore.open(self.store) as store:
            got = state_of(store)
        assert got == seen_read_only, f"round {round_no}: the read-only open saw another state"
        possible = [self.model]
        if in_flight is not None:
            possible.append(copy.deepcopy(self.model))
            apply(possible[1], in_flight)
        assert got in possible, (f"round {round_no}: the store holds neither the acknowledged state "
                                 f"nor it plus {in_flight}")
        self.model = got
        report = verify_path(self.store)
        assert not [p for p in report.problems if p.severity == "error"], report.problems

    def check_checkpoints(self, taken: list[tuple[str, Model]], killed: str | None) -> None:
        for dest, model in taken:
            with banyanstore.open(dest, read_only=True) as copy_:
                assert state_of(copy_) == model, f"checkpoint {dest}"
            shutil.rmtree(dest)
            self.figures["checkpoints"] += 1
        if killed is not None and os.path.exists(killed) and _incomplete(killed):
            with banyanstore.open(self.store) as store:
                store.checkpoint(killed)  # a new checkpoint replaces what the killed one left
                want = state_of(store)
            with banyanstore.open(killed, read_only=True) as copy_:
                assert state_of(copy_) == want
            shutil.rmtree(killed)
            self.figures["retried"] += 1


def _incomplete(checkpoint: str) -> bool:
    """Whether a checkpoint killed before it returned was cut short (else it finished
    just before the kill, and opens).  Killed between making its directory and its
    marker, it left the directory empty: no store there."""
    try:
        banyanstore.open(checkpoint, read_only=True).close()
    except (NotAStoreError, StoreNotFoundError):
        return True
    return False


def test_kill9_with_keyspaces_ttls_floors_checkpoints_and_killed_opens(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    rounds = Rounds(tmp_path, seed)
    for n in range(30 if soak() else 4):
        try:
            rounds.round(n)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc
    print(rounds.figures)  # shown with -s
    assert rounds.figures["acked"] > 0, rounds.figures
