"""Commands that read through the public API: ``get``, ``scan``, ``keyspaces``,
``stats`` (read-only opens, so they work beside a running writer) and
``checkpoint`` (through the store when no other process writes it, else through
its files -- see :func:`cmd_checkpoint`)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import banyanstore

from ..backups.scratch import ScratchDir
from ..errors import StoreLockedError
from ..io.posix import PosixEnv
from ..lsm.checkpoint import check_outside_store, clear_interrupted
from .common import EXIT_OK, NotFound, Output, UsageError, parse_key, render_tree
from .opening import check_version, keyspace_of, open_read_only, try_open_for_writing

__all__ = ["cmd_stats", "cmd_get", "cmd_scan", "cmd_keyspaces", "cmd_checkpoint"]


def cmd_get(args: argparse.Namespace, out: Output) -> int:
    """The value of one key; a key absent (or deleted) at that version is "not found"
    on stderr, exit 1."""
    key = parse_key(args.key)
    with open_read_only(args.path) as store:
        ks = keyspace_of(store, args.keyspace)
        check_version(store, args.version)
        value = ks.get(key, version=args.version) if args.version is not None else ks.get(key)
        version = args.version if args.version is not None else store.version
    if value is None:
        raise NotFound(f"{out.show(key)}: not found at version {version}")
    if args.raw:
        out.stream.flush()
        out.stream.buffer.write(value)
    elif out.json:
        out.doc({"key": out.show(key), "version": version, "value": out.show(value)})
    else:
        out.line(out.show(value))
    return EXIT_OK


def cmd_scan(args: argparse.Namespace, out: Output) -> int:
    """``key = value`` for the keys in range, ascending (``--reverse``: descending)."""
    start = parse_key(args.start) if args.start is not None else None
    end = parse_key(args.end) if args.end is not None else None
    prefix = parse_key(args.prefix) if args.prefix is not None else None
    n = 0
    with open_read_only(args.path) as store:
        ks = keyspace_of(store, args.keyspace)
        check_version(store, args.version)
        for key, value in ks.scan(start, end, prefix=prefix, version=args.version,
                                  reverse=args.reverse, limit=args.limit):
            n += 1
            if out.json:
                out.doc({"key": out.show(key), "value": out.show(value)})
            else:
                out.line(f"{out.show(key)} = {out.show_value(value, args.width)}")
    if not out.json:
        out.line(f"({n} keys)")
    return EXIT_OK


# -- keyspaces and stats -------------------------------------------------------------------

def _keyspace_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, ks in stats["keyspaces"].items():
        rows.append({"name": name, "id": ks["id"], "ttl": ks["ttl"], "tables": ks["tables"],
                     "table_bytes": ks["table_bytes"],
                     "table_entries": sum(t["entries"] for t in ks.get("table_list", [])),
                     "mem_entries": ks["memtable_entries"], "mem_bytes": ks["memtable_bytes"],
                     "immutable_mems": ks["immutable_memtables"]})
    return rows


def cmd_keyspaces(args: argparse.Namespace, out: Output) -> int:
    """Every keyspace with its id, ttl, tables and memtables."""
    with open_read_only(args.path) as store:
        rows = _keyspace_rows(store.stats())
    if out.json:
        out.pretty(rows)
    else:
        _print_table(out, "keyspaces", rows)
    return EXIT_OK


def _flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar leaves of a nested dict as ``(dotted.name, value)``; lists are counted."""
    rows: list[tuple[str, Any]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            rows.append((name, f"{len(value)} items"))
        else:
            rows.append((name, value))
    return rows


def cmd_stats(args: argparse.Namespace, out: Output) -> int:
    """``store.stats()`` of a read-only open: the store's figures as a table, then its
    keyspaces as a table (``--json``: the whole dict; ``--tree``: every field nested)."""
    with open_read_only(args.path) as store:
        stats = store.stats()
    if out.json:
        out.pretty(stats)
    elif args.tree:
        for line in render_tree(stats):
            out.line(line)
    else:
        store_rows = [{"statistic": name, "value": value}
                      for name, value in _flatten({k: v for k, v in stats.items() if k != "keyspaces"})]
        _print_table(out, f"store {args.path}", store_rows)
        _print_table(out, "keyspaces", _keyspace_rows(stats))
    return EXIT_OK


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _print_table(out: Output, title: str, rows: list[dict[str, Any]]) -> None:
    """Rows as a table: drawn by ``rich`` where it is installed, else aligned text."""
    columns = list(rows[0]) if rows else []
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    numeric = [all(isinstance(row[c], (int, float)) or row[c] is None for row in rows) for c in columns]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        out.line(title)

        def fmt(values: list[str]) -> str:
            return "  ".join(v.rjust(w) if num else v.ljust(w)
                             for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()
        out.line(fmt(columns))
        for r in cells:
            out.line(fmt(r))
        return
    table = Table(title=title, title_justify="left")
    for c, num in zip(columns, numeric, strict=True):
        table.add_column(c, justify="right" if num else "left")
    for r in cells:
        table.add_row(*r)
    # a pipe gets the whole table, not one cut to rich's default 80 columns
    Console(file=out.stream, width=None if out.stream.isatty() else 160).print(table)


# -- checkpoint ----------------------------------------------------------------------------

def cmd_checkpoint(args: argparse.Namespace, out: Output) -> int:
    """A consistent, openable copy of the store at ``DEST``.

    With no writer running, the store is opened and :meth:`Store.checkpoint` links its
    tables (memtables flushed first).  Beside a running writer (another process holds
    the store), the copy is taken from the store's files the way a backup takes it
    (``docs/backup.md``: every write the writer had handed to the operating system,
    one version across keyspaces) into a scratch backup beside ``DEST``, restored
    (checked) into ``DEST``, and the scratch removed."""
    try:  # before either way of copying: each refuses it, but as a ValueError (a traceback)
        check_outside_store(args.path, args.dest)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    cleared = False
    if os.path.isdir(args.dest):  # what a killed checkpoint left (its marker says so) goes
        try:
            cleared = clear_interrupted(PosixEnv(), args.dest)
        except StoreLockedError as exc:
            raise UsageError(str(exc)) from None
    if os.path.exists(args.dest) and (not os.path.isdir(args.dest) or os.listdir(args.dest)):
        raise UsageError(f"checkpoint destination {args.dest} exists and is not empty")
    store = try_open_for_writing(args.path)
    if store is None:
        version, how = _checkpoint_beside_writer(args.path, args.dest), "from its files: a writer has it open"
    else:
        with store:
            version, how = store.checkpoint(args.dest), "through the store"
    if out.json:
        out.doc({"store": args.path, "checkpoint": args.dest, "version": version,
                 "cleared_interrupted": cleared})
    else:
        if cleared:
            out.line(f"cleared what an interrupted checkpoint left in {args.dest}")
        out.line(f"checkpoint of {args.path} written to {args.dest} at version {version} ({how})")
    return EXIT_OK


def _checkpoint_beside_writer(path: str, dest: str) -> int:
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    if os.path.isdir(dest):
        os.rmdir(dest)  # empty (checked above): restore creates it
    # A locked scratch directory: one a killed run left is removed by the next checkpoint
    # beside ``dest`` (it holds a copy of every table of the store).
    with ScratchDir(dest, "checkpoint") as scratch:
        banyanstore.backup(path, scratch.path)
        return banyanstore.restore(scratch.path, dest).version
