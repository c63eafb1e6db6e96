"""A backup taken while a thread keeps writing -- with flushes and merges running --
restores to exactly the state at its version; a ``kill -9`` of the backing-up process
leaves no backup that ``list_backups`` reports, and the next backup and prune clean up."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.backups.destination import open_destination
from banyanstore.log.format import HEADER_SIZE
from banyanstore.log.reader import iter_records

from .helpers import latest

SRC = str(Path(banyanstore.__file__).resolve().parent.parent)


def model_at(ops: list[tuple[int, str, bytes, bytes | None]], version: int) -> dict[str, Any]:
    """The live keys of every keyspace after applying the writes up to ``version``."""
    state: dict[str, dict[bytes, bytes]] = {"default": {}, "idx": {}}
    for v, ks, key, value in sorted(ops, key=lambda op: op[0]):
        if v > version:
            break
        if value is None:
            state[ks].pop(key, None)
        else:
            state[ks][key] = value
    return {ks: sorted(kv.items()) for ks, kv in state.items()}


@pytest.mark.parametrize("store_or_path", ["store", "path"])
def test_backup_during_concurrent_writes_restores_exactly_its_version(
        tmp_path: Path, store_or_path: str) -> None:
    ops: list[tuple[int, str, bytes, bytes | None]] = []
    stop = threading.Event()
    infos = []
    with banyanstore.open(tmp_path / "store", memtable_size=64 * 1024, compaction_mode="thread",
                          compaction_min_width=2, io_mode="sync") as store:
        store.keyspace("idx")

        def writer() -> None:
            rng = random.Random(21)
            i = 0
            while not stop.is_set() or i < 3000:
                key = b"k%04d" % rng.randrange(500)
                i += 1
                if rng.random() < 0.3:
                    with store.batch() as b:  # one version for both keyspaces
                        b.put(key, b"b%d" % i)
                        b.put(key, b"i%d" % i, keyspace="idx")
                    ops.extend([(b.version, "default", key, b"b%d" % i),
                                (b.version, "idx", key, b"i%d" % i)])
                elif rng.random() < 0.1:
                    ops.append((store.delete(key), "default", key, None))
                else:
                    value = b"v%d-" % i + rng.randbytes(rng.randrange(100))
                    ops.append((store.put(key, value), "default", key, value))

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            while len(ops) < 1500 and thread.is_alive():
                stop.wait(0.01)
            for _ in range(3):
                assert thread.is_alive()  # it writes until stopped below
                source = store if store_or_path == "store" else str(tmp_path / "store")
                infos.append(banyanstore.backup(source, tmp_path / "b", parallel=2))
        finally:
            stop.set()
            thread.join()
        stats = store.stats()
    assert stats["compaction"]["merges"] > 0 or any(i.files > 1 for i in infos)
    assert any(i.wal_records for i in infos) and store.version > infos[0].version
    for info in infos:
        dest = tmp_path / f"copy-{info.backup_id}"
        banyanstore.restore(tmp_path / "b", dest, backup_id=info.backup_id)
        with banyanstore.open(dest, read_only=True) as copy:
            assert copy.version == info.version and copy.oldest_version <= info.version
            assert latest(copy) == model_at(ops, info.version)
            assert {ks: list(copy.keyspace(ks).scan(version=info.version))
                    for ks in ("default", "idx")} == model_at(ops, info.version)


CHILD = """
import sys, threading, banyanstore
def progress(p):
    if p.phase == "upload" and p.bytes_done:
        print("uploading", flush=True)
        threading.Event().wait()  # killed here, mid-upload (0.2 s of sleep per step let a
        # slow or loaded machine finish the backup before the kill)
