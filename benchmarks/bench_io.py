"""Micro-benchmark of the IO backends: random 4 KiB ``read_batch`` throughput.

For each source (page cache, O_DIRECT) and batch size (64, 256) it times the
``sync``, ``nonblocking`` and ``io_uring`` backends reading random 4 KiB-aligned
blocks of one file (256 MiB by default) and prints the median of 3 runs, with
the CPU time each read cost the process.  O_DIRECT goes through the backends'
own ``direct_io=True`` path (aligned mmap buffers; ``os.preadv`` for sync and
nonblocking, an mmap'd buffer registered in the sqes for io_uring).

    python benchmarks/bench_io.py [--dir bench-data/io] [--size-mib 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from banyanstore.io.base import Env  # noqa: E402
from banyanstore.io.posix import PosixEnv  # noqa: E402
from banyanstore.io.threaded import ThreadedEnv  # noqa: E402
from banyanstore.io.uring import UringEnv  # noqa: E402
from banyanstore.io.uring_probe import probe_io_uring  # noqa: E402

BLOCK = 4096
MODES = ("sync", "nonblocking", "io_uring")


def make(mode: str, direct: bool, threads: int) -> Env:
    if mode == "sync":
        return PosixEnv(direct_io=direct)
    if mode == "nonblocking":
        return ThreadedEnv(threads=threads, direct_io=direct)
    return UringEnv(entries=256, direct_io=direct)


def prepare(path: str, size: int) -> None:
    """Create the data file once (random bytes, so nothing compresses or dedups)."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for i in range(size >> 20):
            fh.write(chunk[i % 4096:] + chunk[:i % 4096])
        fh.flush()
        os.fsync(fh.fileno())


def warm(path: str) -> None:
    with open(path, "rb") as fh:
        while fh.read(8 << 20):
            pass


def one_run(env: Env, path: str, size: int, batch: int, reads: int, seed: int) -> tuple[float, float]:
    """(reads/s, CPU µs per read) for ``reads`` random block reads in batches of ``batch``."""
    f = env.open_readable(path)
    rng = random.Random(seed)
    blocks = size // BLOCK
    batches = [[(f, rng.randrange(blocks) * BLOCK, BLOCK) for _ in range(batch)]
               for _ in range(reads // batch)]
    env.read_batch(batches[0])  # start workers / rings outside the timing
    t0, c0 = time.perf_counter(), time.process_time()
    for reqs in batches:
        out = env.read_batch(reqs)
        assert len(out[-1]) == BLOCK
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    f.close()
    n = len(batches) * batch
    return n / wall, cpu / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="bench-data/io")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cached-reads", type=int, default=65536)
    ap.add_argument("--direct-reads", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    size = args.size_mib << 20
    path = os.path.join(args.dir, "bench_io.dat")
    prepare(path, size)
    modes = [m for m in MODES if m != "io_uring" or probe_io_uring(None) is None]
    direct_ok = probe_io_uring(type("O", (), {"direct_io": True})(), directory=args.dir) is None
    print(f"file {path}: {args.size_mib} MiB; {args.runs} runs each, medians; "
          f"nonblocking = {args.threads} threads; io_uring ring = 256 entries")
    header = f"{'source':<11} {'batch':>5} | " + " | ".join(f"{m:>22}" for m in modes)
    print(header)
    print("-" * len(header))
    for source in ("page cache", "O_DIRECT"):
        direct = source == "O_DIRECT"
        if direct and not direct_ok:
            print("O_DIRECT: not supported here; skipped")
            continue
        for batch in (64, 256):
            cells = []
            for mode in modes:
                env = make(mode, direct, args.threads)
                runs = []
                for r in range(args.runs):
                    if not direct:
                        warm(path)
                    reads = args.direct_reads if direct else args.cached_reads
                    runs.append(one_run(env, path, size, batch, reads, seed=r))
                env.close()
                rate = statistics.median(x for x, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                cells.append(f"{rate / 1000:8.1f}k/s {cpu:6.1f}µs cpu")
            print(f"{source:<11} {batch:>5} | " + " | ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
