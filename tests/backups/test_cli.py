"""``banyanstore backup|restore|backups|prune`` on a local folder and on S3."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import banyanstore
from banyanstore.backups.destination import open_destination
from banyanstore.backups.transfer import Progress
from banyanstore.cli import main
from banyanstore.tools.backups import ProgressBars

from .helpers import OPTIONS


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_backup_list_restore_prune(capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    with banyanstore.open(store, **OPTIONS) as s:
        s.put(b"k", b"one")
        s.keyspace("idx").put(b"i", b"x")
    code, out, err = run(capsys, "backup", store, url)
    assert code == 0, err
    assert out.startswith("backup ") and "at version 2" in out
    with banyanstore.open(store, **OPTIONS) as s:
        s.put(b"k", b"two")
    code, out, _ = run(capsys, "backup", store, url, "--json", "--parallel", "2")
    second = json.loads(out)
    assert code == 0 and second["version"] == 3 and second["keyspaces"] == ["default", "idx"]

    code, out, _ = run(capsys, "backups", url)
    assert code == 0 and out.count("version") == 2 and "(2 backups)" in out
    code, out, _ = run(capsys, "backups", url, "--verify", "--json")
    docs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [d["ok"] for d in docs] == [True, True]
    first = docs[0]["backup_id"]

    code, out, _ = run(capsys, "restore", url, str(tmp_path / "copy"), "--backup", first)
    assert code == 0 and f"restored backup {first}" in out
    with banyanstore.open(tmp_path / "copy", read_only=True) as c:
        assert c.get(b"k") == b"one" and c.keyspace("idx").get(b"i") == b"x"
    code, _, err = run(capsys, "restore", url, str(tmp_path / "copy"))
    assert code == 2 and "pass --overwrite" in err and err.startswith("banyanstore restore: ")
    code, out, _ = run(capsys, "restore", url, str(tmp_path / "copy"), "--overwrite", "--json")
    assert code == 0 and json.loads(out)["backup_id"] == second["backup_id"]
    with banyanstore.open(tmp_path / "copy", read_only=True) as c:
        assert c.get(b"k") == b"two"

    code, out, _ = run(capsys, "prune", url, "--keep", "1")
    assert code == 0 and "kept 1 backups, deleted 1" in out
    code, out, _ = run(capsys, "prune", url, "--keep", "1", "--json")
    assert code == 0 and json.loads(out)["deleted"] == []
    code, out, _ = run(capsys, "backups", url, "--json")
    assert [json.loads(line)["backup_id"] for line in out.splitlines()] == [second["backup_id"]]


def test_damage_and_bad_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store, url = str(tmp_path / "store"), str(tmp_path / "b")
    with banyanstore.open(store, **OPTIONS) as s:
        s.put(b"k", b"v")
    assert run(capsys, "backup", store, url, "-q")[0] == 0
    dest = open_destination(url, {})
    name = next(iter(dest.list("objects")))
    data = dest.read(f"objects/{name}")
    dest.write(f"objects/{name}", data[:-1] + bytes([data[-1] ^ 1]))
    code, out, _ = run(capsys, "backups", url, "--verify")
    assert code == 1 and "DAMAGED" in out and name in out and "1 damaged" in out
    code, _, err = run(capsys, "restore", url, str(tmp_path / "copy"))
    assert code == 1 and "fails its checksum" in err and not os.path.exists(tmp_path / "copy")
    assert run(capsys, "restore", url, str(tmp_path / "c"), "--backup", "../x")[0] == 2
    assert run(capsys, "backups", url, "--backup", "20200101T000000.000000Z-00000000")[:3:2] == (
        1, f"banyanstore backups: no complete backup 20200101T000000.000000Z-00000000 at {url}\n")
    assert run(capsys, "backup", store, url, "-o", "novalue")[0] == 2
    assert run(capsys, "backup", store, url, "-o", "key=x")[0] == 2  # options: fsspec URLs only
    assert run(capsys, "prune", url, "--keep", "0")[0] == 2
    assert run(capsys, "backup", str(tmp_path / "nothing"), url)[0] == 2  # cannot open


@pytest.mark.parametrize("victim", ["CURRENT", "manifest"])
def test_a_store_file_that_cannot_be_read_is_said_not_a_store_changing(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, victim: str) -> None:
    """A directory in place of CURRENT or of the manifest: an error no manifest roll
    explains (a roll only replaces CURRENT and removes an old manifest), so the backup
    fails naming the file and the error.  Before, it read the store 100 times and said
    the store changed under every one of 100 attempts to capture it."""
    store, url = str(tmp_path / "store"), str(tmp_path / "b")
    with banyanstore.open(store, **OPTIONS) as s:
        s.put(b"k", b"v")
    path = Path(store, "CURRENT" if victim == "CURRENT" else
                next(n for n in os.listdir(store) if n.startswith("MANIFEST-")))
    path.unlink()
    path.mkdir()
    code, out, err = run(capsys, "backup", store, url, "-q")
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert "changed under" not in err and str(path) in err and "Is a directory" in err, err


@pytest.mark.parametrize("offset", [2, 17])  # the magic, the first seq (header checksum)
def test_damage_to_a_wal_segment_header_names_the_store_s_segment(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, offset: int) -> None:
    """The backup reads the WAL through links in a scratch directory it then removes;
    damage found there names the store's segment.  Before, a damaged segment header was
    reported in the scratch directory's file, which no longer existed."""
    store, url = str(tmp_path / "store"), str(tmp_path / "b")
    with banyanstore.open(store, **OPTIONS) as s:
        s.put(b"k", b"v")
    wal = Path(store, "wal")
    segment = wal / sorted(n for n in os.listdir(wal) if n.endswith(".log"))[-1]
    data = bytearray(segment.read_bytes())
    data[offset] ^= 0x10
    segment.write_bytes(bytes(data))
    code, out, err = run(capsys, "backup", store, url, "-q")
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert f"(file {segment}, offset 0)" in err and ".backup-" not in err, err


