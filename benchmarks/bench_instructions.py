"""Instructions per operation of the pure-Python engine, counted by cachegrind: this
checkout against other source trees (an older commit's checkout, say).  Instruction
counts are deterministic where wall time on a shared 2-core VM moves by several per cent,
so this is how "the pure-Python engine is no slower than before" is settled.

    python benchmarks/bench_instructions.py --tree ../old-checkout [--tree ...]
        [--phases get,multi_get,seek,scan,put,delete,compacted_get,compacted_multi_get,ts-query]
        [--keys 200000] [--json out.json]
    python benchmarks/bench_instructions.py --tree ../old-checkout --phases fillseq,fillrandom,ts-ingest

Each tree (its ``src`` directory; the first column is this checkout) builds its own
store: ``--keys`` puts of random 16-byte keys (``%016d`` below 4 x keys) with 100-byte
values, 8 MiB memtables, compaction off -- nine tables at 200,000 keys.  Each phase runs
on a fresh copy of that store under ``valgrind --tool=cachegrind --cache-sim=no`` at two
sizes, and the figure is the difference of the two counts over the difference of the
sizes: start-up, imports, the open and the first cache misses cancel.  Every run has
``PYTHONHASHSEED=0`` and ``BANYANSTORE_PURE_PYTHON=1``.

Phases (per operation): ``get`` (random keys, about a fifth present), ``multi_get`` (a
key, batches of 100), ``seek`` (``scan(start, limit=10)``), ``scan`` (a full scan, per
entry), ``put`` and ``delete`` (random keys on the reopened store with a 256 MiB memtable,
so no flush in the loop), and ``compacted_get`` and ``compacted_multi_get``, the reads
again on a copy of the store merged into one table by ``compact()``, and ``ts-query`` (per
query): bench_store.py's observability query -- ``scan(start, end)`` drained over one
random series' 100 points -- on a second store each tree builds the way ``ts-ingest``
below fills one: 1,000 series x 100 points in time order across series, 4 tables (printed:
a different table count would be different work), so a query merges ~25 entries from every
table. Whole write phases, not run unless named: ``fillseq`` and ``fillrandom`` (per put)
fill a fresh, empty store with 1 MiB memtables and compaction off, and close it: the puts
with every memtable switch, WAL rotation and cut and the flush work done in the writer's
process (sorting, the columns, pickling them for the flush worker, opening the new table,
the manifest edit). The flush worker process itself is not counted. ``ts-ingest`` (per
point) is bench_store.py's ts-ingest at 1,000 series: 16-byte keys (8-byte big-endian
series id, 8-byte big-endian timestamp), 50-200-byte values, one put per point, 10 MiB
memtables, then flush and close. ``--block-cache 262144`` makes most reads miss the cache
(read, checksum, decompress and decode a block). The worker uses only API every version
has had.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
HERE = os.path.dirname(BENCH_DIR)
SIZES = {"get": (20_000, 60_000), "multi_get": (20_000, 60_000), "seek": (5_000, 15_000),
         "scan": (1, 3), "put": (20_000, 60_000), "delete": (20_000, 60_000),
         "compacted_get": (20_000, 60_000), "compacted_multi_get": (20_000, 60_000),
         "ts-query": (1_000, 3_000)}
WHOLE_PHASES = {"fillseq": (20_000, 60_000), "fillrandom": (20_000, 60_000),
                "ts-ingest": (20_000, 60_000)}
"""Run only when named in ``--phases``: a fill of a fresh store, its flushes included."""
COMPACTED = "-compacted"  # the suffix of the built store's compacted copy
TIMESERIES = "-ts"  # the suffix of the built observability store
TS_SERIES, TS_STEPS, TS_WINDOW = 1_000, 100, 100
TS_MEMTABLE = 10 << 20  # ~25,000 points a memtable: four tables, as at 1M points and 64 MiB
TS_BASE_MS = 1_767_225_600_000  # 2026-01-01, 10 s between points, as in bench_store.py
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


# -- the worker: runs in the tree measured (PYTHONPATH), under valgrind ------------------------
def build(store: str, nkeys: int) -> None:
    import banyanstore

    rng = random.Random(7)
    with banyanstore.open(store, compaction=False, memtable_size=8 << 20) as s:
        for _ in range(nkeys):
            s.put(b"%016d" % rng.randrange(nkeys * 4), b"v" * 100)
    # The compacted phases read a copy merged into one table by compact(), as a user's
    # store is after a full compaction: one large table and a large index.
    shutil.copytree(store, store + COMPACTED)
    with banyanstore.open(store + COMPACTED, compaction=False, memtable_size=8 << 20) as s:
        s.compact()
    ts_ingest(store + TIMESERIES, TS_SERIES * TS_STEPS)
    with banyanstore.open(store + TIMESERIES, compaction=False) as s:
        tables = s.stats()["keyspaces"]["default"]["tables"]  # a different count is other work
    print(f"  ts-query's store: {TS_SERIES * TS_STEPS:,} points in {tables} tables", file=sys.stderr)


def ts_key(s: int, t: int) -> bytes:
    """bench_store.py's observability key: 8-byte big-endian series, 8-byte timestamp."""
    return s.to_bytes(8, "big") + (TS_BASE_MS + 10_000 * t).to_bytes(8, "big")


