"""The main job: an observability workload on an embedded store, end to end.

``python -m banyanstore.demo [DIR] [--spans N]`` (``make demo``) ingests spans
of a few services into a Store (data + an index keyspace, updated atomically in
batches), appends alarm events to a Log, then shows point, range, versioned and
snapshot reads, a checkpoint that reopens with the same answers, a compaction,
and the store's statistics.  Everything it prints is computed, none of it fixed;
each figure comes with a line saying what it shows, and the run ends with the
commands to try next on what it wrote.

``DIR`` (default ``demo-data``) must be absent, empty, or a directory an earlier
run made: the demo marks the directories it makes with a :data:`MARKER` file and
only ever removes, on a rerun, the entries it creates itself
(:data:`OUTPUTS`) inside a marked directory.  Any other non-empty directory is
refused and left exactly as it was.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence

import banyanstore

MARKER = ".banyanstore-demo"
"""The file that marks a directory as the demo's own."""
OUTPUTS = ("alarms", "store", "checkpoint")
"""What a run creates inside its directory (and what a rerun removes first)."""


class NotDemoDirectoryError(Exception):
    """The directory holds files the demo did not make: it is left alone."""


def prepare(root: str) -> None:
    """Make ``root`` ready for a run: create and mark it, or clear an earlier run's
    outputs from a marked one; NotDemoDirectoryError for anything else."""
    if not os.path.exists(root):
        os.makedirs(root)
    elif not os.path.isdir(root):
        raise NotDemoDirectoryError(f"{root} is a file, not a directory")
    names = set(os.listdir(root))
    if names and MARKER not in names:
        raise NotDemoDirectoryError(
            f"{root} is not empty and was not made by the demo (no {MARKER} file); "
            "name a new or empty directory")
    if not names:
        with open(os.path.join(root, MARKER), "w") as f:
            f.write("Made by `python -m banyanstore.demo`: a rerun replaces only "
                    f"{', '.join(OUTPUTS)} in here.\n")
    for name in OUTPUTS:
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)


Row = tuple[str, object, str]
"""What the demo prints: a name, the figure, and what the figure shows."""


