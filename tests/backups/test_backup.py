"""Backups to a local folder and to S3 (a moto server): round trips, incremental uploads,
list, verify, prune, restore into existing directories, bad arguments."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

import banyanstore
from banyanstore.backups.catalog import load_manifest
from banyanstore.backups.destination import FsspecDestination, open_destination
from banyanstore.errors import (
    ConfigError,
    DiskFullError,
    StorageIOError,
    StoreLockedError,
    StoreNotFoundError,
)

from .helpers import OPTIONS, dump, fill, keys, restored


def leftovers(*dirs: Path) -> list[str]:
    """Scratch directories or files a backup or restore left beside its paths."""
    return sorted(n for d in dirs for n in os.listdir(d) if n.startswith("."))



def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``os.fsync`` is called on from now, in order (each call still syncs)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", fsync)
    return synced

def test_round_trip_equals_the_source(url: str, tmp_path: Path) -> None:
    """Every keyspace, every key's history, the version and the floor -- with data in
    tables and in the WAL tail, a TTL keyspace, tombstones and a binary key."""
    universe = keys(400)
    with banyanstore.open(tmp_path / "store", **(OPTIONS | {"memtable_size": 128 * 1024})) as store:
        fill(store, random.Random(1), 3000, universe)
        store.flush()
        fill(store, random.Random(2), 300, universe)  # these stay in the memtable / WAL
        info = banyanstore.backup(store, url)
        expected = dump(store, universe)
    assert info.version == expected["version"] and info.wal_records > 0
    assert info.keyspaces == ("default", "idx", "ttl")
    assert restored(url, str(tmp_path / "copy"), universe) == expected
    assert leftovers(tmp_path) == []
    listed = banyanstore.list_backups(url)
    assert [b.backup_id for b in listed] == [info.backup_id] and listed[0] == info
    assert banyanstore.verify_backup(url) == info


def test_restored_store_keeps_the_keyspace_ttl_and_takes_writes(tmp_path: Path) -> None:
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.keyspace("short")
        store.keyspace("short", ttl=7.5)  # (a ttl given at creation is not persisted by the store)
        v = store.put(b"a", b"1")
        banyanstore.backup(store, url)
    banyanstore.restore(url, tmp_path / "c")
    with banyanstore.open(tmp_path / "c", **OPTIONS) as copy:
        assert copy.keyspace("short")._ks.ttl == 7.5  # noqa: SLF001 - the option itself
        assert copy.put(b"b", b"2") == v + 1
        assert copy.get(b"a") == b"1"


def test_second_backup_after_a_one_percent_change_uploads_about_one_percent(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(3)
    universe = [b"key%06d" % i for i in range(20000)]
    with banyanstore.open(tmp_path / "store", compaction=False, io_mode="sync",
                          compression="none") as store:
        with store.batch() as b:
            for k in universe:
                b.put(k, rng.randbytes(100))
        store.flush()
        first = banyanstore.backup(store, url)
        for k in rng.sample(universe, len(universe) // 100):  # 1% of the keys change
            store.put(k, rng.randbytes(100))
        second = banyanstore.backup(store, url)
        store.flush()
        third = banyanstore.backup(store, url)  # now the change sits in a new small table
    assert first.uploaded_bytes == first.size > 2_000_000
    share2, share3 = second.uploaded_bytes / second.size, third.uploaded_bytes / third.size
    with capsys.disabled():
        print(f"\n[{url.split(':')[0]}] store {first.size} B; after a 1% change: "
              f"{second.uploaded_bytes} B uploaded ({share2:.2%}, WAL tail), "
              f"{third.uploaded_bytes} B after a flush ({share3:.2%})")
    assert 0 < share2 < 0.03 and 0 < share3 < 0.03
    assert second.uploaded_files == 1 and third.uploaded_files == 1


def test_prune_keeps_the_newest_restorable_and_deletes_unreferenced_objects(
        url: str, tmp_path: Path) -> None:
    universe = keys(300)
    rng = random.Random(4)
    infos, dumps = [], []
    with banyanstore.open(tmp_path / "store", **OPTIONS) as store:
        for _ in range(3):
            fill(store, rng, 800, universe)
            store.compact()  # new tables: the old ones become garbage once unreferenced
            fill(store, rng, 50, universe)
            infos.append(banyanstore.backup(store, url))
            dumps.append(dump(store, universe))
    dest = open_destination(url, {})
    before = set(dest.list("objects"))
    result = banyanstore.prune_backups(url, keep=2)
    assert result.deleted == (infos[0].backup_id,)
    assert result.kept == (infos[1].backup_id, infos[2].backup_id)
    assert [b.backup_id for b in banyanstore.list_backups(url)] == list(result.kept)
    needed = {o.sha256 for b in result.kept for o in load_manifest(dest, b).objects}
    after = set(dest.list("objects"))
    assert after == needed and result.deleted_objects == len(before - after) > 0
    for i in (1, 2):
        assert banyanstore.verify_backup(url, infos[i].backup_id).version == infos[i].version
        assert restored(url, str(tmp_path / f"r{i}"), universe,
                        backup_id=infos[i].backup_id) == dumps[i]
    with pytest.raises(StoreNotFoundError, match=infos[0].backup_id):
        banyanstore.restore(url, tmp_path / "r0", backup_id=infos[0].backup_id)
    assert banyanstore.prune_backups(url, keep=5).deleted == ()


@pytest.mark.parametrize("prefix", ["db[p]", "db?", "d*"])
def test_prune_under_a_prefix_with_glob_characters_deletes_only_its_own_objects(
        s3_url: str, tmp_path: Path, prefix: str) -> None:
    """fsspec's rm() expands ``*``, ``?`` and ``[...]`` in the paths it is given: a prune
    of ``s3://bucket/db[p]`` deleted ``s3://bucket/dbp``'s copy of an object (another
    backup set, now unrestorable) and kept its own, which it reported deleted."""
    bucket = s3_url.split("/")[2]
    url, other = f"s3://{bucket}/{prefix}", f"s3://{bucket}/dbp"
    with banyanstore.open(tmp_path / "store", **OPTIONS) as store:
        store.put(b"a", b"1")
        banyanstore.backup(store, url)  # a WAL tail, dropped by the prune below
        banyanstore.backup(store, other)  # the same tail object, needed there
        store.put(b"a", b"2")
        store.flush()
        kept = banyanstore.backup(store, url)
    dest = open_destination(url, {})
    result = banyanstore.prune_backups(url, keep=1)
    assert result.kept == (kept.backup_id,) and result.deleted_objects == 1
    needed = {o.sha256 for o in load_manifest(dest, kept.backup_id).objects}
    assert set(dest.list("objects")) == needed
    assert banyanstore.verify_backup(other).wal_records == 1
    assert banyanstore.verify_backup(url).backup_id == kept.backup_id


class _NotAnObjectStore(LocalFileSystem):
    """An fsspec file system that is no object store (as sftp:// is), here on local files."""

    protocol = ("bnytestfs",)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return super()._strip_protocol(path[len("bnytestfs://"):] if path.startswith("bnytestfs://")
                                       else path)


def test_an_fsspec_file_system_without_atomic_puts_gets_its_folders(tmp_path: Path) -> None:
    """File systems that are no object store (sftp://) get a temporary key and a move;
    their files need the folder to exist, and fsspec's pipe_file() does not create it: the
    first backup to a fresh destination failed writing its pending/ marker ("No such file
    or directory"), so no backup could ever be taken there."""
    fsspec.register_implementation("bnytestfs", _NotAnObjectStore, clobber=True)
    universe = keys(100)
    url = f"bnytestfs://{tmp_path / 'remote' / 'backups'}"
    assert type(open_destination(url, {})).__name__ == "FsspecDestination"
    infos, dumps = [], []
    with banyanstore.open(tmp_path / "store", **OPTIONS) as store:
        for seed in range(2):
            fill(store, random.Random(seed), 300, universe)
            store.flush()
            infos.append(banyanstore.backup(store, url))
            dumps.append(dump(store, universe))
    assert [i.backup_id for i in banyanstore.list_backups(url)] == [i.backup_id for i in infos]
    assert restored(url, str(tmp_path / "copy"), universe, backup_id=infos[0].backup_id) == dumps[0]
    assert banyanstore.prune_backups(url, keep=1).deleted == (infos[0].backup_id,)
    assert restored(url, str(tmp_path / "copy2"), universe) == dumps[1]
    left = {name for _d, _s, files in os.walk(tmp_path / "remote") for name in files}
    assert not any(name.startswith(".tmp-") for name in left), left


def test_local_scheme_urls_are_as_safe_as_plain_paths(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``local://path`` went through fsspec's local file system: no fsync of any object,
    marker or manifest (a power loss could take a backup reported complete), and no
    check that the URL lies inside the store or the restore's ``dest`` (a restore with
    ``overwrite=True`` deleted every backup there).  It is now the local backend, as a
    plain path and ``file://`` are."""
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
        store.flush()
        store.put(b"k2", b"v2")
    synced = record_fsyncs(monkeypatch)
    url = f"local://{tmp_path / 'b'}"
    info = banyanstore.backup(tmp_path / "s", url)
    objects = {str(tmp_path / "b" / "objects" / n) for n in os.listdir(tmp_path / "b" / "objects")}
    assert len(objects) == 2  # a table and the WAL tail
    # written as temporary files, fsynced, then renamed: the temporary names are synced
    assert sum(os.path.basename(p).startswith(".tmp-") and p.startswith(str(tmp_path / "b"))
               for p in synced) == 4  # two objects, the marker, the manifest
    assert {str(tmp_path / "b"), str(tmp_path / "b" / "objects"), str(tmp_path / "b" / "backups"),
            str(tmp_path)} <= set(synced)
    assert banyanstore.list_backups(f"LOCAL://{tmp_path / 'b'}")[0].backup_id == info.backup_id
    with pytest.raises(ValueError, match="storage options"):
        banyanstore.list_backups(url, anon=True)
    with pytest.raises(ValueError, match="url .* inside the store"):
        banyanstore.backup(tmp_path / "s", f"local://{tmp_path / 's' / 'bk'}")
    os.rename(tmp_path / "b", tmp_path / "s" / "bk")
    with pytest.raises(ConfigError, match="dest=.* holds the backups"):
        banyanstore.restore(f"local://{tmp_path / 's' / 'bk'}", tmp_path / "s", overwrite=True)
    assert banyanstore.list_backups(f"local://{tmp_path / 's' / 'bk'}")


def test_restore_an_older_backup_by_id(tmp_path: Path) -> None:
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"old")
        old = banyanstore.backup(store, url)
        store.put(b"k", b"new")
        banyanstore.backup(store, url)
    banyanstore.restore(url, tmp_path / "c", backup_id=old.backup_id)
    with banyanstore.open(tmp_path / "c", read_only=True) as copy:
        assert copy.get(b"k") == b"old" and copy.version == old.version


