"""The command line over a damage matrix: each kind of store file (CURRENT, the manifest,
a table -- data block, index, footer --, a WAL segment) damaged each way (a flipped bit, a
cut, a zeroed page, missing, empty, a directory in its place), then every command that
reads or repairs a store run on it.

What every case must show (docs/cli.md): no traceback (``main`` returns), an exit code
of 0, 1 or 2; a failure is one line on stderr naming the command; ``--json`` output
stays JSON; ``verify`` never says OK for this damage; ``repair --dry-run`` changes
nothing; ``repair`` keeps every byte of every file it does not rewrite (CURRENT aside):
in place or moved to ``lost/``, and a store it calls repaired verifies clean.

The default matrix is small (15 cases, JSON output); ``BANYANSTORE_SOAK=1`` adds the
other damage kinds, the text output, and flips and cuts at many more offsets of each
file (there the verdict of ``verify`` is not checked: a cut at a WAL record boundary, or
damage in a WAL's zero tail, is what a crash leaves).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from banyanstore.cli import main

SOAK = os.environ.get("BANYANSTORE_SOAK") == "1"

WRITER = """
import os, sys, banyanstore
s = banyanstore.open(sys.argv[1], memtable_size=65536, wal_sync="always", compaction=False)
for i in range(1500):
    s.put(b"k%05d" % i, b"v%d" % i * 4)
s.flush()
s.keyspace("idx").put(b"y", b"1")
for i in range(1500, 1520):
    s.put(b"k%05d" % i, b"w" * 20)
s.delete(b"k00003")
os._exit(0)   # killed: the newest writes are in the WAL only
"""

Damage = Callable[[str], None]


def _flip(offset: int) -> Damage:
    def damage(path: str) -> None:
        with open(path, "r+b") as f:
            f.seek(offset if offset >= 0 else os.path.getsize(path) + offset)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x10]))
    return damage


def _cut(fraction: float) -> Damage:
    return lambda path: os.truncate(path, max(1, int(os.path.getsize(path) * fraction)))


def _flip_at(fraction: float) -> Damage:
    """A flipped bit at ``fraction`` of the file's bytes up to its zero tail (a WAL
    segment's reserved space: damage there is a torn tail, what a crash leaves)."""
    return lambda path: _flip(int(len(Path(path).read_bytes().rstrip(b"\0")) * fraction))(path)


def _zero_page(path: str) -> None:
    with open(path, "r+b") as f:
        f.write(bytes(min(4096, os.path.getsize(path))))


def _missing(path: str) -> None:
    os.remove(path)


def _empty(path: str) -> None:
    os.truncate(path, 0)


def _directory(path: str) -> None:
    os.remove(path)
    os.mkdir(path)


def _table_block(which: str) -> Damage:
    """A flipped bit in the first data block, the index block or the footer's magic."""
    def damage(path: str) -> None:
        data = Path(path).read_bytes()
        index_off = struct.unpack_from("<Q", data, len(data) - 52)[0]
        _flip({"data": 10, "index": index_off + 3, "magic": len(data) - 1}[which])(path)
    return damage


def _file_of(store: str, kind: str) -> str:
    if kind == "CURRENT":
        return os.path.join(store, "CURRENT")
    if kind == "manifest":
        return os.path.join(store, next(n for n in os.listdir(store) if n.startswith("MANIFEST-")))
    sub = {"table": "tables", "wal": "wal"}[kind]
    return os.path.join(store, sub, sorted(os.listdir(os.path.join(store, sub)))[0])


