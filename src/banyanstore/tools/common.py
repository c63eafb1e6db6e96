"""Shared pieces of the command-line tools: failures and exit codes, problems and
reports, byte formatting, key parsing and the recognition of store and log directories.

>>> parse_key("user:1"), parse_key("hex:00ff"), parse_key("hex:"), parse_key("b64:AP8=")
(b'user:1', b'\\x00\\xff', b'', b'\\x00\\xff')
>>> show_bytes(b"ab\\x00c\\n"), show_bytes(b"\\x01\\x02", hex_mode=True)
('ab\\\\x00c\\\\n', '0102')
>>> preview(b"x" * 10, 4)
'xxxx...(+6 bytes)'
>>> Output(json_mode=True).show(b"\\x00\\xff"), Output(json_mode=True, hex_mode=True).show(b"\\x00\\xff")
('AP8=', '00ff')
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from ..errors import (
    BanyanStoreError,
    ConfigError,
    KeyspaceNotFoundError,
    NotAStoreError,
    StoreLockedError,
    StoreNotFoundError,
    VersionUnavailableError,
    from_oserror,
)
from ..io.posix import PosixEnv

__all__ = ["Problem", "Report", "Output", "parse_key", "show_bytes", "preview", "detect_kind",
           "make_env", "NOT_A_FILE", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "SEGMENT_NAME", "TABLE_NAME",
           "Failure", "UsageError", "NotFound", "exit_code_for", "one_line", "io_errors"]


@contextlib.contextmanager
def io_errors(op: str, where: str) -> Iterator[None]:
    """A bare OSError of a plain file call raised as every IO failure of the library is:
    a StorageIOError (DiskFullError for ENOSPC) naming the file, the OSError as cause."""
    try:
        yield
    except BanyanStoreError:
        raise
    except OSError as exc:
        raise from_oserror(op, exc.filename if exc.filename is not None else where, exc) from exc


# The exit codes of every command (docs/cli.md).
EXIT_OK = 0        # done; verify/repair: no damage (warnings may be listed)
EXIT_PROBLEMS = 1  # a problem found (damage, a failed backup check) or not found (get)
EXIT_USAGE = 2     # bad arguments, or the path cannot be opened (missing, not a store, locked)

# A store's file replaced by a directory (or a device...): damage, reported, never removed.
NOT_A_FILE = "not a regular file (a directory or another kind of file is in its place)"

SEGMENT_NAME = re.compile(r"^(\d{20})\.log$")
TABLE_NAME = re.compile(r"^(\d{6,})\.sst$")


class Failure(Exception):
    """A command failed: ``banyanstore <command>: <message>`` on stderr, exit ``code``."""

    code = EXIT_PROBLEMS

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(Failure):
    """A bad argument found after parsing (a path that is not a store, a bad key...)."""

    code = EXIT_USAGE


class NotFound(Failure):
    """What was asked for does not exist (a key, a backup): exit 1, said on stderr."""


# Errors that mean "the arguments are wrong or the path cannot be opened", not damage.
_CANNOT_OPEN = (ConfigError, StoreLockedError, StoreNotFoundError, NotAStoreError, KeyspaceNotFoundError,
                VersionUnavailableError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                PermissionError)


def exit_code_for(exc: BaseException) -> int:
    """The exit code of an error raised by the library or the operating system."""
    if isinstance(exc, Failure):
        return exc.code
    if isinstance(exc, _CANNOT_OPEN) or getattr(exc, "errno", None) in (errno.ENOENT, errno.EACCES):
        return EXIT_USAGE
    return EXIT_PROBLEMS


def one_line(text: str) -> str:
    """``text`` on one line (an error message must not break the one-line rule)."""
    return " ".join(text.split())


def make_env() -> PosixEnv:
    """The env every tool uses: plain positional reads, nothing to set up."""
    return PosixEnv()


# -- bytes on the command line and on the screen ------------------------------------------

def parse_key(text: str, what: str = "key") -> bytes:
    """A key (or value) given on the command line: UTF-8 text, ``hex:`` followed by
    hex digits, or ``b64:`` followed by base64 (what ``--json`` prints)."""
    if text.startswith("hex:"):
        try:
            return bytes.fromhex(text[4:])
        except ValueError as exc:
            raise UsageError(f"bad hex {what} {text!r}: {exc}") from None
    if text.startswith("b64:"):
        try:
            return base64.b64decode(text[4:], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise UsageError(f"bad base64 {what} {text!r}: {exc}") from None
    return text.encode()


def encode_bytes(data: bytes, *, hex_mode: bool = False) -> str:
    """``data`` inside JSON: base64 (standard alphabet, padded), or lowercase hex."""
    return bytes(data).hex() if hex_mode else base64.b64encode(data).decode("ascii")


def show_bytes(data: bytes, *, hex_mode: bool = False) -> str:
    """``data`` for a person: printable ASCII as is, other bytes escaped as
    Python does (or all hex)."""
    if hex_mode:
        return data.hex()
    return repr(bytes(data))[2:-1]


def preview(data: bytes, width: int = 48, *, hex_mode: bool = False) -> str:
    """:func:`show_bytes` of the first ``width`` bytes, saying how many were left out."""
    if width >= 0 and len(data) > width:
        return f"{show_bytes(data[:width], hex_mode=hex_mode)}...(+{len(data) - width} bytes)"
    return show_bytes(data, hex_mode=hex_mode)


# -- problems ------------------------------------------------------------------------------

@dataclass
class Problem:
    """One thing found wrong.  ``severity`` is ``error`` (damage: data is or may be lost)
    or ``warning`` (a crash leftover that recovery or ``repair`` handles: a torn tail,
    an orphan file)."""

    severity: str
    file: str
    message: str
    offset: int | None = None

    def __str__(self) -> str:
        where = self.file if self.offset is None else f"{self.file} @ offset {self.offset}"
        return f"{self.severity.upper()}: {where}: {self.message}"


@dataclass
class Report:
    """What a verify (or repair) run found: problems plus informational lines."""

    path: str
    kind: str
    problems: list[Problem] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    on_progress: Callable[[int], None] | None = field(default=None, repr=False, compare=False)

    def error(self, file: str, message: str, offset: int | None = None) -> None:
        self.problems.append(Problem("error", file, message, offset))

    def warning(self, file: str, message: str, offset: int | None = None) -> None:
        self.problems.append(Problem("warning", file, message, offset))

    def note(self, text: str) -> None:
        self.info.append(text)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def from_corruption(self, exc: Exception, default_file: str) -> None:
        """Record a CorruptionError (or any error) as an error problem, keeping its place."""
        path, offset = getattr(exc, "path", None), getattr(exc, "offset", None)
        text = str(exc)
        where = [f"file {path}"] if path is not None else []
        where += [f"offset {offset}"] if offset is not None else []
        suffix = f" ({', '.join(where)})"
        if where and text.endswith(suffix):  # the problem line says where already
            text = text[:-len(suffix)]
        self.error(path or default_file, text, offset)

    def advance(self, nbytes: int) -> None:
        """Bytes checked so far grew by ``nbytes`` (drives a progress bar, if any)."""
        if self.on_progress is not None:
            self.on_progress(nbytes)

    @property
    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        return len(self.problems) - self.errors

    @property
    def ok(self) -> bool:
        """No damage: warnings (crash leftovers that an open or repair handles) allowed."""
        return self.errors == 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "ok": self.ok, "errors": self.errors,
                "warnings": self.warnings, "counts": self.counts,
                "problems": [asdict(p) for p in self.problems], "info": self.info}


# -- output ---------------------------------------------------------------------------------

class Output:
    """Where a command writes: lines for people, or JSON documents with ``--json``.

    Bytes (keys, values, records) go through :meth:`show`: for people, printable
    ASCII with Python's escapes (``--hex``: hex); in JSON, always base64 (``--hex``:
    hex) -- never Python-escaped text, which JSON readers cannot turn back into bytes."""

    def __init__(self, json_mode: bool = False, stream: TextIO | None = None,
                 err: TextIO | None = None, *, hex_mode: bool = False) -> None:
        self.json = json_mode
        self.hex = hex_mode
        self.stream = stream if stream is not None else sys.stdout
        self.err = err if err is not None else sys.stderr

    def show(self, data: bytes) -> str:
        """``data`` as this output writes bytes (see the class docstring)."""
        if self.json:
            return encode_bytes(data, hex_mode=self.hex)
        return show_bytes(data, hex_mode=self.hex)

    def show_value(self, data: bytes | None, width: int = -1) -> str | None:
        """A value: in JSON like :meth:`show` (None stays null); for people a
        :func:`preview` of ``width`` bytes (all: -1), ``TOMBSTONE`` for None."""
        if data is None:
            return None if self.json else "TOMBSTONE"
        if self.json:
            return encode_bytes(data, hex_mode=self.hex)
        return preview(data, width, hex_mode=self.hex)

    def line(self, text: str = "") -> None:
        print(text, file=self.stream)

    def doc(self, obj: Any) -> None:
        """One JSON document on one line."""
        print(json.dumps(obj, separators=(",", ":"), default=self._json_default), file=self.stream)

    def pretty(self, obj: Any) -> None:
        print(json.dumps(obj, indent=2, default=self._json_default), file=self.stream)

    def warn(self, text: str) -> None:
        print(text, file=self.err)

    def _json_default(self, obj: object) -> Any:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return encode_bytes(bytes(obj), hex_mode=self.hex)
        if isinstance(obj, (set, frozenset, tuple)):
            return list(obj)
        return repr(obj)


def render_tree(obj: Any, indent: int = 0) -> Iterable[str]:
    """A nested dict as indented ``key: value`` lines (lists of dicts as ``-`` items)."""
    pad = "  " * indent
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                yield f"{pad}{k}:"
                yield from render_tree(v, indent + 1)
            else:
                yield f"{pad}{k}: {_scalar(v)}"
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                first = True
                for line in render_tree(item, indent + 1):
                    yield (f"{pad}- {line.lstrip()}" if first else line)
                    first = False
            else:
                yield f"{pad}- {_scalar(item)}"
    else:
        yield f"{pad}{_scalar(obj)}"


def _scalar(v: Any) -> str:
    if isinstance(v, bytes):
        return show_bytes(v)
    if isinstance(v, (dict, list)):
        return "{}" if isinstance(v, dict) else "[]"
    return "null" if v is None else str(v)


# -- what a directory is ---------------------------------------------------------------------

def detect_kind(path: str) -> str:
    """``store``, ``log``, ``table``, ``manifest``, ``missing`` or ``unknown``."""
    if not os.path.exists(path):
        return "missing"
    if os.path.isfile(path):
        name = os.path.basename(path)
        if TABLE_NAME.match(name):
            return "table"
        if name.startswith("MANIFEST-"):
            return "manifest"
        if SEGMENT_NAME.match(name):
            return "segment"
        return "unknown"
    names = set(os.listdir(path))
    # tables/ beside lost/: a store whose salvage was killed after it moved CURRENT and
    # the manifests aside (and maybe found no wal/), which a second repair finishes
    if "CURRENT" in names or any(n.startswith("MANIFEST-") for n in names) \
            or {"tables", "wal"} <= names or {"tables", "lost"} <= names:
        return "store"
    if any(SEGMENT_NAME.match(n) for n in names):
        return "log"
    return "unknown"
