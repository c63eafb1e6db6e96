"""Checks of public arguments, shared by every entry point (Store, Keyspace,
Snapshot, Batch, Log, ``open``/``open_log``, dbm, the tools).

A wrong type raises :class:`TypeError` and a value out of range
:class:`ValueError`, both naming the argument, *before* anything is written:
a typo must never become a file named ``None`` or a TTL that breaks every
later read.

>>> as_path(b"/data/x"), as_path("rel/dir")
('/data/x', 'rel/dir')
>>> as_path(None)
Traceback (most recent call last):
...
TypeError: path must be a str, bytes or os.PathLike, not NoneType
>>> check_sync("yes")
Traceback (most recent call last):
...
TypeError: sync must be True, False or None, not 'yes'
>>> check_seconds(float("nan"), "ttl")
Traceback (most recent call last):
...
ValueError: ttl must be a finite number of seconds >= 0, not nan
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeGuard, cast

# The type of every key, value, bound and record argument: anything with a buffer
# (bytes, bytearray, memoryview, array.array, mmap), as as_bytes() accepts. Annotating
# those arguments ``bytes`` made a type checker (mypy's strict bytes, the default since
# mypy 2.0) reject the bytearray and memoryview the API documents. Type checkers read
# ``Buffer`` (PEP 688) from typing_extensions, whose stubs every checker ships; at run
# time (typing.get_type_hints) it is collections.abc.Buffer on 3.12+, and on 3.11,
# which has no Buffer, the union of the builtin buffer types.
if TYPE_CHECKING:
    from typing_extensions import Buffer as BytesLike
elif sys.version_info >= (3, 12):
    from collections.abc import Buffer as BytesLike
else:
    BytesLike = bytes | bytearray | memoryview

__all__ = ["BytesLike", "as_path", "as_bytes", "as_keys", "is_buffer", "check_bool", "check_sync",
           "check_seconds",
           "check_clock", "check_limit", "check_int", "check_seq", "is_finite_number",
           "version_type_error"]


def as_path(path: object, name: str = "path") -> str:
    """``path`` as a ``str``: ``str`` and ``os.PathLike`` as :func:`os.fspath` gives
    them, ``bytes`` decoded with the filesystem encoding (:func:`os.fsdecode`), so
    ``b"/data/x"``, ``"/data/x"`` and ``Path("/data/x")`` name the same directory.
    Anything else is a TypeError naming ``name``; an empty path a ValueError."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a str, bytes or os.PathLike, not {type(path).__name__}")
    text = os.fsdecode(path)
    if not text:
        raise ValueError(f"{name} must not be empty")
    if "\0" in text:
        raise ValueError(f"{name} must not contain NUL characters: {text!r}")
    return text


def as_bytes(obj: object, name: str) -> bytes:
    """``obj`` as ``bytes``: a ``bytes`` as is, any other object with a buffer copied
    (``bytearray``, ``memoryview``, ``array.array``, ``mmap``, ...; a strided view as the
    bytes it shows, as ``bytes(view)`` gives them); a str or an object without a buffer
    is a TypeError naming ``name``.

    >>> import array
    >>> as_bytes(array.array("B", b"key"), "key"), as_bytes(memoryview(b"v"), "value")
    (b'key', b'v')
    >>> as_bytes(memoryview(b"abcd")[::2], "key")
    b'ac'
    >>> as_bytes("key", "key")
    Traceback (most recent call last):
    ...
    TypeError: key must be bytes-like, not str (encode it first)
    """
    if type(obj) is bytes:
        return obj
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    if isinstance(obj, str):
        raise TypeError(f"{name} must be bytes-like, not str (encode it first)")
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be bytes-like, not {type(obj).__name__}") from None
    with view:  # released at once: the caller may resize or close its buffer afterwards
        return view.tobytes()


def is_buffer(obj: object) -> bool:
    """Whether ``obj`` exposes a buffer (a bytes-like object, or a strided view of one)."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return True
    try:
        memoryview(obj).release()  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


def as_keys(keys: object) -> list[bytes]:
    """The ``keys`` argument of ``multi_get``: an iterable of bytes-like keys (a single
    key -- a str or any object with a buffer, whose iteration gives characters or ints --
    is refused)."""
    if (type(keys) is not list and type(keys) is not tuple
            and (isinstance(keys, str) or not isinstance(keys, Iterable) or is_buffer(keys))):
        raise TypeError(f"keys must be an iterable of bytes-like keys, not {type(keys).__name__}")
    # (as_bytes' own first test inline: a call a key of every multi_get saved)
    return [k if type(k) is bytes else as_bytes(k, "key") for k in keys]


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is a bool; TypeError naming ``name`` otherwise (``"no"`` is
    truthy, so a non-bool flag would silently mean True)."""
    if value is not True and value is not False:
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return bool(value)


