"""Damaged or hostile backups are refused: a flipped byte in any object, a missing
object, a damaged manifest, and manifests naming paths outside the backup's prefix --
each with an error naming it, nothing left behind, locally and on S3."""

from __future__ import annotations

import json
import os
import random
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import crc32c
import pytest

import banyanstore
from banyanstore.backups.catalog import load_manifest
from banyanstore.backups.destination import open_destination
from banyanstore.backups.manifest import (
    BackupManifest,
    decode_manifest,
    encode_manifest,
    manifest_key,
)
from banyanstore.backups.waltail import TailWriter, read_tail
from banyanstore.errors import CorruptionError, StoreNotFoundError
from banyanstore.lsm.wal import encode_one

from .helpers import OPTIONS, fill, keys


@pytest.fixture
def backed_up(url: str, tmp_path: Path) -> BackupManifest:
    """A backup with several tables and a WAL tail."""
    with banyanstore.open(tmp_path / "store", **(OPTIONS | {"memtable_size": 256 * 1024})) as store:
        fill(store, random.Random(11), 1500, keys(200))
        store.flush()
        fill(store, random.Random(12), 100, keys(200))
        banyanstore.backup(store, url)
    m = load_manifest(open_destination(url, {}), None)
    assert len(m.tables) >= 3 and m.wal_tail is not None
    return m


def nothing_left(tmp_path: Path) -> bool:
    return not (tmp_path / "copy").exists() and \
        not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_a_flipped_byte_in_any_object_is_refused(url: str, tmp_path: Path,
                                                 backed_up: BackupManifest) -> None:
    dest = open_destination(url, {})
    rng = random.Random(13)
    objects = backed_up.objects
    if not url.startswith("/"):  # every object locally; on S3 (slow requests) a table and the tail
        objects = [objects[0], objects[-1]]
    for obj in objects:
        data = dest.read(obj.key)
        pos = rng.randrange(len(data))
        dest.write(obj.key, data[:pos] + bytes([data[pos] ^ 0x10]) + data[pos + 1:])
        with pytest.raises(CorruptionError, match=obj.sha256) as err:
            banyanstore.restore(url, tmp_path / "copy")
        assert "fails its checksum" in str(err.value) and err.value.path == dest.describe(obj.key)
        assert nothing_left(tmp_path)
        with pytest.raises(CorruptionError, match=obj.sha256):
            banyanstore.verify_backup(url)
        dest.write(obj.key, data)
    banyanstore.verify_backup(url)
    banyanstore.restore(url, tmp_path / "copy")


def test_a_missing_object_is_refused(url: str, tmp_path: Path, backed_up: BackupManifest) -> None:
    dest = open_destination(url, {})
    for obj in (backed_up.tables[0], backed_up.wal_tail):
        assert obj is not None
        data = dest.read(obj.key)
        dest.delete([obj.key])
        with pytest.raises(CorruptionError, match=f"{obj.key} of backup .* is missing"):
            banyanstore.restore(url, tmp_path / "copy", parallel=1)
        assert nothing_left(tmp_path)
        with pytest.raises(CorruptionError, match="is missing"):
            banyanstore.verify_backup(url)
        dest.write(obj.key, data)


