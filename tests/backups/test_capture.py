"""The capture's races, made to happen at the worst moment: a merge deleting a table
the capture is about to link, flushes cutting the WAL at every step, merges finishing
during every round, a manifest roll, a keyspace created after the capture -- and real
damage, which is not retried away."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.backups import capture as capture_module
from banyanstore.errors import CorruptionError, StorageIOError
from banyanstore.io.posix import PosixEnv
from banyanstore.lsm.manifest import Manifest

from .helpers import OPTIONS, fill, keys, latest


def hook_once(monkeypatch: pytest.MonkeyPatch, name: str, before: Any, *, call: int = 1,
              where: Callable[..., bool] = lambda *args: True) -> list[int]:
    """Run ``before()`` just before call number ``call`` of ``capture.<name>`` among
    the calls whose arguments ``where`` accepts."""
    real = getattr(capture_module, name)
    calls = [0]

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if where(*args):
            calls[0] += 1
            if calls[0] == call:
                before()
        return real(*args, **kwargs)

    monkeypatch.setattr(capture_module, name, hooked)
    return calls


def of_tables(_env: Any, src: str, _dst: str) -> bool:
    """``where`` for ``_link``: the links of tables (not of WAL segments)."""
    return os.path.basename(os.path.dirname(src)) == "tables"


def of_segments(_env: Any, src: str, _dst: str) -> bool:
    return os.path.basename(os.path.dirname(src)) == "wal"


def at(store: Any, version: int) -> dict[str, list[tuple[bytes, bytes]]]:
    """What every keyspace of ``store`` held at ``version`` (the tests keep all history)."""
    return {name: list(store.keyspace(name).scan(version=version)) for name in store.keyspaces()}


def restores_to(tmp_path: Path, info: Any, expected: dict[str, Any]) -> None:
    dest = tmp_path / f"copy-{info.backup_id}"
    banyanstore.restore(tmp_path / "b", dest, backup_id=info.backup_id)
    with banyanstore.open(dest, **OPTIONS) as copy:
        assert copy.version == info.version
        assert latest(copy) == expected


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with banyanstore.open(tmp_path / "store", **OPTIONS) as s:
        fill(s, random.Random(31), 1200, keys(150))
        s.flush()
        fill(s, random.Random(32), 100, keys(150))
        yield s


def test_a_merge_deleting_a_table_mid_capture_is_retried(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tables_before = set(os.listdir(tmp_path / "store" / "tables"))
    calls = hook_once(monkeypatch, "_link", store.compact, where=of_tables)  # merges all, deletes inputs
    expected, version = latest(store), store.version  # compaction drops history, not values
    info = banyanstore.backup(store, tmp_path / "b")
    tables_after = set(os.listdir(tmp_path / "store" / "tables"))
    assert not tables_before & tables_after and calls[0] >= 2
    assert info.files == len(tables_after) + (1 if info.wal_records else 0)  # the merged ones
    banyanstore.restore(tmp_path / "b", tmp_path / "c")
    with banyanstore.open(tmp_path / "c", **OPTIONS) as copy:
        assert latest(copy) == expected and copy.version == info.version == version


def test_flushes_at_every_step_of_the_capture_need_no_retry(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush cuts the WAL only once its edit is durable, and the capture links the WAL
    before it reads the manifest: whenever a flush lands, the linked segments hold every
    record from the ``wal_seq`` the capture read.  One manifest read, no retry."""
    def flush() -> None:
        store.put(b"during", b"%d" % store.version)
        store.flush()

    loads = hook_once(monkeypatch, "_load", flush)  # after the WAL links, before the manifest read
    hook_once(monkeypatch, "_link", flush, where=of_tables)  # after the read, before the tables
    hook_once(monkeypatch, "_copy_tail", flush)  # before the linked WAL is read
    version = store.version
    info = banyanstore.backup(store, tmp_path / "b")
    assert loads[0] == 1 and info.version >= version
    restores_to(tmp_path, info, at(store, info.version))