banyanstore.backup(sys.argv[1], sys.argv[2], parallel=1, progress=progress)
print("done", flush=True)
"""


@pytest.mark.parametrize("scheme", ["", "local://"])
def test_kill_9_mid_upload_leaves_no_complete_backup(tmp_path: Path, scheme: str) -> None:
    with banyanstore.open(tmp_path / "store", memtable_size=64 * 1024, compaction=False,
                          compaction_mode="thread", io_mode="sync") as store:
        rng = random.Random(22)
        for i in range(3000):
            store.put(b"k%05d" % i, rng.randbytes(100))
        expected = latest(store)
    url = scheme + str(tmp_path / "b")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "store"), url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline()
        assert line == "uploading\n", (line, proc.stderr.read())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    dest = open_destination(url, {})
    assert dest.list("objects"), "the child uploaded something before it died"
    assert dest.list("backups") == {} and banyanstore.list_backups(url) == []
    assert list(dest.list("pending")), "its in-progress marker stays behind"
    for name in dest.list("objects"):  # no short object under a final name
        assert name.startswith(".tmp-") or hashlib.sha256(dest.read(f"objects/{name}")).hexdigest() == name
    scratch = [n for n in os.listdir(tmp_path) if n.startswith(".store.backup-")]
    assert len(scratch) == 1  # the dead process's hard links

    info = banyanstore.backup(tmp_path / "store", url)  # removes the abandoned scratch dir
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []
    assert [b.backup_id for b in banyanstore.list_backups(url)] == [info.backup_id]
    result = banyanstore.prune_backups(url, keep=1)  # the dead backup's marker is stale
    assert result.in_progress == () and dest.list("pending") == {}
    banyanstore.restore(url, tmp_path / "copy")
    with banyanstore.open(tmp_path / "copy", read_only=True) as copy:
        assert latest(copy) == expected


def test_prune_deletes_no_object_while_a_backup_is_in_progress(tmp_path: Path) -> None:
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "store", compaction=False, io_mode="sync",
                          compaction_mode="thread") as store:
        store.put(b"a", b"1")
        banyanstore.backup(store, url)
        store.put(b"a", b"2")
        store.flush()
        banyanstore.backup(store, url)
    dest = open_destination(url, {})
    dest.write("objects/" + "0" * 64, b"uploaded by a running backup")
    from banyanstore.backups.catalog import Pending
    marker = Pending(dest, "20991231T000000.000000Z-00000000")  # this process: alive
    result = banyanstore.prune_backups(url, keep=1)
    assert len(result.deleted) == 1 and result.deleted_objects == 0
    assert result.kept_unreferenced >= 2 and result.in_progress == ("20991231T000000.000000Z-00000000",)
    assert "0" * 64 in dest.list("objects")
    marker.clear()
    result = banyanstore.prune_backups(url, keep=1)
    assert result.deleted_objects >= 2 and "0" * 64 not in dest.list("objects")
    old = Pending(dest, "20991231T000000.000000Z-00000001")
    assert banyanstore.prune_backups(url, keep=1, pending_timeout=0).in_progress == ()
    assert dest.list("pending") == {}
    old.clear()


def test_a_history_floor_ahead_of_the_files_is_lowered_to_the_backup_version(tmp_path: Path) -> None:
    """The manifest records a floor at the writer's version, whose newest writes may not
    be durable yet: after a power loss the files hold less than the floor says, and a
    backup of them must not restore a store whose floor is above its version."""
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", wal_sync="never", compaction=False,
                          compaction_mode="thread", io_mode="sync") as store:
        store.put(b"a", b"1")
        store.sync()
        on_disk = store.version
        store.put(b"a", b"2")  # not synced: a power loss may lose these two
        store.put(b"b", b"3")
        store.set_history_floor(store.version)  # durable in the manifest at once
        shutil.copytree(tmp_path / "s", tmp_path / "lost", ignore=shutil.ignore_patterns("LOCK"))
    # The power loss: the synced manifest (with the floor) stays, WAL records 2 and 3 go.
    (segment,) = (tmp_path / "lost" / "wal").glob("*.log")
    data = segment.read_bytes()
    ends = {seq: end for seq, _data, _start, end in iter_records(
        lambda offset, n: data[offset:offset + n], HEADER_SIZE, len(data), None,
        lambda offset, why: None)}
    os.truncate(segment, ends[1])
    info = banyanstore.backup(str(tmp_path / "lost"), url)  # a path: what the files hold
    assert info.version == on_disk
    banyanstore.restore(url, tmp_path / "c")
    with banyanstore.open(tmp_path / "c", compaction=False, compaction_mode="thread") as copy:
        assert (copy.version, copy.oldest_version) == (on_disk, on_disk)
        assert copy.get(b"a", version=on_disk) == b"1" and copy.get(b"b") is None


def test_a_backup_starting_while_prune_deletes_keeps_every_object_it_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup that announced itself just after prune looked for running backups found
    an object present that prune was about to delete (a killed backup's upload), did
    not upload it, and wrote a manifest naming it: a complete-looking backup without
    it.  Prune now announces itself first, and a backup waits for it to finish before
    it lists what the destination holds."""
    from banyanstore.backups import catalog
    from banyanstore.backups.destination import LocalDestination
    url = str(tmp_path / "b")
    store = banyanstore.open(tmp_path / "s", compaction=False, compaction_mode="thread", io_mode="sync")
    try:
        store.put(b"a", b"1")
        store.flush()
        banyanstore.backup(store, url)
        store.put(b"b", b"2")
        store.flush()
        killed = banyanstore.backup(store, url)
        os.remove(Path(url) / "backups" / f"{killed.backup_id}.manifest")  # killed before it
        at_manifest, pruned = threading.Event(), threading.Event()
        write, live_markers = LocalDestination.write, catalog._live_markers
        backups: list[Any] = []

        def slow_write(self: LocalDestination, key: str, data: bytes) -> None:
            if key.startswith("backups/") and threading.current_thread().name == "late-backup":
                at_manifest.set()
                pruned.wait(timeout=10)
            write(self, key, data)

        def markers_then_a_backup(*args: Any, **kwargs: Any) -> Any:
            found = live_markers(*args, **kwargs)
            if not backups:
                late = threading.Thread(target=lambda: backups.append(banyanstore.backup(store, url)),
                                        name="late-backup")
                backups.append(late)
                late.start()
                at_manifest.wait(timeout=1)  # with the fix it waits for this prune instead
            return found

        monkeypatch.setattr(LocalDestination, "write", slow_write)
        monkeypatch.setattr(catalog, "_live_markers", markers_then_a_backup)
        banyanstore.prune_backups(url, keep=1)
        pruned.set()
        backups[0].join()
        late_info = backups[1]
        banyanstore.verify_backup(url, late_info.backup_id)
        banyanstore.restore(url, tmp_path / "copy", backup_id=late_info.backup_id)
        with banyanstore.open(tmp_path / "copy", read_only=True) as copy:
            assert copy.get(b"a") == b"1" and copy.get(b"b") == b"2"
    finally:
        store.close()