def test_backup_of_a_path_beside_a_running_writer(tmp_path: Path) -> None:
    """A path, not the Store: no lock is taken, the writer keeps writing."""
    universe = keys(100)
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "store", **OPTIONS) as store:
        fill(store, random.Random(5), 1500, universe)
        store.sync()  # the path backup reads files: what sits in the WAL buffer is not there
        expected = dump(store, universe)
        info = banyanstore.backup(str(tmp_path / "store"), url)
        store.put(b"after", b"x")  # the writer was never blocked
    assert info.version == expected["version"]
    assert restored(url, str(tmp_path / "copy"), universe) == expected


def test_backup_of_a_read_only_handle_and_of_a_closed_store(tmp_path: Path) -> None:
    universe = keys(50)
    with banyanstore.open(tmp_path / "store", **OPTIONS) as store:
        fill(store, random.Random(6), 500, universe)
        expected = dump(store, universe)
    with banyanstore.open(tmp_path / "store", read_only=True) as ro:
        banyanstore.backup(ro, tmp_path / "b1")
    banyanstore.backup(tmp_path / "store", tmp_path / "b2")
    assert restored(str(tmp_path / "b1"), str(tmp_path / "c1"), universe) == expected
    assert restored(str(tmp_path / "b2"), str(tmp_path / "c2"), universe) == expected


