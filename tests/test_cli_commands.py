"""Every ``banyanstore`` command run as an operator runs it: ``python -m banyanstore`` in
a subprocess, on good and on bad input, checking the documented contract (docs/cli.md):

* exit 0 ok, 1 a problem found or not found, 2 usage or the path cannot be opened;
* every failure is exactly one line ``banyanstore <command>: <what>`` on stderr, and
  nothing else is written to stderr unless asked (no progress bar off a terminal);
* ``--json`` writes keys and values in base64 (``--hex``: hex), never Python escapes;
* read commands and ``checkpoint`` work beside a running writer; writing commands
  say in one line that a writer has the store.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import banyanstore
from banyanstore.cli import main

COMMANDS = ("get", "scan", "put", "delete", "keyspaces", "stats", "compact", "verify", "repair",
            "checkpoint", "dump-manifest", "dump-table", "dump-log", "dump-wal", "backup",
            "restore", "backups", "prune")


def check_contract(argv: tuple[str, ...], code: int, out: str, err: str, expected: int | None) -> None:
    if expected is not None:
        assert code == expected, (argv, code, out, err)
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err
    if code != 0 and err:
        command = next((a for a in argv if a in COMMANDS), None)
        prefix = f"banyanstore {command}: " if command else "banyanstore: "
        assert err.count("\n") == 1 and err.endswith("\n"), (argv, err)
        assert err.startswith(prefix), (argv, err)
    elif code == 0 and "--progress" not in argv:
        assert err == "", (argv, err)  # off a terminal nothing goes to stderr unasked


def cli(*argv: str, stdin: bytes | None = None, code: int | None = None) -> tuple[int, str, str]:
    """Run ``python -m banyanstore ARGV``; check the contract; returns ``(exit code,
    stdout, stderr)`` (and checks the exit code when ``code`` is given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANYANSTORE_")
           or k in ("BANYANSTORE_PURE_PYTHON",)}
    proc = subprocess.run([sys.executable, "-m", "banyanstore", *argv], input=stdin,
                          capture_output=True, env=env, check=False, timeout=120)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode()
    check_contract(argv, proc.returncode, out, err, code)
    return proc.returncode, out, err


