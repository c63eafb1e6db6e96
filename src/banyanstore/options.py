"""Typed, validated configuration.

Options come from four places.  The precedence, highest first:

1. keyword arguments to :func:`banyanstore.open` / :func:`banyanstore.open_log`
   and fields set explicitly in ``Options(...)``;
2. environment variables ``BANYANSTORE_<NAME>`` (``BANYANSTORE_IO_MODE=sync``);
3. a TOML file (``Options.from_file(path)``, or ``BANYANSTORE_CONFIG=path``);
4. the defaults below.

So an operator can change anything the program leaves at its default
without touching code.  Unknown names, wrong types and values out of range
raise :class:`~banyanstore.errors.ConfigError` naming the option (and the
environment variable or the file it came from).  An unknown ``BANYANSTORE_*``
variable only warns: one stray variable must not stop every program on the
machine from opening its store.

Sizes (``memtable_size``, ``block_size``...) in a TOML file or a variable may be
written with a unit: ``"64MiB"``, ``"4 KiB"``, ``"1.5GiB"`` (binary units: KiB,
MiB, GiB, TiB), ``"64MB"`` (decimal units: kB, MB, GB, TB), or a plain byte count.

>>> opts = Options(io_mode="sync", memtable_size=1 << 20)
>>> opts.io_mode, opts.memtable_size
('sync', 1048576)
>>> resolve_options(environ={"BANYANSTORE_MEMTABLE_SIZE": "16MiB"}).memtable_size
16777216
>>> Options(io_mode="fast")
Traceback (most recent call last):
...
banyanstore.errors.ConfigError: option io_mode: 'fast' is not one of 'sync', 'nonblocking', 'io_uring', 'auto'
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError, ConfigTypeError

__all__ = ["Options", "resolve_options", "parse_size", "table_options", "ENV_PREFIX"]

ENV_PREFIX = "BANYANSTORE_"
# Variables of ours that are not options: the config file path, the soak switch, the
# pure-Python switch (accel.py); BANYANSTORE_TEST_* variables belong to the test suite.
_NOT_OPTIONS = frozenset({ENV_PREFIX + "CONFIG", ENV_PREFIX + "SOAK", ENV_PREFIX + "PURE_PYTHON"})

IO_MODES = ("sync", "nonblocking", "io_uring", "auto")
SYNC_MODES = ("always", "interval", "never")
COMPRESSIONS = ("none", "lz4", "zstd")
COMPACTION_MODES = ("thread", "process")
WAL_RECOVERY_MODES = ("strict", "skip_missing")

KiB = 1024
MiB = 1024 * KiB


def _choice(*allowed: str) -> dict[str, Any]:
    return {"choices": allowed}


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"lo": lo, "hi": hi}


def _size(lo: int, hi: int) -> dict[str, Any]:
    """A byte count: a TOML file or a variable may give it with a unit (``"64MiB"``)."""
    return {"lo": lo, "hi": hi, "size": True}


_SIZE_UNITS = {"": 1, "b": 1, "kib": KiB, "mib": MiB, "gib": 1 << 30, "tib": 1 << 40,
               "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_SIZE_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """A byte count written as ``"64MiB"``, ``"4 KiB"``, ``"1.5GiB"``, ``"64MB"``
    (decimal units) or ``"4096"``; :class:`ValueError` saying what is allowed otherwise.

    >>> parse_size("64MiB"), parse_size("4 KiB"), parse_size("1.5gib"), parse_size("2MB"), parse_size("10")
    (67108864, 4096, 1610612736, 2000000, 10)
    >>> parse_size("12 parsecs")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: '12 parsecs' is not a size: write a byte count or a number with a unit (...)
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str such as '64MiB', not {type(text).__name__}")
    match = _SIZE_TEXT.match(text)
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{text!r} is not a size: write a byte count or a number with a unit "
                         "(KiB, MiB, GiB, TiB, kB, MB, GB, TB)")
    number = match.group(1)
    whole, _, fraction = number.partition(".")
    # exact arithmetic: 1.5GiB is 1610612736 bytes, not a float's neighbour of it
    numerator = int(whole + fraction) * unit
    denominator = 10 ** len(fraction)
    if numerator % denominator:
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return numerator // denominator