def test_restore_refuses_an_existing_store_unless_told(tmp_path: Path) -> None:
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"backed up")
        banyanstore.backup(store, url)
    with banyanstore.open(tmp_path / "dest", **OPTIONS) as other:
        other.put(b"k", b"other")
    with pytest.raises(ConfigError, match="overwrite=True"):
        banyanstore.restore(url, tmp_path / "dest")
    with banyanstore.open(tmp_path / "dest", read_only=True) as other:
        assert other.get(b"k") == b"other"
    with banyanstore.open(tmp_path / "dest", **OPTIONS), pytest.raises(StoreLockedError):
        banyanstore.restore(url, tmp_path / "dest", overwrite=True)  # a writer has it open
    banyanstore.restore(url, tmp_path / "dest", overwrite=True)
    with banyanstore.open(tmp_path / "dest", read_only=True) as copy:
        assert copy.get(b"k") == b"backed up"
    assert leftovers(tmp_path) == []
    (tmp_path / "notastore").mkdir()
    (tmp_path / "notastore" / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="holds no store"):
        banyanstore.restore(url, tmp_path / "notastore", overwrite=True)
    assert (tmp_path / "notastore" / "precious.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    banyanstore.restore(url, tmp_path / "empty")  # an empty directory is fine
    banyanstore.restore(url, tmp_path / "new" / "nested" / "dest")  # parents are made


def test_backups_inside_the_store_or_the_restore_destination_are_refused(tmp_path: Path) -> None:
    """A restore with ``overwrite=True`` into a directory holding the backups it reads
    removed them with the old store (every other backup there too); a backup into the
    store's own directory set that up.  Both are refused, symlinks seen through."""
    inside = tmp_path / "s" / "bk"
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
        with pytest.raises(ValueError, match="url .* inside the store"):
            banyanstore.backup(store, inside)
        with pytest.raises(ValueError, match="url .* inside the store"):
            banyanstore.backup(tmp_path / "s", tmp_path / "s")
    assert sorted(os.listdir(tmp_path / "s")) == ["CURRENT", "LOCK", "MANIFEST-000001", "tables", "wal"]
    banyanstore.backup(tmp_path / "s", tmp_path / "b")
    os.rename(tmp_path / "b", inside)  # moved there by hand
    os.symlink(tmp_path / "s", tmp_path / "link")
    for url in (inside, tmp_path / "link" / "bk"):
        with pytest.raises(ConfigError, match="dest=.* holds the backups"):
            banyanstore.restore(url, tmp_path / "s", overwrite=True)
    assert banyanstore.list_backups(inside) and leftovers(tmp_path, tmp_path / "s") == []
    banyanstore.restore(inside, tmp_path / "copy")  # elsewhere: fine


def test_a_destination_filled_while_the_restore_ran_is_refused(tmp_path: Path) -> None:
    """``dest`` was absent when checked and is filled meanwhile (another restore to it
    finished first): a ConfigError naming it, as when it was full from the start (was a
    bare ``OSError: [Errno 39] Directory not empty``), and nothing left behind."""
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
        banyanstore.backup(store, url)
    dest = tmp_path / "dest"

    def fill_dest(p: Any) -> None:
        if p.phase == "download" and not dest.exists():
            dest.mkdir()
            (dest / "theirs").write_text("keep me")

    with pytest.raises(ConfigError, match="dest=.*dest is not empty"):
        banyanstore.restore(url, dest, progress=fill_dest)
    assert os.listdir(dest) == ["theirs"] and leftovers(tmp_path) == []


def test_swap_without_rename_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel cannot exchange two directories, overwrite moves the old store
    aside, renames the new one in and removes the old one."""
    from banyanstore.backups import restoring as restore_module
    monkeypatch.setattr(restore_module, "_exchange", lambda a, b: False)
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"new")
        banyanstore.backup(store, url)
    with banyanstore.open(tmp_path / "dest", **OPTIONS) as other:
        other.put(b"k", b"old")
    banyanstore.restore(url, tmp_path / "dest", overwrite=True)
    with banyanstore.open(tmp_path / "dest", read_only=True) as copy:
        assert copy.get(b"k") == b"new"
    assert leftovers(tmp_path) == []


def test_a_failed_swap_without_rename_exchange_puts_the_old_store_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Overwriting without RENAME_EXCHANGE moves the old store aside, then renames the
    new one in: when that second rename failed, the restore raised with the old store
    left under a hidden ``.dest.replaced-*`` name and nothing at ``dest`` -- the store
    the caller kept gone from its path after a failed call.  It is put back."""
    from banyanstore.backups import restoring as restore_module
    monkeypatch.setattr(restore_module, "_exchange", lambda a, b: False)
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"new")
        banyanstore.backup(store, url)
    dest = tmp_path / "dest"
    with banyanstore.open(dest, **OPTIONS) as other:
        other.put(b"k", b"old")
    real_rename = os.rename

    def failing_rename(src: Any, dst: Any) -> None:
        if ".dest.restore-" in os.fspath(src) and os.fspath(dst) == str(dest):
            raise OSError(errno.EIO, os.strerror(errno.EIO), src)
        real_rename(src, dst)
    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(StorageIOError):
        banyanstore.restore(url, dest, overwrite=True)
    monkeypatch.undo()
    with banyanstore.open(dest, read_only=True) as kept:
        assert kept.get(b"k") == b"old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_a_restore_whose_last_directory_sync_fails_raises_with_the_store_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool) -> None:
    """docs/backup.md: the parent directory's fsync comes after the rename into place;
    when it fails, restore raises with the restored store at dest (overwriting, the old
    one gone) -- not a half-state, and a second restore mends it."""
    from banyanstore.backups import restoring as restore_module
    from banyanstore.io.posix import PosixEnv
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"new")
        banyanstore.backup(store, url)
    dest = tmp_path / "dest"
    if overwrite:
        with banyanstore.open(dest, **OPTIONS) as other:
            other.put(b"k", b"old")

    class FailingParentSync(PosixEnv):
        def sync_dir(self, path: str) -> None:
            if path == str(tmp_path):
                raise StorageIOError(f"fsync directory failed on {path}", path=path)
            super().sync_dir(path)
    monkeypatch.setattr(restore_module, "PosixEnv", FailingParentSync)
    with pytest.raises(StorageIOError):
        banyanstore.restore(url, dest, overwrite=overwrite)
    monkeypatch.undo()
    with banyanstore.open(dest, read_only=True) as restored:
        assert restored.get(b"k") == b"new"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    banyanstore.restore(url, dest, overwrite=True)
    with banyanstore.open(dest, read_only=True) as again:
        assert again.get(b"k") == b"new"