def in_process(capsys: pytest.CaptureFixture[str], *argv: str,
               code: int | None = None) -> tuple[int, str, str]:
    """:func:`cli` through ``main()`` in this process (the same code, without a
    subprocess's start-up: for the long lists of cases)."""
    result = main(list(argv))
    captured = capsys.readouterr()
    check_contract(argv, result, captured.out, captured.err, code)
    return result, captured.out, captured.err


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """:func:`in_process` bound to this test's captured output."""
    return functools.partial(in_process, capsys)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A closed store: two keyspaces, three tables in ``default``, a binary key."""
    path = str(tmp_path_factory.mktemp("cli") / "store")
    with banyanstore.open(path, memtable_size=1 << 22, compaction=False) as s:
        for part in range(3):
            for i in range(100):
                s.put(b"user:%04d" % (part * 100 + i), b"value-%d" % i)
            s.flush()
        s.put(b"\x00\xffbin", b"\x01\x02\xff")
        s.keyspace("index").put(b"ix:1", b"user:0001")
    return path


@pytest.fixture
def store(template: str, tmp_path: Path) -> str:
    path = str(tmp_path / "store")
    shutil.copytree(template, path)
    return path


def table_files(store: str) -> list[str]:
    return sorted(str(p) for p in Path(store, "tables").glob("*.sst"))


# -- the contract every command shares --------------------------------------------------------

def test_usage_errors_are_one_line_exit_2(run: Run, tmp_path: Path,
                                          store: str) -> None:
    assert cli(code=2)[2] == "banyanstore: a COMMAND is required (see banyanstore --help)\n"
    assert cli("put", store, "k", "v", "--bogus", code=2)[2] == \
        "banyanstore put: unrecognized arguments: --bogus (see banyanstore put --help)\n"
    assert run("frobnicate", code=2)[2].startswith("banyanstore: argument COMMAND: invalid")
    assert "exit codes" in run("--help", code=0)[1]
    assert cli("--version", code=0)[1] == f"banyanstore {banyanstore.__version__}\n"
    for argv in (("get", store), ("scan", store, "--limit", "-1"), ("prune", "x", "--keep", "0"),
                 ("verify", store, "--progress", "--no-progress")):
        err = run(*argv, code=2)[2]
        assert err.endswith(f"(see banyanstore {argv[0]} --help)\n"), err
    missing = str(tmp_path / "missing")
    for argv in (("get", missing, "k"), ("scan", missing), ("put", missing, "k", "v"),
                 ("delete", missing, "k"), ("keyspaces", missing), ("stats", missing),
                 ("compact", missing), ("verify", missing), ("repair", missing),
                 ("checkpoint", missing, str(tmp_path / "dest")), ("dump-manifest", missing),
                 ("dump-table", missing), ("dump-log", missing), ("dump-wal", missing),
                 ("backup", missing, str(tmp_path / "b")), ("restore", missing, str(tmp_path / "r")),
                 ("backups", missing), ("prune", missing, "--keep", "1")):
        code, out, err = run(*argv)
        assert code == 2 and out == "" and missing in err, (argv, code, out, err)


# -- reads -----------------------------------------------------------------------------------

def test_get_and_scan(run: Run, store: str) -> None:
    assert run("get", store, "user:0102", code=0) == (0, "value-2\n", "")
    assert cli("get", store, "nope", code=1) == (1, "", "banyanstore get: nope: not found at version 302\n")
    assert cli("get", store, "hex:00ff62696e", "--raw", code=0)[1] == "\x01\x02\ufffd"  # raw bytes
    doc = json.loads(run("get", store, "hex:00ff62696e", "--json", code=0)[1])
    assert doc == {"key": "AP9iaW4=", "version": 302, "value": "AQL/"}
    doc = json.loads(run("--json", "--hex", "get", store, f"b64:{doc['key']}", code=0)[1])
    assert doc["value"] == "0102ff"
    assert run("get", store, "ix:1", "--keyspace", "index", code=0)[1] == "user:0001\n"
    assert "no keyspace 'nope'" in run("get", store, "k", "--keyspace", "nope", code=2)[2]
    assert "bad hex key" in run("get", store, "hex:zz", code=2)[2]
    assert "bad base64 key" in run("get", store, "b64:!!", code=2)[2]
    assert run("get", store, "user:0001", "--version", "99999", code=2)[2]
    rows = [json.loads(line) for line in cli("scan", store, "--json", "--limit", "2", code=0)[1].splitlines()]
    assert [base64.b64decode(r["key"]) for r in rows] == [b"\x00\xffbin", b"user:0000"]
    out = run("scan", store, "--prefix", "user:01", "--reverse", "--limit", "2", code=0)[1]
    assert out.splitlines() == ["user:0199 = value-99", "user:0198 = value-98", "(2 keys)"]
    assert run("scan", store, "--start", "hex:xyz", code=2)[2]


def test_keyspaces_and_stats(run: Run, store: str) -> None:
    out = cli("keyspaces", store, code=0)[1]
    assert "default" in out and "index" in out and "table_bytes" in out
    rows = json.loads(run("keyspaces", store, "--json", code=0)[1])
    assert [(r["name"], r["tables"]) for r in rows] == [("default", 4), ("index", 1)]
    out = cli("stats", store, code=0)[1]
    assert re.search(r"version\s+│\s+302", out) and "keyspaces" in out, out
    assert json.loads(run("stats", store, "--json", code=0)[1])["version"] == 302


# -- writes ----------------------------------------------------------------------------------

def test_put_delete_compact(run: Run, store: str) -> None:
    assert run("put", store, "new", "value", code=0)[1] == "put new (5 bytes) at version 303\n"
    doc = json.loads(run("put", store, "hex:00", "b64:AAEC", "--json", code=0)[1])
    assert doc == {"key": "AA==", "version": 304, "bytes": 3}
    assert cli("put", store, "piped", "--stdin", stdin=b"\x00from stdin", code=0)[1] == \
        "put piped (11 bytes) at version 305\n"
    assert run("put", store, "ix:2", "v", "--keyspace", "index", code=0)
    assert "a VALUE is required" in run("put", store, "k", code=2)[2]
    assert "not both" in run("put", store, "k", "v", "--stdin", code=2)[2]
    assert "no keyspace" in run("put", store, "k", "v", "--keyspace", "nope", code=2)[2]
    assert cli("delete", store, "new", code=0)[1] == "deleted new at version 307\n"
    assert run("delete", store, "never-there", code=0)  # a tombstone either way
    assert "no keyspace" in run("delete", store, "k", "--keyspace", "nope", code=2)[2]
    summary = json.loads(run("compact", store, "--json", code=0)[1])
    assert summary["tables_before"] >= 4 and summary["tables_after"] == 2, summary
    code, out, err = cli("compact", store, "--keyspace", "index", "--progress")
    assert code == 0 and out.startswith(f"compacted {store}: ") and "compact" in err.splitlines()[-1]
    assert "no keyspace" in run("compact", store, "--keyspace", "nope", code=2)[2]
    with banyanstore.open(store, read_only=True) as s:
        assert s.get(b"new") is None and s.get(b"\x00") == b"\x00\x01\x02"
        assert s.get(b"piped") == b"\x00from stdin" and s.keyspace("index").get(b"ix:2") == b"v"
        assert s.get(b"user:0250") == b"value-50"


def test_put_creates_a_store_only_when_asked(run: Run, tmp_path: Path) -> None:
    """docs/cli.md's examples begin with a ``put`` into a store that is not there yet: a
    missing store is refused (a mistyped path must not make a store) and the refusal says
    how to make one; ``--create`` makes it."""
    path = str(tmp_path / "data" / "store")
    err = run("put", path, "user:1", '{"name": "ada"}', code=2)[2]
    assert "no such store" in err and "--create" in err and not os.path.exists(path)
    out = run("put", "--create", path, "user:1", '{"name": "ada"}', code=0)[1]
    assert out == "put user:1 (15 bytes) at version 1\n"
    assert run("put", "--create", path, "user:2", "x", code=0)[1] == "put user:2 (1 bytes) at version 2\n"
    with banyanstore.open(path, read_only=True) as s:
        assert s.get(b"user:1") == b'{"name": "ada"}' and s.get(b"user:2") == b"x"
    Path(tmp_path, "file").write_bytes(b"not a store")
    assert "not a store" in run("put", "--create", str(tmp_path / "file"), "k", "v", code=2)[2]
    # delete makes no store: a tombstone in a new, empty store is nothing to keep
    assert "no such store" in run("delete", str(tmp_path / "other"), "k", code=2)[2]


def test_beside_a_running_writer(run: Run, store: str, tmp_path: Path) -> None:
    """Reads, verify and checkpoint work while another process writes the store;
    writing commands refuse in one line (exit 2)."""
    with banyanstore.open(store) as writer:
        writer.put(b"live", b"written by the writer", sync=True)
        assert cli("get", store, "live", code=0)[1] == "written by the writer\n"
        assert "live" in run("scan", store, "--prefix", "li", code=0)[1]
        assert run("keyspaces", store, code=0) and run("stats", store, "--json", code=0)
        assert run("verify", store, code=0)[1].rstrip().endswith("OK")
        dest = str(tmp_path / "copy")
        out = cli("checkpoint", store, dest, code=0)[1]
        assert "from its files: a writer has it open" in out
        for argv in (("put", store, "k", "v"), ("delete", store, "k"), ("compact", store),
                     ("repair", store)):
            assert "another process has it open" in cli(*argv, code=2)[2]
        writer.put(b"after", b"the checkpoint")
    with banyanstore.open(dest, read_only=True) as copy:
        assert copy.get(b"live") == b"written by the writer" and copy.get(b"after") is None
        assert copy.get(b"user:0001") == b"value-1" and copy.keyspace("index").get(b"ix:1") == b"user:0001"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # scratch removed
    out = run("checkpoint", store, str(tmp_path / "copy2"), code=0)[1]  # no writer: through the store
    assert "through the store" in out
    assert "exists and is not empty" in run("checkpoint", store, dest, code=2)[2]


def test_a_checkpoint_inside_the_store_is_a_usage_error(run: Run, store: str) -> None:
    """A checkpoint destination inside the store (its wal/, or beside its tables) is
    refused in one line, exit 2, with or without a writer running, and nothing is
    written there.  It ended in a ValueError traceback (exit 1)."""
    for dest in (os.path.join(store, "copy"), os.path.join(store, "wal", "copy")):
        err = run("checkpoint", store, dest, code=2)[2]
        assert "lies inside the store" in err, err
        with banyanstore.open(store) as writer:
            writer.put(b"live", b"1", sync=True)
            err = run("checkpoint", store, dest, code=2)[2]
            assert "lies inside the store" in err, err
    assert not [p for p in Path(store).rglob("*") if "copy" in p.name]  # (nor a scratch)
    with banyanstore.open(store, read_only=True) as s:
        assert s.get(b"live") == b"1"



_CHECKPOINT_KILLED_BEFORE_RESTORE = """
import os, sys, banyanstore
from banyanstore.cli import main
def killed(*args, **kwargs):
    os.kill(os.getpid(), 9)
