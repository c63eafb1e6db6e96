"""Micro-benchmark of one table: build, point gets (hit / miss, warm / cold cache),
full iteration, seek + 10, batched lookups, bloom probes.

    python benchmarks/bench_sstable.py [--n 1000000] [--compression lz4] [--block-size 16384]

16-byte keys ``key%013d`` (even numbers present, odd numbers absent but inside
the fences, so misses exercise the bloom filter), 100-byte values that compress
about 2:1 (like db_bench).  Every figure is the median of 3 runs.

``--clock cpu`` (default) times with ``time.process_time``: on a shared
machine wall time also counts waiting for a CPU; page-cache reads are system
time and still counted.  ``--clock wall`` uses ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from banyanstore.io.posix import PosixEnv  # noqa: E402
from banyanstore.options import Options  # noqa: E402
from banyanstore.sstable import BlockCache, TableBuilder, TableReader, key_hash, read_blocks  # noqa: E402

CLOCK: Callable[[], float] = time.process_time


def median_rate(fn: Callable[[], int], runs: int = 3) -> tuple[float, float]:
    """(ops per second, ns per op), median of ``runs`` runs; ``fn`` returns its op count."""
    rates = []
    for _ in range(runs):
        t0 = CLOCK()
        ops = fn()
        rates.append(ops / max(CLOCK() - t0, 1e-9))
    rate = statistics.median(rates)
    return rate, 1e9 / rate


def report(name: str, result: tuple[float, float], unit: str = "ops/s") -> None:
    rate, ns = result
    print(f"  {name:<40} {rate:>12,.0f} {unit:<10} {ns:>9,.0f} ns/op", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--compression", default="lz4", choices=["none", "lz4", "zstd"])
    ap.add_argument("--block-size", type=int, default=16 * 1024)
    ap.add_argument("--bloom-bits", type=int, default=12)
    ap.add_argument("--lookups", type=int, default=200_000)
    ap.add_argument("--dir", default=None, help="directory for the table (default: a temp dir)")
    ap.add_argument("--clock", default="cpu", choices=["cpu", "wall"])
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    rng = random.Random(42)
    n = args.n
    keys = [b"key%013d" % (2 * i) for i in range(n)]
    chunk = bytes(rng.getrandbits(8) for _ in range(4096))

    def value(i: int) -> bytes:
        off = (i * 37) % 4000
        return chunk[off:off + 50] * 2  # ~2:1 compressible

    env = PosixEnv()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = os.path.join(d, "bench.sst")
        opts = Options(block_size=args.block_size, compression=args.compression,
                       bloom_bits_per_key=args.bloom_bits)
        print(f"table: {n:,} entries, 16 B keys, 100 B values, block_size={args.block_size}, "
              f"compression={args.compression}, bloom_bits_per_key={args.bloom_bits}")
        entries = [(k, 1, value(i)) for i, k in enumerate(keys)]

        def build() -> int:
            b = TableBuilder(env, path, opts)
            b.add_many(entries)
            build.meta = b.finish()  # type: ignore[attr-defined]
            return n

        report("build (add_many + finish + fsync)", median_rate(build), "entries/s")
        meta = build.meta  # type: ignore[attr-defined]
        print(f"  file {meta.file_size / 1e6:.1f} MB, {meta.block_count} blocks, "
              f"raw {meta.raw_size / 1e6:.1f} MB")

        t0 = time.perf_counter()
        cache = BlockCache(1 << 40)
        reader = TableReader.open(env, path, cache)
        print(f"  open: {(time.perf_counter() - t0) * 1e3:.1f} ms")

        hits = rng.sample(keys, min(args.lookups, n))
        misses = [b"key%013d" % (2 * rng.randrange(n) + 1) for _ in range(args.lookups)]
        top = 1 << 64

        # warm the cache with every block
        t0 = time.perf_counter()
        for _ in reader.scan():
            pass
        print(f"  cache warmed: {cache.usage / 1e6:.0f} MB charged for {len(cache)} blocks "
              f"({cache.usage / n:.0f} B/entry) in {time.perf_counter() - t0:.2f} s")

        def gets(ks: list[bytes]) -> Callable[[], int]:
            def run() -> int:
                get = reader.get
                for k in ks:
                    get(k, top)
                return len(ks)
            return run

        print("point lookups")
        report("get hit, warm cache", median_rate(gets(hits)))
        report("get miss (bloom), warm cache", median_rate(gets(misses)))
        hashes = [key_hash(k) for k in misses]

        def gets_hashed() -> int:
            get = reader.get
            for k, h in zip(misses, hashes, strict=True):
                get(k, top, h)
            return len(misses)

        report("get miss, hash precomputed", median_rate(gets_hashed))

        def probes() -> int:
            mc = reader.may_contain
            for h in hashes:
                mc(h)
            return len(hashes)

        report("bloom may_contain(hash) call", median_rate(probes))
        fps = sum(1 for h in hashes if reader.may_contain(h))
        print(f"  bloom false-positive rate: {fps / len(hashes) * 100:.3f}% "
              f"({fps} of {len(hashes):,} absent keys)")
        cold = TableReader.open(env, path, BlockCache(0))
        report("get hit, no cache (read+crc+lz4+keys)",
               median_rate(lambda: [cold.get(k, top) for k in hits[:20_000]] and 20_000))
        small = TableReader.open(env, path, BlockCache(opts.block_cache_size))
        for k in hits:
            small.get(k, top)
        report(f"get hit, {opts.block_cache_size >> 20} MiB cache (default size)",
               median_rate(lambda: [small.get(k, top) for k in hits] and len(hits)))
        print(f"  ({small.cache.usage / 1e6:.0f} MB cached: "
              f"{small.cache.usage / cache.usage * 100:.0f}% of the table's blocks)")
        small.close()

        print("iteration")

        def scan_all(reader: TableReader, reverse: bool = False) -> int:
            c = 0
            for _k, _v, _val in reader.scan(reverse=reverse, fill_cache=False):
                c += 1
            return c

        report("full scan, warm cache", median_rate(lambda: scan_all(reader)), "entries/s")
        report("full reverse scan, warm cache", median_rate(lambda: scan_all(reader, True)), "entries/s")
        report("full scan, no cache", median_rate(lambda: scan_all(cold)), "entries/s")
        seeks = hits[:50_000]

        def seek10() -> int:
            scan = reader.scan
            for k in seeks:
                for _ in islice(scan(k), 10):
                    pass
            return len(seeks)

        report("seek + 10 entries, warm cache", median_rate(seek10), "seeks/s")

        def runs_all() -> int:
            return sum(len(run) for run in reader.scan_runs(fill_cache=False))

        report("full scan_runs (lists per block), warm", median_rate(runs_all), "entries/s")

        def seek_run() -> int:
            scan_runs = reader.scan_runs
            for k in seeks:
                next(scan_runs(k))
            return len(seeks)

        report("seek + first run (<= 32 entries), warm", median_rate(seek_run), "seeks/s")

        print("batched lookups (100 keys per batch)")

        def batched(r: TableReader) -> Callable[[], int]:
            def run() -> int:
                for i in range(0, 20_000, 100):
                    ks = hits[i:i + 100]
                    plan = r.plan_blocks(ks, top)
                    blocks = r.load_blocks(plan)
                    for k, no in zip(ks, plan, strict=True):
                        if no >= 0:
                            r.get_in_block(blocks[no], k, top)
                return 20_000
            return run

        report("plan + load + get_in_block, warm", median_rate(batched(reader)), "keys/s")
        report("plan + load + get_in_block, no cache", median_rate(batched(cold)), "keys/s")

        def cross() -> int:
            reqs = [(cold, cold.locate(k, top)) for k in hits[:2000]]
            read_blocks(env, reqs)
            return 2000

        report("read_blocks (one read_batch), no cache", median_rate(cross), "keys/s")
        print(f"  cache stats: {cache.stats()}")
        reader.close()
        cold.close()


if __name__ == "__main__":
    main()