@pytest.mark.parametrize("url", ["local"], indirect=True)
def test_an_object_that_is_no_file_is_missing(url: str, tmp_path: Path, backed_up: BackupManifest) -> None:
    """A directory or a symlink loop where a local object should be is a missing object
    (CorruptionError naming it), not a bare IsADirectoryError or ELOOP OSError."""
    for obj, replace in ((backed_up.tables[0], os.mkdir),
                         (backed_up.wal_tail, lambda path: os.symlink(path, path))):
        assert obj is not None
        path = os.path.join(url, *obj.key.split("/"))
        os.rename(path, path + ".saved")
        replace(path)
        with pytest.raises(CorruptionError, match=f"{obj.key} of backup .* is missing"):
            banyanstore.restore(url, tmp_path / "copy", parallel=1)
        assert nothing_left(tmp_path)
        with pytest.raises(CorruptionError, match=f"{obj.key} of backup .* is missing"):
            banyanstore.verify_backup(url)
        os.rmdir(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        os.rename(path + ".saved", path)
    banyanstore.verify_backup(url)


def test_a_damaged_manifest_is_refused_and_not_listed(url: str, tmp_path: Path,
                                                      backed_up: BackupManifest) -> None:
    dest = open_destination(url, {})
    key = manifest_key(backed_up.backup_id)
    data = dest.read(key)
    dest.write(key, data[:40] + bytes([data[40] ^ 1]) + data[41:])
    with pytest.raises(CorruptionError, match="fails its checksum") as err:
        banyanstore.restore(url, tmp_path / "copy", backup_id=backed_up.backup_id)
    assert err.value.path == dest.describe(key)
    assert banyanstore.list_backups(url) == []
    with pytest.raises(CorruptionError, match="damaged"):
        banyanstore.prune_backups(url, keep=1)  # cannot tell which objects it needs
    assert nothing_left(tmp_path)


def _rewrite(dest: Any, m: BackupManifest, change: Any) -> None:
    """Store ``m`` with its JSON changed by ``change`` -- in a valid envelope (a hostile
    writer can compute a CRC)."""
    payload = json.loads(encode_manifest(m)[20:])
    change(payload)
    body = json.dumps(payload).encode()
    head = struct.pack("<8sII", b"BNYBKUP\0", 1, len(body))
    dest.write(manifest_key(m.backup_id), head + struct.pack("<I", crc32c.crc32c(head + body)) + body)


@pytest.mark.parametrize("url", ["local"], indirect=True)
def test_a_table_unlike_its_manifest_entry_is_named_by_its_object(
        url: str, tmp_path: Path, backed_up: BackupManifest) -> None:
    """The new store's open finds a table unlike the manifest's record of it: the error
    named the table's file in the restore's scratch directory (removed as the restore
    failed); it names the backup's object.  A wrong version names the manifest."""
    dest = open_destination(url, {})
    table = backed_up.tables[0]
    _rewrite(dest, backed_up, lambda p: p["tables"][0]["table"].update(entries=table.table.entries + 1))
    with pytest.raises(CorruptionError, match="entry count") as err:
        banyanstore.restore(url, tmp_path / "copy")
    assert err.value.path == dest.describe(table.key) and ".restore-" not in str(err.value)
    assert nothing_left(tmp_path)


@pytest.mark.parametrize("url", ["local"], indirect=True)
def test_a_table_filed_under_another_keyspace_is_refused(
        url: str, tmp_path: Path, backed_up: BackupManifest) -> None:
    """A manifest filing a table of keyspace 0 under keyspace 1: the table records the
    keyspace it was written for, and ``banyanstore verify`` compared them, but an open
    did not -- the restore succeeded with the default keyspace's keys served from "idx"."""
    dest = open_destination(url, {})
    table = next(t for t in backed_up.tables if t.table.keyspace == 0)
    index = backed_up.tables.index(table)
    _rewrite(dest, backed_up, lambda p: p["tables"][index]["table"].update(ks=1))
    with pytest.raises(CorruptionError, match="keyspace is 0, the manifest says 1") as err:
        banyanstore.restore(url, tmp_path / "copy")
    assert err.value.path == dest.describe(table.key)
    assert nothing_left(tmp_path)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "objects/../../x", "objects\\..\\..\\x",
                                  "objects//x", "s3://elsewhere/x", "../" * 8 + "tmp/x"])
def test_a_manifest_naming_a_path_outside_the_prefix_is_refused(
        url: str, tmp_path: Path, backed_up: BackupManifest, name: str) -> None:
    dest = open_destination(url, {})

    def table(p: dict[str, Any]) -> None:
        p["tables"][0]["object"] = name

    def tail(p: dict[str, Any]) -> None:
        p["wal_tail"]["object"] = name

    for change in (table, tail):
        _rewrite(dest, backed_up, change)
        with pytest.raises(CorruptionError, match="unsafe object name|not objects/<its sha256>"):
            banyanstore.restore(url, tmp_path / "copy")
        with pytest.raises(CorruptionError):
            banyanstore.verify_backup(url)
        assert nothing_left(tmp_path)