banyanstore.restore = killed  # the scratch backup is complete; the restore never starts
main(["checkpoint", sys.argv[1], sys.argv[2]])
"""


def test_a_checkpoint_beside_a_writer_killed_part_way_leaves_nothing_behind(store: str,
                                                                           tmp_path: Path) -> None:
    """``checkpoint`` beside a writer, killed after its scratch backup (a full copy of the
    store's tables) was written: the next checkpoint beside that destination removes it.
    It was a plain temporary directory nothing removed, one whole copy per killed run."""
    dest = str(tmp_path / "copy")
    with banyanstore.open(store) as writer:
        writer.put(b"live", b"1", sync=True)
        for _ in range(2):
            child = subprocess.run([sys.executable, "-c", _CHECKPOINT_KILLED_BEFORE_RESTORE, store, dest],
                                   timeout=120)
            assert child.returncode == -9
        assert [n for n in os.listdir(tmp_path) if n.startswith(".")]
        cli("checkpoint", store, dest, code=0)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
    with banyanstore.open(dest, read_only=True) as copy:
        assert copy.get(b"live") == b"1"

# -- verify and repair -----------------------------------------------------------------------

def test_verify_exit_codes_and_progress(run: Run, store: str, tmp_path: Path) -> None:
    code, out, err = run("verify", store, "--progress")
    assert code == 0 and out.rstrip().endswith("OK") and "verify" in err and "/" in err
    assert run("verify", store, code=0)[2] == ""  # off a terminal: no bar unless asked
    Path(store, "tables", "009999.sst").write_bytes(b"left by a crashed flush")
    code, out, _ = run("verify", store, code=0)  # a warning: listed, exit 0
    assert "WARNING" in out and out.rstrip().endswith("OK, 1 warnings (no damage)")
    doc = json.loads(run("verify", store, "--json", code=0)[1])
    assert doc["ok"] and doc["warnings"] == 1 and doc["errors"] == 0
    victim = table_files(store)[0]
    data = bytearray(Path(victim).read_bytes())
    data[10] ^= 0x40
    Path(victim).write_bytes(bytes(data))
    code, out, _ = cli("verify", store, code=1)  # damage
    assert "DAMAGED: 1 errors, 1 warnings" in out
    assert run("verify", victim, code=1)
    assert "not a banyanstore store, log or table" in run("verify", str(tmp_path), code=2)[2]
    code, out, _ = cli("repair", store, code=1)  # salvages, but the damaged table's keys are lost
    assert "NOT recovered" in out
    assert run("verify", store, code=0)
    assert run("repair", store, code=0)[1].startswith("nothing to repair")
    assert "not a banyanstore store or log" in run("repair", str(tmp_path), code=2)[2]


# -- dumps -----------------------------------------------------------------------------------

def test_dumps(run: Run, store: str, tmp_path: Path) -> None:
    edits = [json.loads(line) for line in cli("dump-manifest", store, code=0)[1].splitlines()]
    assert edits[0]["_keyspaces"] == [[0, "default"]]
    assert "neither a store directory" in run("dump-manifest", str(tmp_path), code=2)[2]
    rows = [json.loads(line) for line in run("dump-table", table_files(store)[0], "--json", "--limit", "1",
                                             code=0)[1].splitlines()]
    assert base64.b64decode(rows[0]["properties"]["smallest_key"]) == b"user:0000"
    assert base64.b64decode(rows[1]["value"]) == b"value-0"
    garbage = tmp_path / "000001.sst"
    garbage.write_bytes(b"not a table at all" * 10)
    assert cli("dump-table", str(garbage), code=1)[2].startswith("banyanstore dump-table: ")
    code, out, _ = cli("dump-wal", store, "--json", code=0)
    assert code == 0
    log = str(tmp_path / "log")
    with banyanstore.open_log(log) as lg:
        lg.append_many([b"\x00one", b"two"])
    rows = [json.loads(line) for line in cli("dump-log", log, "--json", code=0)[1].splitlines()]
    assert [base64.b64decode(r["data"]) for r in rows] == [b"\x00one", b"two"]
    assert "is a store: use dump-wal" in run("dump-log", store, code=2)[2]
    assert "is not a store directory" in run("dump-wal", log, code=2)[2]


def test_dump_log_of_a_directory_holding_no_log_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    """dump-log of an empty directory, or of a log directory whose every segment is gone
    (only its LOCK left), printed an empty log -- "seqs [1, 0]", exit 0 -- where verify
    says the directory is not a log (exit 2).  A log always holds a segment."""
    empty = tmp_path / "empty"
    empty.mkdir()
    log = tmp_path / "log"
    with banyanstore.open_log(str(log)) as lg:
        lg.append_many([b"one", b"two"])
    for seg in log.glob("*.log"):
        seg.unlink()
    for path in (empty, log):
        code, out, err = run("dump-log", str(path), code=2)
        assert out == "" and "is not a log directory" in err, err
        assert run("verify", str(path), code=2)
    assert sorted(os.listdir(empty)) == []  # nothing created


def test_dump_table_range_tombstones_in_json_are_keys_like_any_other(run: Run, tmp_path: Path) -> None:
    """A range tombstone of a table in --json: its start and end are base64 (--hex: hex)
    as every key is, so that one command's output is the next one's argument, and its
    version a number -- not one string to be parsed back."""
    path = str(tmp_path / "ranges")
    with banyanstore.open(path, compaction=False) as s:
        s.put(b"a\x00", b"v")
        s.delete_range(b"a\x00", b"z\xff")
        s.flush()
    table = table_files(path)[0]
    props = json.loads(run("dump-table", table, "--json", code=0)[1].splitlines()[0])["properties"]
    assert props["range_tombstones"] == [{"start": base64.b64encode(b"a\x00").decode(),
                                          "end": base64.b64encode(b"z\xff").decode(), "version": 2}]
    props = json.loads(run("dump-table", table, "--json", "--hex", code=0)[1].splitlines()[0])["properties"]
    assert props["range_tombstones"] == [{"start": "6100", "end": "7aff", "version": 2}]
    assert "range_tombstones: [a\\x00, z\\xff) @2\n" in run("dump-table", table, code=0)[1]


# -- backups ---------------------------------------------------------------------------------

def test_backup_commands(run: Run, store: str, tmp_path: Path) -> None:
    url = str(tmp_path / "backups")
    first = json.loads(cli("backup", store, url, "--json", code=0)[1])
    with banyanstore.open(store) as s:
        s.put(b"user:0001", b"changed")
    assert run("backup", store, url, "-q", code=0)[1].startswith("backup ")
    out = cli("backups", url, "--verify", code=0)[1]
    assert out.count("  OK") == 2 and "(2 backups)" in out
    dest = str(tmp_path / "restored")
    assert cli("restore", url, dest, "--backup", first["backup_id"], code=0)
    with banyanstore.open(dest, read_only=True) as r:
        assert r.get(b"user:0001") == b"value-1"
    # the command's option, not the Python keyword: "pass overwrite=True" meant nothing here
    err = run("restore", url, dest, code=2)[2]
    assert "--overwrite" in err and "overwrite=True" not in err, err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    err = run("restore", url, str(foreign), "--overwrite", code=2)[2]
    assert "--overwrite only replaces a store" in err and "overwrite=True" not in err, err
    assert (foreign / "notes.txt").read_text() == "mine"
    assert run("restore", url, dest, "--backup", "../x", code=2)
    assert "no complete backup" in run("backups", url, "--backup", "20200101T000000.000000Z-00000000",
                                       code=1)[2]
    assert "KEY=VALUE" in run("backup", store, url, "-o", "novalue", code=2)[2]
    assert "kept 1 backups, deleted 1" in cli("prune", url, "--keep", "1", code=0)[1]
    assert json.loads(run("prune", url, "--keep", "1", "--json", code=0)[1])["deleted"] == []


def test_a_file_name_that_is_not_utf8_does_not_crash_the_output(store: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose name is not UTF-8 (held as surrogates) beside the store's files: with
    stdout strict UTF-8 (the usual locale), verify lists it with its bytes escaped instead
    of dying in a UnicodeEncodeError traceback."""
    import io
    with open(os.path.join(os.fsencode(store), b"notes-\xff"), "wb") as f:
        f.write(b"x")
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["verify", store]) == 0
    out.flush()
    assert b"notes-\\udcff" in out.buffer.getvalue() or b"notes-\\xff" in out.buffer.getvalue()


