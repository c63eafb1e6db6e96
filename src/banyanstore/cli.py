"""The ``banyanstore`` command: an operator's tools for stores, logs and tables.

Usage (also ``python -m banyanstore``)::

    banyanstore get STORE KEY               one value (read-only open)
    banyanstore scan STORE                  key = value lines (read-only)
    banyanstore put STORE KEY VALUE         write one value (durable on exit)
    banyanstore delete STORE KEY            delete one key (durable on exit)
    banyanstore keyspaces STORE             the keyspaces, their tables and memtables
    banyanstore stats STORE                 store.stats() as tables (read-only)
    banyanstore compact STORE               merge tables (progress bar)
    banyanstore verify PATH                 check a store, log or table (progress bar)
    banyanstore repair STORE                repair what is provably safe; salvage the rest
                                            into lost/ (tools/repair.py, tools/salvage.py)
    banyanstore checkpoint STORE DEST       a consistent copy (beside a writer too)
    banyanstore dump-manifest PATH          the manifest's edits, one JSON object per line
    banyanstore dump-table FILE             a table's properties and entries
    banyanstore dump-log PATH               a log's records (seq, length, preview)
    banyanstore dump-wal STORE              a store's WAL records, decoded
    banyanstore backup STORE URL            an incremental backup to a directory or s3://...
    banyanstore restore URL DEST            restore the newest (or --backup ID) backup
    banyanstore backups URL                 list the complete backups (--verify: check them)
    banyanstore prune URL --keep N          delete all but the N newest backups

Keys and values on the command line are UTF-8 text, ``hex:`` and hex digits, or
``b64:`` and base64.  Bytes are shown with Python's escapes (``--hex``: as hex).
``--json`` (before or after the command) prints JSON instead, with every key and
value in base64 (``--hex``: in hex).

Every failure is one line ``banyanstore COMMAND: WHAT`` on stderr.  Exit codes:
0 ok (verify/repair: no damage; warnings are listed); 1 a problem found (damage,
a key or backup not found, something repair could not recover); 2 usage (bad
arguments) or the path cannot be opened (missing, not a store, a writer has it
open).  See docs/cli.md.

>>> main(["--version"])
banyanstore 0.1.0
0
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from .errors import BanyanStoreError
from .tools.backups import cmd_backup, cmd_backups, cmd_prune, cmd_restore
from .tools.common import EXIT_OK, EXIT_USAGE, Failure, Output, exit_code_for, one_line
from .tools.dumps import cmd_dump_log, cmd_dump_manifest, cmd_dump_wal
from .tools.progress import add_progress_flags
from .tools.reads import cmd_checkpoint, cmd_get, cmd_keyspaces, cmd_scan, cmd_stats
from .tools.repair import cmd_repair
from .tools.tables import cmd_dump_table
from .tools.verify import cmd_verify
from .tools.writes import cmd_compact, cmd_delete, cmd_put
from .version import __version__

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


def _stall_seconds(text: str) -> float | None:
    """``--stall-timeout``: seconds > 0, or ``none`` (wait for ever)."""
    if text.strip().lower() == "none":
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0 (or none): {text!r}")
    return seconds


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line: ``banyanstore CMD: WHAT`` (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


_EPILOG = ("exit codes: 0 ok; 1 a problem found (damage) or not found; 2 usage, or the path "
           "cannot be opened.  Keys: text, hex:..., or b64:...")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of text (keys and values in base64)")
    common.add_argument("--hex", action="store_true", default=argparse.SUPPRESS,
                        help="show keys and values as hex (in JSON too)")
    shown = _Parser(add_help=False)
    shown.add_argument("--width", type=_non_negative, default=64,
                       help="bytes of each value to preview (default 64)")
    limited = _Parser(add_help=False)
    limited.add_argument("--limit", type=_non_negative, default=None, help="show at most N items")
    progress = _Parser(add_help=False)
    add_progress_flags(progress)

    p = _Parser(prog="banyanstore", description=__doc__.split("\n\n")[0].replace("``", ""), epilog=_EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--hex", action="store_true", help="show keys and values as hex")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, func: Command, help_text: str, *parents: _Parser
            ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text, epilog=_EPILOG,
                            parents=[common, *parents])
        sp.set_defaults(func=func, command_parser=sp)
        return sp

    add("verify", cmd_verify, "check a store, log or table and report every problem with its "
        "file and offset (changes nothing); exit 1 only for damage, warnings are listed",
        progress).add_argument("path")
    sp = add("stats", cmd_stats, "open a store read-only and print store.stats() as tables")
    sp.add_argument("path", metavar="store")
    sp.add_argument("--tree", action="store_true", help="every field, nested, instead of tables")
    add("keyspaces", cmd_keyspaces, "list the keyspaces of a store (read-only) with their ids, "
        "ttl, tables and memtables").add_argument("path", metavar="store")
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
    sp = add("put", cmd_put, "write VALUE under KEY (opens the store for writing; durable "
             "when the command exits)")
    sp.add_argument("path", metavar="store")
    sp.add_argument("key", help="text, hex:... or b64:...")
    sp.add_argument("value", nargs="?", help="text, hex:... or b64:... (or --stdin)")
    sp.add_argument("--stdin", action="store_true", help="read the value's bytes from stdin")
    sp.add_argument("--create", action="store_true",
                    help="make the store if the path does not exist (else a missing store is an error)")
    sp.add_argument("--keyspace", help="keyspace name (default: default; must exist)")
    sp = add("delete", cmd_delete, "delete KEY (a tombstone; opens the store for writing; durable "
             "when the command exits)")
    sp.add_argument("path", metavar="store")
    sp.add_argument("key", help="text, hex:... or b64:...")
    sp.add_argument("--keyspace", help="keyspace name (default: default; must exist)")
    sp = add("compact", cmd_compact, "merge the tables of STORE into as few as possible (opens "
             "the store for writing)", progress)
    sp.add_argument("path", metavar="store")
    sp.add_argument("--keyspace", help="only this keyspace (default: all)")
    sp.add_argument("--start", help="only tables with keys at or after this one")
    sp.add_argument("--end", help="only tables with keys before this one")
    sp = add("checkpoint", cmd_checkpoint, "write a consistent, openable copy of STORE to DEST "
             "(beside a running writer too: then from the store's files)")
    sp.add_argument("path", metavar="store")
    sp.add_argument("dest")
    sp = add("repair", cmd_repair, "repair what is provably safe; when the manifest or a table is "
             "lost, salvage from tables and WAL (nothing deleted: set aside in lost/)")
    sp.add_argument("path", metavar="store")
    sp.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    sp.add_argument("--accept-lost-segment", action="store_true",
                    help="a log or WAL whose newest segment was deleted: accept that its records "
                         "are lost and let the log go on")
    _add_backup_commands(add)
    return p


def _add_backup_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    remote = _Parser(add_help=False)
    remote.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                        help="an fsspec storage option (repeatable; VALUE as JSON if it parses)")
    remote.add_argument("--parallel", type=_positive, default=8,
                        help="transfers at once (default 8)")
    remote.add_argument("--stall-timeout", type=_stall_seconds, default=300.0, metavar="SECONDS",
                        help="fail a transfer to or from an fsspec URL that makes no progress "
                             "for this long (default 300; none: wait for ever)")
    remote.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    remote.add_argument("--progress", action="store_true", default=None,
                        help="progress bars on stderr even when it is not a terminal")
    url_help = "a local directory or an fsspec URL (s3://bucket/prefix, gs://..., az://...)"
    sp = add("backup", cmd_backup, "back up STORE to URL, uploading only what URL lacks (works "
             "beside a running writer)", remote)
    sp.add_argument("store")
    sp.add_argument("url", help=url_help)
    sp.add_argument("--verify-reused", action="store_true",
                    help="read every object URL holds already through its checksum, and upload "
                         "again each that fails it (damaged in place)")
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


def _escape_unencodable_output() -> None:
    """File names that are not valid in the locale's encoding (held as surrogates) are
    printed escaped: a strict stdout would otherwise end the command in a traceback."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """A warning as one log line, ``banyanstore: WARNING: MESSAGE`` (docs/cli.md).
    ``logging.captureWarnings`` logged Python's own format instead: the library's file
    and line, its source line and a blank line -- three lines an operator has no use for."""
    logging.getLogger("py.warnings").warning("%s", one_line(str(message)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the command's parser, so the line names the command
            getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, said in one line)
        return int(exc.code or 0)
    if args.version and args.command is None:
        print(f"banyanstore {__version__}")
        return EXIT_OK
    if args.command is None:
        print("banyanstore: a COMMAND is required (see banyanstore --help)", file=sys.stderr)
        return EXIT_USAGE
    _escape_unencodable_output()
    # warnings (an unknown BANYANSTORE_* variable...) and log records: one line each
    logging.basicConfig(level=logging.WARNING, format="banyanstore: %(levelname)s: %(message)s")
    warnings.showwarning = _warning_line
    out = Output(json_mode=bool(args.json), hex_mode=bool(args.hex))
    try:
        return int(args.func(args, out))
    except BrokenPipeError:  # output piped into head & co: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        out.warn(f"banyanstore {args.command}: interrupted")
        return 130
    except (Failure, BanyanStoreError, OSError) as exc:  # anything else is a bug: its traceback
        out.warn(f"banyanstore {args.command}: {one_line(str(exc))}")
        return exit_code_for(exc)


if __name__ == "__main__":
    sys.exit(main())
