"""Two-process runs: read-only opens beside a running writer.

The writer is the kill harness's child (:mod:`tests.torture.kill_child`: random
writes, batches, Log appends, snapshots, checkpoints, flushes and merges with a
tiny memtable, journalled in the expected-state file) on a fresh store.  Reader
processes (``python -m tests.torture.readers ARGS_JSON``) loop:

1. note which writes the journal shows as acknowledged durable;
2. open the store read-only (a third of the time with ``follow=True``), scan every
   keyspace at the reader's version ``V`` and read a few keys at older versions,
   ``refresh()`` and read again (``V`` may not go back);
3. rebuild the expected state at each ``V`` from the journal (every write the
   reader can see was journalled before it was issued) and compare: the reader
   must see *exactly* the writes up to ``V`` -- a prefix, whole batches -- and ``V``
   must cover every write noted in step 1;
4. open the Log read-only too and check every record it returns.

A reader must never fail because the writer moved on (no ``CorruptionError``, no
raw ``OSError``).  The writer is killed at the end; a store it leaves is then
checked by :mod:`tests.torture.kill`'s rules too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import banyanstore
from banyanstore.log import Log

from .expected import KEYSPACES, ExpectedState, entries_of, key, log_record, random_options
from .journal import read_journal
from .kill import KILL_DURABLE

__all__ = ["run"]

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BANYANSTORE_") or k == "BANYANSTORE_PURE_PYTHON"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(Path(banyanstore.__file__).parent.parent),
                                         env.get("PYTHONPATH", "")])
    return env


def expected_upto(records: list[dict[str, Any]], version: int) -> tuple[ExpectedState, int]:
    """The expected state after every journalled write with a version ``<= version``
    (one writer thread: writes take consecutive versions from the open), and the
    newest version a reader opening now must see: every write that returned (it is in
    the writer's shared mapping of the WAL, so in the OS)."""
    state = ExpectedState()
    current = records[0]["open"]
    acked = {rec["a"]: rec for rec in records if "a" in rec}
    durable = current
    for rec in records:
        if rec.get("op") != "w":
            continue
        current += 1
        ack = acked.get(rec["i"])
        if ack is not None and ack["v"] != current:
            raise AssertionError(f"write {rec['i']} acknowledged at {ack['v']}, expected {current}")
        if ack is not None and (rec["d"] or KILL_DURABLE):  # returned = in the shared mapping
            durable = current
        if current <= version:
            state.apply(current, entries_of(0, rec["i"], rec["e"]))
    return state, durable


class Reader:
    """One reader process's loop (see the module docstring)."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.rng = random.Random(args["seed"])
        self.figures = {"opens": 0, "refreshes": 0, "versions_checked": 0, "log_opens": 0,
                        "log_records_checked": 0}

    def run(self) -> None:
        deadline = time.monotonic() + self.args["seconds"]
        while time.monotonic() < deadline:
            self.once()

    def once(self) -> None:
        journal = self.args["journal"]
        before = read_journal(journal)
        if not before or "open" not in before[0]:
            time.sleep(0.05)
            return
        _, must_see = expected_upto(before, 0)
        follow = self.rng.random() < 0.3
        views = []
        with banyanstore.open(self.args["store"], read_only=True, follow=follow, io_mode=self.args["io_mode"],
                              follow_interval_ms=20) as store:
            self.figures["opens"] += 1
            views.append(self.read_all(store))
            for _ in range(self.rng.choice((0, 1, 3))):
                time.sleep(self.rng.choice((0.0, 0.02, 0.1)))
                if not follow:
                    store.refresh()
                    self.figures["refreshes"] += 1
                views.append(self.read_all(store))
        if views[0][0] < must_see:
            raise AssertionError(f"reader at version {views[0][0]} misses durable version {must_see} "
                                 "acknowledged before it opened")
        for (v1, _, _), (v2, _, _) in zip(views, views[1:], strict=False):
            if v2 < v1:
                raise AssertionError(f"reader went back from version {v1} to {v2}")
        after = read_journal(journal)
        for version, scans, gets in views:
            want, _ = expected_upto(after, version)
            for ks, rows in enumerate(scans):
                if rows != want.scan_at(ks, version):
                    raise AssertionError(f"reader at version {version}: {KEYSPACES[ks]} is not the "
                                         f"state after the writes up to it")
            for ks, k, v, got in gets:
                if got != want.value_at(ks, k, v):
                    raise AssertionError(f"reader at version {version}: {KEYSPACES[ks]}/{k!r} at {v}")
            self.figures["versions_checked"] += 1
        self.read_log()

    def read_all(self, store: Any) -> tuple[int, list[Any], list[Any]]:
        version = store.version
        with store.snapshot() as snap:
            version = snap.version
            scans = [list(snap.scan(keyspace=name)) for name in KEYSPACES]
            gets = []
            lo = max(1, store.oldest_version)
            for _ in range(10):
                if version < lo:
                    break
                ks, k = self.rng.randrange(len(KEYSPACES)), key(self.rng.randrange(self.args["keys"]))
                v = self.rng.randrange(lo, version + 1)
                gets.append((ks, k, v, store.keyspace(KEYSPACES[ks]).get(k, version=v)))
        return version, scans, gets

    def read_log(self) -> None:
        if not os.path.exists(self.args["log"]):
            return
        with Log.open(self.args["log"], read_only=True, io_mode=self.args["io_mode"]) as log:
            self.figures["log_opens"] += 1
            for seq, rec in log.read():
                if rec != log_record(seq):
                    raise AssertionError(f"log reader: record {seq} is wrong")
                self.figures["log_records_checked"] += 1


def run(root: Path, seed: int, seconds: float, *, readers: int = 2, keys: int = 200) -> dict[str, Any]:
    """A writer and ``readers`` reader processes on a fresh store for ``seconds``."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("checkpoints",):
        (root / sub).mkdir(exist_ok=True)
    io_modes = _modes()
    options = random_options(rng, rng.choice(io_modes))
    journal = root / "journal.jsonl"
    writer_args = dict(store=str(root / "store"), log=str(root / "log"), journal=str(journal),
                       checkpoints=str(root / "checkpoints"), round=0, seed=rng.getrandbits(32),
                       options=options, keys=keys)
    writer = subprocess.Popen([sys.executable, "-m", "tests.torture.kill_child", json.dumps(writer_args)],
                              cwd=str(REPO), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=open(root / "writer.stderr", "wb"))
    procs = []
    try:
        deadline = time.monotonic() + 60
        while not journal.exists() or journal.stat().st_size == 0:
            if writer.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"writer did not start: {(root / 'writer.stderr').read_text()[-3000:]}")
            time.sleep(0.05)
        for _ in range(readers):
            args = dict(store=writer_args["store"], log=writer_args["log"], journal=str(journal),
                        seed=rng.getrandbits(32), seconds=seconds, keys=keys, io_mode=rng.choice(io_modes))
            procs.append(subprocess.Popen([sys.executable, "-m", "tests.torture.readers", json.dumps(args)],
                                          cwd=str(REPO), env=_env(), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        figures: dict[str, Any] = {"readers": readers, "writer_options": options}
        for p in procs:
            out, err = p.communicate(timeout=seconds * 3 + 120)
            if p.returncode != 0:
                raise AssertionError(f"reader failed ({p.returncode}): {err[-4000:]}")
            for name, n in json.loads(out.strip().splitlines()[-1]).items():
                figures[name] = figures.get(name, 0) + n
        if writer.poll() is not None:
            raise AssertionError(f"the writer died: {(root / 'writer.stderr').read_text()[-3000:]}")
        records = read_journal(str(journal))
        figures["writes"] = sum(1 for rec in records if rec.get("op") == "w")
        return figures
    finally:
        for p in [writer, *procs]:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()


def _modes() -> list[str]:
    from banyanstore.io.testing import available_real_modes
    return available_real_modes()


def main() -> None:
    reader = Reader(json.loads(sys.argv[1]))
    reader.run()
    print(json.dumps(reader.figures))


if __name__ == "__main__":
    main()