def ts_ingest(path: str, n: int) -> int:
    """bench_store.py's ts-ingest at a smaller scale: ``n`` points of ``TS_SERIES`` series
    (values of 50-200 bytes) into a fresh store, in time order across series, one put per
    point, 10 MiB memtables and compaction off; then flush and close.  Returns ``n``."""
    import banyanstore

    shutil.rmtree(path, ignore_errors=True)
    chunk = random.Random(11).randbytes(8192)
    vals = [chunk[i:i + 50 + (i * 37) % 151] for i in range(1024)]
    c = 0
    with banyanstore.open(path, compaction=False, memtable_size=TS_MEMTABLE) as s:
        put = s.put
        for t in range(n // TS_SERIES):
            for sid in range(TS_SERIES):
                put(ts_key(sid, t), vals[c & 1023])
                c += 1
        s.flush()
    return c


def ts_query(store: str, n: int, cache: int) -> int:
    """``n`` range counts of one random series over its ``TS_WINDOW`` points (bench_store.py's
    ``range_count``: a drained ``scan(start, end)``).  With the default cache the difference of
    the two runs is mostly cached blocks; bench_store.py at 1M points queries each series about
    twice, so about half its blocks are read cold: ``--block-cache 262144`` counts that path."""
    import banyanstore

    rng = random.Random(13)
    queries = [rng.randrange(TS_SERIES) for _ in range(n)]
    got = 0
    with banyanstore.open(store, compaction=False, block_cache_size=cache) as s:
        for sid in queries:
            for _ in s.scan(ts_key(sid, 0), ts_key(sid, TS_WINDOW)):
                got += 1
    if got != n * TS_WINDOW:
        raise RuntimeError(f"ts-query: {got} points, expected {n * TS_WINDOW}")
    return n


def fill(store: str, phase: str, n: int) -> int:
    """A whole fill phase: ``n`` puts into a fresh store beside ``store`` (1 MiB memtables,
    so a flush every ~3,000 puts), closed at the end; returns ``n``."""
    import banyanstore

    fresh = store + ".fill"
    shutil.rmtree(fresh, ignore_errors=True)
    keys = [b"%016d" % i for i in range(n)]
    if phase == "fillrandom":
        random.Random(11).shuffle(keys)
    with banyanstore.open(fresh, compaction=False, memtable_size=1 << 20) as s:
        put, value = s.put, b"w" * 100
        for k in keys:
            put(k, value)
    return n


def run_phase(store: str, phase: str, n: int, nkeys: int, cache: int) -> int:
    """Runs ``phase`` ``n`` times; returns the operations done (entries, for a scan)."""
    import banyanstore

    if phase == "ts-ingest":
        return ts_ingest(store + ".fill", n)
    if phase in WHOLE_PHASES:
        return fill(store, phase, n)
    if phase == "ts-query":
        return ts_query(store, n, cache)

    s = banyanstore.open(store, compaction=False, memtable_size=256 << 20, block_cache_size=cache)
    rng = random.Random(11)
    keys = [b"%016d" % rng.randrange(nkeys * 4) for _ in range(n)]
    done = n
    phase = phase.removeprefix("compacted_")
    if phase == "get":
        get = s.get
        for k in keys:
            get(k)
    elif phase == "multi_get":
        for i in range(0, n, 100):
            s.multi_get(keys[i:i + 100])
    elif phase == "seek":
        for k in keys:
            for _ in s.scan(start=k, limit=10):
                pass
    elif phase == "scan":
        done = sum(1 for _ in range(n) for _ in s.scan())
    elif phase == "put":
        put, value = s.put, b"w" * 100
        for k in keys:
            put(k, value)
    elif phase == "delete":
        delete = s.delete
        for k in keys:
            delete(k)
    s.close()
    return done


# -- the driver --------------------------------------------------------------------------------
def _env(tree: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.path.join(tree, "src"), "PYTHONHASHSEED": "0",
            "BANYANSTORE_PURE_PYTHON": "1"}


def count(tree: str, store: str, phase: str, n: int, args: argparse.Namespace,
          tmp: str) -> tuple[int, int]:
    """(instructions, operations) of one run of ``phase`` on a copy of ``store``."""
    copy = os.path.join(tmp, "run")
    shutil.rmtree(copy, ignore_errors=True)
    source = (store + COMPACTED if phase.startswith("compacted_")
              else store + TIMESERIES if phase == "ts-query" else store)
    shutil.copytree(source, copy)
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no",
         f"--cachegrind-out-file={os.path.join(tmp, 'cachegrind.out')}",
         sys.executable, os.path.abspath(__file__), "--worker", copy, phase, str(n),
         "--keys", str(args.keys), "--block-cache", str(args.block_cache)],
        env=_env(tree), capture_output=True, text=True, check=True)
    refs = _REFS.search(out.stderr)
    if refs is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")
    return int(refs.group(1).replace(",", "")), int(out.stdout.split()[-1])