def check_sync(sync: object) -> None:
    """A ``sync=`` argument: True, False, or None (the configured ``wal_sync``)."""
    if sync is not None and sync is not True and sync is not False:
        raise TypeError(f"sync must be True, False or None, not {sync!r}")


def is_finite_number(value: object) -> TypeGuard[float]:
    """Whether ``value`` is an int or float (not a bool) that is finite and that a float
    holds: an int beyond the float range (JSON and Python allow one) would raise
    OverflowError from ``math.isfinite`` and from the first arithmetic with a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_seconds(value: object, name: str) -> float | None:
    """A duration in seconds such as a TTL: None, or a finite int/float >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if not is_finite_number(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    return value


def check_clock(value: object, name: str = "clock") -> None:
    """An injected clock: None or a callable like ``time.time`` (``clock``) or
    ``time.monotonic`` (``monotonic``) -- checked at open, not at the first write, TTL
    read or merge that calls it."""
    if value is not None and not callable(value):
        like = "time.time" if name == "clock" else "time.monotonic"
        raise TypeError(f"{name} must be a callable returning the time in seconds (like "
                        f"{like}) or None, not {type(value).__name__}")


CLOCK_LIMIT: Final = 1e16
"""Seconds an injected clock may return up to (excluded): a commit time is recorded in
milliseconds as a u64 (lsm/wal.py), which 1e16 s (year 3e8) keeps well inside."""


def checked_clock(clock: Callable[[], Any], name: str = "clock") -> Callable[[], float]:
    """An injected clock (see :func:`check_clock`) whose every reading is checked: a
    real number of seconds (numpy's and Fraction too) ``0 <= t < CLOCK_LIMIT``, else a
    TypeError or ValueError naming the clock and what it returned -- raised before a
    write or TTL read uses it, so both engines refuse alike, rather than each failing
    where the time meets its own arithmetic (NaN in ``int()``, a negative or too large
    one in the WAL record's u64).
    The system clock (``time.time``) is not wrapped: it is always in range."""
    def now() -> float:
        t = clock()
        if type(t) is not float and (isinstance(t, bool) or not isinstance(t, numbers.Real)):
            raise TypeError(f"{name} returned {type(t).__name__} {t!r:.60}, not a number of "
                            "seconds")
        if not 0 <= cast(float, t) < CLOCK_LIMIT:  # (NaN fails it too)
            since = " since the epoch" if name == "clock" else ""
            raise ValueError(f"{name} returned {t!r:.60}: the time must be seconds{since}, "
                             f">= 0 and < {CLOCK_LIMIT:g}")
        return cast(float, t)
    return now


def check_int(value: object, name: str) -> int:
    """An int argument such as a sequence number (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def version_type_error(version: object) -> TypeError:
    """The error for a ``version=`` that is not an int.  Bytes or a str there is most
    likely a default given where ``get()`` takes the version (``dict.get(key, default)``,
    plyvel's ``DB.get(key, default)``), so the message says how to pass one.

    >>> "get(key, default=...)" in str(version_type_error(b"-")), str(version_type_error(1.0))
    (True, 'version must be an int, not float')
    """
    message = f"version must be an int, not {type(version).__name__}"
    if isinstance(version, str) or is_buffer(version):
        message += (" (get()'s second argument is the version: pass a default by keyword, "
                    "get(key, default=...))")
    return TypeError(message)


def check_seq(value: object, name: str) -> int:
    """A log sequence number to sync or truncate up to: an int >= 0 (seqs start at 1; 0 is
    an empty log's ``last_seq``).  A negative one is a ValueError: no record has it, and
    a sync "up to" it would return as if it promised something."""
    check_int(value, name)
    if value < 0:  # type: ignore[operator]
        raise ValueError(f"{name} must be a seq >= 0, not {value}")
    return value  # type: ignore[return-value]


def check_limit(limit: Any) -> int | None:
    """A ``limit=`` argument: None or an int >= 0."""
    if limit is None:
        return None
    if type(limit) is not int:
        raise TypeError(f"limit must be an int >= 0 or None, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be an int >= 0 or None, not {limit}")
    return limit