@pytest.mark.parametrize("damage", ["segment deleted", "segment emptied", "wal/ deleted"])
def test_a_store_whose_wal_lost_what_its_manifest_needs_is_not_backed_up(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, damage: str) -> None:
    """The WAL records the manifest needs (from its replay start) are gone: every open of
    the store refuses it, and so does a backup -- before, it succeeded without them, and
    its restore opened as a store silently missing those writes."""
    store, url = str(tmp_path / "store"), str(tmp_path / "b")
    writer = ("import os, sys, banyanstore\n"
              "s = banyanstore.open(sys.argv[1], compaction=False)\n"
              "s.put(b'flushed', b'1')\n"
              "s.flush()\n"
              "s.put(b'only in the wal', b'2', sync=True)\n"
              "os._exit(0)\n")  # killed: the second write is in the WAL only
    subprocess.run([sys.executable, "-c", writer, store], check=True)
    wal = Path(store, "wal")
    if damage == "wal/ deleted":
        shutil.rmtree(wal)
    for p in sorted(wal.glob("*.log")) if damage != "wal/ deleted" else []:
        if damage == "segment deleted":
            p.unlink()
        else:
            p.write_bytes(b"")
    code, out, err = run(capsys, "backup", store, url, "-q")
    assert code == 1 and out == "" and err.count("\n") == 1, out + err
    assert ("manifest needs records" in err or "WAL directory is missing" in err) and str(wal) in err, err
    assert run(capsys, "backups", url)[1] == "(0 backups)\n"


