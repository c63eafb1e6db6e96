"""A refused open changes nothing on disk.

For each kind of damage (or missing file) that makes an open refuse -- the store's
writer and read-only opens, ``verify``, ``backup``, and a bare :class:`Log`'s opens --
the directory is snapshotted (names, sizes, sha256 of every file but LOCK's contents)
before the open and compared after the refusal: it must be the same.  An open that
writes first (a new manifest, a cut WAL tail, a new segment) and refuses afterwards
destroys the evidence ``banyanstore repair`` and a human need.

The damaged stores start from one written by a child process that exits without
closing, so its WAL holds unflushed records over several segments; the manifest holds
flushes and a merge.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import BanyanStoreError
from banyanstore.lsm.manifest import walk_manifest
from banyanstore.tools.verify import verify_path

OPTS: dict[str, Any] = dict(memtable_size=1 << 20, segment_size=64 * 1024, compaction=False)

WRITER = textwrap.dedent("""
    import os, sys
    import banyanstore
    store = banyanstore.open(sys.argv[1], memtable_size=1 << 20, segment_size=64 * 1024,
                             compaction=False)
    for r in range(3):
        for i in range(200):
            store.put(b"k%d-%04d" % (r, i), b"v" * 40)
        store.flush()
    store.compact()
    for i in range(2500):  # unflushed: only in the WAL, over several segments
        store.put(b"w-%04d" % i, b"u" * 40)
    os._exit(0)  # no close: the records stay in the WAL