def test_a_manifest_with_a_hostile_checksum_field_is_refused(url: str, tmp_path: Path,
                                                             backed_up: BackupManifest) -> None:
    dest = open_destination(url, {})

    def sha(p: dict[str, Any]) -> None:
        p["tables"][0]["sha256"] = "../x"
        p["tables"][0]["object"] = "objects/../x"

    _rewrite(dest, backed_up, sha)
    with pytest.raises(CorruptionError, match="sha256 must be 64 lower-case hex"):
        banyanstore.restore(url, tmp_path / "copy")
    assert nothing_left(tmp_path)


# -- the manifest and WAL tail formats, field by field ---------------------------------------

def _valid(backed_up: BackupManifest) -> dict[str, Any]:
    return dict(json.loads(encode_manifest(backed_up)[20:]))


def _envelope(payload: dict[str, Any], fmt: int = 1) -> bytes:
    body = json.dumps(payload).encode()
    head = struct.pack("<8sII", b"BNYBKUP\0", fmt, len(body))
    return head + struct.pack("<I", crc32c.crc32c(head + body)) + body


@pytest.mark.parametrize("url", ["local"], indirect=True)
@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(version=p["flushed_version"] - 1), "flushed_version .* is above version"),
    (lambda p: p["tables"][0]["table"].update(ks=9), "unknown keyspace 9"),
    (lambda p: p["tables"][1]["table"].update(file=p["tables"][0]["table"]["file"]),
     "share a file number"),
    (lambda p: p["tables"][0]["table"].update(size=-1), r"table.size must be an integer >= 0"),
    (lambda p: p["tables"][0]["table"].update(max_v=10**9), "do not fit below version"),
    (lambda p: p["tables"][0]["table"].update(smallest="zz"), "table entry is malformed"),
    (lambda p: p["tables"][0]["table"].update(file=10**9), "outside"),
    (lambda p: p.update(created="yesterday"), "creation time"),
    (lambda p: p.update(backup_id="x/../y"), "backup id"),
    (lambda p: p["keyspaces"][0].update(name="other"), "keyspace 0 must be 'default'"),
    (lambda p: p["keyspaces"].append(dict(p["keyspaces"][1])), "repeat"),
    (lambda p: p["keyspaces"][1].update(ttl="soon"), "ttl must be null or a finite number"),
    (lambda p: p.update(time_map=[[1]]), "time_map sample"),
    (lambda p: p["wal_tail"].update(last_version=p["version"] + 1), "WAL tail versions"),
    (lambda p: p["wal_tail"].update(first_version=0), "first_version must be an integer >= 1"),
    (lambda p: p.update(history_floor=10**9), "history_floor"),
    (lambda p: p.update(tables={}), "manifest.tables must be a list"),
    (lambda p: p.pop("source"), "manifest.source is not a JSON object"),
])
def test_manifest_fields_are_validated(backed_up: BackupManifest, change: Any, message: str) -> None:
    payload = _valid(backed_up)
    change(payload)
    with pytest.raises(CorruptionError, match=message):
        decode_manifest(_envelope(payload), "m")


@pytest.mark.parametrize("url", ["local"], indirect=True)
def test_manifest_envelope_is_validated(backed_up: BackupManifest) -> None:
    good = encode_manifest(backed_up)
    assert decode_manifest(good, "m") == backed_up
    for data, message in [(good[:10], "shorter than its header"),
                          (b"X" + good[1:], "bad magic"),
                          (good[:-1], "payload bytes"),
                          (good + b" ", "payload bytes"),
                          (_envelope(_valid(backed_up), fmt=2), "format 2 is not supported"),
                          (_envelope({"a": 1})[:20] + b"x" * 7, "payload bytes")]:
        with pytest.raises(CorruptionError, match=message):
            decode_manifest(data, "m")


@pytest.mark.parametrize("url", ["local"], indirect=True)
@pytest.mark.parametrize("ttl_text, message", [("Infinity", "not JSON"), ("NaN", "not JSON"),
                                               ("-Infinity", "not JSON"),
                                               ("1e400", "ttl must be null or a finite number"),
                                               ("1" + "0" * 400, "ttl must be null or a finite number")])