def test_progress_bars_draw_every_phase() -> None:
    stream = io.StringIO()
    bars = ProgressBars(enabled=True, console=Console(file=stream, force_terminal=True, width=100))
    with bars:
        bars(Progress("hash", 0, 2, 0, 2048))
        bars(Progress("hash", 2, 2, 2048, 2048))
        bars(Progress("upload", 1, 1, 4096, 4096))
    text = stream.getvalue()
    assert "checksum  2/2 files" in text and "upload    1/1 files" in text
    ProgressBars(enabled=False)(Progress("upload", 0, 1, 0, 1))  # disabled: draws nothing


def test_verify_names_a_damaged_manifest(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``backups --verify`` checks every backup, a damaged manifest included: it is
    named and the command exits 1 (it was left out of the listing, and the command
    exited 0 saying every backup was OK)."""
    store, url = str(tmp_path / "store"), str(tmp_path / "b")
    with banyanstore.open(store, **OPTIONS) as s:
        s.put(b"k", b"v")
        banyanstore.backup(s, url)
        s.put(b"k", b"w")
        banyanstore.backup(s, url)
    dest = open_destination(url, {})
    damaged, good = sorted(dest.list("backups"))
    data = dest.read(f"backups/{damaged}")
    dest.write(f"backups/{damaged}", data[:-1] + bytes([data[-1] ^ 1]))
    damaged_id, good_id = damaged.removesuffix(".manifest"), good.removesuffix(".manifest")
    code, out, _ = run(capsys, "backups", url, "--verify")
    assert code == 1 and "(2 backups, 1 damaged)" in out
    line = next(line for line in out.splitlines() if line.startswith(damaged_id))
    assert "DAMAGED" in line and "fails its checksum" in line
    assert f"{good_id}  version 2" in out
    code, out, _ = run(capsys, "backups", url, "--verify", "--json")
    docs = {d["backup_id"]: d for d in map(json.loads, out.splitlines())}
    assert code == 1 and docs[good_id]["ok"] and not docs[damaged_id]["ok"]
    assert "fails its checksum" in docs[damaged_id]["problem"]
    code, out, _ = run(capsys, "backups", url, "--verify", "--backup", damaged_id)
    assert code == 1 and "DAMAGED" in out and "(1 backups, 1 damaged)" in out
    assert run(capsys, "backups", url)[0] == 0  # listing alone: damaged manifests are left out


class EndpointUnreachable(Exception):
    """Stands for a backend's own error class (botocore's EndpointConnectionError,
    NoCredentialsError...), which is no OSError."""


def test_a_backend_failure_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials or an unreachable endpoint raised botocore's own exceptions out of
    every backup call, and the commands died with a traceback.  They are StorageIOError
    naming the URL (the backend's error its cause), one line and exit 1 on the command line."""
    from fsspec.implementations.memory import MemoryFileSystem

    from banyanstore.errors import StorageIOError

    def unreachable(*args: object, **kwargs: object) -> None:
        raise EndpointUnreachable('Could not connect to the endpoint URL: "http://10.9.9.9"')

    for method in ("ls", "cat_file", "pipe_file", "put_file", "get_file", "rm", "open"):
        monkeypatch.setattr(MemoryFileSystem, method, unreachable)
    url = "memory://unreachable/backups"
    with pytest.raises(StorageIOError, match="memory://unreachable/backups.*Could not connect") as info:
        banyanstore.list_backups(url)
    assert isinstance(info.value.__cause__, EndpointUnreachable)
    for argv in (("backups", url), ("prune", url, "--keep", "1"), ("restore", url, "/nonexistent/x")):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith(f"banyanstore {argv[0]}: ") and "Could not connect" in err


