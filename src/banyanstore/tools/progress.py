"""Progress bars of the long commands (``verify``, ``compact``) on stderr.

A bar is drawn only where a person watches: stderr is a terminal, or the command
got ``--progress`` (``--no-progress`` and ``--json`` turn it off).  It draws with
``rich`` (``pip install 'banyanstore[cli]'``); without rich, one line rewritten in
place (``\\r``) at each whole percent.  Stdout is never touched, so the output of a
command reads the same with or without a bar.

>>> import io
>>> err = io.StringIO()
>>> with ProgressBar("verify", total=200, unit="bytes", enabled=True, stream=err,
...                  use_rich=False) as bar:
...     bar.advance(100); bar.advance(100)
>>> err.getvalue().split("\\r")[-1]
'verify: 100% (200/200 bytes)\\n'
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

__all__ = ["ProgressBar", "wants_progress", "add_progress_flags"]


def add_progress_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", action="store_true", default=None,
                       help="draw a progress bar on stderr (default: only on a terminal)")
    group.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar")


def wants_progress(args: argparse.Namespace, json_mode: bool, stream: TextIO | None = None) -> bool:
    """``--progress`` / ``--no-progress`` when given; otherwise a bar only on a terminal
    and never with ``--json`` (whose reader is a program)."""
    chosen = getattr(args, "progress", None)
    if chosen is not None:
        return bool(chosen)
    return not json_mode and (stream if stream is not None else sys.stderr).isatty()


class ProgressBar:
    """One bar from 0 to ``total`` (in ``unit``); a no-op when not ``enabled``."""

    def __init__(self, description: str, *, total: int, unit: str, enabled: bool,
                 stream: TextIO | None = None, use_rich: bool = True) -> None:
        self.description = description
        self.total = max(total, 0)
        self.unit = unit
        self.done = 0
        self._enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._rich: Any = None
        self._task: Any = None
        self._shown_percent = -1
        if enabled and use_rich:
            self._rich = _rich_progress(self._stream, unit)

    def __enter__(self) -> ProgressBar:
        if self._rich is not None:
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total or None)
        return self

    def advance(self, amount: int) -> None:
        if not self._enabled:
            return
        self.done = min(self.done + amount, self.total) if self.total else self.done + amount
        self._draw()

    def set_description(self, text: str) -> None:
        self.description = text
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, description=text)

    def _draw(self) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done)
            return
        percent = 100 * self.done // self.total if self.total else 100
        if percent != self._shown_percent:
            self._shown_percent = percent
            self._stream.write(f"\r{self.description}: {percent}% "
                               f"({self.done}/{self.total} {self.unit})")
            self._stream.flush()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self._enabled:
            return
        if exc_type is None:
            self.done = self.total  # the work is done even where the estimate was high
            self._draw()
        if self._rich is not None:
            self._rich.stop()
        else:
            self._stream.write("\n")
            self._stream.flush()


def _rich_progress(stream: TextIO, unit: str) -> Any:
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        return None
    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    return Progress(TextColumn("{task.description}"), BarColumn(), amount, TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(file=stream), transient=False)
