"""Fault injection: every operation kind of the IO layer failed with EIO, ENOSPC or a
short write (through :class:`~banyanstore.io.faults.FaultEnv` over a
:class:`~banyanstore.io.memory.MemoryEnv`), in cycles:

1. open the store and a Log with faults armed -- one rule (an op kind, an errno,
   after a random number of calls, once / a few times / for good, maybe a short
   write) or random faults over a random subset of op kinds;
2. run a random workload (synced and unsynced writes, batches across keyspaces,
   point reads, scans, flushes, merges, checkpoints, Log appends and reads);
   every operation either returns a correct answer or raises a
   :class:`~banyanstore.errors.BanyanStoreError` (``StorageIOError`` and
   ``DiskFullError`` with the ``OSError`` as ``__cause__``) -- never another
   exception, never a wrong answer (a failed read is never "not found");
3. close (which may report the failure), then -- half of the time after a simulated
   power loss -- reopen with a healthy env and check: every write acknowledged as
   durable is there at its version, every key holds a value some write gave it
   (the durable one or a later unacknowledged one), batches are whole, every
   acknowledged durable Log record is intact, checkpoints that returned open.

Each cycle runs under a watchdog (:data:`CYCLE_SECONDS`): a hang dumps every
thread's stack and fails the run.  Process-mode compaction never sees these faults
(its workers write with plain syscalls), so the store runs merges on threads here.

``python -m tests.torture.faults CYCLES SEED [SECONDS]`` prints the figures as JSON.
"""

from __future__ import annotations

import errno
import faulthandler
import json
import logging
import os
import random
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import banyanstore
from banyanstore.errors import (
    BanyanStoreError,
    DiskFullError,
    StorageIOError,
    VersionUnavailableError,
)
from banyanstore.io.faults import OPS, FaultEnv
from banyanstore.io.memory import MemoryEnv
from banyanstore.log import Log

__all__ = ["FaultRun", "run_subprocess"]

CYCLE_SECONDS = 300  # generous: the watchdog is for hangs, not for a loaded machine
ROOT, LOG = "/db", "/log"
KEYSPACES = ("default", "index")
OPTS: dict[str, Any] = dict(memtable_size=64 * 1024, block_size=1024, segment_size=64 * 1024,
                            compaction_mode="thread", compaction_min_width=2, history_retention=1e9,
                            wal_sync="never", max_tables_before_slowdown=8, max_tables_before_stall=64)
REPO = Path(__file__).resolve().parents[2]
Key = tuple[str, bytes]


@dataclass
class Figures:
    cycles: int = 0
    faults: Counter[str] = field(default_factory=Counter)  # "op/errno" -> injected
    errors: Counter[str] = field(default_factory=Counter)  # error class -> raised by an operation
    ops: int = 0
    durable_writes_checked: int = 0
    log_records_checked: int = 0
    checkpoints_checked: int = 0
    power_losses: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["faults"], d["errors"] = dict(self.faults), dict(self.errors)
        d["faults_injected"] = sum(self.faults.values())
        return d


class Problem(AssertionError):
    """A broken promise: wrong answer, lost write, unclear error."""