def test_manifest_non_finite_numbers_are_refused(backed_up: BackupManifest, ttl_text: str,
                                                 message: str) -> None:
    """JSON's non-standard Infinity/NaN (which Python's parser accepts) and a literal
    that overflows to inf are damage, not a TTL (found by the backup.manifest fuzzer:
    a ttl of inf raised ValueError when the manifest was re-encoded)."""
    payload = _valid(backed_up)
    payload["keyspaces"][1]["ttl"] = 12345.5
    good = _envelope(payload)
    body = good[20:].replace(b"12345.5", ttl_text.encode())
    head = struct.pack("<8sII", b"BNYBKUP\0", 1, len(body))
    with pytest.raises(CorruptionError, match=message):
        decode_manifest(head + struct.pack("<I", crc32c.crc32c(head + body)) + body, "m")


def _tail(versions: list[int], ks: int = 0) -> bytes:
    import io
    out = io.BytesIO()
    w = TailWriter(out)
    for v in versions:
        w.add(encode_one(v, 0, ks, b"k", b"v"), v)
    return out.getvalue()


def _read(data: bytes, **kw: Any) -> list[bytes]:
    import io
    args = {"records": 3, "first_version": 5, "last_version": 9, "keyspaces": {0}} | kw
    return list(read_tail(io.BytesIO(data), "t", **args))


def test_wal_tail_is_validated() -> None:
    good = _tail([5, 6, 9])
    assert len(_read(good)) == 3
    for data, kw, message in [
        (good[:10], {}, "bad magic"),
        (b"Y" + good[1:], {}, "bad magic"),
        (good[:-3], {}, "cut short or fails its checksum"),
        (good[:16 + 4], {}, "inside a record header"),
        (good[:-1] + bytes([good[-1] ^ 1]), {}, "fails its checksum"),
        (_tail([5, 6, 6]), {}, "version 6 after 6"),
        (_tail([5, 7, 6]), {}, "version 6 after 7"),
        (_tail([4, 6, 9]), {}, "version 4"),
        (_tail([5, 6, 10]), {}, "version 10"),
        (good, {"records": 4}, "holds 3 records"),
        (_tail([5, 6]), {"last_version": 6}, "holds 2 records"),
        (_tail([5, 6, 8]), {}, "up to version 8"),
        (_tail([5, 6, 9], ks=3), {}, "undeclared keyspace 3"),
    ]:
        with pytest.raises(CorruptionError, match=message):
            _read(data, **kw)


class _ShortReads:
    """A stream whose reads return at most 3 bytes, as a raw or network stream's may
    (``read(n)`` promises up to ``n`` bytes, not ``n``)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        return bytes(self._raw.read(n if n is None or n < 0 else min(n, 3)))

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _ShortReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_a_wal_tail_read_in_short_pieces_is_sound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tail reader took a short read for the end of the object: verify_backup over a
    backend whose file reads return less than asked (fsspec's HTTP stream, any raw
    stream) called a sound backup's WAL tail "not a banyanstore WAL tail" or "cut short"."""
    import io
    good = _tail([5, 6, 9])
    records = list(read_tail(_ShortReads(io.BytesIO(good)), "t", records=3, first_version=5,
                             last_version=9, keyspaces={0}))
    assert records == _read(good)
    from fsspec.implementations.memory import MemoryFileSystem
    url = f"memory://short-reads-{os.getpid()}/backups"
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        fill(store, random.Random(5), 300, keys(50))
        info = banyanstore.backup(store, url)
    assert info.wal_records > 1
    opened = MemoryFileSystem.open
    monkeypatch.setattr(MemoryFileSystem, "open", lambda *a, **k: _ShortReads(opened(*a, **k)))
    assert banyanstore.verify_backup(url).backup_id == info.backup_id


