"""Every public method of docs/api.md with wrong arguments, in one table: a wrong type is
a TypeError and a value out of range a ValueError, each naming the argument, and nothing
is written -- on a writer, on a read-only store and on the Log, in both engines (the
suite runs once per engine). tests/lsm/test_bad_input.py has the first cases of keys,
values and flags; this walks the rest of the surface."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import banyanstore
import banyanstore.aio
import banyanstore.dbm
from banyanstore import tools

Case = tuple[Callable[[Any], Any], type, str]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("arguments")
    writer = banyanstore.open(base / "s", io_mode="sync", compaction=False)
    writer.keyspace("index").put(b"k", b"v")
    writer.put(b"k", b"v")
    reader = banyanstore.open(base / "s", read_only=True)
    log = banyanstore.open_log(base / "log", io_mode="sync")
    log.append(b"x")
    yield {"writer": writer, "reader": reader, "log": log, "base": base}
    reader.close()
    writer.close()
    log.close()


def _list(it: Any) -> list[Any]:
    return list(it)


# Reads: the same on a writer and on a read-only store.
READS: dict[str, Case] = {
    "get-key": (lambda s: s.get(None), TypeError, "key"),
    "get-version-float": (lambda s: s.get(b"k", version=1.0), TypeError, "version"),
    "get-version-bool": (lambda s: s.get(b"k", version=True), TypeError, "version"),
    "multi_get-version": (lambda s: s.multi_get([b"k"], version="1"), TypeError, "version"),
    "multi_get-key": (lambda s: s.multi_get(x for x in ["k"]), TypeError, "key"),
    "scan-keys_only": (lambda s: _list(s.scan(keys_only=1)), TypeError, "keys_only"),
    "scan-limit-float": (lambda s: _list(s.scan(limit=1.0)), TypeError, "limit"),
    "scan-limit-bool": (lambda s: _list(s.scan(limit=True)), TypeError, "limit"),
    "scan-reverse-none": (lambda s: _list(s.scan(reverse=None)), TypeError, "reverse"),
    "scan-version-bool": (lambda s: _list(s.scan(version=True)), TypeError, "version"),
    "get-version-negative": (lambda s: s.get(b"k", version=-1), ValueError, "version"),
    "multi_get-version-negative": (lambda s: s.multi_get([b"k"], version=-2), ValueError, "version"),
    "scan-version-negative": (lambda s: _list(s.scan(version=-1)), ValueError, "version"),
    "keys-version-negative": (lambda s: s.keys(version=-1), ValueError, "version"),
    "history-version-negative": (lambda s: _list(s.items(version=-5)), ValueError, "version"),
    "history-key": (lambda s: _list(s.history(None)), TypeError, "key"),
    "keys-start": (lambda s: s.keys("a"), TypeError, "start"),
    "keys-prefix": (lambda s: s.keys(prefix="a"), TypeError, "prefix"),
    "keys-reverse": (lambda s: s.keys(reverse="no"), TypeError, "reverse"),
    "keys-version": (lambda s: s.keys(version=True), TypeError, "version"),
    "values-start": (lambda s: s.values(1), TypeError, "start"),
    "values-reverse": (lambda s: s.values(reverse=1), TypeError, "reverse"),
    "items-end": (lambda s: s.items(end="z"), TypeError, "end"),
    "items-version": (lambda s: s.items(version=1.0), TypeError, "version"),
    "keys-contains": (lambda s: 1 in s.keys(), TypeError, "key"),
    "items-contains": (lambda s: ("k", b"v") in s.items(), TypeError, "key"),
    "getitem": (lambda s: s[1], TypeError, "key"),
    "approximate_count-start": (lambda s: s.approximate_count("a"), TypeError, "start"),
    "approximate_count-end": (lambda s: s.approximate_count(end=1), TypeError, "end"),
    "approximate_count-prefix": (lambda s: s.approximate_count(prefix="a"), TypeError, "prefix"),
    "approximate_size-start": (lambda s: s.approximate_size(5), TypeError, "start"),
    "approximate_size-prefix": (lambda s: s.approximate_size(prefix="a"), TypeError, "prefix"),
    "keyspace-none": (lambda s: s.keyspace(None), TypeError, "keyspace name"),
    "keyspace-bytes": (lambda s: s.keyspace(b"index"), TypeError, "keyspace name"),
    "keyspace-surrogate": (lambda s: s.keyspace("\udc80"), ValueError, "keyspace name"),
    "keyspace-long": (lambda s: s.keyspace("x" * 1025), ValueError, "keyspace name"),
    "keyspace-ttl-negative": (lambda s: s.keyspace("index", ttl=-1), ValueError, "ttl"),
    "keyspace-ttl-bool": (lambda s: s.keyspace("index", ttl=True), TypeError, "ttl"),
    "keyspace-ttl-inf": (lambda s: s.keyspace("index", ttl=float("inf")), ValueError, "ttl"),
    "snapshot-get-key": (lambda s: _snap(s, lambda sn: sn.get("k")), TypeError, "key"),
    "snapshot-get-keyspace": (lambda s: _snap(s, lambda sn: sn.get(b"k", keyspace=1)), TypeError, "keyspace"),
    "snapshot-multi_get-keyspace": (lambda s: _snap(s, lambda sn: sn.multi_get([b"k"], keyspace=1)),
                                    TypeError, "keyspace"),
    "snapshot-scan-start": (lambda s: _snap(s, lambda sn: _list(sn.scan("a"))), TypeError, "start"),
    "snapshot-scan-keyspace": (lambda s: _snap(s, lambda sn: _list(sn.scan(keyspace=1))), TypeError,
                               "keyspace"),
    "snapshot-scan-keys_only": (lambda s: _snap(s, lambda sn: _list(sn.scan(keys_only="y"))), TypeError,
                                "keys_only"),
    "snapshot-keys-keyspace": (lambda s: _snap(s, lambda sn: sn.keys(keyspace=1)), TypeError, "keyspace"),
    "snapshot-keys-reverse": (lambda s: _snap(s, lambda sn: sn.keys(reverse="no")), TypeError, "reverse"),
    "snapshot-values-prefix": (lambda s: _snap(s, lambda sn: sn.values(prefix="k")), TypeError, "prefix"),
    "snapshot-items-start": (lambda s: _snap(s, lambda sn: sn.items(1)), TypeError, "start"),
    "snapshot-history-key": (lambda s: _snap(s, lambda sn: _list(sn.history("k"))), TypeError, "key"),
    "snapshot-history-keyspace": (lambda s: _snap(s, lambda sn: _list(sn.history(b"k", keyspace=1))),
                                  TypeError, "keyspace"),
    "snapshot-getitem": (lambda s: _snap(s, lambda sn: sn["k"]), TypeError, "key"),
}

# Writes and maintenance: on the writer.
WRITES: dict[str, Case] = {
    "put-key": (lambda s: s.put(None, b"v"), TypeError, "key"),
    "set_history_floor-negative": (lambda s: s.set_history_floor(-1), ValueError, "version"),
    "put-value": (lambda s: s.put(b"k", None), TypeError, "value"),
    "put-sync": (lambda s: s.put(b"k", b"v", sync=0), TypeError, "sync"),
    "setitem-key": (lambda s: s.__setitem__("k", b"v"), TypeError, "key"),
    "setitem-value": (lambda s: s.__setitem__(b"k", "v"), TypeError, "value"),
    "delitem-key": (lambda s: s.__delitem__("k"), TypeError, "key"),
    "delete-sync": (lambda s: s.delete(b"k", sync="yes"), TypeError, "sync"),
    "delete_range-start": (lambda s: s.delete_range("a", b"b"), TypeError, "start"),
    "delete_range-end": (lambda s: s.delete_range(b"a", None), TypeError, "end"),
    "delete_range-empty": (lambda s: s.delete_range(b"b", b"a"), ValueError, "end"),
    "delete_range-equal": (lambda s: s.delete_range(b"b", b"b"), ValueError, "end"),
    "delete_range-sync": (lambda s: s.delete_range(b"a", b"b", sync="yes"), TypeError, "sync"),
    "keyspace-delete_range-start": (lambda s: s.keyspace("index").delete_range("a", b"b"), TypeError,
                                    "start"),
    "keyspace-delete-sync": (lambda s: s.keyspace("index").delete(b"a", sync=1), TypeError, "sync"),
    "drop_keyspace-int": (lambda s: s.drop_keyspace(5), TypeError, "keyspace name"),
    "drop_keyspace-bytes": (lambda s: s.drop_keyspace(b"index"), TypeError, "keyspace name"),
    "drop_keyspace-default": (lambda s: s.drop_keyspace("default"), ValueError, "default"),
    "compact-keyspace-int": (lambda s: s.compact(5), TypeError, "keyspace"),
    "compact-keyspace-bytes": (lambda s: s.compact(b"index"), TypeError, "keyspace"),
    "compact-start": (lambda s: s.compact(start=1), TypeError, "start"),
    "checkpoint-none": (lambda s: s.checkpoint(None), TypeError, "dest"),
    "checkpoint-int": (lambda s: s.checkpoint(5), TypeError, "dest"),
    "checkpoint-empty": (lambda s: s.checkpoint(""), ValueError, "dest"),
    "checkpoint-inside": (lambda s: s.checkpoint(Path(s.path) / "copy"), ValueError, "inside"),
    "batch-sync": (lambda s: s.batch(sync=1), TypeError, "sync"),
    "batch-put-key": (lambda s: s.batch().put(None, b"v"), TypeError, "key"),
    "batch-delete_range-start": (lambda s: s.batch().delete_range("a", b"b"), TypeError, "start"),
    "batch-delete_range-empty": (lambda s: s.batch().delete_range(b"b", b"a"), ValueError, "end"),
    "batch-delete_range-keyspace": (lambda s: s.batch().delete_range(b"a", b"b", keyspace=3), TypeError,
                                    "keyspace"),
    "batch-put-keyspace-bytes": (lambda s: s.batch().put(b"a", b"b", keyspace=b"index"), TypeError,
                                 "keyspace"),
    "batch-delete-keyspace": (lambda s: s.batch().delete(b"a", keyspace=1), TypeError, "keyspace"),
}

LOG: dict[str, Case] = {
    "append-none": (lambda log: log.append(None), TypeError, "record"),
    "append-int": (lambda log: log.append(5), TypeError, "record"),
    "append_many-str": (lambda log: log.append_many("ab"), TypeError, "records"),
    "append_many-item": (lambda log: log.append_many(["a"]), TypeError, "records"),
    "read-end": (lambda log: _list(log.read(end="1")), TypeError, "end"),
    "read-end-negative": (lambda log: _list(log.read(end=-5)), ValueError, "end"),
    "read-start-bool": (lambda log: _list(log.read(start=True)), TypeError, "start"),
    "read-limit-negative": (lambda log: _list(log.read(limit=-1)), ValueError, "limit"),
    "read-limit-str": (lambda log: _list(log.read(limit="1")), TypeError, "limit"),
    "read-limit-bool": (lambda log: _list(log.read(limit=True)), TypeError, "limit"),
    "read-check_gaps": (lambda log: _list(log.read(check_gaps="no")), TypeError, "check_gaps"),
    "follow-start": (lambda log: log.follow("1"), TypeError, "start"),
    "follow-timeout-str": (lambda log: log.follow(timeout="1"), TypeError, "timeout"),
    "follow-timeout-bool": (lambda log: log.follow(timeout=True), TypeError, "timeout"),
    "follow-timeout-negative": (lambda log: log.follow(timeout=-1), ValueError, "timeout"),
    "follow-timeout-nan": (lambda log: log.follow(timeout=float("nan")), ValueError, "timeout"),
    "get-float": (lambda log: log.get(1.0), TypeError, "seq"),
    "sync-bool": (lambda log: log.sync(True), TypeError, "upto_seq"),
    "sync-float": (lambda log: log.sync(1.0), TypeError, "upto_seq"),
    "truncate_before-bool": (lambda log: log.truncate_before(True), TypeError, "seq"),
    "wait_durable-float": (lambda log: log.wait_durable(1.0), TypeError, "seq"),
}

# Module functions: paths, options, tools, backups (``base`` is a scratch directory).
FUNCTIONS: dict[str, Case] = {
    "open-none": (lambda base: banyanstore.open(None), TypeError, "path"),
    "open-int": (lambda base: banyanstore.open(5), TypeError, "path"),
    "open-empty": (lambda base: banyanstore.open(""), ValueError, "path"),
    "open-nul": (lambda base: banyanstore.open("a\0b"), ValueError, "path"),
    "open-read_only": (lambda base: banyanstore.open(base / "o", read_only="yes"), TypeError, "read_only"),
    "open-options": (lambda base: banyanstore.open(base / "o", options=5), TypeError, "options"),
    "open_log-none": (lambda base: banyanstore.open_log(None), TypeError, "path"),
    "open_log-segment_size": (lambda base: banyanstore.open_log(base / "o", segment_size=-1), ValueError,
                              "segment_size"),
    "aio-open-none": (lambda base: asyncio.run(banyanstore.aio.open(None)), TypeError, "path"),
    "dbm-open-none": (lambda base: banyanstore.dbm.open(None, "c"), TypeError, "file"),
    "dbm-open-flag": (lambda base: banyanstore.dbm.open(base / "o", "x"), ValueError, "flag"),
    "options-from_file-int": (lambda base: banyanstore.Options.from_file(0), TypeError, "path"),
    "options-from_file-none": (lambda base: banyanstore.Options.from_file(None), TypeError, "path"),
    "verify_path-none": (lambda base: tools.verify_path(None), TypeError, "path"),
    "verify_path-empty": (lambda base: tools.verify_path(""), ValueError, "path"),
    "repair-none": (lambda base: tools.repair(None), TypeError, "path"),
    "repair-accept_lost_segment": (lambda base: tools.repair(base / "s", dry_run=True,
                                                             accept_lost_segment="yes"),
                                   TypeError, "accept_lost_segment"),
    "backup-store": (lambda base: banyanstore.backup(5, base / "b"), TypeError, "store_or_path"),
    "backup-parallel-zero": (lambda base: banyanstore.backup(base / "s", base / "b", parallel=0), ValueError,
                             "parallel"),
    "backup-parallel-str": (lambda base: banyanstore.backup(base / "s", base / "b", parallel="4"), TypeError,
                            "parallel"),
    "backup-parallel-bool": (lambda base: banyanstore.backup(base / "s", base / "b", parallel=True),
                             TypeError, "parallel"),
    "backup-progress": (lambda base: banyanstore.backup(base / "s", base / "b", progress=5), TypeError,
                        "progress"),
    "restore-url": (lambda base: banyanstore.restore(None, base / "r"), TypeError, "url"),
    "restore-dest-none": (lambda base: banyanstore.restore(base / "b", None), TypeError, "dest"),
    "restore-dest-empty": (lambda base: banyanstore.restore(base / "b", ""), ValueError, "dest"),
    "restore-overwrite": (lambda base: banyanstore.restore(base / "b", base / "r", overwrite="no"),
                          TypeError, "overwrite"),
    "restore-backup_id": (lambda base: banyanstore.restore(base / "b", base / "r", backup_id=5), TypeError,
                          "backup_id"),
    "list_backups-none": (lambda base: banyanstore.list_backups(None), TypeError, "url"),
    "list_backups-empty": (lambda base: banyanstore.list_backups(""), ValueError, "url"),
    "verify_backup-backup_id": (lambda base: banyanstore.verify_backup(base / "b", backup_id=5), TypeError,
                                "backup_id"),
    "prune_backups-keep-zero": (lambda base: banyanstore.prune_backups(base / "b", keep=0), ValueError,
                                "keep"),
    "prune_backups-keep-str": (lambda base: banyanstore.prune_backups(base / "b", keep="1"), TypeError,
                               "keep"),
}


def _snap(store: Any, read: Callable[[Any], Any]) -> Any:
    with store.snapshot() as snap:
        return read(snap)


def _check(call: Callable[[Any], Any], arg: Any, error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        call(arg)


@pytest.mark.parametrize("which", ["writer", "reader"])
@pytest.mark.parametrize("case", list(READS), ids=str)
def test_reads(stores: dict[str, Any], which: str, case: str) -> None:
    store = stores[which]
    before = (stores["writer"].version, stores["writer"].keyspaces())
    call, error, name = READS[case]
    _check(call, store, error, name)
    assert (stores["writer"].version, stores["writer"].keyspaces()) == before


@pytest.mark.parametrize("case", list(WRITES), ids=str)
def test_writes(stores: dict[str, Any], case: str) -> None:
    store = stores["writer"]
    before = (store.version, store.keyspaces(), store.get(b"k"))
    call, error, name = WRITES[case]
    _check(call, store, error, name)
    assert (store.version, store.keyspaces(), store.get(b"k")) == before


@pytest.mark.parametrize("case", list(LOG), ids=str)
def test_log(stores: dict[str, Any], case: str) -> None:
    log = stores["log"]
    call, error, name = LOG[case]
    _check(call, log, error, name)
    assert log.last_seq == 1 and list(log.read()) == [(1, b"x")]


@pytest.mark.parametrize("case", list(FUNCTIONS), ids=str)
def test_functions(stores: dict[str, Any], case: str) -> None:
    base = stores["base"]
    listing = sorted(p.name for p in base.iterdir())
    call, error, name = FUNCTIONS[case]
    _check(call, base, error, name)
    assert sorted(p.name for p in base.iterdir()) == listing  # nothing created


@pytest.mark.parametrize("which", ["writer", "reader"])
def test_a_default_given_as_the_second_argument_says_to_pass_it_by_keyword(
        stores: dict[str, Any], which: str) -> None:
    """``get(key, b"-")`` -- plyvel's ``DB.get(key, default)`` and ``dict.get`` -- passes
    the default as the version: the TypeError said only "version must be an int, not
    bytes", not that the second argument is the version and a default goes by keyword."""
    store = stores[which]
    for default in (b"-", "-", bytearray(b"-")):
        with pytest.raises(TypeError, match=r"version must be an int, not \w+ \(.*get\(key, default=") as err:
            store.get(b"absent", default)
        assert "second argument" in str(err.value)
    with pytest.raises(TypeError, match=r"^version must be an int, not float$"):
        store.get(b"absent", 1.0)  # not a default: no hint
    assert store.get(b"absent", None, b"-") == b"-"
