"""Run every benchmark script of this directory, one after the other (``make bench``).

    python benchmarks/run_all.py [--long] [--only store,log] [--json-dir DIR] [--dry-run]

The default is the short form of each script (a few minutes in all on an idle
2-core machine): enough to see that everything runs and to compare ratios with
a previous short run.  ``--long`` runs the long forms, whose figures the README
and ``docs/`` quote (an hour or more).  Each script runs in its own process
with this interpreter; ``--json-dir`` collects the JSON results of the scripts
that write JSON.  The exit code is the number of scripts that failed (0: all ran).

Every ``bench_*.py`` next to this file must have an entry in :data:`PLAN`
(``tests/test_docs.py`` checks it), so a new benchmark is never left out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bench:
    """One script: its arguments in the short and the long form."""

    script: str
    short: tuple[str, ...]
    long: tuple[str, ...]
    writes_json: bool = False


PLAN: dict[str, Bench] = {
    "store": Bench("bench_store.py", ("--quick", "--peers"), ("--num", "1000000", "--peers"), True),
    "ingest": Bench("bench_ingest.py", ("--num", "200000"), ("--num", "5000000"), True),
    "log": Bench("bench_log.py", ("--quick",), ()),
    "memtable": Bench("bench_memtable.py", ("--n", "100000", "--runs", "1"), ("--n", "1000000",)),
    "sstable": Bench("bench_sstable.py", ("--n", "100000", "--lookups", "20000"), ()),
    "io": Bench("bench_io.py", ("--size-mib", "32", "--runs", "1", "--cached-reads", "8192",
                                "--direct-reads", "1024"), ()),
    "follow": Bench("bench_follow.py", ("--num", "20000", "--repeat", "1", "--seconds", "1"), (), True),
    "instructions": Bench("bench_instructions.py", ("--keys", "20000", "--phases", "get,seek,put"),
                          ("--keys", "200000"), True),
    "wal-designs": Bench("bench_wal_designs.py", ("--records", "200000", "--runs", "3"),
                         ("--records", "2000000", "--runs", "5", "--sync-every", "10000")),
}


def commands(names: list[str], long: bool, json_dir: Path | None) -> list[tuple[str, list[str]]]:
    """``(name, argv)`` of each benchmark to run."""
    out = []
    for name in names:
        b = PLAN[name]
        argv = [sys.executable, str(HERE / b.script), *(b.long if long else b.short)]
        if json_dir is not None and b.writes_json:
            argv += ["--json", str(json_dir / f"{name}.json")]
        out.append((name, argv))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="the long forms (an hour or more)")
    ap.add_argument("--only", default=",".join(PLAN), help=f"comma list of: {', '.join(PLAN)}")
    ap.add_argument("--json-dir", type=Path, default=None, help="write JSON results here")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in PLAN]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(PLAN)}")
    if args.json_dir is not None and not args.dry_run:
        args.json_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, cmd in commands(names, args.long, args.json_dir):
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        if args.dry_run:
            continue
        began = time.monotonic()
        code = subprocess.call(cmd)
        print(f"== {name}: exit {code} after {time.monotonic() - began:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
