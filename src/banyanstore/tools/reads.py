"""Commands that go through the public API: ``stats``, ``get``, ``scan`` (read-only
opens, so they work beside a running writer) and ``checkpoint`` (a writer open)."""

from __future__ import annotations

import argparse
from typing import Any

import banyanstore

from ..errors import BanyanStoreError
from .common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    Output,
    UsageError,
    detect_kind,
    parse_key,
    preview,
    render_tree,
    show_bytes,
)

__all__ = ["cmd_stats", "cmd_get", "cmd_scan", "cmd_checkpoint"]


def _open_read_only(path: str) -> Any:
    if detect_kind(path) != "store":
        raise UsageError(f"{path} is not a store directory")
    return banyanstore.open(path, read_only=True)


def _keyspace(store: Any, name: str | None) -> Any:
    if name is None:
        return store
    if name not in store.keyspaces():
        raise UsageError(f"no keyspace {name!r} (the store has {', '.join(store.keyspaces())})")
    return store.keyspace(name)


def cmd_stats(args: argparse.Namespace, out: Output) -> int:
    with _open_read_only(args.path) as store:
        stats = store.stats()
    if out.json:
        out.pretty(stats)
    else:
        for line in render_tree(stats):
            out.line(line)
    return EXIT_OK


def cmd_get(args: argparse.Namespace, out: Output) -> int:
    """The value of one key (exit 1 when absent or deleted)."""
    key = parse_key(args.key)
    with _open_read_only(args.path) as store:
        ks = _keyspace(store, args.keyspace)
        value = ks.get(key, version=args.version) if args.version is not None else ks.get(key)
        version = args.version if args.version is not None else store.version
    if args.raw:
        if value is not None:
            out.stream.buffer.write(value)
        return EXIT_OK if value is not None else EXIT_PROBLEMS
    if out.json:
        out.doc({"key": show_bytes(key, hex_mode=args.hex), "version": version, "found": value is not None,
                 "value": None if value is None else show_bytes(value, hex_mode=args.hex)})
    elif value is None:
        out.line(f"{show_bytes(key, hex_mode=args.hex)}: not found at version {version}")
    else:
        out.line(show_bytes(value, hex_mode=args.hex))
    return EXIT_OK if value is not None else EXIT_PROBLEMS


def cmd_scan(args: argparse.Namespace, out: Output) -> int:
    """``key = value`` for the keys in range, ascending (``--reverse``: descending)."""
    start = parse_key(args.start) if args.start is not None else None
    end = parse_key(args.end) if args.end is not None else None
    prefix = parse_key(args.prefix) if args.prefix is not None else None
    n = 0
    with _open_read_only(args.path) as store:
        ks = _keyspace(store, args.keyspace)
        for key, value in ks.scan(start, end, prefix=prefix, version=args.version,
                                  reverse=args.reverse, limit=args.limit):
            n += 1
            if out.json:
                out.doc({"key": show_bytes(key, hex_mode=args.hex),
                         "value": show_bytes(value, hex_mode=args.hex)})
            else:
                out.line(f"{show_bytes(key, hex_mode=args.hex)} = "
                         f"{preview(value, args.width, hex_mode=args.hex)}")
    if not out.json:
        out.line(f"({n} keys)")
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace, out: Output) -> int:
    """Open the store for writing (it must not be open elsewhere) and checkpoint it."""
    if detect_kind(args.path) != "store":
        raise UsageError(f"{args.path} is not a store directory")
    try:
        store = banyanstore.open(args.path, create_if_missing=False)
    except BanyanStoreError as exc:
        out.warn(f"error: cannot open {args.path} for writing: {exc}")
        return EXIT_PROBLEMS
    with store:
        version = store.checkpoint(args.dest)
    if out.json:
        out.doc({"store": args.path, "checkpoint": args.dest, "version": version})
    else:
        out.line(f"checkpoint of {args.path} written to {args.dest} at version {version}")
    return EXIT_OK
