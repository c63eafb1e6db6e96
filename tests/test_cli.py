"""The ``banyanstore`` command: every subcommand on small real stores and logs,
exit codes, and verify/repair on damaged copies (flipped table byte, torn WAL
tail, orphan files, garbage CURRENT)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.cli import main

CRASH_SCRIPT = """
import os, sys, banyanstore
s = banyanstore.open(sys.argv[1], memtable_size=65536, wal_sync="always", compaction=False)
for i in range(990):
    s.put(b"k%05d" % i, b"v" * 20)
s.flush()     # every flush done before the crash: no table left half-written
for i in range(990, 1000):
    s.put(b"k%05d" % i, b"v" * 20)
s.keyspace("idx")
with s.batch() as b:
    b.put(b"bin", b"\\x00\\x01raw")
    b.delete(b"k00003")
    b.put(b"y", b"1", keyspace="idx")
os._exit(0)   # a crash: memtables unflushed, the WAL holds the newest writes
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A closed store: two keyspaces, several tables, a tombstone, a binary key."""
    path = str(tmp_path / "store")
    with banyanstore.open(path, memtable_size=1 << 22, compaction=False) as s:
        for i in range(300):
            s.put(b"user:%04d" % i, b"value-%d" % i)
        s.flush()
        s.delete(b"user:0001")
        s.put(b"\x00\xffbin", b"\x01\x02")
        s.keyspace("index").put(b"ix:1", b"user:0001")
        s.flush()
    return path


@pytest.fixture(scope="module")
def crashed_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("crash") / "store")
    subprocess.run([sys.executable, "-c", CRASH_SCRIPT, path], check=True)
    return path


@pytest.fixture
def crashed(crashed_template: str, tmp_path: Path) -> str:
    """A store left by a killed writer: one table, and WAL records to replay."""
    path = str(tmp_path / "crashed")
    shutil.copytree(crashed_template, path)
    return path


@pytest.fixture
def log_dir(tmp_path: Path) -> str:
    path = str(tmp_path / "log")
    with banyanstore.open_log(path) as log:
        log.append_many([b"record-%d" % i for i in range(1, 51)])
    return path


def wal_segment(store: str) -> str:
    names = sorted(os.listdir(os.path.join(store, "wal")))
    return os.path.join(store, "wal", [n for n in names if n.endswith(".log")][-1])


def tear_last_record(segment: str) -> None:
    """Cut the last 5 bytes of the last record (the killed writer left its reserved
    zeros after it; the crash script's last record ends in b"1", not a zero)."""
    os.truncate(segment, len(Path(segment).read_bytes().rstrip(b"\0")) - 5)


def table_files(store: str) -> list[str]:
    tdir = os.path.join(store, "tables")
    return [os.path.join(tdir, n) for n in sorted(os.listdir(tdir))]


def snapshot_tree(path: str) -> dict[str, bytes]:
    return {os.path.join(d, f): Path(d, f).read_bytes() for d, _, fs in os.walk(path) for f in fs}


# -- verify ----------------------------------------------------------------------------------

def test_verify_clean_store_and_log(capsys: pytest.CaptureFixture[str], store: str, log_dir: str,
                                    crashed: str) -> None:
    code, out, _ = run(capsys, "verify", store)
    assert code == 0 and out.rstrip().endswith("OK"), out
    assert "tables 3" in out
    code, out, _ = run(capsys, "verify", crashed)
    assert code == 0 and "wal_records_to_replay" in out
    code, out, _ = run(capsys, "verify", log_dir, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["kind"] == "log" and doc["counts"]["log_records"] == 50
    assert (doc["errors"], doc["warnings"]) == (0, 0)


def _writer_with_tables_and_wal(path: Path) -> banyanstore.Store:
    """A writer holding three tables and WAL records its manifest still needs."""
    w = banyanstore.open(path, io_mode="sync", wal_sync="never", compaction=False,
                         segment_size=64 * 1024)
    for round_ in range(3):
        for i in range(300):
            w.put(b"k%04d" % i, b"%d" % round_ * 50)
        w.flush()
    for i in range(300):
        w.put(b"w%04d" % i, b"v" * 50)
    return w


def _move_on_during_the_check(monkeypatch: pytest.MonkeyPatch, move: Any) -> None:
    """Run ``move()`` (the writer's flush, merge...) as verify starts checking tables."""
    from banyanstore.tools import verify as verify_module
    check_table = verify_module.verify_table
    pending = [move]

    def moving(*args: Any, **kwargs: Any) -> None:
        while pending:
            pending.pop()()
        check_table(*args, **kwargs)

    monkeypatch.setattr(verify_module, "verify_table", moving)


def test_verify_beside_a_writer_that_merges_and_flushes(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """The writer merges the tables the check's manifest names and cuts the WAL it
    needed while verify runs: no damage (a note says what was left out).  It used to
    report every such table missing and the WAL cut short: DAMAGED, exit 1."""
    from banyanstore.tools import verify_path
    w = _writer_with_tables_and_wal(tmp_path / "db")

    def merge_and_flush() -> None:
        w.compact()
        w.flush()
    _move_on_during_the_check(monkeypatch, merge_and_flush)
    report = verify_path(tmp_path / "db")
    assert report.ok, report.problems
    assert any("left out" in note for note in report.info), report.info
    w.close()


def test_verify_beside_a_writer_still_reports_damage(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """A table removed behind the writer's back stays an error though the writer
    flushed during the check: its manifest still names the table."""
    from banyanstore.tools import verify_path
    w = _writer_with_tables_and_wal(tmp_path / "db")
    lost = sorted((tmp_path / "db" / "tables").glob("*.sst"))[0]
    lost.unlink()
    _move_on_during_the_check(monkeypatch, w.flush)
    report = verify_path(tmp_path / "db")
    assert [(p.file, p.message) for p in report.problems if p.severity == "error"] == \
        [(str(lost), "table named by the manifest is missing")]
    w.close()


def test_verify_flipped_table_byte(capsys: pytest.CaptureFixture[str], store: str) -> None:
    victim = table_files(store)[0]
    data = bytearray(Path(victim).read_bytes())
    data[10] ^= 0x40  # inside data block 0
    Path(victim).write_bytes(bytes(data))
    before = snapshot_tree(store)
    code, out, _ = run(capsys, "verify", store)
    assert code == 1 and "DAMAGED: 1 errors, 0 warnings" in out
    assert f"ERROR: {victim} @ offset 0: data block 0 checksum mismatch" in out, out
    assert snapshot_tree(store) == before  # verify never modifies anything
    code, out, _ = run(capsys, "--json", "verify", store)
    problem = json.loads(out)["problems"][0]
    assert (problem["file"], problem["offset"], problem["severity"]) == (victim, 0, "error")


def test_verify_a_table_under_another_name(capsys: pytest.CaptureFixture[str], store: str,
                                          tmp_path: Path) -> None:
    """A table is a table whatever its name (a copy, a backup's object named by its hash):
    verify checks it as dump-table reads it.  Before, only a name like 000002.sst was a
    table; any other was "not a banyanstore store, log or table (unknown)", exit 2."""
    data = Path(table_files(store)[0]).read_bytes()
    for name in ("copy.sst", "70d3cbe192a6c33735196d2167c9db7f2c5c03ed39cd4c161c505a9648b99d70"):
        Path(tmp_path, name).write_bytes(data)
        code, out, _ = run(capsys, "verify", str(tmp_path / name))
        assert code == 0 and out.startswith("table ") and out.endswith("OK\n"), out
    Path(tmp_path, "cut.sst").write_bytes(data[:len(data) // 2])  # a .sst file cut short
    code, out, _ = run(capsys, "verify", str(tmp_path / "cut.sst"))
    assert code == 1 and "DAMAGED" in out and "bad magic" in out, out
    Path(tmp_path, "notes.txt").write_bytes(b"hello")
    assert run(capsys, "verify", str(tmp_path / "notes.txt"))[0] == 2


def test_verify_flipped_footer_byte(capsys: pytest.CaptureFixture[str], store: str) -> None:
    victim = table_files(store)[-1]
    data = bytearray(Path(victim).read_bytes())
    data[-30] ^= 0x01  # a footer handle
    Path(victim).write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify", store)
    assert code == 1 and f"{victim} @ offset {len(data) - 52}: table footer checksum" in out, out


def test_verify_torn_wal_tail(capsys: pytest.CaptureFixture[str], crashed: str) -> None:
    """A torn tail is what a crash leaves, and an open handles it: a warning, listed,
    exit 0 (damage alone exits 1)."""
    seg = wal_segment(crashed)
    tear_last_record(seg)
    code, out, _ = run(capsys, "verify", crashed)
    assert code == 0
    assert f"WARNING: {seg} @ offset" in out and "torn tail" in out, out
    assert out.rstrip().endswith("OK, 1 warnings (no damage)")
    code, out, _ = run(capsys, "verify", crashed, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and (doc["errors"], doc["warnings"]) == (0, 1)


def test_verify_and_repair_a_zeroed_wal_header(capsys: pytest.CaptureFixture[str],
                                              crashed: str) -> None:
    """A zeroed WAL segment header with records after it is damage (an open refuses it
    and keeps the segment); repair stores the header again from the segment's name once
    the records after it read under it, and every acknowledged write is back."""
    seg = wal_segment(crashed)
    data = Path(seg).read_bytes()
    Path(seg).write_bytes(bytes(28) + data[28:])
    code, out, _ = run(capsys, "verify", crashed)
    assert code == 1 and f"ERROR: {seg} @ offset 0: segment header is missing" in out, out
    with pytest.raises(banyanstore.CorruptionError, match="header is missing"):
        banyanstore.open(crashed)
    assert Path(seg).read_bytes()[28:] == data[28:]
    code, out, _ = run(capsys, "repair", crashed)
    assert code == 0 and f"restored the header of {seg}" in out, out
    assert Path(seg).read_bytes() == data
    with banyanstore.open(crashed, read_only=True) as s:
        assert s.get(b"k00999") == b"v" * 20 and s.get(b"bin") == b"\x00\x01raw"
        assert s.get(b"k00003") is None and s.keyspace("idx").get(b"y") == b"1"


def test_repair_restores_a_zeroed_log_header(capsys: pytest.CaptureFixture[str],
                                            log_dir: str) -> None:
    seg = wal_segment_of_log(log_dir)
    data = Path(seg).read_bytes()
    Path(seg).write_bytes(bytes(28) + data[28:])
    with pytest.raises(banyanstore.CorruptionError, match="header is missing"):
        banyanstore.open_log(log_dir)
    code, out, _ = run(capsys, "repair", log_dir, "--dry-run")
    assert code == 1 and f"would do: restored the header of {seg}" in out, out
    assert Path(seg).read_bytes()[:28] == bytes(28)
    code, out, _ = run(capsys, "repair", log_dir)
    assert code == 0 and Path(seg).read_bytes() == data, out
    with banyanstore.open_log(log_dir) as log:
        assert [r for _, r in log.read()] == [b"record-%d" % i for i in range(1, 51)]


def test_verify_wal_damage_before_intact_records(capsys: pytest.CaptureFixture[str],
                                                 crashed: str) -> None:
    seg = wal_segment(crashed)
    data = bytearray(Path(seg).read_bytes())
    data[100] ^= 0xFF  # an early record; intact records follow in the same block
    Path(seg).write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify", crashed)
    assert code == 1 and f"ERROR: {seg} @ offset 28" in out and "before intact ones" in out, out
    code, out, _ = run(capsys, "repair", crashed)  # cutting would lose acknowledged writes
    assert code == 1 and "NOT repaired: repair the log" in out
    assert Path(seg).read_bytes() == bytes(data)


def test_verify_orphans_and_bad_current(capsys: pytest.CaptureFixture[str], store: str) -> None:
    orphan = os.path.join(store, "tables", "009999.sst")
    Path(orphan).write_bytes(b"left by a crashed flush")
    code, out, _ = run(capsys, "verify", store)
    assert code == 0 and f"WARNING: {orphan}: table not named by the manifest" in out  # a leftover
    Path(store, "CURRENT").write_bytes(b"garbage\n")
    code, out, _ = run(capsys, "verify", store)
    assert code == 1
    assert f"WARNING: {orphan}: table not named by the manifest" in out
    assert "CURRENT is malformed" in out and "checking the only manifest" in out


def test_verify_log_damage(capsys: pytest.CaptureFixture[str], log_dir: str) -> None:
    seg = wal_segment_of_log(log_dir)
    data = bytearray(Path(seg).read_bytes())
    data[40] ^= 0xFF  # the first record: the other 49 follow it
    Path(seg).write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify", log_dir)
    assert code == 1 and f"ERROR: {seg} @ offset 28" in out, out


def _log_writer_truncating_during_the_listing(monkeypatch: pytest.MonkeyPatch, path: str,
                                              cut: int) -> Any:
    """A Log of 4 segments whose writer cuts its first ``cut`` segments right after verify
    listed them (truncate_before: oldest first, never the last)."""
    from banyanstore.tools import verify_log
    log = banyanstore.open_log(path, segment_size=64 * 1024, wal_sync="never")
    starts = []
    for _ in range(4):
        starts.append(log.last_seq + 1)
        log.append_many([b"x" * 1000 for _ in range(50)])
        log.rotate()
    listing = verify_log.segment_names

    def listed_then_cut(directory: str) -> list[str]:
        names = listing(directory)
        log.truncate_before(starts[cut])
        return names

    monkeypatch.setattr(verify_log, "segment_names", listed_then_cut)
    return log


@pytest.mark.parametrize("cut", [1, 3])
def test_verify_log_beside_a_writer_that_truncates(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path, cut: int) -> None:
    """Segments the writer removed from the front after verify listed them are the log
    starting later, not damage.  verify used to fail with a bare "No such file or
    directory" (exit 2)."""
    path = str(tmp_path / "log")
    log = _log_writer_truncating_during_the_listing(monkeypatch, path, cut)
    code, out, err = run(capsys, "verify", path, "--json")
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["ok"] and doc["counts"]["log_records"] == 50 * (4 - cut), doc
    log.close()


def wal_segment_of_log(log: str) -> str:
    return os.path.join(log, [n for n in sorted(os.listdir(log)) if n.endswith(".log")][-1])


# -- dumps -----------------------------------------------------------------------------------

def test_dump_manifest(capsys: pytest.CaptureFixture[str], store: str) -> None:
    code, out, _ = run(capsys, "dump-manifest", store)
    edits = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and edits[0]["_keyspaces"] == [[0, "default"]]
    assert any(e.get("add_keyspace") == [1, "index"] for e in edits)
    assert sum(len(e.get("add_tables", [])) for e in edits) == 3
    code, out, _ = run(capsys, "dump-manifest", store, "--json")
    assert json.loads(out.splitlines()[0])["offset"] == 16


def test_dump_table(capsys: pytest.CaptureFixture[str], store: str) -> None:
    newest = table_files(store)[1]  # the second flush of the default keyspace
    code, out, _ = run(capsys, "dump-table", newest)
    assert code == 0 and "tombstones: 1" in out and "compression:" in out
    assert "user:0001 @301 = TOMBSTONE" in out and "\\x00\\xffbin @302 = \\x01\\x02" in out, out
    code, out, _ = run(capsys, "dump-table", table_files(store)[0], "--start", "user:0100",
                       "--limit", "2")
    assert out.splitlines()[-3:] == ["user:0100 @101 = value-100", "user:0101 @102 = value-101",
                                     "(2 entries shown)"]
    code, out, _ = run(capsys, "dump-table", newest, "--json", "--hex")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["properties"]["entries"] == 2 and rows[1]["key"] == "00ff62696e"
    assert rows[0]["properties"]["smallest_key"] == "00ff62696e"
    code, out, _ = run(capsys, "dump-table", newest, "--json")  # base64 unless --hex
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[1]["key"] == "AP9iaW4=" and rows[1]["value"] == "AQI=" and rows[2]["value"] is None


def test_dump_log(capsys: pytest.CaptureFixture[str], log_dir: str) -> None:
    code, out, _ = run(capsys, "dump-log", log_dir, "--start", "10", "--limit", "2")
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"log {log_dir}: seqs [1, 50]"
    assert lines[1].split() == ["10", "9", "record-10"] and lines[-1] == "(2 records shown)"


def test_dump_wal(capsys: pytest.CaptureFixture[str], crashed: str) -> None:
    code, out, _ = run(capsys, "dump-wal", crashed)
    assert code == 0
    assert "[default] k00003 = TOMBSTONE" in out and "[idx] y = 1" in out
    assert "[default] bin = \\x00\\x01raw" in out
    code, out, _ = run(capsys, "dump-wal", crashed, "--json", "--limit", "1")
    rec = json.loads(out)
    assert rec["version"] == rec["seq"] and rec["ops"][0]["keyspace"] == "default"
    assert base64.b64decode(rec["ops"][0]["key"]).startswith(b"k")


# -- reads -----------------------------------------------------------------------------------

def test_stats(capsys: pytest.CaptureFixture[str], store: str) -> None:
    code, out, _ = run(capsys, "stats", store)
    rows = {tuple(cell.strip() for cell in line.strip("│ ").split("│")) for line in out.splitlines()}
    assert code == 0 and ("version", "303") in rows and ("read_only", "True") in rows, out
    assert ("block_cache.capacity", f"{64 << 20:,}") in rows
    assert ("index", "1", "-", "1") in {r[:4] for r in rows}, out  # the keyspaces table
    code, out, _ = run(capsys, "stats", store, "--tree")
    assert code == 0 and "version: 303" in out and "read_only: True" in out
    code, out, _ = run(capsys, "stats", store, "--json")
    assert json.loads(out)["keyspaces"]["index"]["tables"] == 1


def test_get(capsys: pytest.CaptureFixture[str], store: str, crashed: str) -> None:
    assert run(capsys, "get", store, "user:0002") == (0, "value-2\n", "")
    assert run(capsys, "get", store, "user:0001") == (
        1, "", "banyanstore get: user:0001: not found at version 303\n")
    assert run(capsys, "get", store, "user:0001", "--json")[:2] == (1, "")
    assert run(capsys, "get", store, "user:0001", "--version", "300")[:2] == (0, "value-1\n")
    assert run(capsys, "get", store, "hex:00ff62696e", "--hex")[:2] == (0, "0102\n")
    code, out, _ = run(capsys, "get", store, "b64:AP9iaW4=", "--json")
    assert code == 0 and json.loads(out) == {"key": "AP9iaW4=", "version": 303, "value": "AQI="}
    assert run(capsys, "get", store, "ix:1", "--keyspace", "index")[:2] == (0, "user:0001\n")
    assert run(capsys, "get", store, "ix:1", "--keyspace", "nope")[0] == 2
    assert run(capsys, "get", crashed, "y", "--keyspace", "idx")[:2] == (0, "1\n")  # WAL replay


def test_scan(capsys: pytest.CaptureFixture[str], store: str) -> None:
    code, out, _ = run(capsys, "scan", store, "--prefix", "user:000", "--limit", "3")
    assert code == 0 and out.splitlines() == ["user:0000 = value-0", "user:0002 = value-2",
                                              "user:0003 = value-3", "(3 keys)"]
    code, out, _ = run(capsys, "scan", store, "--keyspace", "index", "--json")
    assert json.loads(out) == {"key": "aXg6MQ==", "value": "dXNlcjowMDAx"}  # base64
    code, out, _ = run(capsys, "scan", store, "--keyspace", "index", "--json", "--hex")
    assert json.loads(out) == {"key": b"ix:1".hex(), "value": b"user:0001".hex()}


def test_checkpoint(capsys: pytest.CaptureFixture[str], crashed: str, tmp_path: Path) -> None:
    dest = str(tmp_path / "copy")
    code, out, _ = run(capsys, "checkpoint", crashed, dest)
    assert code == 0 and "at version 1001" in out
    assert run(capsys, "verify", dest)[0] == 0
    assert run(capsys, "get", dest, "bin")[:2] == (0, "\\x00\\x01raw\n")
    assert run(capsys, "checkpoint", crashed, dest)[0] == 2  # not empty any more


# -- repair ----------------------------------------------------------------------------------

def test_repair_fixes_orphans_current_and_torn_wal(capsys: pytest.CaptureFixture[str],
                                                    crashed: str) -> None:
    orphan = os.path.join(crashed, "tables", "000777.sst")
    Path(orphan).write_bytes(b"orphan")
    Path(crashed, "tables", "000778.sst.tmp").write_bytes(b"tmp")
    Path(crashed, "CURRENT").write_bytes(b"\x00\x00garbage")
    seg = wal_segment(crashed)
    tear_last_record(seg)  # tears the last batch (version 1001)
    code, out, _ = run(capsys, "repair", crashed, "--dry-run")
    assert code == 0 and "would do: removed" in out and os.path.exists(orphan)
    code, out, _ = run(capsys, "repair", crashed)
    assert code == 0, out
    assert "rewrote CURRENT to name MANIFEST-" in out and f"removed {orphan}" in out
    assert "torn tail" in out and out.rstrip().endswith("OK")
    assert not os.path.exists(orphan)
    assert run(capsys, "verify", crashed)[0] == 0
    with banyanstore.open(crashed, read_only=True) as s:
        assert s.version == 1000 and s.get(b"k00999") == b"v" * 20 and s.get(b"k00003") == b"v" * 20


def test_repair_and_open_keep_files_that_only_look_like_leftovers(capsys: pytest.CaptureFixture[str],
                                                                    store: str) -> None:
    """An operator's copy of the manifest (``MANIFEST-000001.bak``), a ``*.tmp`` file of
    their own and a directory named like a manifest are not files the store writes:
    verify calls them foreign, and neither repair nor an open for writing removes them
    (only ``MANIFEST-NNNNNN``, ``CURRENT.tmp`` and ``tables/*.tmp`` are leftovers)."""
    manifest = next(n for n in os.listdir(store) if n.startswith("MANIFEST-"))
    kept = {os.path.join(store, manifest + ".bak"): Path(store, manifest).read_bytes(),
            os.path.join(store, "notes.tmp"): b"the operator's notes"}
    for path, data in kept.items():
        Path(path).write_bytes(data)
    os.mkdir(os.path.join(store, "MANIFEST-old"))
    code, out, _ = run(capsys, "verify", store)
    assert code == 0 and "leftover" not in out, out
    assert out.count("not a banyanstore file") == 3, out
    code, out, err = run(capsys, "repair", store)
    assert code == 0 and "removed" not in out, out + err
    with banyanstore.open(store):
        pass
    assert {p: Path(p).read_bytes() for p in kept} == kept
    assert os.path.isdir(os.path.join(store, "MANIFEST-old"))


def _directory_in_place_of(path: str) -> None:
    os.remove(path)
    os.mkdir(path)
    Path(path, "inside").write_bytes(b"somebody's file")


@pytest.mark.parametrize("victim", ["CURRENT", "manifest", "table", "wal segment"])
def test_a_directory_in_place_of_a_file(capsys: pytest.CaptureFixture[str], crashed: str,
                                        victim: str) -> None:
    """A directory where the store keeps a file is damage: verify names it in its report
    (exit 1) rather than failing as if the store could not be opened; repair does not
    fail on it and keeps the directory and what it holds (in place, or in lost/)."""
    manifest = next(n for n in os.listdir(crashed) if n.startswith("MANIFEST-"))
    path = {"CURRENT": os.path.join(crashed, "CURRENT"), "manifest": os.path.join(crashed, manifest),
            "table": table_files(crashed)[0], "wal segment": wal_segment(crashed)}[victim]
    _directory_in_place_of(path)
    code, out, err = run(capsys, "verify", crashed)
    assert code == 1 and err == "", out + err
    assert f"ERROR: {path}: " in out, out
    code, out, err = run(capsys, "repair", crashed)
    assert code in (0, 1) and err == "", out + err
    kept = [d for d, _, fs in os.walk(crashed) if "inside" in fs]
    assert len(kept) == 1 and Path(kept[0], "inside").read_bytes() == b"somebody's file", kept


def test_a_file_in_place_of_the_tables_directory(capsys: pytest.CaptureFixture[str],
                                                 crashed: str) -> None:
    """A file where the store keeps tables/: repair salvages (the tables are gone: their
    versions are reported lost), moving the file to lost/ unchanged, and the store opens
    with the WAL's writes.  Each repair failed instead with "[Errno 17] File exists",
    after writing one more NOT-RECOVERED.txt, and the store never opened again."""
    tables = os.path.join(crashed, "tables")
    shutil.rmtree(tables)
    Path(tables).write_bytes(b"somebody's file")
    code, out, err = run(capsys, "repair", crashed)
    assert code == 1 and err == "" and "NOT recovered: " in out, out + err
    assert os.path.isdir(tables)
    kept = [p for p in Path(crashed, "lost").rglob("tables") if p.is_file()]
    assert [p.read_bytes() for p in kept] == [b"somebody's file"], kept
    with banyanstore.open(crashed, read_only=True) as s:
        assert s.get(b"k00995") == b"v" * 20 and s.get(b"bin") == b"\x00\x01raw"
    before = snapshot_tree(crashed)
    assert run(capsys, "repair", crashed)[0] == 0
    assert snapshot_tree(crashed) == before


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_file_in_place_of_lost(capsys: pytest.CaptureFixture[str], crashed: str,
                                 dry_run: bool) -> None:
    """A salvage sets aside into lost/: a file of that name stops it before anything
    changes, in one line naming it (before: "[Errno 20] Not a directory:
    '.../lost/<time>'", exit 2, and a dry run promising a salvage that could not run)."""
    os.remove(table_files(crashed)[0])  # a salvage is needed
    Path(crashed, "lost").write_bytes(b"a user's file")
    before = snapshot_tree(crashed)
    code, out, err = run(capsys, "repair", crashed, *(["--dry-run"] if dry_run else []))
    assert code == 1 and out == "" and err.count("\n") == 1, out + err
    assert f"{os.path.join(crashed, 'lost')} is not a directory" in err, err
    assert snapshot_tree(crashed) == before


def test_repair_says_why_it_leaves_damage(capsys: pytest.CaptureFixture[str], crashed: str) -> None:
    """WAL records the intact manifest still needs are gone (the WAL directory deleted):
    repair may not change anything, and says so -- a NOT repaired line naming the damage
    (also in --json), never "nothing to repair" above a DAMAGED report."""
    shutil.rmtree(os.path.join(crashed, "wal"))
    code, out, err = run(capsys, "repair", crashed)
    assert code == 1 and err == "", out + err
    assert "nothing to repair" not in out, out
    assert f"NOT repaired: {os.path.join(crashed, 'wal')}: the WAL directory is missing" in out, out
    code, out, _ = run(capsys, "--json", "repair", crashed)
    assert code == 1 and json.loads(out)["not_repaired"], out


@pytest.mark.parametrize("cut", ["last edit", "flush edit"])
def test_repair_keeps_a_torn_manifest_edit_the_store_may_need(capsys: pytest.CaptureFixture[str],
                                                              crashed: str, cut: str) -> None:
    """A manifest cut inside an edit that was acknowledged -- the keyspace creation the
    WAL's records write to, or a flush whose WAL was cut (a salvage follows) -- is not a
    torn write to cut off: every byte of it stays, in place or in lost/ (before, repair
    cut those bytes, calling them never acknowledged, and then refused or salvaged)."""
    manifest = Path(crashed, [n for n in os.listdir(crashed) if n.startswith("MANIFEST-")][0])
    data = manifest.read_bytes()
    if cut == "last edit":  # the add_keyspace edit: WAL records write to that keyspace
        data = data[:-5]
    else:  # inside the second flush's edit: the WAL starts after what the rest needs
        edits = [json.loads(line)["offset"] for line in
                 run(capsys, "--json", "dump-manifest", crashed)[1].splitlines()]
        data = data[:edits[2] + 40]
    manifest.write_bytes(data)
    code, out, _ = run(capsys, "repair", crashed)
    assert code == 1 or "salvage" in out, out
    assert "\nrepaired: cut the torn last edit" not in "\n" + out, out
    kept = [p for p in Path(crashed).rglob("MANIFEST-*") if p.is_file() and p.read_bytes() == data]
    assert kept, out


def test_repair_cuts_a_torn_manifest_edit_beside_a_foreign_file(capsys: pytest.CaptureFixture[str],
                                                                store: str) -> None:
    """A torn last edit of an otherwise sound store is cut, a user's file beside it or not."""
    manifest = Path(store, [n for n in os.listdir(store) if n.startswith("MANIFEST-")][0])
    with open(manifest, "ab") as f:
        f.write(b"\x00\x00\x00")  # a partial record header: a torn append
    Path(store, "notes.txt").write_bytes(b"mine")
    code, out, _ = run(capsys, "repair", store)
    assert code == 0 and "\nrepaired: cut the torn last edit" in "\n" + out, out
    assert Path(store, "notes.txt").read_bytes() == b"mine"


@pytest.mark.parametrize("dry_run", [False, True])
def test_repair_dry_run_of_damage_it_cannot_repair(capsys: pytest.CaptureFixture[str], crashed: str,
                                                    dry_run: bool) -> None:
    """A WAL record whose checksum holds but whose payload does not decode: repair has no
    safe change, and a dry run says so as the run does (before, the dry run printed
    "nothing to repair" above the DAMAGED report and exited 0)."""
    with banyanstore.open_log(os.path.join(crashed, "wal")) as log:
        log.append(b"\x01\x02not a batch")
    before = snapshot_tree(crashed)
    code, out, err = run(capsys, "repair", crashed, *(["--dry-run"] if dry_run else []))
    assert code == 1 and err == "", out + err
    assert "nothing to repair" not in out and "NOT repaired: " in out and "DAMAGED" in out, out
    assert snapshot_tree(crashed) == before


def test_repair_never_removes_tables_a_manifest_behind_its_wal_does_not_name(
        capsys: pytest.CaptureFixture[str], crashed: str) -> None:
    """The manifest cut at a record boundary (its later edits gone: a valid, older
    manifest): the tables those edits added are numbered at or above what it calls
    unfinished, but its WAL was trimmed past what it needs -- the tables hold writes no
    other file has.  repair must not remove them as leftovers: it salvages, and every
    write is there afterwards."""
    from banyanstore.tools.files import walk_manifest
    manifest = next(Path(crashed).glob("MANIFEST-*"))
    data = manifest.read_bytes()
    second = [r.offset for r in walk_manifest(data, str(manifest))][1]
    manifest.write_bytes(data[:second])  # only the first edit: no table, no keyspace idx
    tables = {os.path.basename(t): Path(t).read_bytes() for t in table_files(crashed)}
    code, out, err = run(capsys, "repair", crashed)
    assert "removed" not in out, out
    kept = {n: Path(d, n).read_bytes() for d, _, fs in os.walk(crashed) for n in fs if n in tables}
    assert kept == tables, sorted(kept)
    with banyanstore.open(crashed, read_only=True) as s:
        assert s.get(b"k00000") == b"v" * 20 and s.get(b"k00999") == b"v" * 20
        assert s.get(b"k00003") is None
        # keyspace idx was named only by an edit that is gone: its write is kept under
        # the name the report gives it
        assert "called 'salvaged-1'" in out and s.keyspace("salvaged-1").get(b"y") == b"1"


@pytest.mark.parametrize("table_too", [False, True])
def test_repair_reports_no_loss_for_wal_records_a_kept_table_holds(
        capsys: pytest.CaptureFixture[str], crashed: str, table_too: bool) -> None:
    """The manifest cut at a record boundary after its flush edit was durable and the WAL
    cut: the WAL records the old manifest still needs are gone, but the flush's table,
    which salvage keeps, holds every one of their writes.  repair said "NOT recovered:
    WAL records 1..N are missing" and exited 1 though nothing was lost; it reports them
    only when no kept table covers their versions (``table_too``: the table is damaged
    too, and set aside)."""
    from banyanstore.tools.files import walk_manifest
    manifest = next(Path(crashed).glob("MANIFEST-*"))
    data = manifest.read_bytes()
    second = [r.offset for r in walk_manifest(data, str(manifest))][1]
    manifest.write_bytes(data[:second])  # only the first edit: wal_seq 1, no table
    if table_too:
        for table in table_files(crashed):
            os.truncate(table, os.path.getsize(table) // 2)
    code, out, _ = run(capsys, "repair", crashed)
    if table_too:
        assert code == 1 and "wal: WAL records 1..990 are missing" in out, out
        return
    assert code == 0 and "NOT recovered" not in out, out
    assert not list(Path(crashed, "lost").rglob("NOT-RECOVERED.txt"))
    with banyanstore.open(crashed, read_only=True) as s:
        assert [s.get(b"k%05d" % i) for i in (0, 500, 989, 999)] == [b"v" * 20] * 4


def test_backup_of_a_store_whose_wal_lacks_what_its_manifest_needs_fails(
        capsys: pytest.CaptureFixture[str], crashed: str, tmp_path: Path) -> None:
    """The manifest cut at a record boundary after its WAL was cut: the store does not
    open (the WAL starts after the seq the manifest replays from).  backup exited 0, and
    its restore opened, verified OK and held 260 keys fewer than the store -- a silently
    shorter store.  Now backup says the manifest lost edits (its edits end where it was
    cut, and tables it names in no edit may hold what the WAL no longer has), exit 1, and
    stores no backup."""
    from banyanstore.tools.files import walk_manifest
    manifest = next(Path(crashed).glob("MANIFEST-*"))
    data = manifest.read_bytes()
    second = [r.offset for r in walk_manifest(data, str(manifest))][1]
    manifest.write_bytes(data[:second])  # only the first edit: wal_seq 1
    with pytest.raises(banyanstore.CorruptionError):
        banyanstore.open(crashed, read_only=True)
    url = str(tmp_path / "backups")
    code, out, err = run(capsys, "backup", crashed, url)
    assert code == 1 and out == "", out + err
    assert err.startswith("banyanstore backup: the manifest's edits end at offset ") \
        and err.count("\n") == 1, err
    assert "the WAL starts at seq 991" in err and "banyanstore repair" in err, err
    assert str(manifest) in err and ".backup-" not in err, err
    assert run(capsys, "backups", url)[1].strip() == "(0 backups)"


def test_repair_salvages_around_a_damaged_named_table(capsys: pytest.CaptureFixture[str],
                                                      store: str) -> None:
    """A table the manifest names is damaged: repair moves it (unchanged) to lost/,
    rebuilds the manifest without it, names what is lost, and exits 1; an operator's
    file is left alone."""
    victim = table_files(store)[0]
    data = bytearray(Path(victim).read_bytes())
    data[10] ^= 0x40
    Path(victim).write_bytes(bytes(data))
    Path(store, "notes.txt").write_text("an operator's file")
    code, out, _ = run(capsys, "repair", store)
    assert code == 1
    assert f"NOT recovered: {victim}, keyspace 'default', keys " in out, out
    assert "damaged: data block 0 checksum mismatch" in out
    assert "notes.txt: not a banyanstore file" in out
    moved = [p for p in Path(store, "lost").rglob("*.sst")]
    assert [p.read_bytes() for p in moved] == [bytes(data)] and not os.path.exists(victim)
    assert Path(store, "notes.txt").exists()
    with banyanstore.open(store, read_only=True) as s:
        list(s.scan())  # every remaining table reads


def test_repair_salvages_when_the_manifest_cannot_be_chosen(capsys: pytest.CaptureFixture[str],
                                                            store: str) -> None:
    """CURRENT is garbage and two manifests exist: which was current cannot be proven,
    so repair rebuilds from the tables (hints from the manifests), moving both aside."""
    with banyanstore.open(store, read_only=True) as s:
        before = dict(s.scan())
    manifest = [n for n in os.listdir(store) if n.startswith("MANIFEST-")][0]
    shutil.copy(os.path.join(store, manifest), os.path.join(store, "MANIFEST-999999"))
    Path(store, "CURRENT").write_bytes(b"garbage")
    code, out, _ = run(capsys, "repair", store)
    assert code == 0, out
    assert "salvage (CURRENT is garbage and 2 MANIFEST-* files exist" in out
    lost = {p.name: p.read_bytes() for p in Path(store, "lost").rglob("*") if p.is_file()}
    assert manifest in lost and "MANIFEST-999999" in lost and lost["CURRENT"] == b"garbage"
    with banyanstore.open(store, read_only=True) as s:
        assert dict(s.scan()) == before


def test_repair_refuses_a_locked_store(capsys: pytest.CaptureFixture[str], store: str) -> None:
    with banyanstore.open(store):
        code, _, err = run(capsys, "repair", store)
    assert code == 2 and err.startswith("banyanstore repair: cannot repair") and err.count("\n") == 1


@pytest.mark.parametrize("dry_run", [False, True])
def test_repair_refuses_a_log_a_writer_has_open(capsys: pytest.CaptureFixture[str], log_dir: str,
                                                crashed: str, dry_run: bool) -> None:
    """A log (or a store's wal/) that a writer has open: repair says so (exit 2), like
    for a store, and changes nothing.  It took the writer's lock only when it had found
    something to repair -- after it had stored segment headers again -- and otherwise
    said "nothing to repair", exit 0, beside the writer."""
    flags = ["--dry-run"] if dry_run else []
    with banyanstore.open_log(log_dir) as log:
        log.append(b"live")
        before = snapshot_tree(log_dir)
        code, out, err = run(capsys, "repair", log_dir, *flags)
        assert code == 2 and out == "", (code, out, err)
        assert err.startswith(f"banyanstore repair: cannot repair {log_dir}: another process "
                              "has it open") and err.count("\n") == 1, err
        assert snapshot_tree(log_dir) == before
    wal = os.path.join(crashed, "wal")
    with banyanstore.open(crashed, compaction_mode="thread"):
        code, _, err = run(capsys, "repair", wal, *flags)
        assert code == 2 and "another process has it open" in err, err


def test_writer_open_without_current_keeps_tables(store: str) -> None:
    os.remove(os.path.join(store, "CURRENT"))
    with pytest.raises(banyanstore.CorruptionError, match="CURRENT is missing"):
        banyanstore.open(store)
    assert len(table_files(store)) == 3


# -- usage -----------------------------------------------------------------------------------

def test_usage_errors(capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path) -> None:
    assert run(capsys, )[0] == 2
    assert run(capsys, "bogus")[0] == 2
    assert run(capsys, "dump-table")[0] == 2
    assert run(capsys, "verify", str(tmp_path / "missing"))[0] == 2
    assert run(capsys, "get", store, "hex:zz")[0] == 2
    assert run(capsys, "scan", store, "--limit", "-1")[0] == 2


@pytest.mark.parametrize("module", ["banyanstore", "banyanstore.cli"])
def test_module_entry_point(store: str, module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "get", store, "user:0005"],
                          capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout) == (0, "value-5\n")
