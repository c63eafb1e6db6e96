"""Sustained-ingest benchmark of the Store with merges running.

    python benchmarks/bench_ingest.py [--num 5000000] [--modes thread,process]
        [--read-threads 1] [--json out.json] [--profile-dir /tmp/h_bench/prof]

K random puts (16-byte keys, 100-byte values that compress about 2:1); every second put
overwrites a random earlier key, so K/2 keys are live at the end.  Meanwhile a reader thread
does random gets of keys already acknowledged (and checks that every one is found).  For each
``compaction_mode`` (each in its own subprocess, so peak RSS is its own) it reports:

* sustained puts/s (puts / time spent in ``put`` calls, stalls included; key generation is
  excluded) and the wall-clock rate; p50/p99/p99.9/max put latency (every 64th put is timed, and
  every group of 64 puts is timed to catch the worst stall);
* reads/s during ingest, by the reader thread(s);
* write amplification = (stats()["flush"]["bytes_written"] + stats()["compaction"]
  ["bytes_written"]) / (K x 116 bytes of user data), at the end of ingest and after ``compact()``;
* space amplification after ``compact()`` = bytes of tables / (live keys x 116 bytes), also with
  the whole directory (WAL, manifest) counted;
* the table count sampled every second (max, final), stall count and time from ``stats()``;
* peak RSS of the process (``ru_maxrss``) and the largest total RSS of its descendant processes
  (merge workers, a forkserver; py-spy too when profiling) sampled every second.

After ``compact()`` a sample of keys is read back and checked, and a full scan must return
exactly the live keys.  Data goes to ``--dir`` (default /tmp/h_bench/ingest).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402
    descendants_rss_mb,
    dir_bytes,
    fmt_rate,
    parse_size,
    peak_rss_mb,
    print_summary,
    print_table,
    pyspy,
    rss_mb,
    src_fingerprint,
    summarize,
)

MULT = 0x9E3779B97F4A7C15  # odd, so j -> j * MULT mod 2**64 is a bijection: random-looking keys
MASK = (1 << 64) - 1
ENTRY = 16 + 100
NVALS = 4096
CHUNK = 1 << 16


def key_of(j: int) -> bytes:
    return b"%016x" % ((j * MULT) & MASK)


def percentile(sorted_xs: Sequence[float], p: float) -> float:
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(p / 100 * len(sorted_xs)))]


class Ingest:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        chunk = random.Random(7).randbytes(8192)
        self.vals = [chunk[(i * 53) % 8000:(i * 53) % 8000 + 50] * 2 for i in range(NVALS)]
        self.published = 0  # keys with id < published are acknowledged
        self.stop = threading.Event()
        self.reads = 0
        self.read_errors: list[str] = []
        self.timeline: list[dict[str, Any]] = []
        self.errors: list[str] = []

    # -- background threads -------------------------------------------------------------------
    def reader(self, store: Any, seed: int) -> None:
        rnd = random.Random(seed).random
        get = store.get
        try:
            while not self.stop.is_set():
                n = self.published
                if n == 0:
                    time.sleep(0.01)
                    continue
                keys = [key_of(int(rnd() * n)) for _ in range(100)]
                for k in keys:
                    if get(k) is None and len(self.read_errors) < 10:
                        self.read_errors.append(f"get({k!r}) returned None for an acknowledged key")
                self.reads += 100
        except BaseException as exc:  # noqa: BLE001 - reported, not hidden
            self.read_errors.append("reader thread crashed:\n" + "".join(traceback.format_exception(exc)))

    def monitor(self, store: Any, t0: float, every: float) -> None:
        last_print = t0
        while not self.stop.wait(every):
            try:
                st = store.stats()
            except BaseException as exc:  # noqa: BLE001
                self.errors.append(f"stats() failed during ingest: {exc!r}")
                return
            ks = st["keyspaces"]["default"]
            now = time.monotonic()
            s = {"t": round(now - t0, 2), "puts": self.puts_done, "reads": self.reads,
                 "tables": ks["tables"], "table_bytes": ks["table_bytes"],
                 "imms": ks["immutable_memtables"], "rss_mb": round(rss_mb(), 1),
                 "children_rss_mb": round(descendants_rss_mb(), 1),
                 "stalls": st.get("stalls", {}).get("count"),
                 "stall_s": st.get("stalls", {}).get("seconds"),
                 "flush_bytes": st.get("flush", {}).get("bytes_written"),
                 "merge_bytes": (st.get("compaction") or {}).get("bytes_written"),
                 "merges": (st.get("compaction") or {}).get("merges")}
            self.timeline.append(s)
            if now - last_print >= 10:
                last_print = now
                print(f"  [{self.args.worker}] t={s['t']:6.0f}s puts={s['puts']:>10,} "
                      f"tables={s['tables']:>3} imms={s['imms']} rss={s['rss_mb']:.0f}MB "
                      f"stalls={s['stalls']} ({s['stall_s']}s) merges={s['merges']}",
                      file=sys.stderr, flush=True)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import banyanstore
        a = self.args
        path = os.path.join(a.dir, f"db-{a.worker}")
        shutil.rmtree(path, ignore_errors=True)
        opts: dict[str, Any] = {"compaction_mode": a.worker, "io_mode": a.io_mode,
                                "compression": a.compression, "wal_sync": a.wal_sync,
                                "block_cache_size": a.block_cache}
        if a.memtable_size:
            opts["memtable_size"] = a.memtable_size
        rng = random.Random(a.seed)
        sample = set(rng.sample(range(max(1, a.num // 2)), min(2000, max(1, a.num // 2))))
        expect: dict[int, bytes] = {}
        gc.collect()
        out: dict[str, Any] = {"baseline_rss_mb": rss_mb(), "options": opts}
        store = banyanstore.open(path, **opts)
        self.puts_done = 0
        lat: list[int] = []
        group_max = 0
        put_time = 0.0
        vals = self.vals
        t_start = time.monotonic()
        threads = [threading.Thread(target=self.monitor, args=(store, t_start, a.sample_every),
                                    daemon=True)]
        threads += [threading.Thread(target=self.reader, args=(store, 100 + i), daemon=True)
                    for i in range(a.read_threads)]
        for t in threads:
            t.start()
        prof = os.path.join(a.profile_dir, f"ingest-{a.worker}.txt") if a.profile_dir else None
        if prof:
            os.makedirs(a.profile_dir, exist_ok=True)
        nnew = 0
        pc = time.perf_counter_ns
        with pyspy(prof):
            for base in range(0, a.num, CHUNK):
                # generate a chunk of the stream (not timed): even puts new keys, odd ones overwrite
                ids = []
                for i in range(base, min(a.num, base + CHUNK)):
                    if i & 1 == 0 or nnew == 0:
                        j = nnew
                        nnew += 1
                    else:
                        j = rng.randrange(nnew)
                    ids.append(j)
                    if j in sample:
                        expect[j] = vals[i & (NVALS - 1)]
                keys = [key_of(j) for j in ids]
                put = store.put
                tc0 = tprev = pc()
                i = base
                for k in keys:
                    if i & 63 == 63:
                        t1 = pc()
                        put(k, vals[i & (NVALS - 1)])
                        t2 = pc()
                        lat.append(t2 - t1)
                        if t2 - tprev > group_max:
                            group_max = t2 - tprev
                        tprev = t2
                    else:
                        put(k, vals[i & (NVALS - 1)])
                    i += 1
                put_time += (pc() - tc0) / 1e9
                self.puts_done = i
                self.published = nnew  # every key of the chunk is acknowledged
        wall = time.monotonic() - t_start
        reads = self.reads
        self.stop.set()
        for t in threads:
            t.join(timeout=60)
        st = store.stats()
        lat.sort()
        user_bytes = a.num * ENTRY
        out.update({
            "puts": a.num, "live_keys": nnew, "put_seconds": put_time, "wall_seconds": wall,
            "puts_per_s": a.num / put_time, "puts_per_s_wall": a.num / wall,
            "lat_us": {"p50": percentile(lat, 50) / 1e3, "p99": percentile(lat, 99) / 1e3,
                       "p999": percentile(lat, 99.9) / 1e3,
                       "max_sampled": (lat[-1] if lat else 0) / 1e3,
                       "max_group_of_64": group_max / 1e3, "samples": len(lat)},
            "reads": reads, "reads_per_s": reads / wall,
            "stalls_end_of_ingest": st.get("stalls"),
            "tables_max": max((s["tables"] for s in self.timeline),
                              default=st["keyspaces"]["default"]["tables"]),
            "imms_max": max((s["imms"] for s in self.timeline), default=0),
            "tables_end_of_ingest": st["keyspaces"]["default"]["tables"],
            "rss_max_sampled_mb": max((s["rss_mb"] for s in self.timeline), default=0),
            "children_rss_max_sampled_mb": max((s["children_rss_mb"] for s in self.timeline), default=0),
        })
        del lat
        if prof and os.path.exists(prof):
            out["profile"] = summarize(prof)
            print_summary(f"ingest {a.worker}", out["profile"])
        # settle: flush, then whole compaction
        t0 = time.monotonic()
        store.flush()
        out["flush_seconds"] = time.monotonic() - t0
        st = store.stats()
        fb = st["flush"]["bytes_written"]
        mb = (st.get("compaction") or {}).get("bytes_written", 0)
        out["write_amp_end_of_ingest"] = (fb + mb) / user_bytes
        out["bytes_flushed"], out["bytes_merged"] = fb, mb
        out["compaction_stats_end_of_ingest"] = st.get("compaction")
        out["tables_before_compact"] = st["keyspaces"]["default"]["tables"]
        t0 = time.monotonic()
        store.compact()
        out["compact_seconds"] = time.monotonic() - t0
        st = store.stats()
        ks = st["keyspaces"]["default"]
        live = nnew * ENTRY
        out["write_amp_after_compact"] = (st["flush"]["bytes_written"]
                                          + (st.get("compaction") or {}).get("bytes_written", 0)) / user_bytes
        out["tables_after_compact"] = ks["tables"]
        out["table_bytes_after_compact"] = ks["table_bytes"]
        out["space_amp"] = ks["table_bytes"] / live
        out["space_amp_dir"] = dir_bytes(path) / live
        out["stalls"] = st.get("stalls")
        out["compaction_stats"] = st.get("compaction")
        # verify
        bad = [(j, store.get(key_of(j))) for j, v in expect.items() if store.get(key_of(j)) != v]
        if bad:
            self.errors.append(f"after compact(): {len(bad)} of {len(expect)} sampled keys wrong, e.g. "
                               f"{key_of(bad[0][0])!r} -> {bad[0][1]!r:.60}")
        t0 = time.monotonic()
        n = 0
        for _ in store.scan():
            n += 1
        out["readseq_after_compact_per_s"] = n / (time.monotonic() - t0)
        if n != nnew:
            self.errors.append(f"after compact(): scan returned {n} entries, expected {nnew} live keys")
        store.close()
        out["peak_rss_mb"] = peak_rss_mb()
        out["peak_rss_children_mb"] = peak_rss_mb(children=True)
        out["errors"] = self.errors + self.read_errors
        out["timeline"] = self.timeline
        if not a.keep:
            shutil.rmtree(path, ignore_errors=True)
        return out


def worker(args: argparse.Namespace) -> None:
    out: dict[str, Any] = {"mode": args.worker}
    try:
        out.update(Ingest(args).run())
    except BaseException as exc:  # report precisely; the parent prints it
        out["crash"] = "".join(traceback.format_exception(exc))
        print(out["crash"], file=sys.stderr, flush=True)
        out["peak_rss_mb"] = peak_rss_mb()
    with open(args.out, "w") as fh:
        json.dump(out, fh, default=str)


def spawn(mode: str, args: argparse.Namespace, passthrough: list[str]) -> dict[str, Any]:
    fd, out = tempfile.mkstemp(prefix="bench_ingest_", suffix=".json", dir=args.dir)
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--out", out, *passthrough]
    try:
        rc: int | str = subprocess.run(cmd, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        rc = f"timeout after {args.timeout} s (the worker was killed)"
    try:
        with open(out) as fh:
            res: dict[str, Any] = json.load(fh)
    except (OSError, json.JSONDecodeError):
        res = {"mode": mode, "crash": f"worker exited with {rc} and wrote no result"}
    os.unlink(out)
    if rc != 0 and "crash" not in res:
        res["crash"] = f"worker exited with {rc}"
    return res


def report(results: list[dict[str, Any]], n: int) -> None:
    def g(r: dict[str, Any], *path: str, fmt: str = "{:.2f}") -> str:
        x: Any = r
        for p in path:
            if not isinstance(x, dict) or p not in x:
                return "—"
            x = x[p]
        return fmt.format(x) if isinstance(x, (int, float)) else str(x)

    rate = lambda r, k: fmt_rate(r.get(k)) if k in r else "—"  # noqa: E731
    rows = [
        ["sustained puts/s (time in put)", *[rate(r, "puts_per_s") for r in results], "≥ 200k"],
        ["puts/s, wall clock", *[rate(r, "puts_per_s_wall") for r in results], ""],
        ["put latency p50 (µs)", *[g(r, "lat_us", "p50", fmt="{:.1f}") for r in results], ""],
        ["put latency p99 (µs)", *[g(r, "lat_us", "p99", fmt="{:.1f}") for r in results], ""],
        ["put latency p99.9 (µs)", *[g(r, "lat_us", "p999", fmt="{:.0f}") for r in results], ""],
        ["worst group of 64 puts (ms)",
         *[f"{r['lat_us']['max_group_of_64'] / 1e3:.0f}" if "lat_us" in r else "—" for r in results], ""],
        ["reads/s during ingest", *[rate(r, "reads_per_s") for r in results], ""],
        ["tables: max during ingest", *[g(r, "tables_max", fmt="{}") for r in results], "bounded"],
        ["tables: end of ingest", *[g(r, "tables_end_of_ingest", fmt="{}") for r in results], ""],
        ["immutable memtables: max", *[g(r, "imms_max", fmt="{}") for r in results], ""],
        ["stalls (count / s)", *[f"{r['stalls']['count']} / {r['stalls']['seconds']:.1f}"
                                 if isinstance(r.get("stalls"), dict) else "—" for r in results], ""],
        ["write amp, end of ingest", *[g(r, "write_amp_end_of_ingest") for r in results], ""],
        ["write amp, after compact()", *[g(r, "write_amp_after_compact") for r in results], ""],
        ["space amp after compact() (tables)", *[g(r, "space_amp") for r in results], "≤ 1.5"],
        ["space amp after compact() (dir)", *[g(r, "space_amp_dir") for r in results], ""],
        ["compact() seconds", *[g(r, "compact_seconds", fmt="{:.1f}") for r in results], ""],
        ["peak RSS (MB)", *[g(r, "peak_rss_mb", fmt="{:.0f}") for r in results], "< 500"],
        ["child processes' RSS, max sampled (MB)",
         *[g(r, "children_rss_max_sampled_mb", fmt="{:.0f}") for r in results], ""],
    ]
    print_table(f"bench_ingest: {n:,} random puts (half overwrites), 16 B keys, 100 B values, "
                "concurrent reader", ["metric", *[f"compaction_mode={r['mode']}" for r in results], "aim"],
                rows)
    for r in results:
        for e in r.get("errors", []):
            print(f"ERROR {r['mode']}: {e}")
        if r.get("crash"):
            print(f"CRASH {r['mode']}:\n{r['crash']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=5_000_000, help="puts (default 5,000,000)")
    ap.add_argument("--modes", default="thread,process", help="compaction modes to compare")
    ap.add_argument("--read-threads", type=int, default=1)
    ap.add_argument("--io-mode", default="sync", choices=["sync", "nonblocking", "io_uring", "auto"])
    ap.add_argument("--compression", default="lz4", choices=["none", "lz4", "zstd"])
    ap.add_argument("--block-cache", type=parse_size, default=64 << 20)
    ap.add_argument("--wal-sync", default="interval", choices=["always", "interval", "never"])
    ap.add_argument("--memtable-size", type=parse_size, default=0, help="default: the store's")
    ap.add_argument("--sample-every", type=float, default=1.0, help="seconds between stats() samples")
    ap.add_argument("--dir", default="/tmp/h_bench/ingest")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per mode")
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile-dir", default=None, help="py-spy profile of the ingest goes here")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    if args.worker:
        worker(args)
        return
    argv, passthrough, i = sys.argv[1:], [], 0
    while i < len(argv):
        if argv[i] in ("--modes", "--json", "--timeout"):
            i += 2
            continue
        if argv[i].split("=")[0] not in ("--modes", "--json", "--timeout"):
            passthrough.append(argv[i])
        i += 1
    src = src_fingerprint()
    print(f"banyanstore source {src}", file=sys.stderr)
    results = [spawn(m, args, passthrough) for m in args.modes.split(",")]
    report(results, args.num)
    print(f"banyanstore source {src}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"num": args.num, "src": src, "results": results}, fh, indent=1, default=str)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