def test_a_store_flushing_during_every_attempt_is_captured(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy store backed up by path: a flush finishing during every capture attempt
    used to make each one start over until the attempts ran out."""
    monkeypatch.setattr(capture_module, "MAX_ATTEMPTS", 3)
    real = capture_module._load

    def flushing_load(env: Any, store_dir: str) -> Any:
        store.put(b"during", b"%d" % store.version)
        store.flush()
        return real(env, store_dir)

    monkeypatch.setattr(capture_module, "_load", flushing_load)
    info = banyanstore.backup(str(tmp_path / "store"), tmp_path / "b")
    restores_to(tmp_path, info, at(store, info.version))


def merge_away(store: Any, *tables: str) -> None:
    """What a merge finishing right now does to the live ``tables`` (of one keyspace):
    a newer table overlapping them is flushed, and they are merged and deleted."""
    numbers = {int(os.path.basename(table).split(".")[0]) for table in tables}
    state = Manifest.load(PosixEnv(), store.path)
    infos = [i for per in state.tables.values() for i in per.values() if i.file_no in numbers]
    name = state.keyspaces[infos[0].keyspace]
    start, end = min(i.smallest for i in infos), max(i.largest for i in infos)
    store.keyspace(name).put(start, b"merged over %d" % store.version)
    store.compact(name, start=start, end=end + b"\0")


@pytest.fixture
def six_tables(tmp_path: Path) -> Any:
    """A store of six tables with disjoint key ranges (a merge of one leaves the rest)."""
    with banyanstore.open(tmp_path / "store", **OPTIONS) as s:
        for prefix in b"abcdef":
            for i in range(50):
                s.put(bytes([prefix]) + b"%03d" % i, b"x" * 100)
            s.flush()
        assert len(os.listdir(tmp_path / "store" / "tables")) == 6
        yield s


def merging_every_round(monkeypatch: pytest.MonkeyPatch, store: Any, nth: int) -> list[int]:
    """A merge deletes the table the capture is about to link as its ``nth`` table link
    since its last manifest read, with the one it linked before: a store whose merges
    finish faster than a capture links ``nth`` tables.  Returns ``[table links tried]``."""
    real_load, real_link = capture_module._load, capture_module._link
    linked: list[str] = []  # since the last manifest read
    links = [0]

    def load(env: Any, store_dir: str) -> Any:
        linked.clear()
        return real_load(env, store_dir)

    def link(env: Any, src: str, dst: str) -> None:
        if of_tables(env, src, dst):
            links[0] += 1
            if len(linked) == nth - 1:
                merge_away(store, *linked[-1:], src)
            linked.append(src)
        real_link(env, src, dst)

    monkeypatch.setattr(capture_module, "_load", load)
    monkeypatch.setattr(capture_module, "_link", link)
    return links


def test_merges_finishing_during_every_round_only_cost_the_tables_they_wrote(
        six_tables: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Merges that finish faster than a whole capture links every table: the capture
    used to start over and meet the same race every time until the attempts ran out.
    Now a round keeps the links it made and links only what it lacks: round 1 links
    a, b and c, and finds d merged away (with c, and e and f: the merge takes the rest
    of the range); round 2 keeps a and b, drops c and links the merge's output only."""
    store = six_tables
    monkeypatch.setattr(capture_module, "MAX_ATTEMPTS", 5)
    links = merging_every_round(monkeypatch, store, nth=4)
    info = banyanstore.backup(str(tmp_path / "store"), tmp_path / "b")
    assert links[0] == 3 + 1 + 1
    assert info.version == store.version and info.files == 3 and info.wal_records == 0
    restores_to(tmp_path, info, latest(store))


def test_wal_segments_cut_while_they_are_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush cuts every listed WAL segment while the capture links them: the links
    of the cut ones are dropped, and the directory is listed again for the newer
    segment the listing missed."""
    options = {**OPTIONS, "memtable_size": 1 << 20, "segment_size": 64 << 10}
    with banyanstore.open(tmp_path / "store", **options) as store:
        rng = random.Random(33)
        for i in range(2000):
            store.put(b"k%05d" % i, rng.randbytes(100))
        listed = len(os.listdir(tmp_path / "store" / "wal"))
        assert listed >= 3

        def rotate_and_flush() -> None:
            for i in range(800):
                store.put(b"n%05d" % i, rng.randbytes(100))
            store.flush()  # cuts every segment before the active one: all the listed ones

        calls = hook_once(monkeypatch, "_link", rotate_and_flush, call=2, where=of_segments)
        info = banyanstore.backup(store, tmp_path / "b")
        assert calls[0] > listed  # the listed ones were tried, then the new ones linked
        restores_to(tmp_path, info, at(store, info.version))


def test_a_manifest_roll_mid_capture_is_retried(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "store"

    def roll() -> None:  # what a manifest roll does, frozen between its two steps
        current = (path / "CURRENT").read_text().split()[2]
        os.rename(path / current, path / (current + ".moved"))
        monkeypatch.setattr(capture_module, "_load", real_load)
        restore_later.append((path / (current + ".moved"), path / current))

    real_load = capture_module._load
    restore_later: list[tuple[Path, Path]] = []

    def load_after_roll(env: Any, store_dir: str) -> Any:
        if not restore_later:
            roll()
            try:
                return real_load(env, store_dir)
            finally:
                os.rename(*restore_later[0])
        return real_load(env, store_dir)

    monkeypatch.setattr(capture_module, "_load", load_after_roll)
    expected = latest(store)
    banyanstore.backup(store, tmp_path / "b")
    banyanstore.restore(tmp_path / "b", tmp_path / "c")
    with banyanstore.open(tmp_path / "c", **OPTIONS) as copy:
        assert latest(copy) == expected


def test_writes_to_a_keyspace_younger_than_the_capture_are_left_out(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = store.version
    expected = latest(store)

    def late_writes() -> None:  # after the second manifest read, before the WAL is read
        store.keyspace("late").put(b"x", b"1")
        store.put(b"after", b"late")
        store.sync()

    hook_once(monkeypatch, "_copy_tail", late_writes)
    info = banyanstore.backup(str(tmp_path / "store"), tmp_path / "b")  # a path: no sync first
    assert info.version == before and "late" not in info.keyspaces
    banyanstore.restore(tmp_path / "b", tmp_path / "c")
    with banyanstore.open(tmp_path / "c", **OPTIONS) as copy:
        assert latest(copy) == expected and copy.version == before


def test_a_missing_or_resized_table_is_damage_not_a_race(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store.close()
    tables = sorted((tmp_path / "store" / "tables").iterdir())
    data = tables[0].read_bytes()
    tables[0].write_bytes(data + b"x")
    with pytest.raises(CorruptionError, match="the manifest says") as err:
        banyanstore.backup(tmp_path / "store", tmp_path / "b")
    assert err.value.path == str(tables[0])
    tables[0].unlink()
    with pytest.raises(CorruptionError, match="table named by the manifest is missing") as err:
        banyanstore.backup(tmp_path / "store", tmp_path / "b")
    assert err.value.path == str(tables[0])
    assert banyanstore.list_backups(tmp_path / "b") == []
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_persistent_manifest_damage_is_raised_after_the_attempts(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store.close()
    monkeypatch.setattr(capture_module, "MAX_ATTEMPTS", 3)
    (tmp_path / "store" / "CURRENT").write_text("garbage\n")
    with pytest.raises(CorruptionError, match="CURRENT is malformed"):
        banyanstore.backup(tmp_path / "store", tmp_path / "b")


def test_a_store_whose_tables_vanish_in_every_round_is_an_io_error(
        six_tables: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_module, "MAX_ATTEMPTS", 3)
    links = merging_every_round(monkeypatch, six_tables, nth=1)
    with pytest.raises(StorageIOError, match="changed under every one of 3 attempts"):
        banyanstore.backup(str(tmp_path / "store"), tmp_path / "b")
    assert links[0] == 3 and banyanstore.list_backups(tmp_path / "b") == []


def test_wal_damage_is_reported_at_the_store_s_segment_not_the_scratch_link(tmp_path: Path) -> None:
    """The WAL is read through hard links in the backup's scratch directory, which is
    removed when the backup fails: the error named that link, a file nobody can find
    afterwards.  It names the store's own segment (and the offset)."""
    import shutil

    from banyanstore.log.format import HEADER_SIZE
    from banyanstore.log.reader import iter_records
    with banyanstore.open(tmp_path / "live", **OPTIONS) as s:
        for i in range(100):
            s.put(b"k%03d" % i, b"v%d" % i)
        s.sync()  # a copy of the files as a crash would leave them: the WAL unflushed
        shutil.copytree(tmp_path / "live", tmp_path / "store", ignore=shutil.ignore_patterns("LOCK"))
    (segment,) = (tmp_path / "store" / "wal").glob("*.log")
    data = bytearray(segment.read_bytes())
    records = list(iter_records(lambda offset, n: bytes(data[offset:offset + n]), HEADER_SIZE,
                                len(data), None, lambda offset, why: None))
    _seq, _payload, start, _end = records[50]
    data[start + 20] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="damaged before the tail") as err:
        banyanstore.backup(tmp_path / "store", tmp_path / "b")
    assert err.value.path == str(segment) and err.value.offset == start
    assert str(segment) in str(err.value) and ".backup-" not in str(err.value)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_a_backup_whose_newest_writes_went_to_a_dropped_keyspace_restores(tmp_path: Path) -> None:
    """The WAL tail left out the records of a dropped keyspace whole, so it ended below
    the version a backup of a handle claims (the store's version at the call): the
    backup completed, and every restore of it failed ("the restored store opens at
    version 1 ... backup says version 2").  Such a record stays in the tail, empty."""
    url = tmp_path / "b"
    with banyanstore.open(tmp_path / "store", **OPTIONS) as store:
        store.put(b"a", b"1")
        gone = store.keyspace("gone")
        gone.put(b"x", b"y")
        gone.delete_range(b"a", b"b")
        store.drop_keyspace("gone")
        version = store.version
        infos = [banyanstore.backup(store, url), banyanstore.backup(tmp_path / "store", url)]
    for info in infos:
        assert info.version == version and info.wal_records == 3
        dest = tmp_path / f"copy-{info.backup_id}"
        banyanstore.restore(url, dest, backup_id=info.backup_id)
        with banyanstore.open(dest, read_only=True) as copy:
            assert copy.version == version and copy.keyspaces() == ["default"]
            assert list(copy.scan()) == [(b"a", b"1")]
        with banyanstore.open(dest, **OPTIONS) as copy:
            assert copy.version == version and copy.put(b"b", b"2") == version + 1