def test_wal_tail_record_length_is_checked_before_it_is_read(tmp_path: Path) -> None:
    """A WAL tail object (untrusted input at restore time, docs/backup.md) whose first
    record claims 2 GiB: ``read_tail`` must report the damage without allocating the
    claimed length (found by the ``backup.waltail`` decoder of tests/torture/fuzz.py
    as MemoryError under its address-space limit)."""
    path = tmp_path / "tail"
    with open(path, "wb") as out:
        TailWriter(out).add(encode_one(5, 0, 0, b"k", b"v"), 5)
    data = bytearray(path.read_bytes())
    data[16:20] = (0x7FFFFFFF).to_bytes(4, "little")  # the first record's length field
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with open(path, "rb") as src, pytest.raises(CorruptionError):
            list(read_tail(src, str(path), records=1, first_version=5, last_version=5, keyspaces={0}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"reading a damaged tail allocated {peak >> 20} MiB"


@pytest.mark.parametrize("url", ["local"], indirect=True)
@pytest.mark.parametrize("change", [
    lambda p: p.update(version=2**64),
    lambda p: p.update(next_file=2**64),
    lambda p: p.update(time_map=[[1, 2**64]]),
    lambda p: p["keyspaces"].append({"id": 2**32, "name": "huge"}),
], ids=["version", "next_file", "time_map", "keyspace_id"])
def test_a_number_beyond_the_store_s_range_is_refused_by_verify_and_restore(
        url: str, tmp_path: Path, backed_up: BackupManifest, change: Any) -> None:
    """A manifest holding a version, a file number or a time sample of 2**64 or more, or a
    keyspace id of 2**32 or more, decoded: ``verify_backup`` called the backup sound, and
    ``restore`` failed with a CorruptionError naming a manifest in its scratch directory
    (removed as the restore failed), not the backup.  Both now refuse it, naming the
    backup's manifest."""
    dest = open_destination(url, {})
    key = manifest_key(backed_up.backup_id)
    payload = _valid(backed_up)
    change(payload)
    dest.write(key, _envelope(payload))
    with pytest.raises(CorruptionError, match="must be an integer") as err:
        banyanstore.verify_backup(url)
    assert err.value.path == dest.describe(key)
    with pytest.raises(CorruptionError, match="must be an integer") as err:
        banyanstore.restore(url, tmp_path / "copy")
    assert err.value.path == dest.describe(key) and nothing_left(tmp_path)


@pytest.mark.parametrize("url", ["local"], indirect=True)
def test_a_backup_of_a_newer_store_format_is_refused_by_verify_and_restore(
        url: str, tmp_path: Path, backed_up: BackupManifest) -> None:
    """A backup manifest saying its tables and WAL records are of store format 2 (a newer
    banyanstore's) decoded: verify_backup called it sound and restore built a format-1
    store from those files, which this version would read as its own.  The store refuses
    to open a newer format; so do verify and restore, naming the backup's manifest."""
    dest = open_destination(url, {})
    key = manifest_key(backed_up.backup_id)
    payload = _valid(backed_up)
    payload["store_format"] = 2
    dest.write(key, _envelope(payload))
    with pytest.raises(CorruptionError, match="store format 2 is newer") as err:
        banyanstore.verify_backup(url)
    assert err.value.path == dest.describe(key)
    with pytest.raises(CorruptionError, match="store format 2 is newer") as err:
        banyanstore.restore(url, tmp_path / "copy")
    assert err.value.path == dest.describe(key) and nothing_left(tmp_path)
    assert banyanstore.list_backups(url) == []  # left out as damaged, as any undecodable manifest


@pytest.mark.parametrize("url", ["local"], indirect=True)
@pytest.mark.parametrize("value", ["x", -1, True, None, [1], 10 ** 400])
def test_manifest_bad_expiry_time_is_refused(backed_up: BackupManifest, value: Any) -> None:
    """``expiry_time`` (the store's latest time TTL expiry was judged at) is a finite
    number >= 0 where present; anything else is damage naming it."""
    payload = _valid(backed_up)
    payload["expiry_time"] = value
    with pytest.raises(CorruptionError, match="expiry_time"):
        decode_manifest(_envelope(payload), "m")
    payload["expiry_time"] = 1_700_000_000.25
    assert decode_manifest(_envelope(payload), "m").expiry_time == 1_700_000_000.25


def test_verify_reused_uploads_again_an_object_damaged_in_place(url: str, tmp_path: Path,
                                                                 backed_up: BackupManifest) -> None:
    """An object at the destination is reused by its name and size: one damaged in place
    with its size kept was named by every later backup, none of which could be restored.
    ``backup(..., verify_reused=True)`` reads each object it would reuse through its
    SHA-256 and uploads again one that fails it, which mends the older backups too."""
    dest = open_destination(url, {})
    obj = backed_up.tables[0]
    data = dest.read(obj.key)
    dest.write(obj.key, data[:10] + bytes([data[10] ^ 0x01]) + data[11:])
    banyanstore.backup(tmp_path / "store", url)  # the default: reused as it is
    with pytest.raises(CorruptionError, match=obj.sha256):
        banyanstore.verify_backup(url)
    seen: list[Any] = []
    info = banyanstore.backup(tmp_path / "store", url, verify_reused=True, progress=seen.append)
    assert (info.uploaded_files, info.uploaded_bytes) == (1, len(data))
    verified = [p for p in seen if p.phase == "verify"]
    reused = load_manifest(dest, info.backup_id).objects  # every one was present
    assert verified[-1].files_done == verified[-1].files_total == len(reused)
    assert dest.read(obj.key) == data
    for older in banyanstore.list_backups(url):
        banyanstore.verify_backup(url, older.backup_id)
    info = banyanstore.backup(tmp_path / "store", url, verify_reused=True)
    assert info.uploaded_files == 0
    with pytest.raises(TypeError, match="verify_reused must be True or False, not 1"):
        banyanstore.backup(tmp_path / "store", url, verify_reused=1)


@pytest.mark.parametrize("url", ["local"], indirect=True)
def test_verify_reused_uploads_an_object_gone_since_the_listing(
        url: str, tmp_path: Path, backed_up: BackupManifest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Removed between the listing and its check (a prune elsewhere, a hand): uploaded
    again, and counted as checked in the progress report."""
    from banyanstore.backups.destination import LocalDestination
    real, gone = LocalDestination.open_read, backed_up.tables[0].key

    def open_read(self: LocalDestination, key: str) -> Any:
        if key == gone:
            os.remove(os.path.join(url, *key.split("/")))
        return real(self, key)

    monkeypatch.setattr(LocalDestination, "open_read", open_read)
    seen: list[Any] = []
    info = banyanstore.backup(tmp_path / "store", url, verify_reused=True, progress=seen.append)
    assert info.uploaded_files >= 1
    verified = [p for p in seen if p.phase == "verify"]
    assert verified[-1].files_done == verified[-1].files_total > 0
    monkeypatch.undo()
    banyanstore.verify_backup(url)


@pytest.mark.parametrize("url", ["local"], indirect=True)
@pytest.mark.parametrize("call", ["verify", "restore"])
def test_a_backup_pruned_while_it_is_read_is_not_called_damaged(
        url: str, tmp_path: Path, backed_up: BackupManifest, call: str) -> None:
    """A prune (from cron, another host) deleting a backup that a verify or restore was
    reading made its objects vanish midway: the call said the backup was damaged
    (CorruptionError "is missing"; ``backups --verify``: DAMAGED).  Its manifest is gone
    too, so it is now StoreNotFoundError saying the backup was deleted while read."""
    dest = open_destination(url, {})
    deleted: list[str] = []

    def prune_now(p: Any) -> None:  # as prune does: the manifest first, then the objects
        if not deleted and p.bytes_done:
            deleted.append(backed_up.backup_id)
            dest.delete([manifest_key(backed_up.backup_id)])
            dest.delete(o.key for o in backed_up.objects)

    with pytest.raises(StoreNotFoundError, match=f"backup {backed_up.backup_id} .*deleted while") as err:
        if call == "verify":
            banyanstore.verify_backup(url, backed_up.backup_id, progress=prune_now, parallel=1)
        else:
            banyanstore.restore(url, tmp_path / "copy", progress=prune_now, parallel=1)
    assert not isinstance(err.value, CorruptionError) and deleted
    assert nothing_left(tmp_path)
