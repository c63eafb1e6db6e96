"""Iterators that stay failed: once one raised, every later ``next()`` raises the same
error -- never ``StopIteration``.

A generator that raised is over, so a consumer that catches the error and calls
``next()`` again gets ``StopIteration`` and takes a prefix for the whole (docs/api.md:
"an iterator that raised gives no further rows").  The store's scans
(lsm/iterators.py) and the Log's ``read()``/``follow()`` hand out their rows through
these.  ``chain`` asks a source iterator that raised once more (it drops only the
iterator *of* sources that raised), so the error is handed to it as the next source:
no object per row, and ``next()`` stays ``chain``'s own (C) method.

>>> def rows():
...     yield 1
...     raise OSError("disk gone")
>>> it = sticky_items(rows())
>>> next(it)
1
>>> for _ in range(2):
...     try:
...         next(it)
...     except OSError as exc:
...         print(exc)
disk gone
disk gone
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from itertools import chain
from typing import Any, TypeVar, cast

__all__ = ["STICKY", "Failed", "StickyItems", "sticky_items", "then_failure"]

T = TypeVar("T")

STICKY = (Exception, KeyboardInterrupt)
"""What an iterator raises again at every later ``next()`` once it raised it (not
GeneratorExit, nor SystemExit)."""


class Failed:
    """An error an iterator raised, raised again at every later ``next()`` with the
    traceback it first had (a re-raise would grow it by a frame each time)."""

    __slots__ = ("error", "traceback")

    def __init__(self, error: BaseException) -> None:
        self.error, self.traceback = error, error.__traceback__

    def __iter__(self) -> Failed:
        return self

    def __next__(self) -> Any:
        raise self.error.with_traceback(self.traceback)


class StickyItems(chain[Any]):
    """``items`` one by one; once it raised, every later ``next()`` raises the same
    error.  A ``chain`` (its C ``__next__``) that can be closed, as the generator it
    wraps could."""

    __slots__ = ("_closers",)
    _closers: tuple[Callable[[], object], ...]

    def __new__(cls, items: Iterator[Any]) -> StickyItems:
        failed: list[Failed] = []
        noting = _noting(items, failed)
        self = cast(StickyItems, cls.from_iterable(then_failure(noting, failed)))
        self._closers = (noting.close, getattr(items, "close", _nothing))
        return self

    def close(self) -> None:
        """End the iterator and close what it wraps (a generator's pins, its open files):
        later ``next()`` calls raise ``StopIteration``, as a closed generator's do."""
        for closer in self._closers:
            closer()


def sticky_items(items: Iterator[T]) -> Iterator[T]:
    """``items`` one by one; once it raised, every later ``next()`` raises the same error.
    The result has ``close()``, which closes ``items`` too when it is a generator."""
    return StickyItems(items)


def _nothing() -> None:
    pass


def _noting(items: Iterator[T], failed: list[Failed]) -> Generator[T, None, None]:
    try:
        yield from items
    except STICKY as exc:
        failed.append(Failed(exc))
        raise


def then_failure(rows: Iterator[T], failed: list[Failed]) -> Iterator[Iterable[T]]:
    """``rows``, then the error it raised, if it did: ``chain`` asks ``rows`` again after
    it raised (its StopIteration then), then this for the next source -- the error."""
    yield rows
    if failed:
        yield failed[0]