def test_empty_store_and_empty_destination(tmp_path: Path) -> None:
    url = str(tmp_path / "b")
    os.mkdir(url)  # (a missing one is refused: test_a_local_url_that_is_missing_or_a_file...)
    assert banyanstore.list_backups(url) == []
    with pytest.raises(StoreNotFoundError, match="no complete backup"):
        banyanstore.restore(url, tmp_path / "c")
    with pytest.raises(StoreNotFoundError):
        banyanstore.verify_backup(url)
    with banyanstore.open(tmp_path / "s", **OPTIONS):
        pass
    info = banyanstore.backup(tmp_path / "s", url)
    assert (info.version, info.files, info.wal_records) == (0, 0, 0)
    banyanstore.restore(url, tmp_path / "c")
    with banyanstore.open(tmp_path / "c") as copy:
        assert copy.version == 0 and copy.put(b"a", b"b") == 1


@pytest.mark.parametrize("call, error, name", [
    (lambda p: banyanstore.backup(123, p), TypeError, "store_or_path"),
    (lambda p: banyanstore.backup(p / "nostore", p / "fresh"), StoreNotFoundError, "no store"),
    (lambda p: banyanstore.backup(p / "s", p / "b", parallel=0), ValueError, "parallel"),
    (lambda p: banyanstore.backup(p / "s", p / "b", parallel="4"), TypeError, "parallel"),
    (lambda p: banyanstore.backup(p / "s", p / "b", progress=5), TypeError, "progress"),
    (lambda p: banyanstore.backup(p / "s", p / "b", key="x"), ValueError, "storage options"),
    (lambda p: banyanstore.backup(p / "s", 42), TypeError, "url"),
    (lambda p: banyanstore.backup(p / "s", ""), ValueError, "url"),
    (lambda p: banyanstore.restore(p / "b", 7), TypeError, "dest"),
    (lambda p: banyanstore.restore(p / "b", ""), ValueError, "dest"),
    (lambda p: banyanstore.restore(p / "b", b""), ValueError, "dest"),
    (lambda p: banyanstore.backup("", p / "b"), ValueError, "store_or_path"),
    (lambda p: banyanstore.restore(p / "b", p / "c", overwrite="yes"), TypeError, "overwrite"),
    (lambda p: banyanstore.restore(p / "b", p / "c", backup_id="../../etc"), ValueError, "backup_id"),
    (lambda p: banyanstore.restore(p / "b", p / "c", backup_id=3), TypeError, "backup_id"),
    (lambda p: banyanstore.prune_backups(p / "b", keep=0), ValueError, "keep"),
    (lambda p: banyanstore.prune_backups(p / "b", keep=1.5), TypeError, "keep"),
    (lambda p: banyanstore.prune_backups(p / "b", keep=1, pending_timeout=-1), ValueError,
     "pending_timeout"),
    (lambda p: banyanstore.backup(p / "s", "nosuchproto://x"), ConfigError, "nosuchproto"),
    (lambda p: banyanstore.restore(p / "b", p / "c", progress=5), TypeError, "progress"),
    (lambda p: banyanstore.verify_backup(p / "b", progress=5), TypeError, "progress"),
    (lambda p: banyanstore.prune_backups(p / "b", keep=1, pending_timeout=float("nan")), ValueError,
     "pending_timeout"),
    (lambda p: banyanstore.prune_backups(p / "b", keep=1, pending_timeout="60"), TypeError,
     "pending_timeout"),
])
def test_bad_arguments_name_the_argument(tmp_path: Path, call: Any, error: type, name: str) -> None:
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
        banyanstore.backup(store, tmp_path / "b")
    with pytest.raises(error, match=name):
        call(tmp_path)
    assert sorted(os.listdir(tmp_path / "b")) == ["backups", "objects", "pending"]
    assert os.listdir(tmp_path / "b" / "pending") == []  # a refused call touched nothing
    assert not os.path.exists(tmp_path / "fresh") and leftovers(tmp_path) == []