@pytest.mark.parametrize("writer", [False, True])
def test_a_checkpoint_over_what_a_killed_checkpoint_left(run: Run, store: str, tmp_path: Path,
                                                        writer: bool) -> None:
    """A destination holding what a killed ``store.checkpoint()`` left (its marker, and
    only names a checkpoint writes) is cleared and written, as the API's checkpoint does;
    it was refused as "exists and is not empty" (exit 2)."""
    dest = tmp_path / "copy"
    (dest / "tables").mkdir(parents=True)
    (dest / "wal").mkdir()
    (dest / "CHECKPOINT-INCOMPLETE").write_bytes(b"banyanstore checkpoint in progress\n")
    (dest / "CURRENT").write_bytes(b"MANIFEST-000009\n")
    if writer:
        with banyanstore.open(store) as w:
            w.put(b"live", b"1", sync=True)
            out = cli("checkpoint", store, str(dest), code=0)[1]
        assert "a writer has it open" in out
    else:
        out = run("checkpoint", store, str(dest), code=0)[1]
        assert "through the store" in out
    assert out.startswith(f"cleared what an interrupted checkpoint left in {dest}\n")
    assert "CHECKPOINT-INCOMPLETE" not in os.listdir(dest)
    with banyanstore.open(dest, read_only=True) as copy:
        assert copy.get(b"user:0001") == b"value-1"