""")

Snapshot = dict[str, tuple[int, str]]


def snapshot(root: Path) -> Snapshot:
    """Every file and directory under ``root``: size and sha256 (LOCK's contents aside)."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = (0, "")
        for f in filenames:
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, root)
            data = b"" if f == "LOCK" else Path(full).read_bytes()
            out[rel] = (os.path.getsize(full) if f != "LOCK" else 0, hashlib.sha256(data).hexdigest())
    return out


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """What differs: names added, removed or changed."""
    return ([f"+{n}" for n in sorted(after.keys() - before.keys())]
            + [f"-{n}" for n in sorted(before.keys() - after.keys())]
            + [f"~{n}" for n in sorted(before.keys() & after.keys()) if before[n] != after[n]])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("refused") / "db"
    subprocess.run([sys.executable, "-c", WRITER, str(path)], check=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert len(segments(path)) >= 3
    return path


def segments(path: Path) -> list[Path]:
    return sorted((path / "wal").glob("*.log"))


def manifest(path: Path) -> Path:
    return next(path.glob("MANIFEST-*"))


def live_tables(path: Path) -> list[Path]:
    return sorted((path / "tables").glob("*.sst"))


def flip(file: Path, offset: int, mask: int = 0x10) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= mask
    file.write_bytes(bytes(data))


def cut(file: Path, size: int) -> None:
    with open(file, "r+b") as f:
        f.truncate(size)


def record_offsets(file: Path, needle: bytes) -> list[int]:
    data = file.read_bytes()
    out, at = [], data.find(needle)
    while at != -1:
        out.append(at)
        at = data.find(needle, at + 1)
    return out


def last_record_end(seg: Path) -> int:
    """Where the data of the last segment ends (the reserved zeros after it aside)."""
    return len(seg.read_bytes().rstrip(b"\0"))


def _cut_manifest_at(path: Path, pick: Callable[[dict[str, Any]], bool]) -> None:
    m = manifest(path)
    recs = [r for r in walk_manifest(m.read_bytes(), str(m)) if r.edit is not None]
    rec = [r for r in recs if pick(r.edit or {})][-1]
    cut(m, rec.offset)


DAMAGES: dict[str, Callable[[Path], None]] = {
    # the manifest and CURRENT
    "manifest-merge-edit-cut": lambda p: _cut_manifest_at(p, lambda e: bool(e.get("remove_tables"))),
    "manifest-flush-edit-cut": lambda p: _cut_manifest_at(
        p, lambda e: bool(e.get("add_tables")) and not e.get("remove_tables")),
    "manifest-first-edit-flipped": lambda p: flip(manifest(p), 16 + 8 + 3),
    "manifest-header-flipped": lambda p: flip(manifest(p), 2),
    "manifest-missing": lambda p: manifest(p).unlink(),
    "current-missing": lambda p: (p / "CURRENT").unlink(),
    "current-flipped": lambda p: flip(p / "CURRENT", 25),
    # tables
    "table-missing": lambda p: live_tables(p)[0].unlink(),
    "table-cut": lambda p: cut(live_tables(p)[0], live_tables(p)[0].stat().st_size - 100),
    "table-footer-flipped": lambda p: flip(live_tables(p)[0], live_tables(p)[0].stat().st_size - 5),
    "table-unnamed": lambda p: shutil.copy(live_tables(p)[0], p / "tables" / "000001.sst"),
    # the WAL
    "wal-missing": lambda p: shutil.rmtree(p / "wal"),
    "wal-first-segment-missing": lambda p: segments(p)[0].unlink(),
    "wal-middle-segment-missing": lambda p: segments(p)[1].unlink(),
    "wal-last-segment-missing": lambda p: segments(p)[-1].unlink(),
    "wal-older-segment-cut": lambda p: cut(segments(p)[0], segments(p)[0].stat().st_size // 2),
    "wal-older-segment-header-flipped": lambda p: flip(segments(p)[1], 3),
    "wal-older-record-flipped": lambda p: flip(
        segments(p)[0], record_offsets(segments(p)[0], b"u" * 40)[2] + 7),
    "wal-last-segment-middle-record-flipped": lambda p: flip(
        segments(p)[-1], record_offsets(segments(p)[-1], b"u" * 40)[0] + 7),
    "wal-last-record-flipped": lambda p: flip(segments(p)[-1], last_record_end(segments(p)[-1]) - 5),
    # markers
    "checkpoint-marker": lambda p: (p / "CHECKPOINT-INCOMPLETE").write_bytes(b""),
}


def _open_writer(path: Path, tmp: Path) -> None:
    banyanstore.open(path, **OPTS).close()


def _open_reader(path: Path, tmp: Path) -> None:
    banyanstore.open(path, read_only=True, **OPTS).close()


def _verify(path: Path, tmp: Path) -> None:
    report = verify_path(str(path))
    errors = [p for p in report.problems if p.severity == "error"]
    if errors:
        raise RefusedByReport(errors[0].message)


def _backup(path: Path, tmp: Path) -> None:
    banyanstore.backup(str(path), str(tmp / "backups"))


class RefusedByReport(Exception):
    """verify reports errors instead of raising."""


OPENERS: dict[str, Callable[[Path, Path], None]] = {
    "writer": _open_writer, "read-only": _open_reader, "verify": _verify, "backup": _backup}


def damaged_copy(pristine: Path, tmp_path: Path, damage: str) -> Path:
    path = tmp_path / "db"
    shutil.copytree(pristine, path)
    DAMAGES[damage](path)
    return path


def attempt(opener: str, path: Path, tmp_path: Path) -> tuple[bool, list[str], str]:
    """(refused?, what changed, the error) of one open of the damaged store at ``path``."""
    before = snapshot(path)
    try:
        OPENERS[opener](path, tmp_path)
    except (BanyanStoreError, RefusedByReport) as exc:
        return True, changes(before, snapshot(path)), f"{type(exc).__name__}: {exc}"
    return False, changes(before, snapshot(path)), ""


@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_refused_open_changes_nothing(pristine: Path, tmp_path: Path, damage: str, opener: str) -> None:
    path = damaged_copy(pristine, tmp_path, damage)
    refused, changed, error = attempt(opener, path, tmp_path)
    if refused:
        assert not changed, f"{opener} refused ({error}) after changing {changed}"


def test_every_opener_accepts_the_undamaged_store(pristine: Path, tmp_path: Path) -> None:
    """The baseline the damages start from: every opener accepts it."""
    for opener in OPENERS:
        path = tmp_path / opener
        shutil.copytree(pristine, path)
        refused, _changed, error = attempt(opener, path, tmp_path)
        assert not refused, error


# -- a bare log ------------------------------------------------------------------------

def written_log(path: Path) -> Path:
    with banyanstore.open_log(str(path), wal_sync="always", segment_size=64 * 1024) as log:
        for i in range(2500):
            log.append(b"rec-%04d-" % i + b"u" * 40)
    return path


def log_segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.log"))


def _staged_and(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """A staged segment an interrupted open left (a crash state the writer repairs)
    beside the ``damage`` that makes it refuse."""
    def both(p: Path) -> None:
        damage(p)
        first = log_segments(p)[0]
        shutil.copy(first, first.with_name(first.name + ".new"))
    return both


LOG_DAMAGES: dict[str, Callable[[Path], None]] = {
    "last-segment-missing": lambda p: log_segments(p)[-1].unlink(),
    "older-segment-cut": lambda p: cut(log_segments(p)[0], log_segments(p)[0].stat().st_size // 2),
    "older-header-flipped": lambda p: flip(log_segments(p)[1], 3),
    "last-segment-middle-record-flipped": lambda p: flip(
        log_segments(p)[-1], record_offsets(log_segments(p)[-1], b"u" * 40)[0] + 7),
    "last-record-flipped": lambda p: flip(log_segments(p)[-1], last_record_end(log_segments(p)[-1]) - 5),
    "staged-and-older-segment-cut": _staged_and(
        lambda p: cut(log_segments(p)[0], log_segments(p)[0].stat().st_size // 2)),
    "torn-tail-and-older-segment-cut": lambda p: (
        cut(log_segments(p)[-1], last_record_end(log_segments(p)[-1]) - 5),
        cut(log_segments(p)[0], log_segments(p)[0].stat().st_size // 2)),
}


@pytest.fixture(scope="module")
def pristine_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return written_log(tmp_path_factory.mktemp("refused-log") / "log")


@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "read-only"])
@pytest.mark.parametrize("damage", LOG_DAMAGES)
def test_a_refused_log_open_changes_nothing(pristine_log: Path, tmp_path: Path, damage: str,
                                            read_only: bool) -> None:
    path = tmp_path / "log"
    shutil.copytree(pristine_log, path)
    LOG_DAMAGES[damage](path)
    before = snapshot(path)
    try:
        banyanstore.open_log(str(path), read_only=read_only).close()
    except BanyanStoreError as exc:
        assert not changes(before, snapshot(path)), f"refused ({exc}) after changing " \
                                                    f"{changes(before, snapshot(path))}"
