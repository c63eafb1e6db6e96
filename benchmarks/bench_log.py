"""Benchmark the Log: appends (unsynced, synced from 1 and 8 threads and from 64 asyncio
tasks), batches, random gets.

Usage: ``python benchmarks/bench_log.py [--quick] [--dir DIR] [--modes sync,nonblocking,io_uring]``

For each IO mode (skipped, with the reason, where unavailable) every workload
runs 3 times on a fresh log of 100-byte records; the table shows medians.
Aims: >= 500k unsynced appends/s; 8 synced threads >= 5x one synced thread
(group commit: one fdatasync covers every record appended while the last ran).

REQUIRES: the ``banyanstore`` package importable (``PYTHONPATH=src`` or installed);
``rich`` for a nicer table (optional).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from banyanstore.errors import IOModeUnavailableError
from banyanstore.io import make_env
from banyanstore.log import Log
from banyanstore.options import Options

RECORD = bytes(range(100))
MODES = ("sync", "nonblocking", "io_uring")


def _open(root: str, mode: str, **kw: object) -> Log:
    return Log.open(tempfile.mkdtemp(dir=root), io_mode=mode, **kw)


def unsynced(root: str, mode: str, n: int) -> float:
    with _open(root, mode, wal_sync="never") as log:
        append = log.append
        t0 = time.perf_counter()
        for _ in range(n):
            append(RECORD)
        log.sync()  # the data has to reach the OS (and the disk) to count
        return n / (time.perf_counter() - t0)


def synced(root: str, mode: str, n: int, threads: int) -> float:
    with _open(root, mode, wal_sync="never") as log:
        per = n // threads
        barrier = threading.Barrier(threads + 1)

        def worker() -> None:
            barrier.wait()
            for _ in range(per):
                log.append(RECORD, sync=True)

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        return per * threads / (time.perf_counter() - t0)


def synced_tasks(root: str, mode: str, n: int, tasks: int) -> float:
    """``await log.append_async(..., sync=True)`` from ``tasks`` tasks on one event loop."""
    with _open(root, mode, wal_sync="never") as log:
        per = n // tasks

        async def writer() -> None:
            for _ in range(per):
                await log.append_async(RECORD, sync=True)

        async def main() -> None:
            await asyncio.gather(*(writer() for _ in range(tasks)))

        t0 = time.perf_counter()
        asyncio.run(main())
        return per * tasks / (time.perf_counter() - t0)


def batches(root: str, mode: str, n: int, size: int = 1000) -> float:
    with _open(root, mode, wal_sync="never") as log:
        batch = [RECORD] * size
        t0 = time.perf_counter()
        for _ in range(n // size):
            log.append_many(batch)
        log.sync()
        return n // size * size / (time.perf_counter() - t0)


def random_gets(root: str, mode: str, n: int, records: int) -> float:
    directory = tempfile.mkdtemp(dir=root)
    with Log.open(directory, io_mode=mode, wal_sync="never", segment_size=4 << 20) as log:
        for _ in range(0, records, 1000):
            log.append_many([RECORD] * 1000)
    with Log.open(directory, io_mode=mode) as log:  # old segments: sparse index built on first use
        seqs = [random.randint(1, records) for _ in range(n)]
        get = log.get
        t0 = time.perf_counter()
        for s in seqs:
            get(s)
        return n / (time.perf_counter() - t0)


def _median(fn: Callable[[], float], runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (a few seconds per mode)")
    ap.add_argument("--dir", default=None, help="where to put the logs (default: a temp dir)")
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args(argv)
    scale = 1 if args.quick else 4
    root = tempfile.mkdtemp(prefix="bench_log_", dir=args.dir)
    workloads: list[tuple[str, Callable[[str, str], float]]] = [
        ("append, no sync (rec/s)", lambda r, m: unsynced(r, m, 100_000 * scale)),
        ("append sync=True, 1 thread (rec/s)", lambda r, m: synced(r, m, 500 * scale, 1)),
        ("append sync=True, 8 threads (rec/s)", lambda r, m: synced(r, m, 2000 * scale, 8)),
        ("append_async sync=True, 64 tasks (rec/s)", lambda r, m: synced_tasks(r, m, 2000 * scale, 64)),
        ("append_many x1000, no sync (rec/s)", lambda r, m: batches(r, m, 250_000 * scale)),
        ("random get (ops/s)", lambda r, m: random_gets(r, m, 25_000 * scale, 100_000 * scale)),
    ]
    results: dict[str, dict[str, str]] = {}
    try:
        for mode in args.modes.split(","):
            try:
                make_env(Options(io_mode=mode)).close()
            except IOModeUnavailableError as exc:
                results[mode] = {name: f"skipped: {exc}" for name, _ in workloads}
                continue
            results[mode] = {}
            for name, fn in workloads:
                value = _median(lambda fn=fn, mode=mode: fn(root, mode), 3)
                results[mode][name] = f"{value:,.0f}"
                print(f"{mode:12} {name:40} {value:>12,.0f}", file=sys.stderr)
            one = float(results[mode][workloads[1][0]].replace(",", ""))
            eight = float(results[mode][workloads[2][0]].replace(",", ""))
            results[mode]["group commit speed-up (8 vs 1 thread)"] = f"{eight / one:.1f}x"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print_table(results)
    return 0


def _print_table(results: dict[str, dict[str, str]]) -> None:
    modes = list(results)
    rows = list(next(iter(results.values())).keys()) if results else []
    for r in results.values():
        rows += [k for k in r if k not in rows]
    title = (f"banyanstore Log, 100-byte records, median of 3 "
             f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        print(f"{'workload':42}" + "".join(f"{m:>22}" for m in modes))
        for row in rows:
            print(f"{row:42}" + "".join(f"{results[m].get(row, '-'):>22}" for m in modes))
        return
    table = Table(title=title)
    table.add_column("workload")
    for m in modes:
        table.add_column(m, justify="right")
    for row in rows:
        table.add_row(row, *(results[m].get(row, "-") for m in modes))
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
