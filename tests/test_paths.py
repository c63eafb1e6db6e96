"""Paths given to every entry point: str, bytes and os.PathLike name the same
directory, anything else is a TypeError (never a directory called ``None``); and a
store or log is only ever created in an absent or empty directory, never among a
user's files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import banyanstore
import banyanstore.dbm
from banyanstore.errors import NotAStoreError, StoreNotFoundError
from banyanstore.tools import repair, verify_path

OPTS: dict[str, Any] = dict(io_mode="sync", compaction=False, wal_sync="never")

OPENERS: dict[str, Callable[[Any], Any]] = {
    "open": lambda p: banyanstore.open(p, **OPTS),
    "open_log": lambda p: banyanstore.open_log(p, **OPTS),
    "dbm": lambda p: banyanstore.dbm.open(p, "c"),
}


@pytest.mark.parametrize("opener", list(OPENERS))
@pytest.mark.parametrize("bad", [None, 123, 1.5, ["x"], object()], ids=lambda b: type(b).__name__)
def test_paths_of_other_types_raise_type_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               opener: str, bad: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match="path|file"):
        OPENERS[opener](bad)
    assert os.listdir(tmp_path) == []  # no ./None, ./123 ...


@pytest.mark.parametrize("opener", list(OPENERS))
def test_empty_path_is_a_value_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opener: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="path|file"):
        OPENERS[opener]("")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("opener", list(OPENERS))
def test_bytes_str_and_pathlike_name_the_same_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        opener: str) -> None:
    """open(b"/abs/x") writes under /abs/x, not under a relative "b'/abs/x'"."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "data" / "x"
    for form in (os.fsencode(str(target)), str(target), target):
        with OPENERS[opener](form) as handle:
            if hasattr(handle, "path"):
                assert handle.path == str(target)
    assert sorted(os.listdir(tmp_path)) == ["data"] and os.listdir(tmp_path / "data") == ["x"]