def test_store_and_destination_paths_take_the_forms_open_takes(tmp_path: Path) -> None:
    """A store's path and a restore's ``dest`` are paths as for ``open()``: ``bytes``
    (decoded as ``os.fsdecode`` does) names the same directory as ``str`` and ``Path``."""
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
    info = banyanstore.backup(os.fsencode(str(tmp_path / "s")), tmp_path / "b")
    assert info.version == 1
    banyanstore.restore(tmp_path / "b", os.fsencode(str(tmp_path / "c")))
    with banyanstore.open(tmp_path / "c") as copy:
        assert copy.get(b"k") == b"v"


def test_progress_reports_every_phase(tmp_path: Path) -> None:
    universe = keys(200)
    seen: list[Any] = []
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        fill(store, random.Random(7), 2000, universe)
        info = banyanstore.backup(store, tmp_path / "b", parallel=3, progress=seen.append)
    banyanstore.restore(tmp_path / "b", tmp_path / "c", progress=seen.append)
    banyanstore.verify_backup(tmp_path / "b", progress=seen.append)
    last = {p.phase: p for p in seen}
    assert set(last) == {"hash", "upload", "download", "verify"}
    assert last["upload"].bytes_done == last["upload"].bytes_total == info.uploaded_bytes
    assert last["upload"].files_done == info.uploaded_files
    for phase in ("download", "verify"):
        assert last[phase].bytes_done == last[phase].bytes_total == info.size
        assert last[phase].files_done == last[phase].files_total == info.files
    assert all(p.bytes_done <= p.bytes_total for p in seen)



def test_progress_is_reported_from_the_worker_threads_for_s3(s3_url: str, tmp_path: Path) -> None:
    """s3fs calls its progress callbacks on fsspec's one IO thread, which every transfer
    of the process shares: the user's ``progress`` ran there (not on the worker threads
    docs/backup.md names), so a slow callback -- a terminal, a report sent over the
    network -- held every upload, and with a stall timeout failed them.  It now runs on
    the worker thread of the transfer."""
    import threading
    threads: set[str] = set()
    seen: list[Any] = []

    def progress(p: Any) -> None:
        if p.phase == "upload" and p.bytes_done:
            threads.add(threading.current_thread().name)
            seen.append(p)

    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        for t in range(3):
            store.put(b"k%d" % t, random.Random(t).randbytes(50_000))
            store.flush()
        info = banyanstore.backup(store, s3_url, parallel=2, progress=progress)
    assert info.uploaded_files == 3 and threads
    assert all(name.startswith("banyanstore-transfer") for name in threads), threads
    assert seen[-1].bytes_done == seen[-1].bytes_total == info.uploaded_bytes
    assert seen[-1].files_done == 3