def _table(title: str, rows: list[Row]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is optional at run time: plain lines
        print(f"== {title}")
        for name, value, meaning in rows:
            print(f"  {name:<36} {value}")
            print(f"  {'':<36}   ({meaning})")
        return
    t = Table(title=title)
    t.add_column("what", style="cyan")
    t.add_column("figure", justify="right")
    t.add_column("what it shows", style="dim")
    for name, value, meaning in rows:
        t.add_row(name, str(value), meaning)
    Console().print(t)


def _next_steps(root: str) -> str:
    """The commands to try next on what the demo wrote, each with what it shows."""
    store, alarms = os.path.join(root, "store"), os.path.join(root, "alarms")
    steps = [
        (f"banyanstore keyspaces {store}", "the keyspaces, their tables and memtables"),
        (f"banyanstore get {store} span:0000000042", "one value"),
        (f"banyanstore scan {store} --keyspace index --prefix svc-03 --limit 5", "a range of the index"),
        (f"banyanstore stats {store}", "the store's figures as tables"),
        (f"banyanstore verify {store}", "check every block, record and checksum"),
        (f"banyanstore dump-log {alarms} --limit 5", "the Log's first records"),
    ]
    width = max(len(command) for command, _ in steps)
    lines = ["Next, on what the demo wrote (the `banyanstore` command, see docs/cli.md):"]
    lines += [f"  {command:<{width}}  # {why}" for command, why in steps]
    lines.append("Then: README.md (the five-minute tour, limits, thread safety) and docs/design.md.")
    return "\n".join(lines)


def run(root: str, spans: int = 200_000) -> dict[str, object]:
    """Run the demo in ``root`` (see the module docstring); returns what it printed."""
    prepare(root)
    rng = random.Random(42)
    services = [f"svc-{i:02d}" for i in range(12)]
    results: list[Row] = []

    with banyanstore.open_log(f"{root}/alarms", wal_sync="interval") as log:
        began = time.perf_counter()
        alarms = spans // 4  # the workload scales with --spans
        last = log.append_many([f"alarm {i}: p99 latency high".encode() for i in range(alarms)])
        results.append(("log: appended records", last,
                        "alarm events appended to a Log; the last sequence number (from 1, never reused)"))
        results.append(("log: appends/s (batched)", f"{last / (time.perf_counter() - began):,.0f}",
                        "append_many throughput, fdatasynced in the background every 100 ms"))
        seq = alarms * 5 // 8
        results.append((f"log: record {seq}", log.get(seq).decode(),
                        "log.get(seq): one record read back by its sequence number"))

    store = banyanstore.open(f"{root}/store", memtable_size=16 << 20, wal_sync="interval")
    index = store.keyspace("index")
    began = time.perf_counter()
    batch_size = 500
    for base in range(0, spans, batch_size):
        with store.batch() as b:
            for i in range(base, min(spans, base + batch_size)):
                svc = services[i % len(services)]
                key = f"span:{i:010d}".encode()
                b.put(key, rng.randbytes(100))
                b.put(f"{svc}|{i:010d}".encode(), key, keyspace=index)
    ingest_s = time.perf_counter() - began
    results.append(("store: spans ingested (+index)", f"{spans:,}",
                    "each span written with its entry in the 'index' keyspace, 500 spans an atomic batch"))
    results.append(("store: entries/s in batches", f"{2 * spans / ingest_s:,.0f}",
                    "puts per second, span and index entries both counted"))

    key = b"span:0000000042"
    v_before = store.version
    v_update = store.put(key, b"corrected payload")
    results.append(("update: latest value", store.get(key),
                    "a put on an existing key adds a newer version; reads see the newest"))
    results.append(("update: value as of version before", len(store.get(key, version=v_before) or b""),
                    "bytes of the old value, read at the version before the update: it is still there"))
    store.delete(b"span:0000000043")
    results.append(("delete: span 43 now", store.get(b"span:0000000043"),
                    "None: a delete writes a tombstone, which reads as absent"))
    results.append(("history of span 42 (versions)", [v for v, _ in store.history(key)],
                    "every version of the key still kept, newest first"))

    svc_spans = list(index.scan(prefix=b"svc-03|", limit=5))
    results.append(("range: first 5 spans of svc-03", len(svc_spans),
                    "a prefix scan of the index keyspace, limited to 5"))
    keys = [v for _, v in svc_spans]
    results.append(("multi_get of those spans (found)", sum(x is not None for x in store.multi_get(keys)),
                    "the spans those index entries name, fetched in one batched call"))

    with store.snapshot() as snap:
        store.put(key, b"after the snapshot")
        results.append(("snapshot sees", snap.get(key),
                        "a snapshot answers as of when it was taken..."))
        results.append(("store sees", store.get(key), "...while the store has moved on"))

    ck_version = store.checkpoint(f"{root}/checkpoint")
    with banyanstore.open(f"{root}/checkpoint", read_only=True) as ck:
        results.append(("checkpoint version", ck_version,
                        "an on-disk copy holding every write up to this version"))
        results.append(("checkpoint agrees on span 42", ck.get(key) == store.get(key),
                        "the copy opens (read-only here) and answers like the store"))

    began = time.perf_counter()
    summary = store.compact()
    results.append(("compact(): tables before -> after",
                    f"{summary['tables_before']} -> {summary['tables_after']}",
                    "tables of both keyspaces merged into one per keyspace"))
    results.append(("compact(): seconds", f"{time.perf_counter() - began:.2f}",
                    "how long that merge took"))
    began = time.perf_counter()
    n = sum(1 for _ in store.scan())
    results.append(("scan all: live spans", f"{n:,}",
                    "every span but the deleted one, in key order"))
    results.append(("scan all: entries/s", f"{n / (time.perf_counter() - began):,.0f}",
                    "speed of that full scan"))
    began = time.perf_counter()
    probes = [f"span:{rng.randrange(spans):010d}".encode() for _ in range(spans // 10)]
    found = sum(store.get(k) is not None for k in probes)
    results.append(("random gets: found / asked", f"{found:,} / {len(probes):,}",
                    "point reads of random spans (only the deleted span can miss)"))
    results.append(("random gets/s", f"{len(probes) / (time.perf_counter() - began):,.0f}",
                    "speed of those point reads"))
    stats = store.stats()
    results.append(("io mode", stats["io_mode"], "the IO backend in use (the io_mode option)"))
    results.append(("block cache hit rate", stats["block_cache"].get("hit_rate", "n/a"),
                    "share of table block reads served from memory"))
    store.close()

    with banyanstore.open(f"{root}/store") as again:
        results.append(("after reopen: version", again.version,
                        "versions carry on across a close and reopen"))
        results.append(("after reopen: span 42", again.get(key),
                        "the last write, read back after the reopen"))
        assert again.get(key) == b"after the snapshot" and again.version >= v_update
    _table("banyanstore demo", results)
    print(_next_steps(root))
    return {name: value for name, value, _ in results}


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 100:
        raise argparse.ArgumentTypeError(f"must be >= 100: {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m banyanstore.demo",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("directory", nargs="?", default="demo-data",
                   help="where the demo writes (absent, empty, or made by an earlier run; "
                        "default: demo-data)")
    p.add_argument("--spans", type=_positive, default=200_000,
                   help="spans to ingest (default: 200000)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run; returns the exit code
    (2: bad arguments or a directory the demo may not use)."""
    args = build_parser().parse_args(argv)
    try:
        run(args.directory, args.spans)
    except NotDemoDirectoryError as exc:
        print(f"banyanstore demo: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