def test_bytes_path_of_the_dbm_module_writes_the_real_database(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "db"
    with banyanstore.dbm.open(os.fsencode(str(target)), "c") as db:
        db["k"] = "v"
    with banyanstore.dbm.open(target, "r") as db:
        assert db["k"] == b"v"
    assert os.listdir(tmp_path) == ["db"]


def test_checkpoint_destination_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        s.put(b"k", b"v")
        for bad in (None, 5):
            with pytest.raises(TypeError, match="dest"):
                s.checkpoint(bad)
        s.checkpoint(os.fsencode(str(tmp_path / "ck")))
    assert sorted(os.listdir(tmp_path)) == ["ck", "db"]
    with banyanstore.open(tmp_path / "ck", read_only=True) as ck:
        assert ck.get(b"k") == b"v"


def test_checkpoint_destination_is_refused_as_open_refuses_it(tmp_path: Path) -> None:
    """``dest`` as for ``open()``: a file, or a directory holding anything (somebody's
    files, or a store), raises NotAStoreError -- a FileExistsError, as ``open()`` raises
    for a file or a foreign directory -- and nothing is added to it; an absent or empty
    directory takes the checkpoint."""
    (tmp_path / "empty").mkdir()
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("notes")
    with banyanstore.open(tmp_path / "db", **OPTS) as s, banyanstore.open(tmp_path / "s2", **OPTS):
        s.put(b"k", b"v")
        for dest in (afile, other, tmp_path / "s2"):
            with pytest.raises(NotAStoreError) as exc:
                s.checkpoint(dest)
            assert isinstance(exc.value, FileExistsError) and exc.value.path == str(dest)
            assert str(dest) in str(exc.value)
        for dest in (afile, other):
            with pytest.raises(NotAStoreError):
                banyanstore.open(dest, **OPTS)
        assert afile.read_bytes() == b"x" and os.listdir(other) == ["notes.txt"]
        s.checkpoint(tmp_path / "empty")
        s.checkpoint(tmp_path / "absent" / "nested")
    for dest in ("empty", "absent/nested"):
        with banyanstore.open(tmp_path / dest, read_only=True) as ck:
            assert ck.get(b"k") == b"v"


@pytest.mark.parametrize("inside", ["wal/ck", "tables/ck", "ck", "tables/../wal/ck"])
def test_a_checkpoint_inside_the_store_itself_is_refused(tmp_path: Path, inside: str) -> None:
    """A checkpoint written into the store's own directory (its wal/, its tables/) put
    another store's files among its own: a store whose wal/ held one could not be opened
    again.  Such a dest is a ValueError naming it, and nothing is written."""
    db = tmp_path / "db"
    with banyanstore.open(db, **OPTS) as s:
        s.put(b"k", b"v")
        s.flush()
        listing = sorted(str(p.relative_to(db)) for p in db.rglob("*"))
        with pytest.raises(ValueError, match="dest"):
            s.checkpoint(db / inside)
        with pytest.raises(ValueError, match="dest"):
            s.checkpoint(os.fsencode(str(db / inside)))
        assert sorted(str(p.relative_to(db)) for p in db.rglob("*")) == listing
    with banyanstore.open(db, **OPTS) as s:
        assert s.get(b"k") == b"v"


def test_tools_take_the_same_path_forms(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        s.put(b"k", b"v")
    for form in (os.fsencode(str(tmp_path / "db")), tmp_path / "db"):
        assert verify_path(form).ok
        repair(form, dry_run=True)
    with pytest.raises(TypeError, match="path"):
        verify_path(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path"):
        repair(None)  # type: ignore[arg-type]


# -- somebody else's directory -------------------------------------------------------------------

def _users_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("an important note")
    (d / "photos").mkdir()
    return d


@pytest.mark.parametrize("read_only", [False, True])
def test_store_open_refuses_a_non_empty_foreign_directory(tmp_path: Path, read_only: bool) -> None:
    """A writer (or reader) open of a directory holding other files and no store raises
    NotAStoreError naming it, and adds nothing among the user's files."""
    d = _users_dir(tmp_path)
    with pytest.raises(NotAStoreError, match="notes.txt") as info:
        banyanstore.open(d, **OPTS, read_only=read_only)
    assert info.value.path == str(d) and isinstance(info.value, FileExistsError)
    assert sorted(os.listdir(d)) == ["notes.txt", "photos"]


@pytest.mark.parametrize("read_only", [False, True])
def test_log_open_refuses_a_non_empty_foreign_directory(tmp_path: Path, read_only: bool) -> None:
    d = _users_dir(tmp_path)
    with pytest.raises(NotAStoreError, match="notes.txt"):
        banyanstore.open_log(d, **OPTS, read_only=read_only)
    assert sorted(os.listdir(d)) == ["notes.txt", "photos"]


def test_a_store_is_not_a_log_and_a_log_is_not_a_store(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "store", **OPTS) as s:
        s.put(b"k", b"v")
    with banyanstore.open_log(tmp_path / "log", **OPTS) as log:
        log.append(b"r")
    with pytest.raises(NotAStoreError):
        banyanstore.open_log(tmp_path / "store", **OPTS)
    with pytest.raises(NotAStoreError):
        banyanstore.open(tmp_path / "log", **OPTS)


@pytest.mark.parametrize("opener", ["open", "open_log"])
def test_a_file_is_not_a_directory(tmp_path: Path, opener: str) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"data")
    with pytest.raises(NotAStoreError, match="file"):
        OPENERS[opener](f)
    assert f.read_bytes() == b"data"


@pytest.mark.parametrize("opener", ["open", "open_log"])
def test_a_path_that_cannot_be_made_is_named_as_given(tmp_path: Path, opener: str) -> None:
    """A store under a file said "mkdir failed on .../sub/tables": a subdirectory the user
    never named, as if the store existed and lacked its tables."""
    (tmp_path / "file").write_bytes(b"data")
    path = tmp_path / "file" / "sub"
    with pytest.raises(banyanstore.StorageIOError) as err:
        OPENERS[opener](path)
    assert str(err.value).startswith(f"mkdir failed on {path}: "), str(err.value)
    assert (tmp_path / "file").read_bytes() == b"data"


@pytest.mark.parametrize("opener", ["open", "open_log"])
def test_absent_and_empty_directories_are_created_into(tmp_path: Path, opener: str) -> None:
    (tmp_path / "empty").mkdir()
    for d in (tmp_path / "empty", tmp_path / "absent" / "deeper"):
        with OPENERS[opener](d):
            pass
        with OPENERS[opener](d):  # and reopened
            pass


def test_missing_store_without_create_is_still_store_not_found(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        banyanstore.open(tmp_path / "absent", **OPTS, create_if_missing=False)


@pytest.mark.parametrize("read_only", [False, True])
def test_a_foreign_file_beside_a_log_or_wal_does_not_lock_it_out(tmp_path: Path, read_only: bool) -> None:
    """Somebody's file beside the segments of an existing log (or in a store's wal/) is
    left alone, as beside a store's CURRENT: the log (the store) still opens, and what
    verify calls a warning does not keep it shut.  Only a directory that holds no log
    yet is refused (a log is created in an absent or empty directory)."""
    with banyanstore.open(tmp_path / "db", **OPTS) as s:
        s.put(b"k", b"v")
    with banyanstore.open_log(tmp_path / "log", **OPTS) as log:
        log.append(b"r")
    notes = [tmp_path / "db" / "wal" / "notes.txt", tmp_path / "log" / "notes.txt"]
    for n in notes:
        n.write_text("an important note")
    for where in ("db", "log"):
        report = verify_path(tmp_path / where)
        assert report.ok and report.warnings == 1, report
    with banyanstore.open(tmp_path / "db", **OPTS, read_only=read_only) as s:
        assert s.get(b"k") == b"v"
    with banyanstore.open_log(tmp_path / "log", **OPTS, read_only=read_only) as log:
        assert [r for _, r in log.read(log.first_seq)] == [b"r"]
    assert all(n.read_text() == "an important note" for n in notes)
