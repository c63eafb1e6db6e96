"""Concurrency stress: many threads on one Store, each checking invariants as it goes.

Threads (all on one store with a tiny memtable, so flushes and merges never stop):

* **owners** -- each writes (puts, deletes, some synced) only keys of its own and keeps
  their full history, so it can check its keys exactly while everyone else runs:
  versions it gets strictly rise, a write reads back at its own version, older
  versions still read as they were, ``history`` equals its model;
* **batchers** -- write *groups* (keys over two keyspaces) in one atomic batch, all
  members set to the same generation;
* **readers** -- check what no single thread owns: ``store.version`` never goes back;
  a group read at one version (snapshot, ``multi_get`` at a version, a scan at a
  version) is never half old, half new; a snapshot read twice gives the same answer
  however much happened in between; scans are sorted and free of duplicates;
* a **maintainer** -- ``flush``, ``compact`` (whole, or one keyspace or a range).

At the end, with everyone stopped, every key of every owner and group is compared
with the models, then again after a reopen.  A thread that stops making progress for
:data:`HANG_SECONDS` fails the run with every thread's stack.

``run(seconds=..., ops=...)`` returns the figures (operations by kind).
"""

from __future__ import annotations

import random
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

import banyanstore

__all__ = ["run"]

HANG_SECONDS = 120.0
GROUP_MEMBERS = 4
OPTS: dict[str, Any] = dict(memtable_size=64 * 1024, block_size=1024, segment_size=64 * 1024,
                            compaction_min_width=2, compaction_max_width=4, history_retention=1e9,
                            wal_sync="never", max_tables_before_slowdown=12, max_tables_before_stall=64)


class StressFailure(AssertionError):
    pass


