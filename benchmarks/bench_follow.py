"""Benchmark read-only stores that follow a writer (lsm/follower.py).

Usage: ``python benchmarks/bench_follow.py [--num 200000] [--repeat 3] [--json FILE]``

Phases (medians of ``--repeat`` runs, side by side in one process):

* ``get``, ``multi_get``, ``scan`` on the writer's handle and on read-only handles:
  without following, and following at 100 ms, 10 ms and 1 ms -- the cost of the
  follower's read path and of its background refreshes, as operations per CPU second
  of the process (all threads);
* ``refresh()`` with nothing new: its latency (what each ``follow`` tick costs), and
  the CPU share of an idle follow thread;
* catch-up: WAL records a ``refresh()`` applies per CPU second after the writer wrote
  ``--num / 4`` unsynced puts, against the writer's own puts per CPU second;
* staleness: a writer process stamps ``clock`` with the wall time every millisecond
  (``sync=True``, then acknowledged on its stdout) while loading bulk data; a follower
  samples it and reports how far behind the newest acknowledged stamp it is (median,
  p99, max), per ``follow_interval_ms``.

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
import threading
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
    stamp = b"%.6f" % time.time()
    s.put(b"clock", stamp, sync=True)
    print(stamp.decode(), flush=True)
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


def clock() -> float:
    """CPU seconds of this process, every thread (a following store's refreshes
    included): on a shared machine far steadier than wall time."""
    return time.process_time()


def read_phases(path: str, num: int, repeat: int) -> dict[str, dict[str, float]]:
    """Each configuration alone (only its own handle open), the rounds interleaved so
    that the machine's noise spreads over all of them; medians of operations per CPU
    second."""
    rng = random.Random(1)
    keys = [key(rng.randrange(num)) for _ in range(50_000)]
    configs: dict[str, dict[str, Any]] = {"writer": {"compaction_mode": "thread"},
                                          "read-only": {"read_only": True}}
    for ms in (100, 10, 1):
        configs[f"follow {ms} ms"] = {"read_only": True, "follow": True, "follow_interval_ms": ms}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in configs}

    def measure(name: str, h: Any) -> None:
        for k in keys[:20_000]:  # warm this handle's block cache
            h.get(k)
        t0 = clock()
        for k in keys:
            h.get(k)
        t1 = clock()
        for lo in range(0, len(keys), 100):
            h.multi_get(keys[lo:lo + 100])
        t2 = clock()
        n = 0
        for k in keys[:5000]:
            n += sum(1 for _ in h.scan(start=k, limit=10))
        t3 = clock()
        for phase, value in (("get/s", len(keys) / (t1 - t0)),
                             ("multi_get keys/s", len(keys) / (t2 - t1)),
                             ("scan entries/s", n / (t3 - t2))):
            samples[name].setdefault(phase, []).append(value)

    for _ in range(repeat):
        for name, kw in configs.items():
            with banyanstore.open(path, io_mode="sync", **kw) as h:
                measure(name, h)
    return {name: {phase: statistics.median(v) for phase, v in phases.items()}
            for name, phases in samples.items()}


def idle_follow_cpu(path: str, seconds: float) -> dict[str, float]:
    """CPU share the follow thread takes while the writer is idle, per interval."""
    out = {}
    for ms in (100, 10, 1):
        with banyanstore.open(path, read_only=True, io_mode="sync", follow=True,
                              follow_interval_ms=ms):
            t0, w0 = clock(), time.perf_counter()
            time.sleep(seconds)
            out[f"follow {ms} ms"] = 100 * (clock() - t0) / (time.perf_counter() - w0)
    return out


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
        t0 = clock()
        for i in range(num):
            w.put(b"new%010d" % i, VALUE)
        w.sync()
        put_rate = num / (clock() - t0)
        t0 = clock()
        r.refresh()
        took = clock() - t0
        assert r.version == w.version
        return {"writer puts/s": put_rate, "refresh applies records/s": (w.version - base) / took}


def staleness(root: str, interval_ms: int, seconds: float) -> dict[str, float]:
    """How far behind the writer a follower is: at each sample, the newest stamp the
    writer has acknowledged (it prints each after its synced put) minus the stamp the
    follower shows.  Pauses of the writer itself do not count."""
    path = tempfile.mkdtemp(dir=root)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path, str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    acked = [0.0]

    def read_acks() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked[0] = float(line)

    t = threading.Thread(target=read_acks, daemon=True)
    t.start()
    lags = []
    with banyanstore.open(path, read_only=True, io_mode="sync", follow=True,
                          follow_interval_ms=interval_ms) as r:
        while proc.poll() is None:
            newest = acked[0]
            stamp = r.get(b"clock")
            if stamp is not None and newest:
                lags.append(max(0.0, newest - float(stamp)))
            time.sleep(0.001)
    proc.wait()
    t.join()
    lags.sort()
    return {"median ms": 1000 * lags[len(lags) // 2], "p99 ms": 1000 * lags[int(len(lags) * 0.99)],
            "max ms": 1000 * lags[-1], "samples": len(lags)}


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
        out["idle follow thread, CPU %"] = idle_follow_cpu(path, 3.0)
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