def test_an_unknown_backup_is_not_found_for_restore_as_for_backups(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--backup <unknown>`` is "not found" (exit 1) for `restore` as for `backups`, and
    so is a destination holding no backup; neither is a usage error (2)."""
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"a", b"1")
        banyanstore.backup(store, url)
    UNKNOWN_ID = "20260101T000000.000000Z-deadbeef"  # well formed, never taken
    for argv in (("backups", url, "--backup", UNKNOWN_ID),
                 ("restore", url, str(tmp_path / "copy"), "--backup", UNKNOWN_ID)):
        code, out, err = run(capsys, *argv)
        assert code == 1 and len(err.splitlines()) == 1 and UNKNOWN_ID in err, (argv, code, err)
    os.makedirs(tmp_path / "empty")
    code, _out, err = run(capsys, "restore", str(tmp_path / "empty"), str(tmp_path / "copy2"))
    assert code == 1 and "no complete backup" in err, (code, err)
    assert not os.path.exists(tmp_path / "copy") and not os.path.exists(tmp_path / "copy2")


@pytest.mark.parametrize("method", ["ls", "cat_file", "get_file"])
def test_a_refusal_of_the_backend_names_the_url_not_the_local_path(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        method: str) -> None:
    """s3fs turns S3's refusals (AccessDenied, a wrong secret...) into plain OSErrors
    (PermissionError "Access Denied", no errno, no file name); a restore reported them
    as a failure of its local destination ("restore failed on /data/restored: Access
    Denied"), sending the user to check the wrong permissions.  They are a
    StorageIOError naming the backup's URL, the backend's error as cause."""
    from fsspec.implementations.memory import MemoryFileSystem

    from banyanstore.errors import StorageIOError
    url = f"memory://refusing-{method}/backups"
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
        banyanstore.backup(store, url)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("Access Denied")

    monkeypatch.setattr(MemoryFileSystem, method, refuse)
    dest = str(tmp_path / "restored")
    with pytest.raises(StorageIOError, match="Access Denied") as info:
        banyanstore.restore(url, dest)
    assert info.value.path is not None and info.value.path.startswith(url)
    assert dest not in str(info.value) and isinstance(info.value.__cause__, PermissionError)
    code, out, err = run(capsys, "restore", url, dest)
    assert code == 1 and url in err and dest not in err, err
    assert not os.path.exists(dest)


def test_a_bucket_that_does_not_exist_is_an_error_not_an_empty_listing(
        capsys: pytest.CaptureFixture[str], s3_url: str, tmp_path: Path) -> None:
    """s3fs raises S3's NoSuchBucket as the FileNotFoundError of a missing key, which
    the listing took for an empty folder: `backups s3://<a typo>/...` listed no backups
    and exited 0 (a script watching for a fresh backup saw none and no error), restore
    and verify said "no complete backup".  A missing bucket is a StorageIOError naming
    the URL and the bucket; an existing bucket without backups is still empty."""
    from banyanstore.errors import StorageIOError, StoreNotFoundError
    bucket = s3_url.split("/")[2]
    missing = f"s3://{bucket}-typo/backups"
    dest = str(tmp_path / "restored")
    calls = [lambda: banyanstore.list_backups(missing),
             lambda: banyanstore.verify_backup(missing),
             lambda: banyanstore.restore(missing, dest),
             lambda: banyanstore.restore(missing, dest, backup_id="20260101T000000.000000Z-deadbeef"),
             lambda: banyanstore.prune_backups(missing, keep=1)]
    for call in calls:
        with pytest.raises(StorageIOError, match=f"bucket {bucket}-typo does not exist") as info:
            call()
        assert info.value.path is not None and info.value.path.startswith(missing)
    assert not os.path.exists(dest)
    code, out, err = run(capsys, "backups", missing)
    assert code == 1 and out == "" and f"bucket {bucket}-typo does not exist" in err, (code, out, err)
    assert banyanstore.list_backups(s3_url) == []
    with pytest.raises(StoreNotFoundError, match="no complete backup"):
        banyanstore.restore(s3_url, dest)


def test_verify_says_a_backup_it_could_not_read_is_unreadable_not_damaged(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``backups --verify`` printed ``DAMAGED`` for a backup whose objects it could not
    read (an endpoint that does not answer): a user would delete a sound backup.  A
    failure to read is ``UNREADABLE``, counted apart; only a CorruptionError is damage."""
    from fsspec.implementations.memory import MemoryFileSystem

    store, url = str(tmp_path / "store"), f"memory://unreadable-{os.getpid()}-{id(tmp_path)}/b"
    with banyanstore.open(store, **OPTIONS) as s:
        s.put(b"k", b"v")
        s.flush()
    assert run(capsys, "backup", store, url, "-q")[0] == 0

    def unreachable(*args: object, **kwargs: object) -> None:
        raise EndpointUnreachable('Could not connect to the endpoint URL: "http://10.9.9.9"')
    monkeypatch.setattr(MemoryFileSystem, "open", unreachable)
    code, out, _ = run(capsys, "backups", url, "--verify")
    assert code == 1 and "DAMAGED" not in out and "damaged" not in out, out
    assert "UNREADABLE" in out and "Could not connect" in out and "(1 backups, 1 unreadable)" in out
    code, out, _ = run(capsys, "backups", url, "--verify", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and doc["damaged"] is False
    assert "Could not connect" in doc["problem"]
    monkeypatch.undo()
    code, out, _ = run(capsys, "backups", url, "--verify", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["damaged"] is False


MARKER_CHILD = """
import sys
from fsspec.implementations.memory import MemoryFileSystem
from banyanstore.cli import main
def refuse(*args, **kwargs):
    raise OSError(5, "I/O error")
MemoryFileSystem.rm = MemoryFileSystem.rm_file = refuse
sys.exit(main(["backup", sys.argv[1], "memory://marker/b", "-q"]))
"""


def test_a_marker_that_cannot_be_removed_is_a_one_line_warning(tmp_path: Path) -> None:
    """The backup is complete; removing its ``pending/`` marker fails.  The command
    printed a 20-line traceback after its warning (the cause only in it), where every
    warning is one line: now the line names the marker and the cause."""
    import subprocess
    import sys
    with banyanstore.open(tmp_path / "s", **OPTIONS) as s:
        s.put(b"k", b"v")
    src = str(Path(banyanstore.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", MARKER_CHILD, str(tmp_path / "s")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("backup "), proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("banyanstore: WARNING: ") and "memory://marker/b/pending/" in lines[0]
    assert "I/O error" in lines[0]


def test_a_failed_upload_says_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An object's upload that the backend refused was reported as ``write URL/objects/...``
    (the word of a marker's or a manifest's write); it says ``upload``."""
    from fsspec.implementations.memory import MemoryFileSystem

    from banyanstore.errors import StorageIOError

    def unreachable(*args: object, **kwargs: object) -> None:
        raise EndpointUnreachable('Could not connect to the endpoint URL: "http://10.9.9.9"')
    monkeypatch.setattr(MemoryFileSystem, "put_file", unreachable)
    with banyanstore.open(tmp_path / "s", **OPTIONS) as s:
        s.put(b"k", b"v")
    url = f"memory://upload-{os.getpid()}-{id(tmp_path)}/b"
    with pytest.raises(StorageIOError, match=r"^upload memory://.*/objects/[0-9a-f]{64}: Endpoint"):
        banyanstore.backup(tmp_path / "s", url)


def test_backup_verify_reused_mends_an_object_damaged_in_place(capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v" * 1000)
        store.flush()
    url = str(tmp_path / "b")
    assert run(capsys, "backup", str(tmp_path / "s"), url, "--quiet")[0] == 0
    (obj,) = (tmp_path / "b" / "objects").iterdir()
    data = obj.read_bytes()
    obj.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    code, out, _err = run(capsys, "backup", str(tmp_path / "s"), url, "--quiet", "--verify-reused")
    assert code == 0 and "uploaded 1 files" in out, out
    assert obj.read_bytes() == data
    assert run(capsys, "backups", url, "--verify")[0] == 0
