"""A backup taken while a thread keeps writing -- with flushes and merges running --
restores to exactly the state at its version; a ``kill -9`` of the backing-up process
leaves no backup that ``list_backups`` reports, and the next backup and prune clean up."""

from __future__ import annotations

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
import sys, time, banyanstore
def progress(p):
    if p.phase == "upload" and p.bytes_done:
        print("uploading", flush=True)
        time.sleep(0.2)  # slow enough to be killed mid-upload
banyanstore.backup(sys.argv[1], sys.argv[2], parallel=1, progress=progress)
print("done", flush=True)
"""


def test_kill_9_mid_upload_leaves_no_complete_backup(tmp_path: Path) -> None:
    with banyanstore.open(tmp_path / "store", memtable_size=64 * 1024, compaction=False,
                          compaction_mode="thread", io_mode="sync") as store:
        rng = random.Random(22)
        for i in range(3000):
            store.put(b"k%05d" % i, rng.randbytes(100))
        expected = latest(store)
    url = str(tmp_path / "b")
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