def test_a_backup_waits_for_a_live_prune_and_ignores_a_dead_one(tmp_path: Path) -> None:
    import json
    import socket
    import time

    from banyanstore.backups.catalog import Pending
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", compaction=False, compaction_mode="thread",
                          io_mode="sync") as store:
        store.put(b"a", b"1")
        banyanstore.backup(store, url)
        dest = open_destination(url, {})
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        killed_prune = "20200101T000000.000000Z-00000000"
        dest.write(f"pruning/{killed_prune}", json.dumps(
            {"backup_id": killed_prune, "host": socket.gethostname(), "pid": int(dead.stdout),
             "started": time.time()}).encode())
        banyanstore.backup(store, url)  # a dead prune's marker does not hold it up
        live = Pending(dest, "20991231T000000.000000Z-00000000", folder="pruning")  # this process
        done: list[Any] = []
        late = threading.Thread(target=lambda: done.append(banyanstore.backup(store, url)))
        late.start()
        late.join(timeout=0.5)
        assert late.is_alive() and not done  # waiting for the prune to finish
        live.clear()
        late.join(timeout=30)
        assert len(done) == 1
    banyanstore.prune_backups(url, keep=1)
    assert dest.list("pruning") == {}  # its own marker and the dead one's are gone


def test_a_backup_in_another_pid_namespace_of_the_same_host_name_is_live(tmp_path: Path) -> None:
    """Containers on the host's network share its host name, not its pids (nor do two
    machines of one name): a pid absent here says nothing about a backup running there.
    Prune took such a backup's marker for stale and deleted the objects it was uploading,
    which its manifest then named.  A marker records where its pid means a process."""
    import json
    import socket
    import time

    from banyanstore.backups.catalog import Pending
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", compaction=False, compaction_mode="thread",
                          io_mode="sync") as store:
        store.put(b"a", b"1")
        banyanstore.backup(store, url)
    dest = open_destination(url, {})
    uploading = "0" * 64
    dest.write(f"objects/{uploading}", b"uploaded by a backup in another container")
    ours = Pending(dest, "20991231T000000.000000Z-00000001")
    here = json.loads(dest.read("pending/20991231T000000.000000Z-00000001"))
    ours.clear()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    running = "20991231T000000.000000Z-00000002"
    marker = {"backup_id": running, "host": socket.gethostname(), "pid": int(dead.stdout),
              "started": time.time()}
    dest.write(f"pending/{running}", json.dumps(marker | {"pid_scope": "another boot pid:[1]"}).encode())
    result = banyanstore.prune_backups(url, keep=1)
    assert result.in_progress == (running,) and uploading in dest.list("objects")
    # The same dead pid where it means this machine's processes: the backup is gone.
    dest.write(f"pending/{running}", json.dumps(marker | {"pid_scope": here["pid_scope"]}).encode())
    result = banyanstore.prune_backups(url, keep=1)
    assert result.in_progress == () and uploading not in dest.list("objects")
    assert dest.list("pending") == {}


