"""Wall time of ``bench_store.py`` on this checkout against another source tree, the runs
alternated in ABBA order: how "no slower than the older code" is measured in wall time.

    python benchmarks/compare_trees.py --old ../old-checkout [--pairs 6]
        [--engine banyanstore-pure] [--json out.json] [-- bench_store.py arguments...]

Both trees run THIS checkout's ``bench_store.py`` (the same phases, keys and checks), each
against its own ``src`` (a scratch folder holds a copy of this ``benchmarks`` folder and a
link to the tree's ``src``).  A pair is one run of each tree; pairs alternate which tree
runs first (new-old, old-new, ...), so a machine that speeds up or slows down over a run --
these shared 2-core VMs drift by 10-30 % within minutes -- favours neither tree.

The table gives, per phase, each tree's median over its runs, the ratio new/old within
each pair (the runs of a pair are minutes apart, so these ratios are the figures to
trust), their median, and how many pairs came out at or above 1.0.  ``--engine
banyanstore`` compares the compiled cores (each tree's own build: the run stops if the
two trees' runs report different implementations).  Arguments after ``--`` go to
``bench_store.py`` (``--num 1000000`` by default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
HERE = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)

from benchlib import fmt_rate, print_table, tree_label  # noqa: E402


def stage(tree: str, scratch: str, name: str) -> str:
    """A folder with this checkout's benchmarks and ``tree``'s src: the script to run."""
    root = os.path.join(scratch, name)
    shutil.copytree(BENCH_DIR, os.path.join(root, "benchmarks"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink(os.path.abspath(os.path.join(tree, "src")), os.path.join(root, "src"))
    return os.path.join(root, "benchmarks", "bench_store.py")


def run_once(script: str, engine: str, bench_args: list[str], out: str, log: str) -> dict[str, Any]:
    """One bench_store.py run of ``engine``; its result (the first engine's)."""
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, script, "--engines", engine, "--json", out,
                               *bench_args], stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:  # the log may live in a scratch folder removed on exit: quote it
        with open(log) as fh:
            tail = fh.read()[-2000:]
        raise SystemExit(f"{script} exited with {proc.returncode}; the end of its output:\n{tail}")
    with open(out) as fh:
        result: dict[str, Any] = json.load(fh)["results"][0]
    if result.get("crashes") or result.get("errors"):
        raise SystemExit(f"{script}: the run failed ({log}): {result.get('crashes') or result.get('errors')}")
    return result


def implementation(result: dict[str, Any]) -> str:
    return str(result.get("info", {}).get("before_compaction", {}).get("implementation", "?"))


def compare(new: list[dict[str, Any]], old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per phase: both medians, the ratio within each pair, their median, pairs >= 1."""
    rows = []
    for phase in new[0]["phases"]:
        a = [r["phases"][phase]["rate"] for r in new]
        b = [r["phases"][phase]["rate"] for r in old]
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        rows.append({"phase": phase, "old": statistics.median(b), "new": statistics.median(a),
                     "ratios": ratios, "median_ratio": statistics.median(ratios),
                     "at_least_1": sum(r >= 1.0 for r in ratios)})
    rows.append({"phase": "peak RSS above baseline (MB)",
                 "old": statistics.median(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in old),
                 "new": statistics.median(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in new)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the other source tree (a checkout)")
    ap.add_argument("--pairs", type=int, default=6, help="runs of each tree (default 6)")
    ap.add_argument("--engine", default="banyanstore-pure", help="bench_store.py engine")
    ap.add_argument("--json", default=None, help="write every run's figures to this file")
    ap.add_argument("--keep-logs", default=None, help="folder for each run's output")
    ap.add_argument("bench_args", nargs="*", help="after --: bench_store.py arguments")
    args = ap.parse_args()
    if args.pairs < 1:
        ap.error("--pairs must be at least 1")
    if not os.path.isdir(os.path.join(args.old, "src", "banyanstore")):
        ap.error(f"--old: {args.old} has no src/banyanstore")
    bench_args = args.bench_args or ["--num", "1000000"]
    labels = {"new": tree_label(HERE), "old": tree_label(args.old)}
    runs: dict[str, list[dict[str, Any]]] = {"new": [], "old": []}
    with tempfile.TemporaryDirectory(prefix="compare_trees_") as scratch:
        scripts = {"new": stage(HERE, scratch, "new"), "old": stage(args.old, scratch, "old")}
        logs = args.keep_logs or scratch
        os.makedirs(logs, exist_ok=True)
        for i in range(args.pairs):
            for side in ("new", "old") if i % 2 == 0 else ("old", "new"):
                stem = os.path.join(logs, f"{side}-{i + 1}")
                result = run_once(scripts[side], args.engine, bench_args, stem + ".json", stem + ".log")
                runs[side].append(result)
                kinds = {implementation(r) for done in runs.values() for r in done}
                if len(kinds) > 1:  # a tree without its compiled core ran pure Python
                    raise SystemExit(f"the runs used different implementations: {sorted(kinds)}")
                print(f"pair {i + 1}/{args.pairs}: {side} ({labels[side]}, "
                      f"{implementation(result)}) done", file=sys.stderr, flush=True)
    rows = compare(runs["new"], runs["old"])
    table = [[r["phase"], fmt_rate(r["old"]), fmt_rate(r["new"]),
              " ".join(f"{x:.2f}" for x in r["ratios"]), f"{r['median_ratio']:.2f}",
              f"{r['at_least_1']}/{args.pairs}"] if "ratios" in r else
             [r["phase"], f"{r['old']:.0f}", f"{r['new']:.0f}", "", "", ""] for r in rows]
    print_table(f"{args.engine}: {labels['new']} (new) against {labels['old']} (old), "
                f"{args.pairs} pairs in ABBA order, bench_store.py {' '.join(bench_args)}",
                ["phase", "old (median)", "new (median)", "new/old by pair", "median", ">= 1.0"],
                table)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"engine": args.engine, "trees": labels, "bench_args": bench_args,
                       "rows": rows, "runs": runs}, fh, indent=1)


if __name__ == "__main__":
    main()