@dataclass(frozen=True)
class Options:
    """Every knob of a store or a log, with its default (the README's *Configuration*
    has the longer story; each can also be set in a TOML file or a ``BANYANSTORE_<NAME>``
    environment variable, and sizes there may carry a unit such as ``"64MiB"``).

    ``io_mode``: ``"sync"``, ``"nonblocking"`` (worker threads serve read batches),
        ``"io_uring"`` (Linux >= 5.1, else IOModeUnavailableError) or ``"auto"``.
    ``io_threads`` / ``io_uring_entries``: nonblocking's threads; io_uring's ring size.
    ``direct_io``: read tables with O_DIRECT (bypassing the page cache).
    ``create_if_missing`` / ``error_if_exists`` / ``read_only``: how the open treats
        the path; any number of read-only stores may read beside one writer.
    ``follow`` / ``follow_interval_ms``: a read-only store catches up with its writer
        in the background at this interval (a read-only log's ``follow()`` polls at it).
    ``wal_sync``: when writes are fdatasynced -- ``"always"`` (before each write
        returns), ``"interval"`` (every ``wal_sync_interval_ms``), ``"never"`` (on
        ``sync()``, ``close()`` and ``sync=True`` writes).  A process crash loses no
        write that returned in any mode; a power loss may lose the unsynced ones.
    ``wal_sync_interval_ms``: the period of ``"interval"``.
    ``segment_size``: a log's (and the WAL's) segment size.
    ``log_index_interval``: a log keeps one index entry per this many records.
    ``skip_damaged_records``: a log's recovery skips (and counts) damaged records
        instead of raising CorruptionError.
    ``wal_recovery``: ``"strict"`` (a WAL missing records the manifest needs is a
        CorruptionError) or ``"skip_missing"`` (open without them: they are lost).
    ``memtable_size``: memtables (all keyspaces together) are flushed at this size.
    ``max_immutable_memtables``: memtables awaiting their flush before writers wait.
    ``block_size`` / ``compression`` / ``zstd_level``: tables' data blocks and their
        compression, ``"none"``, ``"lz4"`` or ``"zstd"``.
    ``bloom_bits_per_key``: each table's bloom filter (0: none).
    ``block_cache_size``: decoded blocks kept in memory.
    ``memtables_share_cache``: memtables are charged to the block cache, which gives
        up blocks (down to a quarter of its size) while they grow.
    ``max_open_files``: at most this many table files open at once (None: all).
    ``max_key_size`` / ``max_value_size``: larger new entries raise EntryTooLargeError.
    ``compaction``: background merges of tables (False: none; ``compact()`` still merges).
    ``compaction_mode``: ``"process"`` builds flushed and merged tables in worker
        processes, ``"thread"`` on background threads.
    ``compaction_min_width`` / ``compaction_max_width`` / ``compaction_size_ratio``:
        how many tables of what sizes a merge takes.
    ``max_tables_before_slowdown`` / ``max_tables_before_stall``: writes slow down,
        then wait, while this many tables await merging.
    ``merge_max_failures``: a table in this many failed merges in a row is no longer
        merged (still read).
    ``history_retention``: seconds of version history kept for reads at a version
        (None: only what live snapshots need).
    ``ttl``: seconds after which entries expire in keyspaces without a TTL of their
        own (not stored: give read-only stores the writer's too).
    """

    # --- IO -----------------------------------------------------------------
    io_mode: str = field(default="sync", metadata=_choice(*IO_MODES))
    io_threads: int = field(default=8, metadata=_range(1, 256))
    io_uring_entries: int = field(default=256, metadata=_range(8, 32768))
    direct_io: bool = False
    # --- opening ------------------------------------------------------------
    create_if_missing: bool = True
    error_if_exists: bool = False
    read_only: bool = False
    follow: bool = False  # read-only stores: catch up with the writer in the background
    follow_interval_ms: int = field(default=100, metadata=_range(1, 3_600_000))
    # --- durability -----------------------------------------------------------
    wal_sync: str = field(default="interval", metadata=_choice(*SYNC_MODES))
    wal_sync_interval_ms: int = field(default=100, metadata=_range(1, 3_600_000))
    # --- log ------------------------------------------------------------------
    segment_size: int = field(default=64 * MiB, metadata=_size(64 * KiB, 1 << 40))
    log_index_interval: int = field(default=16, metadata=_range(1, 1 << 20))
    skip_damaged_records: bool = False
    wal_recovery: str = field(default="strict", metadata=_choice(*WAL_RECOVERY_MODES))
    # --- memtables and tables ------------------------------------------------------
    memtable_size: int = field(default=64 * MiB, metadata=_size(64 * KiB, 1 << 36))
    max_immutable_memtables: int = field(default=2, metadata=_range(1, 64))
    block_size: int = field(default=4 * KiB, metadata=_size(1 * KiB, 4 * MiB))
    compression: str = field(default="lz4", metadata=_choice(*COMPRESSIONS))
    zstd_level: int = field(default=3, metadata=_range(-7, 22))
    bloom_bits_per_key: int = field(default=12, metadata=_range(0, 64))
    block_cache_size: int = field(default=64 * MiB, metadata=_size(0, 1 << 40))
    max_open_files: int | None = field(default=None, metadata=_range(1, 1 << 24))  # io/capped.py
    memtables_share_cache: bool = True  # the cache gives up what memtables hold (lsm/budget.py)
    max_key_size: int = field(default=64 * KiB, metadata=_size(1, 16 * MiB))
    max_value_size: int = field(default=64 * MiB, metadata=_size(0, 1 << 31))
    # --- compaction and retention ---------------------------------------------------
    compaction: bool = True
    compaction_mode: str = field(default="process", metadata=_choice(*COMPACTION_MODES))
    compaction_min_width: int = field(default=4, metadata=_range(2, 1024))
    compaction_max_width: int = field(default=8, metadata=_range(2, 1024))
    compaction_size_ratio: float = field(default=1.7, metadata=_range(1.0, 100.0))
    max_tables_before_slowdown: int = field(default=24, metadata=_range(2, 100_000))
    max_tables_before_stall: int = field(default=48, metadata=_range(2, 100_000))
    merge_max_failures: int = field(default=3, metadata=_range(1, 1000))
    history_retention: float | None = field(default=None, metadata=_range(0, None))
    ttl: float | None = field(default=None, metadata=_range(0, None))

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _validate(f, getattr(self, f.name)))
        if self.compaction_max_width < self.compaction_min_width:
            raise ConfigError(
                f"option compaction_max_width: {self.compaction_max_width} is below "
                f"compaction_min_width ({self.compaction_min_width})")
        if self.max_open_files is not None and self.read_only:
            # a writer deletes merged tables under a reader: one closed for the cap
            # could not be opened again
            raise ConfigError("option max_open_files: only a writer caps its open tables "
                              "(not with read_only=True)")
        if self.follow and not self.read_only:
            raise ConfigError("option follow: only a read-only store follows a writer "
                              "(set read_only=True)")
        if self.max_tables_before_stall < self.max_tables_before_slowdown:
            raise ConfigError(
                "option max_tables_before_stall: must be >= max_tables_before_slowdown "
                f"({self.max_tables_before_slowdown})")

    # -- constructors -----------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | bytes | os.PathLike[Any]) -> Options:
        """Options from a TOML file: top-level ``name = value`` pairs, or a
        ``[banyanstore]`` table; sizes may have units (``memtable_size = "64MiB"``).
        Unknown names and bad values raise :class:`ConfigError` naming the file.

        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     cfg = pathlib.Path(d, "store.toml")
        ...     _ = cfg.write_text('[banyanstore]\\nmemtable_size = "32MiB"\\nwal_sync = "always"\\n')
        ...     Options.from_file(cfg).memtable_size
        33554432
        """
        import tomllib  # here: only options files need it (1 MiB of imports)

        from .arguments import as_path  # (import banyanstore loads options.py alone)

        # Checked first: open() takes an int for a file descriptor, which it would read
        # and close -- another file's, such as an open store's WAL.
        path = as_path(path, "path")
        where = f"options file {path}"
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read {where}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where} is not valid TOML: {exc}") from exc
        if isinstance(data.get("banyanstore"), dict):
            data = data["banyanstore"]
        values = _check_names(data, where)
        try:
            for name, value in values.items():
                if _FIELDS[name].metadata.get("size") and isinstance(value, str):
                    values[name] = _size_from_text(_FIELDS[name], value)
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def replace(self, **changes: Any) -> Options:
        """A copy with some options changed (validated)."""
        _check_names(changes, "Options.replace")
        copy = dataclasses.replace(self, **changes)
        object.__setattr__(copy, "_explicit", self.explicit | frozenset(changes))
        return copy

    @property
    def explicit(self) -> frozenset[str]:
        """Names of the options given explicitly when this object was made (they
        outrank environment variables; see :func:`resolve_options`)."""
        return getattr(self, "_explicit", frozenset())

    def as_dict(self) -> dict[str, Any]:
        """``{option name: value}`` of every field, defaults included."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_FIELDS = {f.name: f for f in fields(Options)}
_dataclass_init = Options.__init__


def table_options(opts: Options) -> Options:
    """``opts`` for building a store's tables (flushes, merges, salvage): ``max_key_size``
    and ``max_value_size`` at the largest values they may take.  The two limit new
    writes; a table must take every entry the store already holds, such as one written
    before a reopen with lower limits (which would otherwise never flush or merge)."""
    return opts.replace(max_key_size=_FIELDS["max_key_size"].metadata["hi"],
                        max_value_size=_FIELDS["max_value_size"].metadata["hi"])


# functools.wraps keeps the dataclass's signature visible (``__wrapped__``) to
# inspect.signature, help() and IDEs: every field, its type and its default.
@functools.wraps(_dataclass_init)
def _init_recording_explicit(self: Options, *args: Any, **kwargs: Any) -> None:
    _check_names(kwargs, "Options()")  # a ConfigError naming it, as from open() or a file
    _dataclass_init(self, *args, **kwargs)
    names = [f.name for f in fields(Options)][:len(args)] + list(kwargs)
    object.__setattr__(self, "_explicit", frozenset(names))


Options.__init__ = _init_recording_explicit  # type: ignore[method-assign]


def _check_names(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known options are: {', '.join(sorted(_FIELDS))}")
    return dict(values)


def _type_name(f: dataclasses.Field[Any]) -> str:
    return str(f.type).replace("'", "")


def _finite(value: float) -> bool:
    """Whether ``value`` is a finite number a float holds (an int beyond the float range
    would raise OverflowError, naming no option, from the first arithmetic with a float)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _validate(f: dataclasses.Field[Any], value: Any) -> Any:
    name, kind = f.name, _type_name(f)
    optional = "None" in kind
    if value is None:
        if optional:
            return None
        raise ConfigTypeError(f"option {name}: None is not allowed (expected {kind})")
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigTypeError(f"option {name}: expected a bool, got {value!r}")
        return value
    if kind.startswith("int") or kind.startswith("float"):
        numeric = (int, float) if kind.startswith("float") else (int,)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise ConfigTypeError(f"option {name}: expected {kind}, got {value!r}")
        # nan passes every range check; inf breaks clock arithmetic
        if kind.startswith("float") and not _finite(value):
            raise ConfigError(f"option {name}: expected a finite number, got {value!r}")
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"option {name}: {value!r} is out of range "
                              f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]")
        return float(value) if kind.startswith("float") else value
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise ConfigTypeError(f"option {name}: expected a str, got {value!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"option {name}: {value!r} is not one of "
                              f"{', '.join(map(repr, choices))}")
        return value
    raise ConfigError(f"option {name}: unsupported type {kind}")  # pragma: no cover


