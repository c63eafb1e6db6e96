"""Options as a user meets them: the signature and help() show every field, sizes with
units in TOML files and variables, errors naming the variable or file they came from,
an unknown ``BANYANSTORE_*`` variable warning instead of failing every open, and the
classes exported from the package for type hints."""

from __future__ import annotations

import dataclasses
import inspect
import os
import pydoc
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import banyanstore
from banyanstore import ConfigError, Options
from banyanstore.options import parse_size, resolve_options


def test_signature_and_help_show_every_field() -> None:
    params = inspect.signature(Options).parameters
    names = [f.name for f in dataclasses.fields(Options)]
    assert list(params) == names
    assert params["memtable_size"].default == 64 << 20
    assert params["io_mode"].default == "sync"
    text = pydoc.render_doc(Options, renderer=pydoc.plaintext)
    assert "memtable_size: 'int' = 67108864" in text
    assert "wal_sync: 'str' = 'interval'" in text


def test_fields_given_positionally_or_by_name_still_outrank_the_environment() -> None:
    opts = Options("nonblocking", memtable_size=1 << 20)
    assert opts.explicit == {"io_mode", "memtable_size"}
    resolved = resolve_options(opts, {}, environ={"BANYANSTORE_IO_MODE": "sync",
                                                  "BANYANSTORE_MEMTABLE_SIZE": "2MiB",
                                                  "BANYANSTORE_BLOCK_SIZE": "8KiB"})
    assert (resolved.io_mode, resolved.memtable_size, resolved.block_size) == ("nonblocking", 1 << 20, 8192)


