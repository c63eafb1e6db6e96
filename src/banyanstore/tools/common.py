"""Shared pieces of the command-line tools: problems and reports, byte formatting,
key parsing and the recognition of store and log directories.

>>> parse_key("user:1"), parse_key("hex:00ff"), parse_key("hex:")
(b'user:1', b'\\x00\\xff', b'')
>>> show_bytes(b"ab\\x00c\\n"), show_bytes(b"\\x01\\x02", hex_mode=True)
('ab\\\\x00c\\\\n', '0102')
>>> preview(b"x" * 10, 4)
'xxxx...(+6 bytes)'
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from ..io.posix import PosixEnv

__all__ = ["Problem", "Report", "Output", "parse_key", "show_bytes", "preview", "detect_kind",
           "make_env", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "SEGMENT_NAME", "TABLE_NAME"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

SEGMENT_NAME = re.compile(r"^(\d{20})\.log$")
TABLE_NAME = re.compile(r"^(\d{6,})\.sst$")


class UsageError(Exception):
    """A bad argument found after parsing (a path that is not a store, a bad key...)."""


def make_env() -> PosixEnv:
    """The env every tool uses: plain positional reads, nothing to set up."""
    return PosixEnv()


# -- bytes on the command line and on the screen ------------------------------------------

def parse_key(text: str) -> bytes:
    """A key given on the command line: UTF-8 text, or ``hex:`` followed by hex digits."""
    if text.startswith("hex:"):
        try:
            return bytes.fromhex(text[4:])
        except ValueError as exc:
            raise UsageError(f"bad hex key {text!r}: {exc}") from None
    return text.encode()


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

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "ok": self.ok, "counts": self.counts,
                "problems": [asdict(p) for p in self.problems], "info": self.info}


# -- output ---------------------------------------------------------------------------------

class Output:
    """Where a command writes: lines for people, or JSON documents with ``--json``."""

    def __init__(self, json_mode: bool = False, stream: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.json = json_mode
        self.stream = stream if stream is not None else sys.stdout
        self.err = err if err is not None else sys.stderr

    def line(self, text: str = "") -> None:
        print(text, file=self.stream)

    def doc(self, obj: Any) -> None:
        """One JSON document on one line."""
        print(json.dumps(obj, separators=(",", ":"), default=_json_default), file=self.stream)

    def pretty(self, obj: Any) -> None:
        print(json.dumps(obj, indent=2, default=_json_default), file=self.stream)

    def warn(self, text: str) -> None:
        print(text, file=self.err)


def _json_default(obj: object) -> Any:
    if isinstance(obj, bytes):
        return show_bytes(obj)
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
    if "CURRENT" in names or any(n.startswith("MANIFEST-") for n in names) \
            or {"tables", "wal"} <= names:
        return "store"
    if any(SEGMENT_NAME.match(n) for n in names):
        return "log"
    return "unknown"
