"""``banyanstore.dbm.open`` flag ``'n'``: a new, empty database replaces what the
standard library's dbm modules replace -- never somebody else's data."""

from __future__ import annotations

import array
import gc
import os
import shelve
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import banyanstore
import banyanstore.dbm as bdbm
from banyanstore.errors import StoreClosedError


def test_n_over_an_existing_empty_file_makes_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.touch()
    with bdbm.open(path, "n") as db:
        db["k"] = "v"
    with bdbm.open(path, "r") as db:
        assert db["k"] == b"v" and len(db) == 1


def test_n_replaces_an_existing_database_and_an_empty_directory(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with bdbm.open(path, "c") as db:
        db["old"] = "1"
    with bdbm.open(path, "n") as db:
        assert len(db) == 0
        db["new"] = "2"
    empty = tmp_path / "empty"
    empty.mkdir()
    with bdbm.open(empty, "n") as db:
        assert len(db) == 0


@pytest.mark.parametrize("what", ["file", "directory"])
def test_n_leaves_other_data_alone(tmp_path: Path, what: str) -> None:
    path = tmp_path / "db"
    if what == "file":
        path.write_bytes(b"somebody's data")
    else:
        path.mkdir()
        (path / "notes.txt").write_text("notes")
    with pytest.raises(bdbm.error, match="not a banyanstore database"):
        bdbm.open(path, "n")
    if what == "file":
        assert path.read_bytes() == b"somebody's data"
    else:
        assert os.listdir(path) == ["notes.txt"]


@pytest.mark.parametrize("files", [
    {"CURRENT": "MANIFEST-000001\n", "MANIFEST-000001": "m", "LOG": "log", "000003.log": "data"},
    {"CURRENT": "MANIFEST-000001\n", "MANIFEST-000001": "m"},
    {"CURRENT": "BANYANSTORE-CURRENT 1 MANIFEST-000001 00000000\n", "notes.txt": "notes"},
], ids=["leveldb", "foreign-current", "store-names-and-a-user-file"])
def test_n_leaves_a_directory_with_another_programs_current_alone(tmp_path: Path,
                                                                    files: dict[str, str]) -> None:
    """A file named CURRENT does not make a directory a banyanstore database (LevelDB and
    RocksDB have one too): flag 'n' replaces only a directory whose every name is a
    store's and whose CURRENT is a banyanstore CURRENT."""
    path = tmp_path / "db"
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    with pytest.raises(bdbm.error, match="not a banyanstore database"):
        bdbm.open(path, "n")
    assert {p.name: p.read_text() for p in path.iterdir()} == files


def test_n_does_not_delete_a_database_open_elsewhere(tmp_path: Path) -> None:
    """The writer lock is taken before anything is removed."""
    path = tmp_path / "db"
    with banyanstore.open(path, io_mode="sync") as store:
        store.put(b"k", b"v")
        with pytest.raises(bdbm.error, match="locked"):
            bdbm.open(path, "n")
        assert store.get(b"k") == b"v"
    with bdbm.open(path, "r") as db:
        assert db["k"] == b"v"


_KILLED_N_OPEN = """
import os, sys
kill_at, calls = int(sys.argv[2]), [0]

def killing(remove):
    def call(*args, **kwargs):
        if calls[0] == kill_at:
            os.kill(os.getpid(), 9)
        calls[0] += 1
        return remove(*args, **kwargs)
    return call

os.unlink, os.rmdir = killing(os.unlink), killing(os.rmdir)
import banyanstore.dbm
banyanstore.dbm.open(sys.argv[1], "n").close()
print(calls[0])
"""


def test_n_killed_while_removing_the_old_database_can_be_repeated(tmp_path: Path) -> None:
    """SIGKILL at each file removal of flag 'n': what is left is replaced by the next
    'n' open. A kill that left only the LOCK (or, in another directory order, tables
    without CURRENT) made 'n' refuse the directory as not a banyanstore database."""
    base = tmp_path / "base"
    with banyanstore.open(base, memtable_size=64 * 1024, io_mode="sync") as store:
        for i in range(1500):
            store.put(b"k%05d" % i, b"v" * 100)
    assert len(os.listdir(base / "tables")) >= 2
    work = tmp_path / "db"
    shutil.copytree(base, work)
    done = subprocess.run([sys.executable, "-c", _KILLED_N_OPEN, str(work), "-1"],
                          capture_output=True, text=True, check=True)
    removals = int(done.stdout)
    for kill_at in range(removals):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        child = subprocess.run([sys.executable, "-c", _KILLED_N_OPEN, str(work), str(kill_at)])
        assert child.returncode == -9
        with bdbm.open(work, "n") as db:
            assert len(db) == 0
            db["new"] = "1"
        with bdbm.open(work, "r") as db:
            assert list(db.keys()) == [b"new"]


def test_keys_and_values_are_str_or_any_bytes_like_object(tmp_path: Path) -> None:
    """As for the store: array.array (any object with a buffer) is bytes-like, a strided
    view is the bytes it shows; a non-buffer is a TypeError naming the argument."""
    with bdbm.open(tmp_path / "db", "c") as db:
        db[array.array("B", b"k")] = array.array("B", b"v")
        assert db["k"] == b"v" and array.array("B", b"k") in db
        db[memoryview(b"abcd")[::2]] = b"v"
        assert db["ac"] == b"v"
        with pytest.raises(TypeError, match="key"):
            db[5] = b"v"
        with pytest.raises(TypeError, match="value"):
            db["k"] = 5


def test_a_read_only_database_refuses_every_delete_as_the_standard_modules_do(tmp_path: Path) -> None:
    """dbm.dumb and dbm.gnu refuse a delete on a read-only database before they look
    the key up: a missing key is the same error as a present one, not KeyError."""
    path = tmp_path / "db"
    with bdbm.open(path, "c") as db:
        db["k"] = "v"
    with bdbm.open(path, "r") as db:
        for key in ("k", "missing"):
            with pytest.raises(bdbm.error, match="read-only"):
                del db[key]


@pytest.mark.parametrize("flag", ["rw", "wc", "cr", "nn", "r+", "c "])
def test_a_flag_with_an_unknown_suffix_is_refused(tmp_path: Path, flag: str) -> None:
    """"rw" is not a read-write open that silently turns read-only: as for the standard
    library's dbm modules, a flag is one of 'r', 'w', 'c', 'n' (dbm.gnu's modifiers
    'f', 's' and 'u' may follow it); anything else is a ValueError naming it."""
    with bdbm.open(tmp_path / "db", "c") as db:
        db["k"] = "v"
    with pytest.raises(ValueError, match="flag"):
        bdbm.open(tmp_path / "db", flag)


@pytest.mark.parametrize("flag", ["cf", "cs", "cu", "wfu", "rf"])
def test_dbm_gnu_modifiers_are_accepted(tmp_path: Path, flag: str) -> None:
    with bdbm.open(tmp_path / "db", "c") as db:
        db["k"] = "v"
    with bdbm.open(tmp_path / "db", flag) as db:
        assert db["k"] == b"v"


def test_keys_read_after_close_raise_dbm_error(tmp_path: Path) -> None:
    """An iteration begun before close() and read after it raises the dbm's error (an
    OSError, what dbm users catch), not the engine's StoreClosedError."""
    db = bdbm.open(tmp_path / "db", "c")
    for i in range(100):
        db[f"k{i:03d}"] = "v"
    keys = iter(db)
    assert next(keys) == b"k000"
    db.close()
    with pytest.raises(bdbm.error, match="closed"):
        list(keys)


class _StoreClosedByAnotherThread:
    """A store that another thread closes just after the dbm checked that it was open."""

    closed = False

    def _closed(self, *args: object, **kwargs: object) -> None:
        raise StoreClosedError("store db is closed")

    get = put = delete = sync = scan = _closed


@pytest.mark.parametrize("use", ["get", "getitem", "contains", "len", "keys", "sync", "setitem",
                                 "delitem"])
def test_a_close_racing_an_operation_raises_dbm_error(use: str) -> None:
    db = bdbm.BanyanDbm(_StoreClosedByAnotherThread(), writable=True)
    operations = {"get": lambda: db.get("k"), "getitem": lambda: db["k"], "contains": lambda: "k" in db,
                  "len": lambda: len(db), "keys": db.keys, "sync": db.sync,
                  "setitem": lambda: db.__setitem__("k", "v"), "delitem": lambda: db.__delitem__("k")}
    with pytest.raises(bdbm.error, match="closed"):
        operations[use]()


@pytest.mark.parametrize("flag", ["c", "n"])
@pytest.mark.parametrize("mode, expect", [(0o600, 0o700), (0o640, 0o750), (0o604, 0o705),
                                          (0o660, 0o750), (0o666, 0o755), (0o700, 0o700)])
def test_mode_lets_into_the_directory_only_whom_it_lets_read_or_write(tmp_path: Path, flag: str,
                                                                      mode: int, expect: int) -> None:
    """``mode`` is the dbm modules' file mode: 0o600 is a database only its owner may
    read. The directory got ``x`` for everyone (0o711), so any user could open the
    store's files by their well-known names (CURRENT, MANIFEST-..., wal/...), which are
    created readable by all; now a class gets ``x`` only where ``mode`` lets it read or
    write (less the umask, 0o022 here)."""
    path = tmp_path / "db"
    old = os.umask(0o022)
    try:
        with bdbm.open(path, flag, mode) as db:
            db["k"] = "v"
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(expect)
    with bdbm.open(path, "r") as db:
        assert db["k"] == b"v"


@pytest.mark.parametrize("what", ["database", "empty-directory"])
def test_n_through_a_symlink_makes_the_new_database_where_it_points(tmp_path: Path, what: str) -> None:
    """A database path that is a symlink to a directory (a database moved to another
    disk, say): flag 'n' removed the old database's files and then failed with a bare
    OSError ("Cannot call rmtree on a symbolic link") -- every time, as what it left (a
    LOCK) was replaced again the same way. As the standard modules write through a
    link, the link and its directory now stay and the new database is made there."""
    real, link = tmp_path / "real", tmp_path / "link"
    if what == "database":
        with bdbm.open(real, "c") as db:
            db["old"] = "1"
    else:
        real.mkdir()
    link.symlink_to(real)
    with bdbm.open(link, "n") as db:
        assert len(db) == 0
        db["new"] = "2"
    assert link.is_symlink() and real.is_dir()
    with bdbm.open(real, "r") as db:
        assert db.keys() == [b"new"]


class _CountingScans:
    """A store whose scans are counted (everything else is the store's)."""

    def __init__(self, store: object) -> None:
        self.store, self.scans = store, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def scan(self, *args: object, **kwargs: object) -> object:
        self.scans += 1
        return self.store.scan(*args, **kwargs)  # type: ignore[attr-defined]


def test_clear_reads_the_keys_once(tmp_path: Path) -> None:
    """``clear()`` was MutableMapping's: one ``popitem()`` a key, each a new scan from the
    first key past the tombstones of every key popped before it -- quadratic: 6 s for
    8,000 keys on the pure-Python engine, 2.8 s on the compiled core. It now takes the keys from one scan and
    deletes them in batches."""
    counted = _CountingScans(banyanstore.open(tmp_path / "db", io_mode="sync"))
    db = bdbm.BanyanDbm(counted, writable=True)
    with db:
        for i in range(2500):
            db[f"k{i:05d}"] = "v"
        before = counted.scans
        db.clear()
        assert counted.scans - before == 1
        assert len(db) == 0 and "k00000" not in db
        db["after"] = "1"
    with bdbm.open(tmp_path / "db", "r") as db:
        assert db.keys() == [b"after"]
        with pytest.raises(bdbm.error, match="read-only"):
            db.clear()
        assert db.keys() == [b"after"]


@pytest.mark.parametrize("flag", ["c", "n"])
def test_a_dangling_symlink_gets_the_new_database_where_it_points(tmp_path: Path, flag: str) -> None:
    """A database path that is a symlink to a directory not made yet: 'c' raised a bare
    FileExistsError ("File exists", of a path that does not exist; not the dbm's error)
    and 'n' refused it as "not a banyanstore database". As the standard modules create
    their files through a link, the database is now made where it points."""
    real, link = tmp_path / "disk" / "real", tmp_path / "link"
    link.symlink_to(real)
    with bdbm.open(link, flag, 0o700) as db:
        db["k"] = "v"
    assert link.is_symlink() and real.is_dir() and real.stat().st_mode & 0o777 == 0o700
    with bdbm.open(real, "r") as db:
        assert db.keys() == [b"k"]


@pytest.mark.parametrize("flag", ["c", "r"])
def test_a_database_dropped_without_close_can_be_opened_again(tmp_path: Path, flag: str) -> None:
    """The standard library's dbm objects close when they are collected: ``del db`` and a
    later ``dbm.open`` of the same file works.  A banyanstore dbm dropped without close()
    kept its store open -- and its LOCK -- until the interpreter exited, so the second
    open raised "LOCK is locked by another writer"."""
    path = tmp_path / "db"
    with bdbm.open(path, "c") as db:
        db["k"] = "v"
    db = bdbm.open(path, flag)
    if flag == "c":
        db["k2"] = "v2"  # in the memtable and WAL only: the drop closes (flushes) it
    keys = iter(db)  # an iteration keeps the database open, as long as it runs
    del db
    gc.collect()
    assert next(keys) == b"k"
    assert list(keys) == ([b"k2"] if flag == "c" else [])
    del keys
    gc.collect()
    with bdbm.open(path, "w") as db:
        assert (db["k"], db.get("k2")) == (b"v", b"v2" if flag == "c" else None)
    shelf = shelve.Shelf(bdbm.open(path, "w"))  # a shelf dropped unclosed closes its database too
    shelf["s"] = [1]
    del shelf
    gc.collect()
    with banyanstore.open(path, read_only=True) as ro:
        assert ro.stats()["keyspaces"]["default"]["memtable_entries"] == 0, "closed, flushed"
        assert list(ro.scan(keys_only=True)) == ([b"k", b"k2", b"s"] if flag == "c" else [b"k", b"s"])


def test_a_forked_child_is_told_the_database_is_the_parents(tmp_path: Path) -> None:
    """In a child made by os.fork() the parent's database is a closed handle, as the
    store is.  Its error said only "dbm object is closed" -- to a program that never
    closed it -- while the store's says why: it belongs to the parent, open it in the
    child.  Now the dbm's error says so too."""
    with bdbm.open(tmp_path / "db", "c") as db:
        db["k"] = "v"
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            try:
                messages = []
                for use in (lambda: db["k"], lambda: db.__setitem__("k", "w"), lambda: db.keys()):
                    try:
                        use()
                        messages.append("answered")
                    except bdbm.error as exc:
                        messages.append(str(exc))
                os.write(write, "\n".join(messages).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            messages = pipe.read().decode().split("\n")
        os.waitpid(pid, 0)
        assert len(messages) == 3
        for message in messages:
            assert "forked child" in message and "open the store in the child" in message, message
        assert db["k"] == b"v"  # the parent's is untouched
    with bdbm.open(tmp_path / "db", "r") as db:
        assert db["k"] == b"v"


def _race(*calls: Callable[[], object]) -> list[object]:
    """Run ``calls`` on threads released together; each one's result or KeyError."""
    start = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except KeyError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_threads_deleting_one_key_and_setdefault_racing_are_atomic(tmp_path: Path) -> None:
    """``del db[k]`` looked the key up, then wrote the tombstone: two threads deleting one
    key both succeeded (dbm.gnu's C ``del``, and dbm.dumb's deletion from its index,
    let one through and raise KeyError in the other), and two ``setdefault`` calls both
    found the key missing and each returned its own default while one was stored (as
    dbm.gnu's atomic setdefault never does).  The dbm's writes now take one lock:
    under a tiny switch interval, 300 rounds of each race, none lets both through.
    (Before: 24-42 double deletes and 34-41 split setdefaults in 1,000 rounds.)"""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with bdbm.open(tmp_path / "db", "c") as db:
            for i in range(300):
                key = f"k{i}"
                db[key] = "v"
                deleted = _race(lambda: db.__delitem__(key), lambda: db.__delitem__(key))
                assert sorted(type(r).__name__ for r in deleted) == ["KeyError", "NoneType"], i
                got = _race(lambda: db.setdefault(f"s{i}", b"a"), lambda: db.setdefault(f"s{i}", b"b"))
                assert got[0] == got[1] == db[f"s{i}"], (i, got)
    finally:
        sys.setswitchinterval(old)
