"""The ``banyanstore`` command: dump, verify and repair tools shipped with the store.

Usage (also ``python -m banyanstore.cli``)::

    banyanstore verify PATH                 check a store, log or table; changes nothing
    banyanstore stats STORE                 store.stats() of a read-only open
    banyanstore dump-manifest PATH          the manifest's edits, one JSON object per line
    banyanstore dump-table FILE             a table's properties and entries
    banyanstore dump-log PATH               a log's records (seq, length, preview)
    banyanstore dump-wal STORE              a store's WAL records, decoded
    banyanstore get STORE KEY               one value (read-only)
    banyanstore scan STORE                  key = value lines (read-only)
    banyanstore checkpoint STORE DEST       a consistent copy (opens the store for writing)
    banyanstore repair STORE                repair what is provably safe; salvage the rest
                                            into lost/ (tools/repair.py, tools/salvage.py)
    banyanstore backup STORE URL            an incremental backup to a directory or s3://...
    banyanstore restore URL DEST            restore the newest (or --backup ID) backup
    banyanstore backups URL                 list the complete backups (--verify: check them)
    banyanstore prune URL --keep N          delete all but the N newest backups

Keys are UTF-8 text, or ``hex:`` and hex digits for binary keys.  Bytes are
shown with Python's escapes (``--hex``: as hex).  ``--json`` (before or after
the command) prints JSON instead of text.

Backup commands take ``--option KEY=VALUE`` for fsspec storage options, and
show progress bars on a terminal (``--quiet``: none); see docs/backup.md.

Exit codes: 0 ok; 1 problems found (verify/repair found damage or leftovers,
repair could not recover something,
get found no value, the store could not be opened or read, a backup is
damaged); 2 usage (bad arguments, a path that is not a store/log/table).

>>> main(["--version"])
banyanstore 0.1.0
0
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .errors import BanyanStoreError
from .tools.backups import cmd_backup, cmd_backups, cmd_prune, cmd_restore
from .tools.common import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, Output, UsageError
from .tools.dumps import cmd_dump_log, cmd_dump_manifest, cmd_dump_wal
from .tools.reads import cmd_checkpoint, cmd_get, cmd_scan, cmd_stats
from .tools.repair import cmd_repair
from .tools.tables import cmd_dump_table
from .tools.verify import cmd_verify

__all__ = ["main", "build_parser"]

Command = Callable[[argparse.Namespace, Output], int]


def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {n}")
    return n


def _positive(text: str) -> int:
    n = _non_negative(text)
    if n == 0:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of text")
    shown = argparse.ArgumentParser(add_help=False)
    shown.add_argument("--hex", action="store_true", help="show keys and values as hex")
    shown.add_argument("--width", type=_non_negative, default=64,
                       help="bytes of each value to preview (default 64)")
    limited = argparse.ArgumentParser(add_help=False)
    limited.add_argument("--limit", type=_non_negative, default=None, help="show at most N items")

    p = argparse.ArgumentParser(prog="banyanstore", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Command, help_text: str, *parents: argparse.ArgumentParser
            ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text,
                            parents=[common, *parents])
        sp.set_defaults(func=func)
        return sp

    add("verify", cmd_verify, "check a store, log or table and report every problem "
        "with its file and offset (changes nothing)").add_argument("path")
    add("stats", cmd_stats, "open a store read-only and print store.stats()").add_argument("path")
    add("dump-manifest", cmd_dump_manifest, "print the manifest's edits, one JSON object per "
        "line").add_argument("path", help="a store directory or a MANIFEST-* file")
    sp = add("dump-table", cmd_dump_table, "print a table's properties and entries", shown, limited)
    sp.add_argument("file")
    sp.add_argument("--start", help="first key to show")
    sp = add("dump-log", cmd_dump_log, "print a log's records (seq, length, preview)", shown, limited)
    sp.add_argument("path", help="a log directory (a store's wal/ works too)")
    sp.add_argument("--start", type=_positive, help="first seq to show")
    sp = add("dump-wal", cmd_dump_wal, "print a store's WAL records, decoded", shown, limited)
    sp.add_argument("path", metavar="store")
    sp.add_argument("--start", type=_positive, help="first seq to show")
    sp = add("get", cmd_get, "print the value of KEY (exit 1 if absent)", shown)
    sp.add_argument("path", metavar="store")
    sp.add_argument("key", help="text, or hex:... for binary")
    sp.add_argument("--version", type=_non_negative, help="read as of this version")
    sp.add_argument("--keyspace", help="keyspace name (default: default)")
    sp.add_argument("--raw", action="store_true", help="write the value's bytes as they are")
    sp = add("scan", cmd_scan, "print key = value for a range of keys", shown, limited)
    sp.add_argument("path", metavar="store")
    sp.add_argument("--prefix", help="only keys starting with this (text or hex:...)")
    sp.add_argument("--start", help="first key (inclusive)")
    sp.add_argument("--end", help="last key (exclusive)")
    sp.add_argument("--version", type=_non_negative, help="read as of this version")
    sp.add_argument("--reverse", action="store_true", help="descending key order")
    sp.add_argument("--keyspace", help="keyspace name (default: default)")
    sp = add("checkpoint", cmd_checkpoint, "write a consistent copy of STORE to DEST (opens the "
             "store for writing: it must not be open elsewhere)")
    sp.add_argument("path", metavar="store")
    sp.add_argument("dest")
    sp = add("repair", cmd_repair, "repair what is provably safe; when the manifest or a table is "
             "lost, salvage from tables and WAL (nothing deleted: set aside in lost/)")
    sp.add_argument("path", metavar="store")
    sp.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    _add_backup_commands(add)
    return p


def _add_backup_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                        help="an fsspec storage option (repeatable; VALUE as JSON if it parses)")
    remote.add_argument("--parallel", type=_positive, default=8,
                        help="transfers at once (default 8)")
    remote.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    url_help = "a local directory or an fsspec URL (s3://bucket/prefix, gs://..., az://...)"
    sp = add("backup", cmd_backup, "back up STORE to URL, uploading only what URL lacks (works "
             "beside a running writer)", remote)
    sp.add_argument("store")
    sp.add_argument("url", help=url_help)
    sp = add("restore", cmd_restore, "restore a backup from URL into DEST (checked before it "
             "appears)", remote)
    sp.add_argument("url", help=url_help)
    sp.add_argument("dest")
    sp.add_argument("--backup", metavar="ID", help="the backup to restore (default: the newest)")
    sp.add_argument("--overwrite", action="store_true",
                    help="replace the store at DEST (no writer may have it open)")
    sp = add("backups", cmd_backups, "list the complete backups at URL", remote)
    sp.add_argument("url", help=url_help)
    sp.add_argument("--verify", action="store_true",
                    help="download and check every object of each backup")
    sp.add_argument("--backup", metavar="ID", help="only this backup")
    sp = add("prune", cmd_prune, "delete all but the KEEP newest backups, and every object "
             "they alone needed", remote)
    sp.add_argument("url", help=url_help)
    sp.add_argument("--keep", type=_positive, required=True, help="backups to keep (>= 1)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    if args.version and args.command is None:
        print(f"banyanstore {__version__}")
        return EXIT_OK
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="banyanstore: %(levelname)s: %(message)s")
    out = Output(json_mode=bool(args.json))
    try:
        return int(args.func(args, out))
    except BrokenPipeError:  # output piped into head & co: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except UsageError as exc:
        out.warn(f"banyanstore {args.command}: {exc}")
        return EXIT_USAGE
    except (BanyanStoreError, OSError) as exc:
        out.warn(f"banyanstore {args.command}: error: {exc}")
        return EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