# (file kind, damage name, damage): damage verify must report in every engine
MATRIX: list[tuple[str, str, Damage]] = [
    ("CURRENT", "flip", _flip(3)), ("CURRENT", "missing", _missing),
    ("CURRENT", "directory", _directory),
    ("manifest", "flip in the first edit", _flip(20)), ("manifest", "empty", _empty),
    ("manifest", "directory", _directory),
    ("table", "flip in a data block", _table_block("data")),
    ("table", "flip in the footer", _table_block("magic")), ("table", "cut in half", _cut(0.5)),
    ("table", "missing", _missing), ("table", "directory", _directory),
    ("wal", "flip in the header", _flip(2)), ("wal", "flip in the first record", _flip(32)),
    ("wal", "zeroed page", _zero_page), ("wal", "missing", _missing),
]
if SOAK:  # the rest of the damage kinds, and many more offsets
    MATRIX += [("CURRENT", "empty", _empty), ("manifest", "missing", _missing),
               ("table", "flip in the index", _table_block("index")),
               ("table", "zeroed page", _zero_page), ("table", "empty", _empty),
               ("wal", "empty", _empty), ("wal", "directory", _directory)]
    # the verdict of verify is not checked for these
    MATRIX += [(kind, f"flip at {i / 40:.3f}", _flip_at(i / 40))
               for kind in ("manifest", "table", "wal") for i in range(40)]
    MATRIX += [(kind, f"cut at {frac:.2f}", _cut(frac))
               for kind in ("manifest", "table", "wal") for frac in [i / 20 for i in range(1, 20)]]
UNCHECKED_VERDICT = {name for _k, name, _d in MATRIX if name.startswith(("flip at", "cut at"))}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("damage") / "store")
    subprocess.run([sys.executable, "-c", WRITER, path], check=True)
    return path


def _tree(path: str) -> dict[str, bytes]:
    return {os.path.join(d, f): Path(d, f).read_bytes() for d, _, fs in os.walk(path) for f in fs}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code, captured.err)
    failure = [line for line in captured.err.splitlines() if ": WARNING: " not in line
               and not line.startswith("banyanstore: ERROR: ")]
    if code != 0 and argv[0] not in ("verify", "repair"):  # their reports are data on stdout
        assert len(failure) == 1 and failure[0].startswith(f"banyanstore {argv[0]}: "), (
            argv, captured.err)
    if "--json" in argv and captured.out.strip():
        try:
            json.loads(captured.out)
        except ValueError:
            for line in captured.out.splitlines():
                json.loads(line)
    return code, captured.out, captured.err


@pytest.mark.parametrize(("kind", "name", "damage"), MATRIX,
                         ids=[f"{k}-{n.replace(' ', '_')}" for k, n, _d in MATRIX])
def test_every_command_on_a_damaged_store(capsys: pytest.CaptureFixture[str], template: str,
                                          tmp_path: Path, kind: str, name: str,
                                          damage: Damage) -> None:
    store = str(tmp_path / "store")
    shutil.copytree(template, store)
    victim = _file_of(store, kind)
    table = _file_of(store, "table")
    damage(victim)
    before = _tree(store)

    code, out, _ = _run(capsys, "verify", store, "--json")
    if name not in UNCHECKED_VERDICT:
        report = json.loads(out)
        assert code == 1 and not report["ok"], out
        assert any(p["severity"] == "error" and p["file"].startswith(store)
                   for p in report["problems"]), out
    for argv in (["dump-manifest", store], ["dump-wal", store], ["dump-log", f"{store}/wal"],
                 ["stats", store], ["keyspaces", store], ["scan", store], ["get", store, "k00005"],
                 ["dump-table", table]):
        _run(capsys, *argv, "--json")
        if SOAK:  # the text output too (the same reads, printed otherwise)
            _run(capsys, *argv)
    assert _tree(store) == before, "a read-only command changed the store"

    _run(capsys, "repair", store, "--dry-run", "--json")
    assert _tree(store) == before, "repair --dry-run changed the store"
    code, out, _ = _run(capsys, "repair", store, "--json")
    now = _tree(store)
    after = set(now.values())

    def torn_tail_cut(path: str) -> bool:  # a WAL's torn tail, cut as recovery does
        return "torn tail" in out and path in now and before[path].startswith(now[path])
    kept = [path for path, data in before.items()  # (a file of zeros holds nothing)
            if data.strip(b"\0") and os.path.basename(path) != "CURRENT" and data not in after
            and not torn_tail_cut(path)]
    assert not kept, f"repair lost the bytes of {kept}: {out}"
    if code == 0:
        assert _run(capsys, "verify", store)[0] == 0
