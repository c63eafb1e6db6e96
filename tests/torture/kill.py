"""The kill -9 harness: rounds of a random writer (:mod:`tests.torture.kill_child`)
killed with SIGKILL at a random moment, each followed by a full check of the store,
the Log and every acknowledged checkpoint against the expected state.

What a round proves (``wal_sync`` and ``sync=`` drawn at random per round and per op):

* **prefix**: the writes that survived are exactly the first ``p`` writes of the
  round, each at the version it was acknowledged with (version-exact, through
  ``history``): a lost write is a suffix of the write order, never a hole, and a
  batch is all there or not at all;
* **durability**: ``p`` covers every write the store promised was durable when it
  returned (``sync=True``, ``wal_sync="always"``, or followed by an acknowledged
  ``flush``/``compact``/``checkpoint``) -- and, with :data:`KILL_DURABLE`, every
  write that returned at all;
* **state**: every keyspace scans equal to the expected state at the latest version
  and at sampled older versions, ``multi_get`` agrees, versions never go back;
* the read-only open of the crashed store (which repairs nothing) and the writer
  open that follows agree; ``tables/`` holds exactly the files the manifest names;
* the Log holds every acknowledged-durable record, intact, with no gap;
* every acknowledged checkpoint opens (read-only and for writing) and holds the
  expected state at its version.

Rounds rotate over the IO modes available here (write with one, verify with the
next); compaction runs in worker processes or threads, at random.  A child that
stops making progress for :data:`HANG_SECONDS` is a hang: its stacks are taken
(SIGUSR1) and reported.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import banyanstore
from banyanstore.io.testing import available_real_modes
from banyanstore.log import Log

from .expected import KEYSPACES, ExpectedState, entries_of, key, log_record, random_options
from .journal import read_journal

__all__ = ["KillHarness", "KILL_DURABLE"]

KILL_DURABLE = True
"""Every write that *returned* must survive a SIGKILL, in every ``wal_sync`` mode (WAL
records go into a shared mapping of the segment before the write returns: the kernel
keeps them when the process dies).  Writes the store synced survive a power loss too."""
HANG_SECONDS = 120.0
REPO = Path(__file__).resolve().parents[2]
SRC = str(Path(banyanstore.__file__).resolve().parent.parent)


class HangError(AssertionError):
    """The child stopped making progress (its stacks are in the message)."""


@dataclass
class Figures:
    """What the harness checked (summed over rounds)."""

    rounds: int = 0
    kills_in_compact: int = 0
    writes_acked: int = 0
    writes_checked: int = 0  # surviving writes verified version-exactly
    writes_acked_lost: int = 0  # acknowledged but not promised durable, and lost (allowed)
    log_records_checked: int = 0
    checkpoints_checked: int = 0
    seconds_child: float = 0.0  # from the child's start to its death
    seconds_verify: float = 0.0
    modes: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["modes"] = dict(self.modes)
        d["seconds_child"], d["seconds_verify"] = round(self.seconds_child, 1), round(self.seconds_verify, 1)
        return d


class KillHarness:
    """One store (plus its Log and checkpoints) under ``root``, taken through rounds."""

    def __init__(self, root: Path, seed: int, *, keys: int = 400) -> None:
        self.root = root
        self.store_dir, self.log_dir = root / "store", root / "log"
        self.ckpt_dir, self.journals = root / "checkpoints", root / "journals"
        for d in (self.ckpt_dir, self.journals):
            d.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(seed)
        self.seed = seed
        self.keys = keys
        self.expected = ExpectedState()
        self.log_first = 1
        self.figures = Figures()
        self.modes = available_real_modes()
        self.round_no = 0
        self.round_start_versions: list[int] = []

    # -- one round ------------------------------------------------------------------------
    def run_round(self, *, min_seconds: float = 0.2, max_seconds: float = 1.5) -> None:
        r = self.round_no
        io_mode = self.modes[r % len(self.modes)]
        verify_mode = self.modes[(r + 1) % len(self.modes)]
        options = random_options(self.rng, io_mode)
        journal = self.journals / f"round-{r:05d}.jsonl"
        args = dict(store=str(self.store_dir), log=str(self.log_dir), journal=str(journal),
                    checkpoints=str(self.ckpt_dir), round=r, seed=self.rng.getrandbits(64),
                    options=options, keys=self.keys)
        target_compact = self.rng.random() < 0.3
        began = time.monotonic()
        in_compact = self._run_child(args, journal, self.rng.uniform(min_seconds, max_seconds),
                                     target_compact)
        killed = time.monotonic()
        self.figures.seconds_child += killed - began
        self.figures.kills_in_compact += in_compact
        self.figures.modes[f"{io_mode}/{options['compaction_mode']}/{options['wal_sync']}"] += 1
        try:
            self._verify(read_journal(str(journal)), options["wal_sync"], verify_mode)
        except AssertionError as exc:
            raise AssertionError(f"round {r} (seed {self.seed}, options {options}): {exc}") from exc
        self.round_no += 1
        self.figures.rounds += 1
        self.figures.seconds_verify += time.monotonic() - killed
        journal.unlink()

    def _run_child(self, args: dict[str, Any], journal: Path, seconds: float, target_compact: bool) -> bool:
        """Run the child until the kill; True if it was killed inside ``compact()``."""
        env = {k: v for k, v in os.environ.items()  # options from the environment would override ours
               if not k.startswith("BANYANSTORE_") or k == "BANYANSTORE_PURE_PYTHON"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), SRC, env.get("PYTHONPATH", "")])
        stderr_path = self.root / "child.stderr"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "tests.torture.kill_child", json.dumps(args)],
                                    cwd=str(REPO), env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            in_compact = self._wait_and_kill(proc, journal, seconds, target_compact, stderr_path)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != -signal.SIGKILL:
            raise AssertionError(f"the child exited with {proc.returncode} before the kill: "
                                 f"{stderr_path.read_text()[-3000:]}")
        return in_compact

    def _wait_and_kill(self, proc: subprocess.Popen[bytes], journal: Path, seconds: float,
                       target_compact: bool, stderr_path: Path) -> bool:
        started = None
        last_size, last_growth = -1, time.monotonic()
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                return False
            size = journal.stat().st_size if journal.exists() else 0
            if size != last_size:
                last_size, last_growth = size, now
            elif now - last_growth > HANG_SECONDS:
                proc.send_signal(signal.SIGUSR1)
                time.sleep(2)
                proc.kill()
                proc.wait()
                raise HangError(f"no progress for {HANG_SECONDS:.0f} s; stacks:\n"
                                f"{stderr_path.read_text()[-20000:]}")
            if started is None and size > 0:
                started = now  # the store is open: the kill clock starts
            if started is not None and now - started >= seconds:
                if not target_compact:
                    break
                if _pending_op(journal) == "compact":
                    time.sleep(random.uniform(0.0, 0.05))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return _pending_op(journal) == "compact"
                if now - started > seconds + 5:
                    break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return _pending_op(journal) == "compact"

    # -- checking ---------------------------------------------------------------------------
    def _verify(self, records: list[dict[str, Any]], wal_sync: str, io_mode: str) -> None:
        assert records and "open" in records[0], f"the child never opened the store: {records[:1]}"
        head = records[0]
        assert not any("fail" in rec for rec in records), [rec for rec in records if "fail" in rec]
        writes, logs, ckpts, durable_upto = self._parse(records, head["open"])
        survived = self._check_store(writes, durable_upto, head["open"], io_mode)
        self._check_log(logs, head, io_mode)
        self._check_checkpoints(ckpts, io_mode)
        self.figures.writes_checked += survived

    def _parse(self, records: list[dict[str, Any]], open_version: int) -> tuple[
            list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], int]:
        """Pair intents with acknowledgements; give each write its version; return
        ``(writes, log appends, checkpoints, number of writes that must survive)``."""
        acks = {rec["a"]: rec for rec in records if "a" in rec}
        writes: list[dict[str, Any]] = []
        logs, ckpts = [], []
        must = 0
        version = open_version
        for rec in records:
            if "i" not in rec:
                continue
            ack = acks.get(rec["i"])
            op = dict(rec, ack=ack)
            if rec["op"] == "w":
                version += 1
                if ack is not None:
                    # one writer thread: every write takes the next version
                    assert ack["v"] == version, f"write {rec['i']} got version {ack['v']}, not {version}"
                    self.figures.writes_acked += 1
                    if rec["d"] or KILL_DURABLE:
                        must = len(writes) + 1
                op["v"] = version
                writes.append(op)
            elif rec["op"] == "log":
                logs.append(op)
            elif rec["op"] == "ckpt":
                ckpts.append(op)
                if ack is not None:
                    must = len(writes)
            elif rec["op"] in ("flush", "compact") and ack is not None:
                must = len(writes)  # a finished flush made every earlier write durable
        return writes, logs, ckpts, must

    def _check_store(self, writes: list[dict[str, Any]], must: int, open_version: int, io_mode: str) -> int:
        opts = dict(io_mode=io_mode, compaction=False, history_retention=1e9)
        with banyanstore.open(self.store_dir, read_only=True, **opts) as ro:
            p_ro = self._surviving_prefix(ro, writes, open_version)
            ro_version = ro.version
        with banyanstore.open(self.store_dir, **opts) as store:
            p = self._surviving_prefix(store, writes, open_version)
            assert p == p_ro, f"the read-only open saw {p_ro} of the round's writes, the writer open {p}"
            # A reader's version is the newest write it sees; a writer open also counts the
            # versions the manifest says were handed out (their writes may be lost).
            assert ro_version <= store.version, (ro_version, store.version)
            assert p >= must, (f"lost acknowledged durable writes: {must} had to survive, "
                               f"{p} did (first lost: {writes[p]})")
            acked = sum(1 for w in writes if w["ack"] is not None)
            self.figures.writes_acked_lost += max(0, acked - p)
            for w in writes[:p]:
                self.expected.apply(w["v"], entries_of(self.round_no, w["i"], w["e"]))
            last = writes[p - 1]["v"] if p else open_version
            assert store.version >= last, f"store version {store.version} below surviving write {last}"
            assert ro_version >= last, f"read-only version {ro_version} below surviving write {last}"
            self._check_state(store, writes[:p])
            self._check_tables(store)
            self.round_start_versions.append(store.version)
            self._maybe_raise_floor(store)
        return p

    def _surviving_prefix(self, store: Any, writes: list[dict[str, Any]], open_version: int) -> int:
        """How many of the round's writes survived; asserts that they are exactly a
        prefix, each at its own version, batches whole."""
        touched = sorted({(ks, key(k)) for w in writes for ks, k, _ in w["e"]})
        spaces = [store.keyspace(name) for name in KEYSPACES]
        observed = set()
        for ks, k in touched:
            for version, val in spaces[ks].history(k):
                if version > open_version:
                    observed.add((ks, k, version, val))
        p = len({o[2] for o in observed})
        want = set()
        for w in writes[:p]:
            for (ks, k), val in entries_of(self.round_no, w["i"], w["e"]).items():
                want.add((ks, k, w["v"], val))
        if observed != want:
            extra, missing = sorted(observed - want)[:5], sorted(want - observed)[:5]
            raise AssertionError(f"the surviving writes are not the first {p} of the round "
                                 f"(unexpected {extra}, missing {missing})")
        return p

    def _check_state(self, store: Any, survived: list[dict[str, Any]]) -> None:
        exp, rng = self.expected, self.rng
        spaces = [store.keyspace(name) for name in KEYSPACES]
        for ks, space in enumerate(spaces):
            assert list(space.scan()) == exp.scan_at(ks, store.version), f"{KEYSPACES[ks]}: latest scan"
        lo = max(exp.floor, store.oldest_version, 1)
        for _ in range(3):
            v = rng.randrange(lo, store.version + 1) if store.version >= lo else store.version
            ks = rng.randrange(len(spaces))
            assert list(spaces[ks].scan(version=v)) == exp.scan_at(ks, v), f"{KEYSPACES[ks]}: scan at {v}"
            keys = [key(rng.randrange(self.keys)) for _ in range(20)]
            assert spaces[ks].multi_get(keys, version=v) == [exp.value_at(ks, k, v) for k in keys]
        for ks, k in {(ks, key(kn)) for w in survived for ks, kn, _ in w["e"]}:
            got = [e for e in spaces[ks].history(k) if e[0] >= exp.floor]
            assert got == exp.history_of(ks, k), f"history of {KEYSPACES[ks]}/{k!r}"

    def _check_tables(self, store: Any) -> None:
        named = {f"{t['file']:06d}.sst" for ks in store.stats()["keyspaces"].values()
                 for t in ks["table_list"]}
        on_disk = set(os.listdir(self.store_dir / "tables"))
        assert on_disk == named, f"tables/ holds {sorted(on_disk - named)} the manifest does not name"

    def _maybe_raise_floor(self, store: Any) -> None:
        """Every 10 rounds, forget history older than 5 rounds ago (keeps checks bounded)."""
        if self.round_no % 10 == 9 and len(self.round_start_versions) > 5:
            floor = self.round_start_versions[-6]
            if floor > store.oldest_version:
                store.set_history_floor(floor)
                self.expected.raise_floor(floor)

    def _check_log(self, logs: list[dict[str, Any]], head: dict[str, Any], io_mode: str) -> None:
        must = head["log_last"]
        for op in logs:
            if op["ack"] is not None and (op["d"] or KILL_DURABLE):
                must = max(must, op["ack"]["seq"])
        with Log.open(self.log_dir, io_mode=io_mode) as log:
            assert log.last_seq >= must, f"log: acknowledged durable seq {must} lost (last {log.last_seq})"
            seq = log.first_seq
            for seq_read, rec in log.read():
                assert seq_read == seq, f"log: seq {seq_read} where {seq} was expected"
                assert rec == log_record(seq_read), f"log: record {seq_read} damaged"
                seq += 1
            assert seq == log.last_seq + 1, f"log: read ended at {seq - 1}, last_seq {log.last_seq}"
            self.figures.log_records_checked += log.last_seq - log.first_seq + 1
            if log.last_seq - log.first_seq > 5000:
                log.truncate_before(log.last_seq - 1000)

    def _check_checkpoints(self, ckpts: list[dict[str, Any]], io_mode: str) -> None:
        for op in ckpts:
            path = self.ckpt_dir / op["dir"]
            if op["ack"] is not None:
                version = op["ack"]["v"]
                for read_only in (True, False):
                    with banyanstore.open(path, read_only=read_only, io_mode=io_mode,
                                          compaction=False) as ck:
                        assert ck.version == version, f"checkpoint {op['dir']}: version {ck.version}"
                        for ks, name in enumerate(KEYSPACES):
                            got = list(ck.keyspace(name).scan())
                            assert got == self.expected.scan_at(ks, version), f"checkpoint {op['dir']}/{name}"
                self.figures.checkpoints_checked += 1
            shutil.rmtree(path, ignore_errors=True)


def _pending_op(journal: Path) -> str | None:
    """The operation the child was inside when the journal ends (None: between ops)."""
    try:
        records = read_journal(str(journal))
    except (OSError, AssertionError):
        return None
    acked = {rec["a"] for rec in records if "a" in rec}
    for rec in reversed(records):
        if "i" in rec:
            return None if rec["i"] in acked else rec["op"]
    return None


def run_for(root: Path, seed: int, seconds: float, *, rounds: int | None = None) -> dict[str, Any]:
    """The long form: rounds until ``seconds`` pass (or ``rounds`` are done), starting a
    fresh store every 250 rounds -- and after a failure, which is recorded (its store is
    kept for inspection) -- and returns the summed figures."""
    deadline = time.monotonic() + seconds
    total = Figures()
    failures: list[str] = []
    store_no = 0
    while time.monotonic() < deadline and (rounds is None or total.rounds < rounds):
        harness = KillHarness(root / f"store-{store_no}", seed + store_no)
        failed = False
        try:
            while (time.monotonic() < deadline and harness.round_no < 250
                   and (rounds is None or total.rounds + harness.figures.rounds < rounds)):
                harness.run_round()
        except AssertionError as exc:
            failures.append(f"store-{store_no}: {exc}"[:4000])
            failed = True
        for name, value in harness.figures.as_dict().items():
            if name == "modes":
                total.modes.update(value)
            else:
                setattr(total, name, getattr(total, name) + value)
        if not failed:
            shutil.rmtree(root / f"store-{store_no}", ignore_errors=True)
        store_no += 1
    figures = total.as_dict()
    figures["failures"] = failures
    return figures