def _size_from_text(f: dataclasses.Field[Any], text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ConfigError(f"option {f.name}: {exc}") from None


def _parse_env(f: dataclasses.Field[Any], key: str, text: str) -> Any:
    """The value of variable ``key`` for option ``f``, validated alone (so the error
    names the variable); raises :class:`ConfigError`."""
    try:
        return _validate(f, _parse_env_text(f, text))
    except ConfigError as exc:
        raise ConfigError(f"environment variable {key}={text!r}: {exc}") from None


def _parse_env_text(f: dataclasses.Field[Any], text: str) -> Any:
    kind = _type_name(f)
    raw = text.strip()
    if "None" in kind and raw.lower() in ("", "none", "null"):
        return None
    if f.metadata.get("size"):
        return _size_from_text(f, raw)
    try:
        if kind.startswith("bool"):
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            return int(raw, 0)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"option {f.name}: not a valid {kind}") from None
    return raw


# The unknown BANYANSTORE_* variables already warned about (see env_overrides).
_WARNED_UNKNOWN: set[str] = set()


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside this package, for a warning raised
    by the function that calls this: the line of the program that opened the store,
    however many of the package's frames lie between (they differ by entry point)."""
    import inspect  # (here: only this warning needs it)

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    here = inspect.currentframe()
    frame: types.FrameType | None = here.f_back if here is not None else None
    level = 1  # (the function that warns)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Options set through ``BANYANSTORE_<NAME>`` variables.  A bad value raises
    :class:`ConfigError` naming the variable; a variable naming no option warns
    (``UserWarning``, once per variable and process) and is ignored."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for key, text in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _NOT_OPTIONS or key.startswith(ENV_PREFIX + "TEST_"):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in _FIELDS:
            # Once per variable and process: a store's open resolves its options again
            # for its WAL (and a reader's catch-up), and a program may open many stores;
            # each resolution warning printed the same line three times for one open.
            if key not in _WARNED_UNKNOWN:
                _WARNED_UNKNOWN.add(key)
                warnings.warn(f"environment variable {key} names no banyanstore option (ignored); "
                              f"known options are: {', '.join(sorted(_FIELDS))}",
                              stacklevel=_caller_level())
            continue
        found[name] = _parse_env(_FIELDS[name], key, text)
    return found