def test_a_warning_is_one_line(store: str) -> None:
    """docs/cli.md: warnings are one line each, ``banyanstore: WARNING: ...``. They were
    Python's warning format: the library's file and line, then its source line, then a
    blank line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANYANSTORE_")
           or k in ("BANYANSTORE_PURE_PYTHON",)}
    env["BANYANSTORE_CLI_WARNING_PROBE"] = "1"  # names no option: a warning
    proc = subprocess.run([sys.executable, "-m", "banyanstore", "get", store, "user:0001"],
                          capture_output=True, env=env, check=False, timeout=120, text=True)
    assert proc.returncode == 0 and proc.stdout == "value-1\n", proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("banyanstore: WARNING: environment variable "
                               "BANYANSTORE_CLI_WARNING_PROBE names no banyanstore option"), lines


def test_tools_from_python_raise_the_library_errors_for_a_bad_path(tmp_path: Path, run: Run) -> None:
    """``banyanstore.tools.verify_path`` and ``repair`` (docs/api.md, Tools) raised the
    command line's internal UsageError for a missing path or one holding no store: not a
    BanyanStoreError nor an OSError, so ``except banyanstore.BanyanStoreError`` (or
    ``FileNotFoundError``) missed it. They raise StoreNotFoundError and NotAStoreError,
    as open() does; the command's line and exit code stay."""
    from banyanstore import tools
    from banyanstore.errors import BanyanStoreError, NotAStoreError, StoreNotFoundError
    missing = str(tmp_path / "missing")
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    for call in (tools.verify_path, tools.repair):
        with pytest.raises(StoreNotFoundError, match="missing"):
            call(missing)
    with pytest.raises(NotAStoreError) as caught:
        tools.repair(str(other))
    assert isinstance(caught.value, BanyanStoreError) and other.read_text() == "mine"
    assert run("verify", missing, code=2)[2] == f"banyanstore verify: {missing}: no such file or directory\n"
    assert run("repair", missing, code=2)[2].startswith(f"banyanstore repair: {missing}: not a banyanstore")
    assert run("repair", str(other), code=2)