class Stress:
    def __init__(self, path: str, seed: int, *, owners: int = 3, batchers: int = 1, readers: int = 3,
                 keys_per_owner: int = 60, groups: int = 20, sync_share: float = 0.05,
                 hang_seconds: float = HANG_SECONDS, options: dict[str, Any] | None = None) -> None:
        self.path = path
        self.seed = seed
        self.opts = dict(OPTS, **(options or {}))
        self.store = banyanstore.open(path, **self.opts)
        self.spaces = {"default": self.store, "index": self.store.keyspace("index")}
        self.n_owners, self.n_batchers, self.n_readers = owners, batchers, readers
        self.keys_per_owner, self.groups = keys_per_owner, groups
        self.sync_share, self.hang_seconds = sync_share, hang_seconds
        self.models: list[dict[tuple[str, bytes], list[tuple[int, bytes | None]]]] = [
            {} for _ in range(owners)]
        self.group_gen: dict[int, list[tuple[int, int]]] = {}  # group -> [(version, generation)]
        self.group_lock = threading.Lock()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.ops: Counter[str] = Counter()
        self.progress: dict[str, float] = {}
        self._ops_lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------------
    def fail(self, text: str) -> None:
        raise StressFailure(f"seed {self.seed}: {text}")

    def count(self, local: Counter[str]) -> None:
        with self._ops_lock:
            self.ops.update(local)
        local.clear()

    @staticmethod
    def group_keys(g: int) -> list[tuple[str, bytes]]:
        return [("default" if m % 2 == 0 else "index", b"g%03d:m%d" % (g, m)) for m in range(GROUP_MEMBERS)]

    # -- threads ---------------------------------------------------------------------------------
    def owner(self, t: int) -> None:
        rng = random.Random(self.seed * 1000 + t)
        model = self.models[t]
        last_version = 0
        local: Counter[str] = Counter()
        n = 0
        while not self.stop.is_set():
            self.progress[f"owner{t}"] = time.monotonic()
            n += 1
            ks = rng.choice(("default", "index"))
            k = b"o%d:k%03d" % (t, rng.randrange(self.keys_per_owner))
            space = self.spaces[ks]
            r = rng.random()
            if r < 0.6:
                val = None if rng.random() < 0.15 else b"%d.%d|" % (t, n) * rng.choice((1, 4, 40))
                sync = rng.random() < self.sync_share
                v = space.delete(k, sync=sync) if val is None else space.put(k, val, sync=sync)
                if v <= last_version:
                    self.fail(f"owner {t}: version {v} after {last_version}")
                last_version = v
                model.setdefault((ks, k), []).append((v, val))
                if space.get(k, version=v) != val:
                    self.fail(f"owner {t}: {ks}/{k!r} does not read back at its version {v}")
                local["write"] += 1
                local["get"] += 1
            elif r < 0.85:
                hist = model.get((ks, k))
                if hist:
                    v, val = hist[rng.randrange(len(hist))]
                    if space.get(k, version=v) != val:
                        self.fail(f"owner {t}: {ks}/{k!r} at version {v} changed")
                    newest = hist[-1][1]
                    if space.get(k) != newest:
                        self.fail(f"owner {t}: {ks}/{k!r} latest is not its last write")
                    local["get"] += 2
            else:
                hist = model.get((ks, k), [])
                got = list(space.history(k))
                if got != list(reversed(hist)):
                    self.fail(f"owner {t}: history of {ks}/{k!r} differs: {got[:3]} vs {hist[-3:]}")
                local["history"] += 1
            if n % 200 == 0:
                self.count(local)
        self.count(local)

    def batcher(self, b: int) -> None:
        rng = random.Random(self.seed * 1000 + 500 + b)
        local: Counter[str] = Counter()
        gen = 0
        while not self.stop.is_set():
            self.progress[f"batcher{b}"] = time.monotonic()
            g = rng.randrange(b, self.groups, self.n_batchers)  # groups are split among batchers
            gen += 1
            value = b"gen%d.%d|" % (b, gen) * rng.choice((1, 10))
            with self.store.batch(sync=rng.random() < self.sync_share) as batch:
                for ks, k in self.group_keys(g):
                    batch.put(k, value, keyspace=ks)
            with self.group_lock:
                self.group_gen.setdefault(g, []).append((batch.version, gen))
            local["batch"] += 1
            if gen % 100 == 0:
                self.count(local)
        self.count(local)

    def _group_values(self, read: Any, g: int) -> list[bytes | None]:
        return [read(ks, k) for ks, k in self.group_keys(g)]

    def reader(self, r: int) -> None:
        rng = random.Random(self.seed * 1000 + 900 + r)
        local: Counter[str] = Counter()
        last_seen = 0
        n = 0
        while not self.stop.is_set():
            self.progress[f"reader{r}"] = time.monotonic()
            n += 1
            seen = self.store.version
            if seen < last_seen:
                self.fail(f"reader {r}: store.version went back from {last_seen} to {seen}")
            last_seen = seen
            choice = rng.random()
            g = rng.randrange(self.groups)
            if choice < 0.3:
                with self.store.snapshot() as snap:
                    first = self._snapshot_reads(snap, g)
                    time.sleep(rng.choice((0, 0, 0.001, 0.01)))
                    if self._snapshot_reads(snap, g) != first:
                        self.fail(f"reader {r}: snapshot at {snap.version} is not repeatable")
                local["snapshot_read"] += 2
            elif choice < 0.6:
                v = self.store.version
                vals = [self.spaces[ks].multi_get([k], version=v)[0] for ks, k in self.group_keys(g)]
                self._check_group(g, vals, f"reader {r}: multi_get at {v}")
                local["get"] += len(vals)
            elif choice < 0.8:
                v = self.store.version
                rows = []
                for ks in ("default", "index"):
                    rows += [(ks, k, val) for k, val in self.spaces[ks].scan(prefix=b"g%03d:" % g, version=v)]
                vals = [val for _, _, val in sorted(rows, key=lambda x: x[1])]
                if rows and len(rows) != GROUP_MEMBERS:
                    self.fail(f"reader {r}: scan at {v} sees {len(rows)} members of group {g}")
                self._check_group(g, vals, f"reader {r}: scan at {v}")
                local["scan"] += 1
            else:
                ks = rng.choice(("default", "index"))
                rev = rng.random() < 0.3
                rows = list(self.spaces[ks].scan(reverse=rev, limit=rng.choice((None, 10, 200))))
                keys = [k for k, _ in rows]
                if keys != sorted(set(keys), reverse=rev):
                    self.fail(f"reader {r}: scan of {ks} is not sorted and unique")
                local["scan"] += 1
            if n % 100 == 0:
                self.count(local)
        self.count(local)

    def _snapshot_reads(self, snap: Any, g: int) -> Any:
        group = [snap.get(k, keyspace=ks) for ks, k in self.group_keys(g)]
        self._check_group(g, group, f"snapshot at {snap.version}")
        return group, list(snap.scan(keyspace="index", limit=50)), list(snap.scan(prefix=b"o0:", limit=30))

    def _check_group(self, g: int, vals: list[bytes | None], where: str) -> None:
        if len(set(vals)) > 1:
            self.fail(f"{where}: group {g} is torn: {[v[:12] if v else v for v in vals]}")

    def maintainer(self) -> None:
        rng = random.Random(self.seed * 1000 + 999)
        local: Counter[str] = Counter()
        while not self.stop.is_set():
            self.progress["maintainer"] = time.monotonic()
            r = rng.random()
            if r < 0.5:
                self.store.flush()
                local["flush"] += 1
            elif r < 0.8:
                self.store.compact()
                local["compact"] += 1
            else:
                self.store.compact("index", start=b"g", end=b"o5")
                local["compact"] += 1
            time.sleep(rng.choice((0.01, 0.05, 0.2)))
            self.count(local)

    # -- running ---------------------------------------------------------------------------------
    def _guard(self, name: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 -- reported by run()
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}")
            self.stop.set()

    def run(self, seconds: float, max_ops: int | None = None) -> dict[str, Any]:
        threads = [threading.Thread(target=self._guard, args=(f"owner{t}", self.owner, t), daemon=True)
                   for t in range(self.n_owners)]
        threads += [threading.Thread(target=self._guard, args=(f"batcher{b}", self.batcher, b), daemon=True)
                    for b in range(self.n_batchers)]
        threads += [threading.Thread(target=self._guard, args=(f"reader{r}", self.reader, r), daemon=True)
                    for r in range(self.n_readers)]
        threads.append(threading.Thread(target=self._guard, args=("maintainer", self.maintainer),
                                        daemon=True))
        began = time.monotonic()
        for t in threads:
            t.start()
        try:
            while not self.stop.is_set() and time.monotonic() - began < seconds:
                if max_ops is not None and sum(self.ops.values()) >= max_ops:
                    break
                time.sleep(0.05)
                self._watch()
        finally:
            self.stop.set()
            for t in threads:
                t.join(self.hang_seconds)
            stuck = [t.name for t in threads if t.is_alive()]
        if self.errors:
            raise StressFailure("\n".join(self.errors))
        if stuck:
            raise StressFailure(f"threads did not stop: {stuck}\n{_stacks()}")
        self._final_check(self.store)
        self.store.close()
        with banyanstore.open(self.path, **dict(self.opts, compaction=False)) as again:
            self._final_check(again)
        figures = dict(self.ops)
        figures["operations"] = sum(self.ops.values())
        figures["seconds"] = round(time.monotonic() - began, 1)
        return figures

    def _watch(self) -> None:
        """A hang: no writer (or no reader) at all made progress for ``hang_seconds`` --
        one slow thread on a loaded machine is not one."""
        now = time.monotonic()
        for role in ("owner", "batcher", "reader"):
            times = [at for name, at in list(self.progress.items()) if name.startswith(role)]
            if times and now - max(times) > self.hang_seconds:
                self.errors.append(f"no {role} made progress for {self.hang_seconds:.0f} s\n{_stacks()}")
                self.stop.set()
                return

    def _final_check(self, store: Any) -> None:
        spaces = {"default": store, "index": store.keyspace("index")}
        for t, model in enumerate(self.models):
            for (ks, k), hist in model.items():
                if list(spaces[ks].history(k)) != list(reversed(hist)):
                    self.fail(f"final: history of owner {t}'s {ks}/{k!r} differs")
        for g, gens in self.group_gen.items():
            want = b"gen%d.%d|" % (g % self.n_batchers, max(gens)[1])
            for ks, k in self.group_keys(g):
                got = spaces[ks].get(k)
                if got is None or not got.startswith(want):
                    self.fail(f"final: group {g} member {ks}/{k!r} is {got!r:.30}, not generation {want!r}")