@pytest.mark.parametrize("text, size", [
    ("4096", 4096), ("64MiB", 64 << 20), ("64 MiB", 64 << 20), ("4kib", 4096), ("1.5GiB", 3 << 29),
    ("1TiB", 1 << 40), ("2MB", 2_000_000), ("8kB", 8000), ("3 B", 3), (" 7 ", 7),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "-1KiB", "1.2.3MiB", "64 MiBs", "0x10", "1.0000001KiB", "ten"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text", [5, None, b"64MiB", 1.5], ids=["int", "None", "bytes", "float"])
def test_parse_size_takes_text_only(text: object) -> None:
    """A size to parse is text; anything else is a TypeError naming the argument (not
    the regular expression's complaint about its pattern)."""
    with pytest.raises(TypeError, match="text"):
        parse_size(text)  # type: ignore[arg-type]


def test_sizes_with_units_in_environment_and_toml(tmp_path: Path) -> None:
    env = {"BANYANSTORE_MEMTABLE_SIZE": "16MiB", "BANYANSTORE_BLOCK_CACHE_SIZE": "1 GiB",
           "BANYANSTORE_SEGMENT_SIZE": "1048576"}
    opts = resolve_options(None, {}, environ=env)
    assert (opts.memtable_size, opts.block_cache_size, opts.segment_size) == (16 << 20, 1 << 30, 1 << 20)
    cfg = tmp_path / "store.toml"
    cfg.write_text('memtable_size = "32MiB"\nblock_size = "8 KiB"\nmax_value_size = 1024\n')
    opts = Options.from_file(cfg)
    assert (opts.memtable_size, opts.block_size, opts.max_value_size) == (32 << 20, 8192, 1024)
    assert opts.explicit == {"memtable_size", "block_size", "max_value_size"}
    # through BANYANSTORE_CONFIG as well
    opts = resolve_options(None, {}, environ={"BANYANSTORE_CONFIG": str(cfg)})
    assert opts.memtable_size == 32 << 20
    # a unit on a field that is not a size stays an error
    cfg.write_text('io_threads = "8KiB"\n')
    with pytest.raises(ConfigError, match=f"options file {cfg}: option io_threads: expected int"):
        Options.from_file(cfg)


@pytest.mark.parametrize("variable, value, says", [
    ("BANYANSTORE_MEMTABLE_SIZE", "1KiB", "out of range"),
    ("BANYANSTORE_MEMTABLE_SIZE", "lots", "not a size"),
    ("BANYANSTORE_IO_THREADS", "many", "not a valid int"),
    ("BANYANSTORE_IO_THREADS", "0", "out of range"),
    ("BANYANSTORE_WAL_SYNC", "sometimes", "not one of"),
    ("BANYANSTORE_COMPACTION", "maybe", "not a valid bool"),
])
def test_an_error_from_a_variable_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      variable: str, value: str, says: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        banyanstore.open(tmp_path / "db")
    message = str(info.value)
    assert message.startswith(f"environment variable {variable}={value!r}: "), message
    assert says in message


def test_an_error_from_a_file_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('block_size = "3 parsecs"\n')
    with pytest.raises(ConfigError, match=f"options file {cfg}: option block_size: .* is not a size"):
        Options.from_file(cfg)
    cfg.write_text('block_size = 12\n')
    with pytest.raises(ConfigError, match=f"options file {cfg}: option block_size: 12 is out of range"):
        Options.from_file(cfg)


def test_an_unknown_variable_warns_and_the_store_opens(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANYANSTORE_MEMTABLE_SISE", "1MiB")
    with pytest.warns(UserWarning, match="BANYANSTORE_MEMTABLE_SISE names no banyanstore option"):
        store = banyanstore.open(tmp_path / "db")
    with store:
        assert store.options.memtable_size == 64 << 20


def test_an_unknown_variable_warns_once_not_once_per_inner_open(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A store's open resolves its options again for its WAL (and a reader's catch-up):
    each resolution warned, so one open printed the same warning three times."""
    monkeypatch.setenv("BANYANSTORE_BLOCK_SIZ", "8KiB")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        banyanstore.open(tmp_path / "db").close()
        banyanstore.open(tmp_path / "db", read_only=True).close()
        banyanstore.open_log(tmp_path / "log").close()
    about = [w for w in caught if "BANYANSTORE_BLOCK_SIZ " in str(w.message)]
    assert len(about) == 1, [str(w.message)[:60] for w in about]
    assert about[0].category is UserWarning


@pytest.mark.parametrize("opener", ["open", "open_log", "Options"])
def test_the_unknown_variable_warning_points_at_the_callers_line(tmp_path: Path, opener: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning was shown at ``banyanstore/__init__.py:83: UserWarning ...  return
    open_store(path, ...)``, a line of the package, not the program's open() that met it."""
    variable = f"BANYANSTORE_NO_SUCH_OPTION_{opener.upper()}"
    monkeypatch.setenv(variable, "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if opener == "open":
            banyanstore.open(tmp_path / "db").close()
        elif opener == "open_log":
            banyanstore.open_log(tmp_path / "log").close()
        else:
            resolve_options(Options(), {})
    about = [w for w in caught if variable in str(w.message)]
    assert [w.filename for w in about] == [__file__], [(w.filename, w.lineno) for w in about]


@pytest.mark.parametrize("variable", ["BANYANSTORE_PURE_PYTHON", "BANYANSTORE_SOAK",
                                      "BANYANSTORE_TEST_ANYTHING"])
def test_known_variables_that_are_not_options_stay_silent(variable: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_options(None, {}, environ={variable: "1"})


def test_classes_and_errors_are_exported_for_type_hints(tmp_path: Path) -> None:
    from banyanstore.lsm.batch import Batch
    from banyanstore.lsm.keyspace import Keyspace
    from banyanstore.lsm.store import Store
    from banyanstore.snapshot import Snapshot

    assert (banyanstore.Store, banyanstore.Keyspace, banyanstore.Batch, banyanstore.Snapshot) == \
        (Store, Keyspace, Batch, Snapshot)
    with banyanstore.open(tmp_path / "db") as store, store.snapshot() as snap, store.batch() as batch:
        assert isinstance(store, banyanstore.Store) and isinstance(store.keyspace("k"), banyanstore.Keyspace)
        assert isinstance(snap, banyanstore.Snapshot) and isinstance(batch, banyanstore.Batch)
    with banyanstore.open_log(tmp_path / "log") as log:
        assert isinstance(log, banyanstore.Log)
    for name in banyanstore.__all__:
        assert getattr(banyanstore, name) is not None, name
        assert name in dir(banyanstore)
    for name in ("EntryTooLargeError", "StoreNotFoundError", "StoreLockedError", "CorruptionError"):
        assert issubclass(getattr(banyanstore, name), banyanstore.BanyanStoreError)


def test_import_stays_light() -> None:
    """The lazy exports must not load the engine on ``import banyanstore``."""
    code = ("import sys, banyanstore; "
            "print(sorted(m for m in sys.modules if m.startswith('banyanstore.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['banyanstore.errors', 'banyanstore.options', 'banyanstore.version']"


def test_options_with_an_unknown_name_is_a_config_error_naming_it() -> None:
    """As docs/api.md says of every way options are given: an unknown name is a
    ConfigError (a ValueError) naming it -- ``Options(...)`` too, not the TypeError of a
    dataclass's unexpected keyword argument."""
    with pytest.raises(ConfigError, match="memtable_sise"):
        Options(memtable_sise=1 << 20)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="memtable_sise"):
        banyanstore.open("/nonexistent/never-created", memtable_sise=1 << 20)
    assert Options(memtable_size=1 << 20).explicit == frozenset({"memtable_size"})


@pytest.mark.parametrize("kwargs, named", [
    ({"options": 5}, "options"),
    ({"memtable_size": "x"}, "memtable_size"),
    ({"memtable_size": None}, "memtable_size"),
    ({"wal_sync": 3}, "wal_sync"),
    ({"compaction": 1}, "compaction"),
])
def test_an_option_of_the_wrong_type_is_also_a_type_error(kwargs: dict[str, object], named: str) -> None:
    """A wrong type raises what Python's own calls raise for one (TypeError), still a
    ConfigError (a ValueError) as docs/api.md has always said, naming the option."""
    with pytest.raises(banyanstore.ConfigTypeError, match=named) as info:
        banyanstore.open("/nonexistent/never-created", **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError) and isinstance(info.value, ConfigError)


@pytest.mark.parametrize("kwargs", [{"memtable_size": -1}, {"wal_sync": "sometimes"},
                                    {"memtable_sise": 1}])
def test_an_option_of_the_right_type_with_a_bad_value_is_not_a_type_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        banyanstore.open("/nonexistent/never-created", **kwargs)  # type: ignore[arg-type]
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize("path, error", [(None, TypeError), (3.5, TypeError), ("", ValueError),
                                         ("a\0b", ValueError)])
def test_from_file_checks_its_path_naming_it(path: object, error: type) -> None:
    with pytest.raises(error, match="path"):
        Options.from_file(path)  # type: ignore[arg-type]


def test_from_file_does_not_take_an_int_for_a_file_descriptor(tmp_path: Path) -> None:
    """``Options.from_file(5)``: Python's ``open()`` reads file descriptor 5 -- a file of
    an open store, say -- and closes it, so the store's next WAL fdatasync failed (EBADF)
    and the store refused every write from then on (ReadOnlyError). A path is a str,
    bytes or os.PathLike: an int is a TypeError naming it, and the descriptor stays."""
    with banyanstore.open(tmp_path / "db", io_mode="sync", wal_sync="always") as store:
        store.put(b"k", b"1")
        fds = [int(fd.name) for fd in Path("/proc/self/fd").iterdir()  # the store's files
               if _readlink(fd).startswith(str(tmp_path))]
        assert fds
        for fd in fds:
            with pytest.raises(TypeError, match="path"):
                Options.from_file(fd)  # type: ignore[arg-type]
        store.put(b"k", b"2")
        assert store.get(b"k") == b"2"
    with banyanstore.open(tmp_path / "db") as store:
        assert store.get(b"k") == b"2"


def _readlink(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:  # closed meanwhile (the listing's own descriptor)
        return ""


def test_a_bad_config_file_named_by_the_environment_says_so(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing or broken file named by BANYANSTORE_CONFIG raised "cannot read options
    file X" alone: a program that names no file gave its user no clue where X came from."""
    missing = tmp_path / "missing.toml"
    monkeypatch.setenv("BANYANSTORE_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="cannot read options file .*BANYANSTORE_CONFIG"):
        banyanstore.open(tmp_path / "db")
    broken = tmp_path / "broken.toml"
    broken.write_text("memtable_size = 8MiB\n")
    monkeypatch.setenv("BANYANSTORE_CONFIG", str(broken))
    with pytest.raises(ConfigError, match="not valid TOML.*BANYANSTORE_CONFIG"):
        banyanstore.open_log(tmp_path / "log")
    broken.write_text("memtable_size = 1\n")
    with pytest.raises(ConfigError, match="option memtable_size.*BANYANSTORE_CONFIG"):
        banyanstore.open(tmp_path / "db")
    assert not (tmp_path / "db").exists() and not (tmp_path / "log").exists()


def test_help_of_options_says_what_every_option_means() -> None:
    """``help(banyanstore.Options)`` said "Every knob of a store or a log, with its
    default.  See the README." -- and an installed package has no README: what
    ``wal_sync="interval"`` or ``compaction_mode="process"`` means was nowhere in
    ``help()``.  Every field now has a line of its own in the class docstring."""
    doc = Options.__doc__ or ""
    described = {name for line in doc.splitlines() if line.strip().startswith("``")
                 for name in re.findall(r"``(\w+)``", line.split(":")[0])}
    missing = [f.name for f in dataclasses.fields(Options) if f.name not in described]
    assert not missing, f"Options' docstring does not describe {missing}"


@pytest.mark.parametrize("value, engine", [("1", "python"), ("yes", "python"), ("TRUE", "python"),
                                           ("on", "python"), ("0", "native"), ("", "native"),
                                           ("false", "native"), ("No", "native"), ("off", "native")])
def test_pure_python_reads_true_and_false_as_the_option_variables_do(value: str, engine: str) -> None:
    """``BANYANSTORE_PURE_PYTHON=false`` chose the pure-Python engine (any value but empty
    or 0 did), where ``BANYANSTORE_COMPACTION=false`` is False: a user turning the
    compiled core *on* that way got the slower engine without a word."""
    from banyanstore import accel
    if accel.load_native() is None:
        pytest.skip("the compiled core is not built")
    env = dict(os.environ)
    env["BANYANSTORE_PURE_PYTHON"] = value
    out = subprocess.run([sys.executable, "-c", "import banyanstore.accel as a; print(a.IMPLEMENTATION)"],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == engine