def _explicit_fields(opts: Options) -> dict[str, Any]:
    """Fields of ``opts`` that were given explicitly (in code, or in its file)."""
    return {name: getattr(opts, name) for name in opts.explicit}


def resolve_options(options: Options | None = None, kwargs: Mapping[str, Any] | None = None,
                    environ: Mapping[str, str] | None = None) -> Options:
    """Combine defaults, config file, environment, ``options`` and ``kwargs``.

    >>> resolve_options(Options(block_size=4096), {"io_mode": "sync"},
    ...                 environ={"BANYANSTORE_BLOCK_SIZE": "8192",
    ...                          "BANYANSTORE_MEMTABLE_SIZE": "1048576"}).block_size
    4096
    >>> resolve_options(None, {}, environ={"BANYANSTORE_MEMTABLE_SIZE": "1048576"}).memtable_size
    1048576
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    config_path = environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        try:
            from_file = Options.from_file(config_path)
        except ConfigError as exc:
            # The program named no file: say where its name came from, or the user of
            # a program that never mentions a config file has no clue.
            raise type(exc)(f"{exc} (the file named by the environment variable "
                            f"{ENV_PREFIX}CONFIG)") from exc
        merged.update(_explicit_fields(from_file))
    merged.update(env_overrides(environ))
    if options is not None:
        if not isinstance(options, Options):
            raise ConfigTypeError(f"options must be a banyanstore.Options, got {type(options).__name__}")
        merged.update(_explicit_fields(options))
    merged.update(_check_names(kwargs or {}, "open()"))
    return Options(**merged)