def _stacks() -> str:
    frames = sys._current_frames()
    out = []
    for th in threading.enumerate():
        frame = frames.get(th.ident or -1)
        if frame is not None:
            out.append(f"--- {th.name}\n" + "".join(traceback.format_stack(frame)[-8:]))
    return "\n".join(out)


def run(path: str, seed: int, seconds: float, *, max_ops: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """One stress run on a new store at ``path``; returns the figures."""
    return Stress(path, seed, **kwargs).run(seconds, max_ops)


def run_subprocess(seed: int, seconds: float, *, timeout: float | None = None,
                   **kwargs: Any) -> dict[str, Any]:
    """:func:`run` in a child process on a temporary store (a hung run is killed there,
    not left parked inside the caller)."""
    import json
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(repo), str(Path(banyanstore.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, "-m", "tests.torture.stress", str(seed), str(seconds), json.dumps(kwargs)]
    limit = timeout if timeout is not None else seconds * 3 + 300
    proc = subprocess.run(args, cwd=str(repo), env=env, capture_output=True, text=True, timeout=limit)
    if proc.returncode != 0:
        raise StressFailure(f"stress run (seed {seed}) failed ({proc.returncode}): {proc.stderr[-8000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    import json
    import os
    import shutil
    import tempfile

    seed, seconds, kwargs = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
    max_ops = kwargs.pop("max_ops", None)
    root = tempfile.mkdtemp(prefix="banyanstore-stress-")
    try:
        figures = run(os.path.join(root, "store"), seed, seconds, max_ops=max_ops, **kwargs)
    except StressFailure as exc:
        sys.stderr.write(f"{exc}\n")
        sys.stderr.flush()
        os._exit(1)  # hung threads must not keep the process alive
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