def test_prune_deletes_no_object_once_its_marker_could_look_stale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from banyanstore.backups import catalog
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", compaction=False, compaction_mode="thread",
                          io_mode="sync") as store:
        store.put(b"a", b"1")
        banyanstore.backup(store, url)  # a WAL tail only the first backup names
        store.put(b"a", b"2")
        store.flush()
        banyanstore.backup(store, url)
    monkeypatch.setattr(catalog, "PRUNE_TIMEOUT", 0.0)  # out of time at once
    result = banyanstore.prune_backups(url, keep=1)
    assert len(result.deleted) == 1 and result.deleted_objects == 0 and result.kept_unreferenced >= 1
    from banyanstore.cli import main
    assert main(["prune", url, "--keep", "1"]) == 0
    assert "prune ran out of time" in capsys.readouterr().out
    monkeypatch.undo()
    result = banyanstore.prune_backups(url, keep=1)
    assert result.deleted_objects >= 1 and result.kept_unreferenced == 0


def test_an_unreadable_marker_turns_stale_by_the_time_in_its_name(tmp_path: Path) -> None:
    """A marker whose JSON does not parse was live forever: prune never deleted an object
    again (and a damaged prune marker would hold every backup up).  Its name carries its
    creation time, so it turns stale like any other marker."""
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", compaction=False, compaction_mode="thread",
                          io_mode="sync") as store:
        store.put(b"a", b"1")
        banyanstore.backup(store, url)  # a WAL tail the next backup no longer names
        store.put(b"a", b"2")
        store.flush()
        dest = open_destination(url, {})
        old, fresh = "20200101T000000.000000Z-0000dead", "20991231T000000.000000Z-0000beef"
        dest.write(f"pruning/{old}", b"\x00garbage")
        done: list[Any] = []
        late = threading.Thread(target=lambda: done.append(banyanstore.backup(store, url)))
        late.start()
        late.join(timeout=30)
        assert done, "a backup waited on an unreadable prune marker from 2020"
    dest.write(f"pending/{old}", b"{not json")
    dest.write(f"pending/{fresh}", b"{not json")  # as young as its name says: live
    result = banyanstore.prune_backups(url, keep=1)
    assert result.in_progress == (fresh,) and result.deleted_objects == 0
    dest.delete([f"pending/{fresh}"])
    result = banyanstore.prune_backups(url, keep=1)
    assert result.in_progress == () and result.deleted_objects >= 1
    assert dest.list("pending") == {} and dest.list("pruning") == {}