def per_op(tree: str, phases: list[str], args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench_instr") as tmp:
        store = os.path.join(tmp, "store")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--build", store,
                        "--keys", str(args.keys)], env=_env(tree), check=True)
        figures = {}
        for phase in phases:
            sizes = SIZES.get(phase) or WHOLE_PHASES[phase]
            (i1, n1), (i2, n2) = (count(tree, store, phase, n, args, tmp) for n in sizes)
            figures[phase] = (i2 - i1) / (n2 - n1)
            print(f"  {tree}: {phase} {figures[phase]:,.0f}", file=sys.stderr)
        return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=[], help="another source tree to count")
    ap.add_argument("--phases", default=",".join(SIZES),
                    help="comma list of " + ", ".join([*SIZES, *WHOLE_PHASES]) + " (default: all but "
                         + " and ".join(WHOLE_PHASES) + ")")
    ap.add_argument("--keys", type=int, default=200_000, help="keys written to each store")
    ap.add_argument("--block-cache", type=int, default=64 << 20,
                    help="block_cache_size in bytes (default 64 MiB: the store's ~3 MB stay "
                         "cached; 262144 makes most reads miss)")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    ap.add_argument("--build", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        build(args.build, args.keys)
        return
    if args.worker:
        store, phase, n = args.worker
        print(run_phase(store, phase, int(n), args.keys, args.block_cache))
        return
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(SIZES) - set(WHOLE_PHASES))
    if unknown:
        ap.error(f"--phases: unknown {', '.join(unknown)}")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: it counts the instructions")
    trees = [HERE, *args.tree]
    results = {tree: per_op(tree, phases, args) for tree in trees}
    sys.path.insert(0, BENCH_DIR)
    from benchlib import print_table, tree_label

    base = results[trees[-1]]  # the last tree given: the older code, as a rule
    header = ["instructions per operation", *(tree_label(t) for t in trees)]
    rows = [[phase, *(f"{results[t][phase]:,.0f}" + ("" if t == trees[-1] else
                                                      f" ({results[t][phase] / base[phase] - 1:+.1%})")
                      for t in trees)] for phase in phases]
    print_table(f"pure-Python engine, {args.keys:,} keys, {args.block_cache:,}-byte block cache "
                "(against the last tree)", header, rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"keys": args.keys, "block_cache": args.block_cache,
                       "trees": {t: tree_label(t) for t in trees}, "per_op": results}, f, indent=1)


if __name__ == "__main__":
    main()