def test_a_wal_segment_sealed_after_its_link_reads_as_the_linked_log(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A link shares its file with the store's segment: a WAL rotation after the links
    were made seals the newest linked segment, naming a successor the links lack.  The
    capture reads the links as the log they were (an empty segment stands in for the
    successor, which the store has), with no retry."""
    def rotate() -> None:
        store.put(b"during", b"%d" % store.version)
        store.flush()  # switches the memtables: rotates (and seals) the WAL segment

    stand_ins = hook_once(monkeypatch, "_stand_in_for_successor", lambda: None)
    loads = hook_once(monkeypatch, "_load", lambda: None)
    hook_once(monkeypatch, "_copy_tail", rotate)  # before the linked WAL is read
    info = banyanstore.backup(store, tmp_path / "b")
    assert stand_ins[0] == 1 and loads[0] == 1
    restores_to(tmp_path, info, at(store, info.version))


def test_a_store_whose_newest_wal_segment_was_deleted_is_not_backed_up(tmp_path: Path) -> None:
    """Real damage, not a rotation under the capture: no stand-in hides it."""
    options = {**OPTIONS, "memtable_size": 8 << 20, "segment_size": 64 * 1024}
    s = banyanstore.open(tmp_path / "store", **options)
    try:
        for i in range(300):
            s.put(b"k%05d" % i, bytes(1000))
        shutil.copytree(tmp_path / "store", tmp_path / "crashed")  # as a crash leaves it
    finally:
        s.close()
    segments = sorted(p for p in (tmp_path / "crashed" / "wal").iterdir() if p.name.endswith(".log"))
    assert len(segments) >= 2
    segments[-1].unlink()
    (tmp_path / "crashed" / "LOCK").unlink(missing_ok=True)
    with pytest.raises(CorruptionError, match=segments[-1].name):
        banyanstore.backup(str(tmp_path / "crashed"), tmp_path / "b")


@pytest.mark.parametrize("written", [0, 12])
def test_a_segment_the_writer_is_creating_is_no_damage(tmp_path: Path, written: int) -> None:
    """The writer rotating its WAL while the capture links it: the newest segment exists
    without its header yet (0 bytes, or zeros).  The backup failed with "segment header
    truncated", a CorruptionError naming the capture's link; the segment is a creation in
    progress, unsealed, holding nothing, as every open treats it."""
    path = str(tmp_path / "store")
    with banyanstore.open(path, **OPTIONS) as s:
        s.put(b"a", b"1")
    with banyanstore.open(path, **OPTIONS) as writer:
        writer.put(b"b", b"2", sync=True)
        wal = Path(path, "wal")
        newest = max(int(p.name[:20]) for p in wal.glob("*.log"))
        Path(wal, f"{newest + 1:020d}.log").write_bytes(b"\0" * written)
        info = banyanstore.backup(path, str(tmp_path / "b"))
    banyanstore.restore(str(tmp_path / "b"), str(tmp_path / "r"))
    with banyanstore.open(str(tmp_path / "r"), read_only=True) as r:
        assert (r.get(b"a"), r.get(b"b"), r.version) == (b"1", b"2", info.version)


@pytest.mark.parametrize("by", ["store", "path"])
def test_a_keyspace_dropped_during_the_capture_is_not_restored_beside_later_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by: str) -> None:
    """A keyspace dropped after the capture read the manifest, then a write: the tail
    held the keyspace's records (the manifest read knew it) and the write made after the
    drop, so the restored store had the dropped keyspace's data beside that write -- a
    state the store never had.  The capture now reads the manifest again after the tail
    and starts the round over when a keyspace it holds was dropped meanwhile."""
    with banyanstore.open(tmp_path / "store", **OPTIONS) as store:
        gone = store.keyspace("gone")
        gone.put(b"secret", b"x")
        store.flush()  # a table of it, and a WAL record
        gone.put(b"in the wal", b"y")
        store.put(b"before", b"1")

        def drop_then_write() -> None:
            store.drop_keyspace("gone")
            store.put(b"after", b"2")
            store.sync()

        calls = hook_once(monkeypatch, "_copy_tail", drop_then_write)
        info = banyanstore.backup(store if by == "store" else str(tmp_path / "store"), tmp_path / "b")
        expected = latest(store)
    assert expected == {"default": [(b"after", b"2"), (b"before", b"1")]}
    restores_to(tmp_path, info, expected)
    assert info.version == store.version and info.keyspaces == ("default",)
    assert calls[0] == 2  # the round after the drop copied the tail again


def test_a_wal_segment_whose_header_is_not_written_yet_is_not_foreign(tmp_path: Path) -> None:
    """The writer creates a WAL segment, then writes its header: a backup linking the
    segments in between failed with ForeignFileError ("not a banyanstore log segment",
    magic of zeros) naming its own scratch link -- one backup in about 140 of a store
    whose writer process rotated its WAL all the time; so did every backup of a store a
    crash left so.  A newest segment without its header is one being created, holding
    no record: the capture reads the log without it, as a read-only open does."""
    from banyanstore.log.segment import segment_name
    with banyanstore.open(tmp_path / "store", **OPTIONS) as store:
        store.put(b"a", b"1")
        store.put(b"b", b"2")
        shutil.copytree(tmp_path / "store", tmp_path / "crashed")  # as a crash leaves it
    wal = tmp_path / "crashed" / "wal"
    (newest,) = [p.name for p in wal.iterdir() if p.name.endswith(".log")]
    (wal / segment_name(int(newest.split(".")[0]) + 2)).write_bytes(bytes(4096))  # seqs 1, 2 before
    (tmp_path / "crashed" / "LOCK").unlink(missing_ok=True)
    info = banyanstore.backup(str(tmp_path / "crashed"), tmp_path / "b")
    assert info.version == 2 and info.wal_records == 2
    restores_to(tmp_path, info, {"default": [(b"a", b"1"), (b"b", b"2")]})


def test_a_value_ending_like_a_seal_then_a_rotation_after_the_links(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest WAL segment's last record ends with the 15 bytes of a SEAL naming the
    next seq (a put's value is anything), and the writer rotates after the links were
    made: the capture took those bytes for a SEAL already there when it linked, so the
    real one found later read as a successor lost (a failed attempt).  It now confirms
    a SEAL starts a fragment, as the Log's open does."""
    from banyanstore.log.format import SEAL_SIZE, seal_bytes
    seq = store.stats()["wal"]["last_seq"] + 1
    store.put(b"tricky", b"v" * 100 + seal_bytes(0, seq + 1)[-SEAL_SIZE:])
    assert store.stats()["wal"]["last_seq"] == seq

    def rotate() -> None:
        store.put(b"during", b"%d" % store.version)
        store.flush()

    stand_ins = hook_once(monkeypatch, "_stand_in_for_successor", lambda: None)
    loads = hook_once(monkeypatch, "_load", lambda: None)
    hook_once(monkeypatch, "_copy_tail", rotate)
    info = banyanstore.backup(store, tmp_path / "b")
    assert stand_ins[0] == 1 and loads[0] == 1
    restores_to(tmp_path, info, at(store, info.version))