def test_a_version_past_the_latest_is_said_in_the_commands_terms(run: Run, store: str) -> None:
    """``get``/``scan --version`` past the store's latest version said "... this reader
    has caught up with (N; see refresh())": a method the command's user cannot call (the
    command has just opened the store and holds every version there is)."""
    with banyanstore.open(store, read_only=True) as r:
        latest = r.version
    for argv in (("get", store, "user:0001"), ("scan", store)):
        err = run(*argv, "--version", str(latest + 5), code=2)[2]
        assert f"version {latest + 5} is above the store's latest version ({latest})" in err, err
        assert "refresh()" not in err, err
    assert run("get", store, "user:0001", "--version", str(latest), code=0)[1] == "value-1\n"


def test_dump_table_of_a_directory_says_what_it_is(run: Run, store: str) -> None:
    """``dump-table STORE`` (a directory) said "no such table file", as for a path that
    does not exist; it says it is a directory and where a store's tables are."""
    err = run("dump-table", store, code=2)[2]
    assert "is a directory" in err and "no such" not in err, err
    assert "tables/" in err, err
    err = run("dump-table", store + "/nope.sst", code=2)[2]
    assert "no such table file" in err, err


def test_a_missing_keyspace_names_at_most_twenty_of_the_others(run: Run, tmp_path: Path) -> None:
    path = str(tmp_path / "many")
    with banyanstore.open(path) as s:
        for i in range(100):
            s.keyspace(f"ks{i:03d}")
    err = run("get", path, "k", "--keyspace", "nope", code=2)[2]
    assert "'ks018'" in err and "'ks019'" not in err and "and 81 more" in err, err


def test_help_shows_plain_text_not_docstring_markup(run: Run) -> None:
    """``banyanstore --help`` opened with "The ``banyanstore`` command": the module
    docstring's reStructuredText quotes, printed as they are."""
    commands = ["verify", "stats", "keyspaces", "dump-manifest", "dump-table", "dump-log", "dump-wal",
                "get", "scan", "put", "delete", "compact", "checkpoint", "repair", "backup", "restore",
                "backups", "prune"]
    for argv in [("--help",), *((c, "--help") for c in commands)]:
        out = run(*argv, code=0)[1]
        assert not re.search(r"``|:(class|meth|func|attr):", out), (argv, out)
