"""The read-only dump commands: ``dump-manifest``, ``dump-log`` and ``dump-wal``.

``dump-table`` lives in tables.py.  None of these modify anything: logs are
opened with ``read_only=True`` (a torn tail is skipped in memory, not cut).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from collections.abc import Iterator

from ..errors import BanyanStoreError, CorruptionError
from ..log.log import Log
from ..lsm.manifest import replay
from ..lsm.wal import decode
from .common import EXIT_OK, Failure, Output, UsageError, detect_kind
from .files import read_current, walk_manifest

__all__ = ["cmd_dump_manifest", "cmd_dump_log", "cmd_dump_wal"]


def _manifest_path(path: str) -> str:
    kind = detect_kind(path)
    if kind == "manifest":
        return path
    if kind == "store":
        return os.path.join(path, read_current(path))
    raise UsageError(f"{path}: neither a store directory nor a MANIFEST-* file ({kind})")


def cmd_dump_manifest(args: argparse.Namespace, out: Output) -> int:
    """Every edit of the manifest, one JSON object per line (``--json``: with offsets)."""
    path = _manifest_path(args.path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        for rec in walk_manifest(data, path):
            if rec.torn is not None:
                out.warn(f"note: torn last record at offset {rec.offset} ({rec.torn}); recovery "
                         "ignores it")
                break
            if out.json:
                out.doc({"offset": rec.offset, "length": rec.length, "edit": rec.edit})
            else:
                out.line(json.dumps(rec.edit, separators=(",", ":")))
    except CorruptionError as exc:
        raise Failure(str(exc)) from None
    return EXIT_OK


def _open_log(path: str) -> Log:
    if not os.path.isdir(path):
        raise UsageError(f"{path}: no such log directory")
    try:
        return Log.open(path, read_only=True, io_mode="sync")
    except CorruptionError as exc:
        raise Failure(f"cannot open the log {path}: {exc}") from None
    except BanyanStoreError as exc:
        raise UsageError(f"cannot open the log {path}: {exc}") from None


def _records(log: Log, start: int | None, limit: int | None) -> Iterator[tuple[int, bytes]]:
    first = log.first_seq if start is None else max(start, log.first_seq)
    if first > log.last_seq:
        return
    for n, item in enumerate(log.read(first)):
        if limit is not None and n >= limit:
            return
        yield item


def cmd_dump_log(args: argparse.Namespace, out: Output) -> int:
    """``seq length preview`` of each log record from ``--start``."""
    kind = detect_kind(args.path)
    if kind == "store":
        raise UsageError(f"{args.path} is a store: use dump-wal (or dump-log {args.path}/wal)")
    parent = os.path.dirname(os.path.abspath(args.path))
    if kind == "unknown" and not (os.path.basename(os.path.abspath(args.path)) == "wal"
                                  and detect_kind(parent) == "store"):
        # A log always holds a segment: a read-only open would show this one as an empty
        # log (a store's wal/ is empty after a salvage, until the store is opened).
        raise UsageError(f"{args.path} is not a log directory (no segment)")
    log = _open_log(args.path)
    shown = 0
    with log:
        if not out.json:
            out.line(f"log {args.path}: seqs [{log.first_seq}, {log.last_seq}]")
        try:
            for seq, rec in _records(log, args.start, args.limit):
                shown += 1
                if out.json:
                    out.doc({"seq": seq, "length": len(rec), "data": out.show(rec)})
                else:
                    out.line(f"{seq:>10} {len(rec):>8}  {out.show_value(rec, args.width)}")
        except CorruptionError as exc:
            raise Failure(str(exc)) from None
    if not out.json:
        out.line(f"({shown} records shown)")
    return EXIT_OK


def _keyspace_names(store: str) -> tuple[dict[int, str], int, int]:
    """Keyspace names, flushed_version and wal_seq from the manifest (best effort)."""
    try:
        name = read_current(store)
        with open(os.path.join(store, name), "rb") as f:
            state = replay(f.read(), name)
    except (OSError, CorruptionError):
        return {}, 0, 1
    return dict(state.keyspaces), state.flushed_version, state.wal_seq


def cmd_dump_wal(args: argparse.Namespace, out: Output) -> int:
    """The decoded WAL batches of a store: version, time, and each entry."""
    if detect_kind(args.path) != "store":
        raise UsageError(f"{args.path} is not a store directory")
    names, flushed, wal_seq = _keyspace_names(args.path)
    log = _open_log(os.path.join(args.path, "wal"))
    shown = 0
    with log:
        if not out.json:
            out.line(f"wal of {args.path}: seqs [{log.first_seq}, {log.last_seq}], flushed_version "
                     f"{flushed}, replay from seq {wal_seq}")
        try:
            for seq, rec in _records(log, args.start, args.limit):
                version, ms, ops, ranges = decode(rec, f"{args.path}/wal (record {seq})")
                shown += 1
                flushed_already = version <= flushed or seq < wal_seq
                if out.json:
                    out.doc({"seq": seq, "version": version, "commit_ms": ms,
                             "flushed": flushed_already,
                             "ops": [{"keyspace": names.get(ks, ks), "key": out.show(k),
                                      "value": out.show_value(v)} for ks, k, v in ops]
                             + [{"keyspace": names.get(ks, ks), "key": out.show(a),
                                 "range_end": out.show(b)} for ks, a, b in ranges]})
                    continue
                when = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(
                    timespec="milliseconds")
                mark = " (in tables)" if flushed_already else ""
                out.line(f"seq {seq} version {version} at {when}: {len(ops) + len(ranges)} ops{mark}")
                for ks, k, v in ops:
                    out.line(f"    [{names.get(ks, ks)}] {out.show(k)} = {out.show_value(v, args.width)}")
                for ks, a, b in ranges:
                    out.line(f"    [{names.get(ks, ks)}] [{out.show(a)}, {out.show(b)}) = RANGE TOMBSTONE")
        except CorruptionError as exc:
            raise Failure(str(exc)) from None
    if not out.json:
        out.line(f"({shown} records shown)")
    return EXIT_OK
