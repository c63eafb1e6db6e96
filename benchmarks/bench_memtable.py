"""Micro-benchmark of the memtable: the compiled one against the pure-Python one.

    python benchmarks/bench_memtable.py [--n 300000] [--runs 3]

16-byte keys ``%016d`` in random order, 100-byte values, one version each, then a
second version of a tenth of them.  Per implementation, CPU time per entry
(``time.process_time``, median of ``--runs``; the shared machine disturbs it far less
than wall time) of:

* ``add``: the puts (the memtable's part of a put);
* ``get``: point lookups of present keys;
* ``scan``: ``visible_entries`` over the sorted keys in runs of 256 (a scan's memtable
  source), the key sort included (the first scan after the writes);
* ``hand-off``: what a flush costs the store's process: the Python memtable's columns
  pickled for the worker (``flush_columns`` + ``pickle.dumps``) against the compiled
  memtable's flush buffer made and pickled piece by piece.

and the memory: RSS growth after the adds (measured in a fresh subprocess per
implementation) against the bytes charged (``approx_bytes``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from benchlib import print_table, rss_mb  # noqa: E402

from banyanstore.lsm import memtable as memtable_mod  # noqa: E402

IMPLEMENTATIONS: dict[str, Callable[[], object]] = {"python": memtable_mod.PyMemtable}
if memtable_mod.NativeMemtable is not None:
    IMPLEMENTATIONS["native"] = memtable_mod.NativeMemtable


def workload(n: int) -> list[tuple[bytes, int, bytes]]:
    rng = random.Random(1)
    keys = [b"%016d" % i for i in range(n)]
    rng.shuffle(keys)
    value = random.Random(7).randbytes(50) * 2
    writes = [(k, v, value) for v, k in enumerate(keys, 1)]
    writes += [(k, n + v, value) for v, k in enumerate(keys[: n // 10], 1)]
    return writes


def cpu(fn: Callable[[], object]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def one_run(make: Callable[[], object], writes: list[tuple[bytes, int, bytes]]) -> dict[str, float]:
    mem = make()
    add = mem.add  # type: ignore[attr-defined]
    out = {"add": cpu(lambda: [add(k, v, x) for k, v, x in writes]) / len(writes)}
    probe = [k for k, _, _ in writes[:100_000]]
    get = mem.get  # type: ignore[attr-defined]
    out["get"] = cpu(lambda: [get(k, 1 << 62) for k in probe]) / len(probe)

    def scan() -> int:
        keys = mem.sorted_keys()  # type: ignore[attr-defined]
        total = 0
        for lo in range(0, len(keys), 256):
            total += len(mem.visible_entries(keys[lo:lo + 256], 1 << 62))  # type: ignore[attr-defined]
        return total
    out["scan"] = cpu(scan) / len(set(k for k, _, _ in writes))  # per key

    def hand_off() -> None:
        entries = mem.flush_entries()  # type: ignore[attr-defined]
        if isinstance(entries, tuple):
            pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            for piece in entries:
                pickle.dumps(piece, protocol=pickle.HIGHEST_PROTOCOL)
    out["hand-off"] = cpu(hand_off) / len(writes)
    return out


def memory(name: str, n: int) -> dict[str, float]:
    """RSS growth and bytes charged for the adds, in a fresh process."""
    code = (f"import sys; sys.argv = ['x', '--memory-of', {name!r}, '--n', '{n}']; "
            f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            "import bench_memtable; bench_memtable.main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    writes = workload(args.n)
    if args.memory_of:
        mem = IMPLEMENTATIONS[args.memory_of]()
        before = rss_mb()
        for k, v, x in writes:  # fresh key and value objects, as puts bring
            mem.add(k[:8] + k[8:], v, x[:50] + x[50:])  # type: ignore[attr-defined]
        print(json.dumps({"rss_mb": rss_mb() - before, "charged_mb": mem.approx_bytes / 2**20}))  # type: ignore[attr-defined]
        return
    figures: dict[str, dict[str, float]] = {}
    for name, make in IMPLEMENTATIONS.items():
        runs = [one_run(make, writes) for _ in range(args.runs)]
        figures[name] = {op: statistics.median(r[op] for r in runs) * 1e6 for op in runs[0]}
        figures[name].update(memory(name, args.n))
    names = list(figures)
    rows = [[op, *[f"{figures[n][op]:.2f}" for n in names]] for op in ("add", "get", "scan", "hand-off")]
    rows.append(["RSS growth (MB)", *[f"{figures[n]['rss_mb']:.0f}" for n in names]])
    rows.append(["bytes charged (MB)", *[f"{figures[n]['charged_mb']:.0f}" for n in names]])
    print_table(f"memtable, {len(writes):,} entries: µs of CPU per entry (median of {args.runs})",
                ["", *names], rows)


if __name__ == "__main__":
    main()
