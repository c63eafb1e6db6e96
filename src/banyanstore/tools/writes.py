"""Commands that write: ``put``, ``delete`` and ``compact``.

They open the store for writing, so no other process may have it open for
writing (the one-writer rule: exit 2, saying so).  ``put`` and ``delete`` are
synced before the command returns: when it exits 0 the write is durable.
"""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_OK, Output, UsageError, parse_key
from .opening import keyspace_of, open_for_writing
from .progress import ProgressBar, wants_progress

__all__ = ["cmd_put", "cmd_delete", "cmd_compact"]


def _value(args: argparse.Namespace) -> bytes:
    if args.stdin:
        if args.value is not None:
            raise UsageError("give VALUE or --stdin, not both")
        return sys.stdin.buffer.read()
    if args.value is None:
        raise UsageError("a VALUE is required (or --stdin)")
    return parse_key(args.value, "value")


def cmd_put(args: argparse.Namespace, out: Output) -> int:
    """Write one value (durable when the command returns); prints its version."""
    key, value = parse_key(args.key), _value(args)
    with open_for_writing(args.path, "put", create=args.create) as store:
        version = keyspace_of(store, args.keyspace).put(key, value, sync=True)
    if out.json:
        out.doc({"key": out.show(key), "version": version, "bytes": len(value)})
    else:
        out.line(f"put {out.show(key)} ({len(value)} bytes) at version {version}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, out: Output) -> int:
    """Delete one key (a tombstone, durable when the command returns); prints its version.
    Deleting an absent key is not an error: afterwards it is absent either way."""
    key = parse_key(args.key)
    with open_for_writing(args.path, "delete") as store:
        version = keyspace_of(store, args.keyspace).delete(key, sync=True)
    if out.json:
        out.doc({"key": out.show(key), "version": version})
    else:
        out.line(f"deleted {out.show(key)} at version {version}")
    return EXIT_OK


def cmd_compact(args: argparse.Namespace, out: Output) -> int:
    """Merge the tables of every keyspace (or ``--keyspace``), optionally only those
    overlapping ``[--start, --end)``, into as few as possible; a bar over the tables
    merged is drawn on stderr on a terminal (or with ``--progress``)."""
    start = parse_key(args.start) if args.start is not None else None
    end = parse_key(args.end) if args.end is not None else None
    enabled = wants_progress(args, out.json, out.err)
    with open_for_writing(args.path, "compact") as store:
        keyspace_of(store, args.keyspace)  # it must exist: compact() would create it
        store.flush()  # compact() flushes first: count the tables that makes
        keyspaces = store.stats()["keyspaces"]
        names = [args.keyspace] if args.keyspace is not None else list(keyspaces)
        total = sum(keyspaces[name]["tables"] for name in names)
        with ProgressBar("compact", total=total, unit="tables", enabled=enabled, stream=out.err) as bar:
            def progress(info: dict[str, object]) -> None:
                bar.set_description(f"compact {info['keyspace']}")
                merged = info["merged_tables"]
                bar.advance(merged if isinstance(merged, int) else 0)
            summary = store.compact(args.keyspace, start=start, end=end, progress=progress)
    if out.json:
        out.doc(summary)
    else:
        out.line(f"compacted {args.path}: {summary['merges']} merges, tables "
                 f"{summary['tables_before']} -> {summary['tables_after']}")
    return EXIT_OK
