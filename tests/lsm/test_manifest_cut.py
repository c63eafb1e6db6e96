"""A manifest cut short after its first edits (damage: every edit is synced before the
WAL segments it retires are truncated) is blamed on the manifest, never on the WAL, and
no open -- not even one with ``wal_recovery="skip_missing"`` -- comes up without the
tables its lost edits had added; ``banyanstore repair`` gets every key back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import CorruptionError
from banyanstore.lsm.manifest import walk_manifest
from banyanstore.tools.repair import repair
from banyanstore.tools.verify import verify_path

OPTS: dict[str, Any] = dict(memtable_size=64 * 1024, segment_size=64 * 1024, compaction=False)
ROUNDS, PER_ROUND = 4, 300


def written_store(path: Path) -> dict[bytes, bytes]:
    """Several flushed tables, and a WAL whose older segments are gone."""
    written = {}
    with banyanstore.open(path, **OPTS) as store:
        for r in range(ROUNDS):
            for i in range(PER_ROUND):
                k, v = b"k%02d-%04d" % (r, i), b"v%02d-%04d-" % (r, i) + b"x" * 40
                store.put(k, v)
                written[k] = v
            store.flush()
    first_segment = min(os.listdir(path / "wal"))
    assert int(first_segment.split(".")[0]) > PER_ROUND  # the flushed records' segments are gone
    return written


def manifest_of(path: Path) -> Path:
    return next(path.glob("MANIFEST-*"))


KINDS = ("boundary", "header", "payload")
CUTS = [pytest.param(rec, kind, id=f"record{rec}-{kind}") for rec in range(1, ROUNDS + 1) for kind in KINDS]
"""Where the manifest is cut: at the start of one of its later records (a boundary: no
torn tail left), in its header, or in its payload (a torn tail left).  ROUNDS flushes
write at least ROUNDS edits after the first."""


def cut_point(path: Path, rec_no: int, kind: str) -> tuple[int, int]:
    """(where to cut, where the complete edits then end)."""
    m = manifest_of(path)
    rec = list(walk_manifest(m.read_bytes(), str(m)))[rec_no]
    return {"boundary": rec.offset, "header": rec.offset + 4,
            "payload": rec.offset + 8 + rec.length // 2}[kind], rec.offset


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[bytes, bytes]]:
    path = tmp_path_factory.mktemp("pristine") / "db"
    return path, written_store(path)


def cut_copy(pristine: tuple[Path, dict[bytes, bytes]], tmp_path: Path, rec_no: int,
             kind: str) -> tuple[Path, int, int]:
    """A copy of the pristine store with its manifest cut; (path, cut, edits' end)."""
    path = tmp_path / "db"
    shutil.copytree(pristine[0], path)
    cut, end = cut_point(path, rec_no, kind)
    m = manifest_of(path)
    m.write_bytes(m.read_bytes()[:cut])
    return path, cut, end


def tables_in(path: Path) -> list[str]:
    return sorted(os.listdir(path / "tables"))


@pytest.mark.parametrize("rec_no, kind", CUTS)
@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "read-only"])
def test_cut_manifest_is_blamed_on_the_manifest(pristine: Any, tmp_path: Path, rec_no: int, kind: str,
                                                read_only: bool) -> None:
    """The error names the manifest (and, when a cut record is left, its offset) and
    points at repair -- not at wal/ and not at skip_missing, which would open without
    the tables the lost edits added."""
    path, cut, end = cut_copy(pristine, tmp_path, rec_no, kind)
    with pytest.raises(CorruptionError) as info:
        banyanstore.open(path, read_only=read_only, **OPTS)
    err = info.value
    assert err.path == str(manifest_of(path)), str(err)
    assert err.offset == end, str(err)
    assert "banyanstore repair" in str(err) and "skip_missing" not in str(err)
    assert ("cut record" in str(err)) == (cut != end), str(err)


