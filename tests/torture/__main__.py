"""The long form of the torture harness, with a summary of figures.

    python -m tests.torture --hours 2                 # every part, time shared by weight
    python -m tests.torture --minutes 10 --parts kill # one part
    python -m tests.torture --hours 3 --parallel      # every part at once, each for 3 hours
    make torture                                      # the same as --hours 2

Run from the repository root with the package importable (``make torture`` does both).
Each part runs in turn for its share of the time; the figures of every part are
printed as they finish and, with ``--out FILE``, written as JSON.  Failures are
recorded in the figures (``failures``, ``problems`` or ``error``, with the seed to
reproduce them) and the run goes on; the exit status is 1 if there was any.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PartFn = Callable[[Path, int, float], dict[str, Any]]


def _kill(root: Path, seed: int, seconds: float) -> dict[str, Any]:
    from .kill import run_for
    return run_for(root, seed, seconds)


def _fuzz(root: Path, seed: int, seconds: float) -> dict[str, Any]:
    """Every decoder in turn, each in its memory-limited subprocess, for an equal share."""
    from .fuzz import DECODERS, run_subprocess
    out: dict[str, Any] = {"inputs": 0, "decoders": {}}
    share = seconds / len(DECODERS)
    for n, name in enumerate(DECODERS):
        result = run_subprocess(name, 10**9, seed + n, seconds=share, timeout=share * 2 + 600)
        out["decoders"][name] = {"inputs": result.inputs, **dict(result.verdicts)}
        out["inputs"] += result.inputs
        if result.failures:
            out.setdefault("failures", []).extend(result.failures[:5])
    return out


def _faults(root: Path, seed: int, seconds: float) -> dict[str, Any]:
    from .faults import run_subprocess
    return run_subprocess(10**9, seed, seconds=seconds, timeout=seconds * 2 + 600)


def _stress(root: Path, seed: int, seconds: float) -> dict[str, Any]:
    """Runs of five minutes on fresh stores, alternating unsynced and synced writers."""
    from .stress import run_subprocess
    total: dict[str, Any] = {"runs": 0}
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 5:
        synced = total["runs"] % 2 == 1
        kw: dict[str, Any] = dict(sync_share=1.0, owners=6, batchers=2, readers=1) if synced else {}
        try:
            figures = run_subprocess(seed + total["runs"], min(300.0, left), **kw)
        except AssertionError as exc:
            total.setdefault("failures", []).append(str(exc)[:6000])
            figures = {}
        total["runs"] += 1
        for name, n in figures.items():
            total[name] = round(total.get(name, 0) + n, 1)
    return total


def _readers(root: Path, seed: int, seconds: float) -> dict[str, Any]:
    """Runs of one minute: a writer and two reader processes on a fresh store."""
    import shutil

    from .readers import run
    total: dict[str, Any] = {"runs": 0}
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 5:
        where = root / f"run-{total['runs']}"
        try:
            figures = run(where, seed + total["runs"], min(60.0, left))
            shutil.rmtree(where, ignore_errors=True)
        except AssertionError as exc:  # the run's directory stays for inspection
            total.setdefault("failures", []).append(f"{where}: {exc}"[:6000])
            figures = {}
        total["runs"] += 1
        for name, n in figures.items():
            if isinstance(n, int):
                total[name] = total.get(name, 0) + n
    return total


PARTS: dict[str, tuple[float, PartFn]] = {
    "kill": (0.45, _kill),
    "fuzz": (0.15, _fuzz),
    "faults": (0.15, _faults),
    "stress": (0.15, _stress),
    "readers": (0.10, _readers),
}
"""name -> (share of the time, runner(root, seed, seconds) -> figures)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.torture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--hours", type=float)
    length.add_argument("--minutes", type=float)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    parser.add_argument("--parallel", action="store_true",
                        help="run the parts at once, each in its own process for the whole time "
                             "(on a shared machine, under nice, they only take idle CPU)")
    args = parser.parse_args(argv)
    seconds = 3600 * args.hours if args.hours else 60 * (args.minutes or 10)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {list(PARTS)}")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    base = args.dir or Path(tempfile.mkdtemp(prefix="banyanstore-torture-"))
    weights = sum(PARTS[p][0] for p in parts)
    figures: dict[str, Any] = {"seed": seed, "parts": {}}
    print(f"torture: seed {seed}, {seconds / 60:.0f} min, parts {parts}, in {base}", flush=True)
    if args.parallel and len(parts) > 1:
        return _parallel(parts, seconds, seed, base, args.out, figures)
    for name in parts:
        share, run = PARTS[name]
        began = time.monotonic()
        try:
            result = run(base / name, seed, seconds * share / weights)
        except Exception as exc:  # noqa: BLE001 -- recorded; the other parts still run
            result = {"error": f"{type(exc).__name__}: {exc}"[:6000]}
        result["seconds"] = round(time.monotonic() - began, 1)
        figures["parts"][name] = result
        print(f"{name}: {json.dumps(result, sort_keys=True)}", flush=True)
        if args.out:
            args.out.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    failed = any(r.get("error") or r.get("failures") or r.get("problems") for r in figures["parts"].values())
    return 1 if failed else 0


def _parallel(parts: list[str], seconds: float, seed: int, base: Path, out: Path | None,
              figures: dict[str, Any]) -> int:
    """Every part in its own ``python -m tests.torture --parts NAME`` for the whole time."""
    import subprocess
    procs = {}
    base.mkdir(parents=True, exist_ok=True)
    for name in parts:
        part_out = base / f"{name}.json"
        procs[name] = (subprocess.Popen(
            [sys.executable, "-m", "tests.torture", "--minutes", str(seconds / 60), "--parts", name,
             "--seed", str(seed), "--dir", str(base), "--out", str(part_out)]), part_out)
    status = 0
    for name, (proc, part_out) in procs.items():
        status |= proc.wait()
        try:
            figures["parts"][name] = json.loads(part_out.read_text())["parts"][name]
        except (OSError, ValueError, KeyError) as exc:
            figures["parts"][name] = {"error": f"no figures ({exc}); exit status {proc.returncode}"}
            status = 1
    if out:
        out.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main())