LOCAL_ONLY = """
import sys, banyanstore
assert "banyanstore.backups" not in sys.modules  # imported on first use
with banyanstore.open(sys.argv[1] + "/s", compaction_mode="thread") as store:
    store.put(b"k", b"v")
    banyanstore.backup(store, sys.argv[1] + "/b")
banyanstore.restore("file://" + sys.argv[1] + "/b", sys.argv[1] + "/c")
import inspect  # no submodule import may shadow a function of the same name
assert all(inspect.isfunction(getattr(m, n)) for m in (banyanstore, banyanstore.backups)
           for n in ("backup", "restore", "list_backups", "verify_backup", "prune_backups"))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("fsspec", "s3fs", "botocore")))
"""


def test_local_backups_need_no_fsspec(tmp_path: Path) -> None:
    import subprocess
    import sys
    src = str(Path(banyanstore.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", LOCAL_ONLY, str(tmp_path)], env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_a_local_listing_skips_a_file_renamed_while_it_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another backup's upload renames its temporary file into place between the
    directory read and the size lookup: the FileNotFoundError of that one name was
    taken for a missing folder and the whole listing came back empty (``list_backups``
    beside a finishing backup found none, a backup uploaded every object again).  The
    vanished name alone is left out."""
    from banyanstore.backups import destination
    dest = open_destination(str(tmp_path / "b"), {})
    dest.write("objects/" + "a" * 64, b"kept")
    dest.write("objects/.tmp-0123456789ab-" + "b" * 64, b"in flight")
    real_scandir = os.scandir

    class Read:
        def __init__(self, entries: list[Any]) -> None:
            self.entries = entries

        def __enter__(self) -> Any:
            return iter(self.entries)

        def __exit__(self, *exc: object) -> None:
            pass

    def scandir_then_rename(path: Any) -> Any:
        with real_scandir(path) as it:
            entries = list(it)
        os.replace(os.path.join(path, ".tmp-0123456789ab-" + "b" * 64), os.path.join(path, "b" * 64))
        return Read(entries)

    monkeypatch.setattr(destination.os, "scandir", scandir_then_rename)
    listed = dest.list("objects")
    assert listed.get("a" * 64) == 4 and not any(name.startswith(".tmp-") for name in listed)


class _FullDiskFile:
    """A file opened for writing on a full disk: every write fails with ENOSPC."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._raw.name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __enter__(self) -> _FullDiskFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()


@pytest.mark.parametrize("where", ["staging", "upload", "download"])
def test_a_full_disk_is_a_disk_full_error_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """ENOSPC while staging the WAL tail beside the store, writing an object at a local
    destination, or writing a restored file: a DiskFullError naming the file with the
    OSError as ``__cause__`` (as every other write of the engine reports it; it was a bare
    ``OSError``), no scratch left behind, and the same call works once space is back."""
    from banyanstore.backups import capture, destination
    module = capture if where == "staging" else destination
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")  # in the WAL: the backup stages a tail
        if where == "download":
            banyanstore.backup(store, url)

    def full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        raw = open(path, mode, *args, **kwargs)
        return raw if "r" in mode else _FullDiskFile(raw)
    monkeypatch.setattr(module, "open", full_open, raising=False)
    call = ((lambda: banyanstore.restore(url, tmp_path / "copy")) if where == "download"
            else (lambda: banyanstore.backup(tmp_path / "s", url)))
    with pytest.raises(DiskFullError) as info:
        call()
    cause = info.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC
    assert info.value.errno == errno.ENOSPC and info.value.path
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    call()
    assert len(banyanstore.list_backups(url)) == 1
    if where == "download":
        with banyanstore.open(tmp_path / "copy", read_only=True) as copy:
            assert copy.get(b"k") == b"v"


def _fail_scratch_setup(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """Make one step of a scratch directory's set-up fail with EIO: creating its LOCK,
    writing the LOCK's magic, or renaming it from its first (``~``) name."""
    from banyanstore.backups import scratch
    real_open, real_write, real_rename = os.open, os.write, os.rename

    def eio(path: Any) -> OSError:
        return OSError(errno.EIO, os.strerror(errno.EIO), path)

    def failing_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if step == "lock" and "~" in os.fspath(path):
            raise eio(path)
        return real_open(path, *args, **kwargs)

    def failing_write(fd: int, data: Any) -> int:
        if step == "magic" and bytes(data) == scratch.SCRATCH_MAGIC:
            raise eio(None)
        return real_write(fd, data)

    def failing_rename(src: Any, dst: Any) -> None:
        if step == "rename" and "~" in os.fspath(src):
            raise eio(src)
        real_rename(src, dst)
    monkeypatch.setattr(os, "open", failing_open)
    monkeypatch.setattr(os, "write", failing_write)
    monkeypatch.setattr(os, "rename", failing_rename)


@pytest.mark.parametrize("step", ["lock", "magic", "rename"])
@pytest.mark.parametrize("call", ["backup", "restore"])
def test_a_scratch_directory_that_fails_to_set_up_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, step: str) -> None:
    """An IO error while a backup or restore set up its scratch directory (the LOCK's
    creation, its magic, the rename to its final name) left the directory beside the
    store or destination under its first name, which cleaners take only an hour later
    (they cannot tell it from one a live owner is about to rename).  The failing call
    removes it itself: the error is reported and nothing is left behind."""
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
    banyanstore.backup(tmp_path / "s", url)
    _fail_scratch_setup(monkeypatch, step)
    with pytest.raises(StorageIOError) as info:
        if call == "backup":
            banyanstore.backup(tmp_path / "s", url)
        else:
            banyanstore.restore(url, tmp_path / "copy")
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EIO
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    banyanstore.restore(url, tmp_path / "copy")
    with banyanstore.open(tmp_path / "copy", read_only=True) as copy:
        assert copy.get(b"k") == b"v"


@pytest.mark.parametrize("call", ["backup", "restore"])
def test_ctrl_c_cancels_the_transfers_not_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """Ctrl-C during a backup or a restore went on with every queued upload or download
    before the KeyboardInterrupt came through (the pool's shutdown waited for all its
    tasks): minutes or hours of transfers a user had asked to stop.  The tasks not
    started are now cancelled; the ones running finish, and nothing is left behind."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from banyanstore.backups import transfer as transfer_module
    from banyanstore.backups.destination import LocalDestination
    url = str(tmp_path / "b")
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        for i in range(12):
            store.put(b"k%02d" % i, b"v")
            store.flush()
    if call == "restore":
        banyanstore.backup(tmp_path / "s", url)
    method = "upload" if call == "backup" else "download"
    real, real_wait = getattr(LocalDestination, method), transfer_module.wait
    transfers = 1 if call == "backup" else 0  # which pool run: a backup checksums first
    runs: list[int] = []
    started: list[str] = []
    first_started, shut_down = threading.Event(), threading.Event()

    def wait(*args: Any, **kwargs: Any) -> Any:
        runs.append(len(runs))
        if runs[-1] == transfers and first_started.wait(timeout=10):
            raise KeyboardInterrupt  # Ctrl-C while every transfer is queued, one running
        return real_wait(*args, **kwargs)

    class Pool(ThreadPoolExecutor):
        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            super().shutdown(wait=False, cancel_futures=cancel_futures)
            shut_down.set()  # the running tasks go on only now: none can take another first
            super().shutdown(wait=wait)

    def transfer(self: LocalDestination, *args: Any) -> None:
        started.append(args[0])
        first_started.set()
        shut_down.wait(timeout=10)
        real(self, *args)

    monkeypatch.setattr(LocalDestination, method, transfer)
    monkeypatch.setattr(transfer_module, "wait", wait)
    monkeypatch.setattr(transfer_module, "ThreadPoolExecutor", Pool)
    with pytest.raises(KeyboardInterrupt):
        if call == "backup":
            banyanstore.backup(tmp_path / "s", url, parallel=2)
        else:
            banyanstore.restore(url, tmp_path / "copy", parallel=2)
    assert shut_down.is_set() and 1 <= len(started) <= 2  # of 12 tables
    assert leftovers(tmp_path) == [] and not os.path.exists(tmp_path / "copy")
    assert os.listdir(tmp_path / "b" / "pending") == []


def test_directories_a_backup_or_restore_creates_are_synced_into_their_parents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup to a directory it had to create, and a restore to a ``dest`` whose parents
    it had to create, fsynced the files and the directories holding them but never the
    new directories' own entries in their parents: a power loss after the call returned
    could take the whole new directory -- every backup in it, or the restored store --
    with it.  Each directory they create is now synced into its parent before they return."""
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
    synced = record_fsyncs(monkeypatch)
    url = tmp_path / "new" / "deep" / "b"
    banyanstore.backup(tmp_path / "s", url)
    assert {str(tmp_path), str(tmp_path / "new"), str(tmp_path / "new" / "deep")} <= set(synced)
    synced.clear()
    banyanstore.restore(url, tmp_path / "r1" / "r2" / "copy")
    assert {str(tmp_path), str(tmp_path / "r1"), str(tmp_path / "r1" / "r2")} <= set(synced)
    with banyanstore.open(tmp_path / "r1" / "r2" / "copy", read_only=True) as copy:
        assert copy.get(b"k") == b"v"


@pytest.mark.parametrize("stop", ["ctrl-c", "failing progress"])
def test_a_cancelled_multipart_upload_is_aborted(s3_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, stop: str) -> None:
    """An upload of 16 MiB or more is an S3 multipart upload.  Cancelled midway (a
    Ctrl-C, a stall, a progress callback that raised), its parts stayed at S3 -- unlisted,
    billed, until a lifecycle rule removed them: s3fs aborts the upload only on an error
    of its own.  The backup now aborts the multipart upload it started."""
    import threading

    import fsspec

    from banyanstore.backups import transfer as transfer_module
    rng = random.Random(3)
    with banyanstore.open(tmp_path / "s", **{**OPTIONS, "memtable_size": 64 << 20}) as store:
        for i in range(17):
            store.put(b"k%02d" % i, rng.randbytes(1 << 20))
        store.flush()  # one table of 17 MiB: three parts
    part_sent = threading.Event()

    def progress(p: Any) -> None:
        if p.phase == "upload" and p.bytes_done > 0:
            part_sent.set()
            if stop == "failing progress":
                raise RuntimeError("progress failed")

    real_wait, runs = transfer_module.wait, []

    def wait(*args: Any, **kwargs: Any) -> Any:
        runs.append(len(runs))
        if stop == "ctrl-c" and runs[-1] == 1 and part_sent.wait(timeout=30):
            raise KeyboardInterrupt  # Ctrl-C once the first part is at S3
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(transfer_module, "wait", wait)
    with pytest.raises(KeyboardInterrupt if stop == "ctrl-c" else RuntimeError):
        banyanstore.backup(tmp_path / "s", s3_url, progress=progress)
    assert part_sent.is_set()
    bucket = s3_url[len("s3://"):].split("/", 1)[0]
    assert fsspec.filesystem("s3").call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []
    assert banyanstore.list_backups(s3_url) == []
    monkeypatch.setattr(transfer_module, "wait", real_wait)
    banyanstore.backup(tmp_path / "s", s3_url)
    banyanstore.verify_backup(s3_url)


def test_prune_aborts_the_multipart_uploads_killed_backups_left(s3_url: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup killed (or whose abort could not reach a stalled server) mid multipart
    upload left its parts at S3, unlisted and billed, which no prune removed.  Prune now
    aborts every multipart upload under ``objects/`` when no backup is in progress --
    when it deletes unreferenced objects -- and none while one is."""
    import fsspec

    from banyanstore.backups.catalog import Pending
    fs = fsspec.filesystem("s3")
    bucket, prefix = s3_url[len("s3://"):].split("/", 1)
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
    banyanstore.backup(tmp_path / "s", s3_url)

    def start(key: str) -> None:
        upload = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
        fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                   Body=b"x" * (5 << 20))

    def uploads() -> list[str]:
        listed = fs.call_s3("list_multipart_uploads", Bucket=bucket)
        return sorted(u["Key"] for u in listed.get("Uploads", []))

    start(f"{prefix}/objects/{'a' * 64}")  # a killed backup's
    start("elsewhere/objects/x")  # not under this URL: not prune's to touch
    marker = Pending(open_destination(s3_url, {}), "20991231T000000.000000Z-00000000")  # alive
    assert banyanstore.prune_backups(s3_url, keep=1).in_progress
    assert uploads() == sorted([f"{prefix}/objects/{'a' * 64}", "elsewhere/objects/x"])
    marker.clear()
    banyanstore.prune_backups(s3_url, keep=1)
    assert uploads() == ["elsewhere/objects/x"]
    banyanstore.verify_backup(s3_url)

    def refused(self: Any, folder: str) -> int:  # a policy without s3:ListBucketMultipartUploads
        raise StorageIOError("list uploads: Access Denied")
    monkeypatch.setattr(FsspecDestination, "abort_incomplete_uploads", refused)
    banyanstore.backup(tmp_path / "s", s3_url)
    assert len(banyanstore.prune_backups(s3_url, keep=1).deleted) == 1  # a warning, not a failure


def test_a_local_url_that_is_missing_or_a_file_is_refused_alike_by_every_function(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped local url: list_backups returned [] and prune_backups created the
    directory (and a ``pruning`` folder in it), where verify_backup and restore raised
    StoreNotFoundError and the command line exits 2.  A file as the url: StorageIOError
    ENOTDIR naming ``<url>/pending`` or ``<url>/backups``, where checkpoint() says
    NotAStoreError "a file, not a directory".  Now every function raises
    StoreNotFoundError for a missing directory (backup() creates it) and NotAStoreError
    for a file, naming the url, and adds nothing to the file system."""
    from banyanstore.errors import NotAStoreError
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
    missing, a_file, dest = tmp_path / "no" / "such", tmp_path / "a-file", tmp_path / "dest"
    a_file.write_bytes(b"mine")
    readers = [lambda url: banyanstore.list_backups(url),
               lambda url: banyanstore.verify_backup(url),
               lambda url: banyanstore.restore(url, dest),
               lambda url: banyanstore.prune_backups(url, keep=1)]
    for call in readers:
        with pytest.raises(StoreNotFoundError, match="no backup directory") as info:
            call(missing)
        assert str(missing) in str(info.value)
    for call in [*readers, lambda url: banyanstore.backup(tmp_path / "s", url)]:
        with pytest.raises(NotAStoreError, match="is a file, not a directory") as err:
            call(a_file)
        assert str(a_file) in str(err.value)
    assert not (tmp_path / "no").exists() and not dest.exists() and a_file.read_bytes() == b"mine"
    from banyanstore.cli import main
    for args in (["backups", str(a_file)], ["restore", str(a_file), str(dest)],
                 ["prune", str(a_file), "--keep", "1"], ["backup", str(tmp_path / "s"), str(a_file)]):
        assert main(args) == 2, args
        assert "a file, not a directory" in capsys.readouterr().err, args
    assert banyanstore.backup(tmp_path / "s", missing).version == 1  # a backup creates it
    assert [b.version for b in banyanstore.list_backups(missing)] == [1]
