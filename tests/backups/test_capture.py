"""The capture's races, made to happen at the worst moment: a merge deleting a table
the capture is about to link, a flush cutting the WAL between the two manifest reads,
a manifest roll, a keyspace created after the capture -- and real damage, which is
not retried away."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.backups import capture as capture_module
from banyanstore.errors import CorruptionError, StorageIOError

from .helpers import OPTIONS, fill, keys, latest


def hook_once(monkeypatch: pytest.MonkeyPatch, name: str, before: Any, *, call: int = 1) -> list[int]:
    """Run ``before()`` just before call number ``call`` of ``capture.<name>``."""
    real = getattr(capture_module, name)
    calls = [0]

    def hooked(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            before()
        return real(*args, **kwargs)

    monkeypatch.setattr(capture_module, name, hooked)
    return calls


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
    calls = hook_once(monkeypatch, "_link", store.compact)  # merges every table, deletes inputs
    expected, version = latest(store), store.version  # compaction drops history, not values
    info = banyanstore.backup(store, tmp_path / "b")
    tables_after = set(os.listdir(tmp_path / "store" / "tables"))
    assert not tables_before & tables_after and calls[0] >= 2
    assert info.files == len(tables_after) + (1 if info.wal_records else 0)  # the merged ones
    banyanstore.restore(tmp_path / "b", tmp_path / "c")
    with banyanstore.open(tmp_path / "c", **OPTIONS) as copy:
        assert latest(copy) == expected and copy.version == info.version == version


def test_a_flush_between_the_manifest_reads_is_retried(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # _load: 1st call reads S, 2nd call reads S2 -- flush just before it: wal_seq moves
    calls = hook_once(monkeypatch, "_load", store.flush, call=2)
    expected = latest(store)
    version = store.version
    info = banyanstore.backup(store, tmp_path / "b")
    assert calls[0] == 4 and info.version == version and info.wal_records == 0
    banyanstore.restore(tmp_path / "b", tmp_path / "c")
    with banyanstore.open(tmp_path / "c", **OPTIONS) as copy:
        assert latest(copy) == expected


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


def test_a_store_that_keeps_changing_is_an_io_error(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_module, "MAX_ATTEMPTS", 3)
    real = capture_module._load
    n = [0]

    def flushing_load(env: Any, store_dir: str) -> Any:
        n[0] += 1
        if n[0] % 2 == 0:  # a flush finishes before every second read
            store.put(b"k%d" % n[0], b"v")
            store.flush()
        return real(env, store_dir)

    monkeypatch.setattr(capture_module, "_load", flushing_load)
    with pytest.raises(StorageIOError, match="changed under every one of 3 attempts"):
        banyanstore.backup(store, tmp_path / "b")
    assert banyanstore.list_backups(tmp_path / "b") == []
