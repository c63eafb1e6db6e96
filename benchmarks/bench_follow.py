"""Benchmark read-only stores that follow a writer (lsm/follower.py).

Usage: ``python benchmarks/bench_follow.py [--num 200000] [--repeat 3] [--json FILE]``

Phases (medians of ``--repeat`` runs, side by side in one process):

* ``get``, ``multi_get``, ``scan`` on the writer's handle and on read-only handles:
  without following, and following at 100 ms, 10 ms and 1 ms -- the cost of the
  follower's read path and of its background refreshes to readers;
* ``refresh()`` with nothing new: its latency (what each ``follow`` tick costs);
* catch-up: WAL records a ``refresh()`` applies per second after the writer wrote
  ``--num`` unsynced puts, against the writer's own put rate;
* staleness: a writer process stamps ``clock`` with the wall time every millisecond
  (``sync=True``) while loading bulk data; a follower samples it and reports how old
  what it sees is (median, p99, max), per ``follow_interval_ms``.

REQUIRES: the ``banyanstore`` package importable (``PYTHONPATH=src`` or installed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import banyanstore

OPTS = dict(io_mode="sync", memtable_size=8 << 20, compaction_mode="thread")
VALUE = bytes(range(100))
WRITER = r"""
import sys, time, banyanstore
s = banyanstore.open(sys.argv[1], io_mode="sync", memtable_size=4 << 20, wal_sync="never")
print("ready", flush=True)
i = 0
end = time.time() + float(sys.argv[2])
while time.time() < end:
    s.put(b"clock", b"%.6f" % time.time(), sync=True)
    for _ in range(50):
        s.put(b"bulk%08d" % i, b"x" * 100)
        i += 1
    time.sleep(0.001)
s.close()
"""


def key(i: int) -> bytes:
    return b"key%013d" % i


def rate(fn: Callable[[], int], repeat: int) -> float:
    """Median operations per second of ``fn`` (which returns its operation count)."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        out.append(n / (time.perf_counter() - t0))
    return statistics.median(out)


def read_phases(path: str, num: int, repeat: int) -> dict[str, dict[str, float]]:
    rng = random.Random(1)
    keys = [key(rng.randrange(num)) for _ in range(50_000)]
    results: dict[str, dict[str, float]] = {}
    with banyanstore.open(path, **OPTS) as writer:
        handles: list[tuple[str, Any]] = [("writer", writer)]
        handles.append(("read-only", banyanstore.open(path, read_only=True, io_mode="sync")))
        for ms in (100, 10, 1):
            handles.append((f"follow {ms} ms", banyanstore.open(
                path, read_only=True, io_mode="sync", follow=True, follow_interval_ms=ms)))
        for name, h in handles:
            for k in keys[:20_000]:  # warm the shared block cache the same way for each
                h.get(k)

            def gets(h: Any = h) -> int:
                get = h.get
                for k in keys:
                    get(k)
                return len(keys)

            def multi(h: Any = h) -> int:
                for lo in range(0, len(keys), 100):
                    h.multi_get(keys[lo:lo + 100])
                return len(keys)

            def scans(h: Any = h) -> int:
                n = 0
                for k in keys[:5000]:
                    n += sum(1 for _ in h.scan(start=k, limit=10))
                return n

            results[name] = {"get/s": rate(gets, repeat), "multi_get keys/s": rate(multi, repeat),
                             "scan entries/s": rate(scans, repeat)}
        for _name, h in handles[1:]:
            h.close()
    return results


def refresh_latency(path: str) -> float:
    with banyanstore.open(path, read_only=True, io_mode="sync") as r:
        times = []
        for _ in range(2000):
            t0 = time.perf_counter()
            r.refresh()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def catch_up(path: str, num: int) -> dict[str, float]:
    with banyanstore.open(path, **OPTS, wal_sync="never") as w, \
            banyanstore.open(path, read_only=True, io_mode="sync") as r:
        base = w.version
        t0 = time.perf_counter()
        for i in range(num):
            w.put(b"new%010d" % i, VALUE)
        w.sync()
        put_rate = num / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        r.refresh()
        took = time.perf_counter() - t0
        assert r.version == w.version
        return {"writer puts/s": put_rate, "refresh applies records/s": (w.version - base) / took}


def staleness(root: str, interval_ms: int, seconds: float) -> dict[str, float]:
    path = tempfile.mkdtemp(dir=root)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path, str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    ages = []
    with banyanstore.open(path, read_only=True, io_mode="sync", follow=True,
                          follow_interval_ms=interval_ms) as r:
        while proc.poll() is None:
            stamp = r.get(b"clock")
            if stamp is not None:
                ages.append(time.time() - float(stamp))
            time.sleep(0.001)
    proc.wait()
    ages.sort()
    return {"median ms": 1000 * ages[len(ages) // 2], "p99 ms": 1000 * ages[int(len(ages) * 0.99)],
            "max ms": 1000 * ages[-1], "samples": len(ages)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="per staleness run")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    root = tempfile.mkdtemp(dir=args.dir)
    try:
        path = os.path.join(root, "db")
        with banyanstore.open(path, **OPTS) as w:
            for lo in range(0, args.num, 1000):
                with w.batch() as b:
                    for i in range(lo, min(lo + 1000, args.num)):
                        b.put(key(i), VALUE)
            w.compact()
        out: dict[str, Any] = {"num": args.num, "reads": read_phases(path, args.num, args.repeat)}
        out["refresh, nothing new (us)"] = 1e6 * refresh_latency(path)
        out["catch-up"] = catch_up(path, args.num // 4)
        out["staleness"] = {f"follow {ms} ms": staleness(root, ms, args.seconds) for ms in (100, 10)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=2, default=lambda x: round(x, 1)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