KILLED_REMOVING_SCRATCH = """
import os, sys, banyanstore
lock_gone = []
def after_lock(remove):
    def call(path, *args, **kwargs):
        if lock_gone:
            os.kill(os.getpid(), 9)
        remove(path, *args, **kwargs)
        if os.path.basename(os.fsdecode(path)) == "LOCK":
            lock_gone.append(path)
    return call
os.unlink, os.remove, os.rmdir = after_lock(os.unlink), after_lock(os.remove), after_lock(os.rmdir)
banyanstore.backup(sys.argv[1], sys.argv[2])
"""


def test_a_backup_killed_while_removing_its_scratch_dir_leaves_nothing_the_next_cannot_clean(
        tmp_path: Path) -> None:
    """SIGKILL at the first removal after the scratch directory's LOCK went (a table
    link, or the directory itself, depending on the directory order): the next backup
    removes what is left. A scratch directory without its LOCK was never removed -- with
    table links in it, it pinned their disk space after merges dropped the tables."""
    with banyanstore.open(tmp_path / "store", memtable_size=64 * 1024, compaction=False,
                          io_mode="sync") as store:
        for i in range(3000):
            store.put(b"k%05d" % i, b"v" * 100)
    url = str(tmp_path / "b")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.run([sys.executable, "-c", KILLED_REMOVING_SCRATCH, str(tmp_path / "store"),
                            url], env=env, timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert [n for n in os.listdir(tmp_path) if n.startswith(".store.backup-")]
    banyanstore.backup(tmp_path / "store", url)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_directories_named_like_scratch_that_are_not_ours_are_left_alone(tmp_path: Path) -> None:
    """Cleaners took every directory named ``.<store>.backup-*`` (``.<dest>.restore-*``)
    whose LOCK they could take for one a killed backup left: a user's own copy of the
    store kept as ``.store.backup-20261201`` (a store has a LOCK) was deleted with all
    its data by the next backup, and so beside a restore.  A scratch directory's LOCK
    says it is one; nothing else is removed."""
    import shutil
    with banyanstore.open(tmp_path / "store", io_mode="sync") as store:
        store.put(b"k", b"precious")
    mine = [tmp_path / ".store.backup-20261201", tmp_path / ".copy.restore-20261201"]
    for copy in mine:
        shutil.copytree(tmp_path / "store", copy)
        assert os.path.exists(copy / "LOCK")
    notes = tmp_path / ".store.backup-notes"
    notes.mkdir()
    (notes / "LOCK").write_bytes(b"")
    (notes / "todo.txt").write_text("mine")
    url = str(tmp_path / "b")
    banyanstore.backup(tmp_path / "store", url)
    banyanstore.restore(url, tmp_path / "copy")
    for copy in mine:
        with banyanstore.open(copy, read_only=True) as kept:
            assert kept.get(b"k") == b"precious"
    assert (notes / "todo.txt").read_text() == "mine"
    with banyanstore.open(tmp_path / "copy", read_only=True) as restored_copy:
        assert restored_copy.get(b"k") == b"precious"


KILLED_NAMING_SCRATCH = """
import os, sys, banyanstore
rename = os.rename
def killing_rename(src, dst, *args, **kwargs):
    if "~" in os.path.basename(os.fsdecode(src)):
        os.kill(os.getpid(), 9)
    return rename(src, dst, *args, **kwargs)
os.rename = killing_rename
banyanstore.backup(sys.argv[1], sys.argv[2])
"""


def test_a_scratch_dir_killed_before_it_was_named_is_removed_once_old(tmp_path: Path) -> None:
    """SIGKILL between creating the scratch directory (under its first, ``~`` name) and
    renaming it to the name cleaners look for: a later backup removes it once it is an
    hour old (a live owner renames it at once). It was left for good."""
    with banyanstore.open(tmp_path / "store", io_mode="sync") as store:
        store.put(b"k", b"v")
    url = str(tmp_path / "b")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.run([sys.executable, "-c", KILLED_NAMING_SCRATCH, str(tmp_path / "store"), url],
                           env=env, timeout=120)
    assert child.returncode == -signal.SIGKILL
    (left,) = [n for n in os.listdir(tmp_path) if n.startswith(".store.backup~")]
    banyanstore.backup(tmp_path / "store", url)
    assert os.path.isdir(tmp_path / left)  # young: maybe a live owner's
    two_hours_ago = os.stat(tmp_path / left).st_mtime - 7200
    os.utime(tmp_path / left, (two_hours_ago, two_hours_ago))
    banyanstore.backup(tmp_path / "store", url)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_a_prune_keeps_the_marker_a_starting_backup_is_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prune deleted every temporary file in ``pending/`` -- also the one a backup starting
    at that moment had written and was about to rename into its marker: that backup
    failed (StorageIOError, no such file).  Prune now leaves a marker's temporary file
    until the time in its name is older than a prune marker's timeout; older ones (a
    process killed while writing its marker) still go."""
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", compaction=False, compaction_mode="thread",
                          io_mode="sync") as store:
        store.put(b"a", b"1")
        banyanstore.backup(store, url)
        store.put(b"a", b"2")
    dest = open_destination(url, {})
    killed = [f"{folder}/.tmp-0123456789ab-20200101T000000.000000Z-0000dead"
              for folder in ("pending", "pruning")]
    for key in killed:
        dest.write(key, b"{}")
    real_replace = os.replace
    pruned: list[Any] = []

    def prune_meanwhile(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if "/pending/.tmp-" in os.fsdecode(src) and not pruned:  # the backup's marker
            pruned.append(banyanstore.prune_backups(url, keep=1))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", prune_meanwhile)
    info = banyanstore.backup(tmp_path / "s", url)
    monkeypatch.undo()
    assert pruned and pruned[0].in_progress == ()
    assert [b.backup_id for b in banyanstore.list_backups(url)][-1] == info.backup_id
    assert dest.list("pending") == {} and dest.list("pruning") == {}  # the killed ones went
    banyanstore.restore(url, tmp_path / "copy")
    with banyanstore.open(tmp_path / "copy", read_only=True) as copy:
        assert copy.get(b"a") == b"2"


def test_a_complete_backup_whose_marker_could_not_be_removed_is_not_in_progress(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup completes, but removing its ``pending/`` marker fails (logged, the backup
    returns).  Its process lives on, so prune took the marker for a backup in progress:
    it deleted no object for up to ``pending_timeout`` (a day), and reported as "in
    progress" the very backup it had just pruned.  A marker whose backup has a manifest
    belongs to a finished backup (the manifest is its last write): prune removes it."""
    from banyanstore.backups.destination import LocalDestination
    url = str(tmp_path / "b")
    real = LocalDestination.delete

    def delete(self: LocalDestination, keys: Any, **kwargs: Any) -> None:
        keys = list(keys)
        if any(k.startswith("pending/") for k in keys):
            raise OSError(errno.EIO, "I/O error")
        real(self, keys, **kwargs)

    with banyanstore.open(tmp_path / "s", memtable_size=64 * 1024, compaction=False,
                          compaction_mode="thread", io_mode="sync") as store:
        store.put(b"k", b"1")
        store.flush()
        monkeypatch.setattr(LocalDestination, "delete", delete)
        first = banyanstore.backup(store, url)
        monkeypatch.undo()
        assert list(open_destination(url, {}).list("pending")) == [first.backup_id]
        store.put(b"k", b"2")
        store.flush()
        store.compact()  # the first backup's table is no longer the store's
        second = banyanstore.backup(store, url)
    result = banyanstore.prune_backups(url, keep=1)
    assert result.deleted == (first.backup_id,) and result.in_progress == ()
    assert result.kept_unreferenced == 0 and result.deleted_objects >= 1
    dest = open_destination(url, {})
    assert dest.list("pending") == {}
    assert len(dest.list("objects")) == second.files