class FaultRun:
    """Cycles over one simulated disk (a fresh one every :attr:`cycles_per_disk`)."""

    cycles_per_disk = 40

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.figures = Figures()
        self._new_disk()

    def _new_disk(self) -> None:
        self.disk = MemoryEnv()
        self.disk.mkdir(ROOT)
        self.durable: dict[Key, list[tuple[int, bytes | None]]] = {}  # acknowledged durable writes
        self.allowed: dict[Key, set[bytes | None]] = {}  # what each key may hold now
        self.batches: list[tuple[int, dict[Key, bytes | None], bool]] = []  # (version, entries, durable)
        self.log_durable = 0
        self.checkpoints: list[tuple[str, int]] = []
        self.counter = 0
        self.disk_cycles = 0
        self.context = "during the workload"

    # -- one cycle ------------------------------------------------------------------------
    def cycle(self) -> None:
        if self.disk_cycles >= self.cycles_per_disk:
            self._new_disk()
        self.disk_cycles += 1
        rng = self.rng
        env = FaultEnv(self.disk, seed=rng.getrandbits(32))
        self.arm_at_open = rng.random() < 0.3  # else once the store and the Log are open
        if self.arm_at_open:
            self._arm(env, rng)
        self.context = "during the workload"
        faulthandler.dump_traceback_later(CYCLE_SECONDS, exit=True)
        try:
            self._workload(env, rng)
        finally:
            faulthandler.cancel_dump_traceback_later()
            for op, _path, code in env.log:
                self.figures.faults[f"{op}/{errno.errorcode.get(code, str(code))}"] += 1
        power_loss = rng.random() < 0.5
        if power_loss:
            self.disk.crash()  # everything not synced is gone
            self.figures.power_losses += 1
        self.context = (f"faults {[(op, p, errno.errorcode.get(c)) for op, p, c in env.log[:8]]}, "
                        f"power loss {power_loss}")
        self._verify()
        self.figures.cycles += 1

    def _arm(self, env: FaultEnv, rng: random.Random) -> None:
        codes = (errno.EIO, errno.ENOSPC, errno.EDQUOT)
        if rng.random() < 0.6:
            op = rng.choice(OPS)
            env.inject(op, rng.choice(codes), after=rng.choice((0, 1, 3, 10, 30, 100)),
                       times=rng.choice((1, 2, 5, None, None)),
                       short_write=op == "write" and rng.random() < 0.5,
                       path_contains=rng.choice((None, None, "wal", "tables", "MANIFEST", "CURRENT", LOG)))
        else:
            ops = rng.sample(OPS, rng.randrange(1, len(OPS) + 1))
            env.inject_random(rng.choice((0.01, 0.05, 0.2)), ops, codes, seed=rng.getrandbits(32))

    def _call(self, what: str, fn: Any) -> tuple[bool, Any]:
        """Run one operation; ``(True, result)`` or ``(False, error)`` for a clear error."""
        self.figures.ops += 1
        try:
            return True, fn()
        except BanyanStoreError as exc:
            self.figures.errors[type(exc).__name__] += 1
            if isinstance(exc, (StorageIOError, DiskFullError)) and not isinstance(exc.__cause__, OSError):
                self._problem(f"{what}: {type(exc).__name__} without an OSError as __cause__: {exc}")
            return False, exc
        except Exception as exc:  # noqa: BLE001 -- anything else is unclear
            where = "".join(traceback.format_exception(exc)[-6:])
            self._problem(f"{what}: raised {type(exc).__name__}: {exc}\n{where}")
            return False, exc

    def _problem(self, text: str) -> None:
        self.figures.problems.append(f"seed {self.seed} cycle {self.figures.cycles}: {text} ({self.context})")
        raise Problem(text)

    def _workload(self, env: FaultEnv, rng: random.Random) -> None:
        ok, store = self._call("open", lambda: banyanstore.open(ROOT, env=env, **OPTS))
        if not ok:
            return
        ok, log = self._call("open_log", lambda: Log.open(LOG, env=env, segment_size=64 * 1024,
                                                          wal_sync="never"))
        # batches name keyspaces that must exist (a manifest edit, which may fail too)
        self._call("keyspace", lambda: store.keyspace("index"))
        if not self.arm_at_open:
            self._arm(env, rng)
        try:
            for _ in range(rng.randrange(10, 200)):
                self._step(store, log if ok else None, rng)
        finally:
            if ok:
                self._call("log.close", log.close)
            self._call("close", store.close)

    def _step(self, store: Any, log: Any, rng: random.Random) -> None:
        r = rng.random()
        if r < 0.45:
            self._write(store, rng)
        elif r < 0.65:
            self._read(store, rng)
        elif r < 0.70:
            self._call("flush", store.flush)
        elif r < 0.72:
            self._call("compact", store.compact)
        elif r < 0.74:
            name = f"/cp{self.counter}"
            self.counter += 1
            ok, version = self._call("checkpoint", lambda: store.checkpoint(name))
            if ok:
                self.checkpoints.append((name, version))
        elif log is not None:
            self._log_op(log, rng)

    def _write(self, store: Any, rng: random.Random) -> None:
        self.counter += 1
        n = self.counter
        entries: dict[Key, bytes | None] = {}
        spaces = [ks for ks in KEYSPACES if ks in store.keyspaces()]  # creating "index" may have failed
        for j in range(rng.choice((1, 1, 1, 3, 6))):
            k = (rng.choice(spaces), b"k%03d" % rng.randrange(150))
            entries[k] = None if rng.random() < 0.15 else b"%d.%d|" % (n, j) * rng.choice((1, 20, 300))
        sync = rng.random() < 0.8

        def write() -> int:
            if len(entries) == 1 and rng.random() < 0.7:
                (ks, k), v = next(iter(entries.items()))
                space = store.keyspace(ks)
                return space.delete(k, sync=sync) if v is None else space.put(k, v, sync=sync)
            with store.batch(sync=sync) as b:
                for (ks, k), v in entries.items():
                    if v is None:
                        b.delete(k, keyspace=ks)
                    else:
                        b.put(k, v, keyspace=ks)
            return b.version
        ok, version = self._call("write", write)
        for k, v in entries.items():
            allowed = self.allowed.setdefault(k, {None})
            if ok and sync:
                self.durable.setdefault(k, []).append((version, v))
                allowed.clear()
            allowed.add(v)
        if ok:
            self.batches.append((version, entries, sync))

    def _read(self, store: Any, rng: random.Random) -> None:
        ks = rng.choice([ks for ks in KEYSPACES if ks in store.keyspaces()])
        keys = [(ks, b"k%03d" % rng.randrange(150)) for _ in range(rng.choice((1, 5, 40)))]
        space = store.keyspace(ks)
        if rng.random() < 0.5:
            ok, got = self._call("get", lambda: space.multi_get([k for _, k in keys]))
            if ok:
                for k, v in zip(keys, got, strict=True):
                    if v not in self.allowed.get(k, {None}):
                        self._problem(f"read of {k} gave {v!r:.40}, allowed {self.allowed.get(k)}")
        else:
            ok, rows = self._call("scan", lambda: list(space.scan()))
            if ok:
                seen = dict(rows)
                for (space_name, k), allowed in self.allowed.items():
                    if space_name == ks and seen.get(k) not in allowed:
                        self._problem(f"scan: {k!r} gave {seen.get(k)!r:.40}, allowed {allowed}")

    def _log_op(self, log: Any, rng: random.Random) -> None:
        if rng.random() < 0.8:
            first = log.last_seq + 1
            count = rng.choice((1, 4))
            recs = [b"log-%d|" % s * (s % 50 + 1) for s in range(first, first + count)]
            ok, seq = self._call("log.append", lambda: log.append_many(recs, sync=True))
            if ok:
                self.log_durable = max(self.log_durable, seq)
        else:
            ok, rows = self._call("log.read", lambda: list(log.read()))
            if ok:
                for seq, rec in rows:
                    if rec != b"log-%d|" % seq * (seq % 50 + 1):
                        self._problem(f"log read: record {seq} is wrong")

    # -- after the cycle --------------------------------------------------------------------
    def _verify(self) -> None:
        with banyanstore.open(ROOT, env=self.disk, **dict(OPTS, compaction=False)) as store:
            self._verify_store(store)
        with Log.open(LOG, env=self.disk, create_if_missing=True) as log:
            if log.last_seq < self.log_durable:
                self._problem(f"log: durable seq {self.log_durable} lost (last {log.last_seq})")
            for seq, rec in log.read():
                if rec != b"log-%d|" % seq * (seq % 50 + 1):
                    self._problem(f"log: record {seq} damaged")
            self.figures.log_records_checked += log.last_seq - log.first_seq + 1
            self.log_durable = log.last_seq
        for name, version in self.checkpoints:
            with banyanstore.open(name, env=self.disk, read_only=True) as cp:
                if cp.version != version:
                    self._problem(f"checkpoint {name}: version {cp.version}, not {version}")
            self.figures.checkpoints_checked += 1
        self.checkpoints.clear()

    def _verify_store(self, store: Any) -> None:
        spaces = {name: store.keyspace(name) for name in KEYSPACES}
        for (ks, k), writes in self.durable.items():
            for version, value in writes[-3:]:
                try:
                    got = spaces[ks].get(k, version=version)
                except VersionUnavailableError:
                    continue
                if got != value:
                    self._problem(f"lost: {ks}/{k!r} at version {version} is {got!r:.40}, "
                                  f"acknowledged {value!r:.40}")
                self.figures.durable_writes_checked += 1
        for (ks, k), allowed in self.allowed.items():
            got = spaces[ks].get(k)
            if got not in allowed:
                self._problem(f"{ks}/{k!r} holds {got!r:.40}, which no write since the last durable "
                              f"one gave it ({len(allowed)} allowed)")
            self.allowed[(ks, k)] = {got}  # from now on, what survived is the truth
        for version, entries, durable in self.batches:
            # versions of this cycle cannot have been reused yet: history is exact here
            present = [(version, v) in list(spaces[ks].history(k)) for (ks, k), v in entries.items()]
            if any(present) and not all(present):
                self._problem(f"batch at version {version} is partly there: {present}")
            if durable and not all(present) and version >= store.oldest_version:
                self._problem(f"durable batch at version {version} is not whole: {present}")
        self.batches.clear()


def run(cycles: int, seed: int, seconds: float | None = None) -> dict[str, Any]:
    logging.getLogger("banyanstore").setLevel(logging.CRITICAL)
    fr = FaultRun(seed)
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while fr.figures.cycles < cycles and (deadline is None or time.monotonic() < deadline):
            fr.cycle()
    except Problem:
        pass  # recorded in figures.problems
    return fr.figures.as_dict()


def run_subprocess(cycles: int, seed: int, *, seconds: float | None = None,
                   timeout: float = 3600) -> dict[str, Any]:
    """Run the cycles in a child process (a hang there dumps stacks and exits)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), str(Path(banyanstore.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, "-m", "tests.torture.faults", str(cycles), str(seed)]
    if seconds is not None:
        args.append(str(seconds))
    proc = subprocess.run(args, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"fault run (seed {seed}) failed or hung ({proc.returncode}): "
                             f"{proc.stderr[-6000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    n, s = int(sys.argv[1]), int(sys.argv[2])
    print(json.dumps(run(n, s, float(sys.argv[3]) if len(sys.argv) > 3 else None)))