@pytest.mark.parametrize("rec_no, kind", CUTS)
@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "read-only"])
def test_skip_missing_does_not_open_a_cut_manifest(pristine: Any, tmp_path: Path, rec_no: int, kind: str,
                                                   read_only: bool) -> None:
    """wal_recovery="skip_missing" accepts losing WAL records, not tables: the open
    refuses, and no table file is removed."""
    path, cut, end = cut_copy(pristine, tmp_path, rec_no, kind)
    before = tables_in(path)
    with pytest.raises(CorruptionError, match="banyanstore repair"):
        banyanstore.open(path, read_only=read_only, wal_recovery="skip_missing", **OPTS)
    assert tables_in(path) == before


@pytest.mark.parametrize("rec_no, kind", CUTS[::2])
def test_repair_recovers_every_key_of_a_cut_manifest(pristine: Any, tmp_path: Path, rec_no: int,
                                                     kind: str) -> None:
    """Repair rebuilds the manifest from the tables present (a salvage: the manifest is
    older than its WAL) and loses no table.  (With no WAL record left to bound the cut
    records' versions it may still list them as possibly lost: it cannot prove a kept
    table holds them.)"""
    path, _cut, _end = cut_copy(pristine, tmp_path, rec_no, kind)
    result = repair(str(path))
    assert not result.refused
    assert all(loss.what == str(path / "wal") for loss in result.lost), result.lost
    with banyanstore.open(path, **OPTS) as store:
        assert dict(store.items()) == pristine[1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "read-only"])
def test_lost_merge_edit_is_blamed_on_the_manifest(tmp_path: Path, kind: str, read_only: bool) -> None:
    """The merge's edit cut off after its inputs were removed (the WAL still fits: a
    merge does not cut it): the inputs the cut manifest names are missing, and the
    error naming one says the manifest may have lost the edit that replaced it."""
    path = tmp_path / "db"
    written = written_store(path)
    with banyanstore.open(path, **OPTS) as store:
        store.compact()
    m = manifest_of(path)
    recs = list(walk_manifest(m.read_bytes(), str(m)))
    merge = next(r for r in recs if r.edit and r.edit.get("remove_tables"))
    cut = {"boundary": merge.offset, "header": merge.offset + 4,
           "payload": merge.offset + 8 + merge.length // 2}[kind]
    m.write_bytes(m.read_bytes()[:cut])
    with pytest.raises(CorruptionError, match="table named by the manifest is missing") as info:
        banyanstore.open(path, read_only=read_only, **OPTS)
    assert str(info.value.path).endswith(".sst")
    assert "the manifest may have lost the edit" in str(info.value), str(info.value)
    assert "banyanstore repair" in str(info.value)
    repair(str(path))
    with banyanstore.open(path, **OPTS) as store:
        assert dict(store.items()) == written


@pytest.mark.parametrize("rec_no, kind", CUTS[::2])
def test_verify_blames_the_cut_manifest_and_keeps_its_tables(pristine: Any, tmp_path: Path, rec_no: int,
                                                             kind: str) -> None:
    """`banyanstore verify` says what the open says: the manifest lost edits (an error
    on it, at the offset where its edits end), not the WAL; and the tables no edit names
    are errors (an edit naming them was lost), not leftovers an open would remove."""
    path, _cut, end = cut_copy(pristine, tmp_path, rec_no, kind)
    report = verify_path(str(path))
    mpath = str(manifest_of(path))
    blamed = [p for p in report.problems if p.severity == "error" and p.file == mpath]
    assert blamed and blamed[0].offset == end and "banyanstore repair" in blamed[0].message, report.problems
    assert not [p for p in report.problems if p.file.endswith("/wal")], report.problems
    orphans = [p for p in report.problems if p.file.endswith(".sst")]
    assert orphans and all(p.severity == "error" and "removes it" not in p.message for p in orphans)


@pytest.mark.parametrize("rec_no, kind", CUTS[::2])
def test_backup_of_a_cut_manifest_names_the_manifest(pristine: Any, tmp_path: Path, rec_no: int,
                                                     kind: str) -> None:
    """A backup refuses the store as its open does, naming the manifest (not wal/)."""
    path, _cut, end = cut_copy(pristine, tmp_path, rec_no, kind)
    with pytest.raises(CorruptionError, match="banyanstore repair") as info:
        banyanstore.backup(str(path), str(tmp_path / "backups"))
    assert info.value.path == str(manifest_of(path)) and info.value.offset == end, str(info.value)
