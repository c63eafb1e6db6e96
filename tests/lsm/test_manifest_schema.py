"""Every decoded manifest edit is schema-checked: an edit with a valid CRC but a wrong
JSON shape (wrong types, out-of-range numbers, unknown keys, bad hex, unknown
keyspaces...) is a CorruptionError naming the manifest and the record's offset -- for
``open()`` and for ``banyanstore verify`` alike, never a TypeError/KeyError/ValueError
or a traceback.

The fuzz test appends random well-framed edits (a valid length and CRC around a random
JSON object over the manifest's tags) to a real store's manifest.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import banyanstore
from banyanstore.errors import BanyanStoreError, CorruptionError
from banyanstore.tools.verify import verify_path

OPTS: dict[str, Any] = dict(io_mode="sync", compaction=False, compression="none")
N = 200
TAGS = ["format", "add_keyspace", "keyspace_ttl", "next_file", "last_version", "flushed_version",
        "wal_seq", "history_floor", "remove_tables", "add_tables", "time_map", "unfinished_from"]
TABLE_KEYS = ["ks", "file", "size", "smallest", "largest", "min_v", "max_v", "entries", "tombstones"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, bytes]]:
    """A closed store (two keyspaces, one table each) and its manifest's bytes."""
    path = tmp_path_factory.mktemp("schema") / "db"
    with banyanstore.open(path, **OPTS) as store:
        idx = store.keyspace("idx")
        for i in range(N):
            store.put(b"k%04d" % i, b"v%d" % i)
            idx.put(b"i%04d" % i, b"%d" % i)
        store.flush()
    manifest = path / (path / "CURRENT").read_text().split()[2]
    yield path, manifest, manifest.read_bytes()


def frame(edit: Any) -> bytes:
    payload = json.dumps(edit, separators=(",", ":"), allow_nan=True).encode()
    return struct.pack("<II", len(payload), crc32c.crc32c(payload)) + payload


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["", "00", "zz", "6b30", "idx", "default", "0"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=12)
small_ints = st.one_of(st.integers(-3, 8), st.integers(1 << 63, 1 << 65), st.floats(0, 5))
table_objs = st.fixed_dictionaries({k: st.one_of(small_ints, json_values, st.sampled_from(["6b30", "zz"]))
                                    for k in TABLE_KEYS}, optional={"extra": scalars})
near_miss = {
    "add_keyspace": st.lists(st.one_of(small_ints, st.text(max_size=5)), max_size=3),
    "keyspace_ttl": st.lists(st.one_of(small_ints, st.none(), st.floats()), max_size=3),
    "remove_tables": st.lists(st.lists(small_ints, max_size=3), max_size=3),
    "add_tables": st.lists(st.one_of(table_objs, json_values), max_size=2),
    "time_map": st.lists(st.lists(small_ints, max_size=3), max_size=3),
}
edits = st.dictionaries(
    st.sampled_from(TAGS + ["_keyspaces", "_ttls", "bogus"]),
    st.one_of(json_values, small_ints), min_size=1, max_size=4,
).flatmap(lambda d: st.fixed_dictionaries(
    {k: near_miss.get(k, st.just(v)) if k in near_miss else st.just(v) for k, v in d.items()}))


def check_open_and_verify(path: Path) -> None:
    """open() raises CorruptionError or opens a readable store; verify never crashes and
    reports an error exactly when open() refused."""
    refused = False
    try:
        with banyanstore.open(path, read_only=True, **OPTS) as store:
            for name in store.keyspaces():
                for _ in store.keyspace(name).scan():
                    pass
    except CorruptionError as exc:
        refused = True
        assert "MANIFEST" in str(exc.path) or "tables" in str(exc.path) or "wal" in str(exc.path), exc
    except BanyanStoreError as exc:  # e.g. VersionUnavailableError: still a documented error
        refused = not isinstance(exc, banyanstore.errors.VersionUnavailableError)
    report = verify_path(str(path))
    if refused:
        assert not report.ok


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=edits)
def test_fuzzed_last_edit(base: tuple[Path, Path, bytes], edit: dict[str, Any]) -> None:
    path, manifest, original = base
    manifest.write_bytes(original + frame(edit))
    try:
        check_open_and_verify(path)
    finally:
        manifest.write_bytes(original)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=edits)
def test_fuzzed_middle_edit(base: tuple[Path, Path, bytes], edit: dict[str, Any]) -> None:
    """The same edit followed by an intact one (a later ``history_floor``)."""
    path, manifest, original = base
    manifest.write_bytes(original + frame(edit) + frame({"history_floor": 0}))
    try:
        check_open_and_verify(path)
    finally:
        manifest.write_bytes(original)


WRONG = [
    ({"next_file": "7"}, "next_file"),
    ({"next_file": -1}, "next_file"),
    ({"last_version": 1.5}, "last_version"),
    ({"wal_seq": True}, "wal_seq"),
    ({"history_floor": 1 << 64}, "history_floor"),
    ({"add_keyspace": [2]}, "add_keyspace"),
    ({"add_keyspace": [2, 7]}, "add_keyspace"),
    ({"add_keyspace": [0, "other"]}, "add_keyspace"),
    ({"add_keyspace": [5, "idx"]}, "add_keyspace"),
    ({"keyspace_ttl": [1, "x"]}, "keyspace_ttl"),
    ({"keyspace_ttl": [1, math.inf]}, "keyspace_ttl"),
    ({"keyspace_ttl": [1, -1]}, "keyspace_ttl"),
    ({"keyspace_ttl": [9, 5]}, "keyspace_ttl"),
    ({"remove_tables": [[0]]}, "remove_tables"),
    ({"remove_tables": 3}, "remove_tables"),
    ({"add_tables": [{"ks": 0}]}, "add_tables"),
    ({"add_tables": [{"ks": 0, "file": 99, "size": 10, "smallest": "zz", "largest": "00",
                      "min_v": 1, "max_v": 1, "entries": 1, "tombstones": 0}]}, "smallest"),
    ({"add_tables": [{"ks": 7, "file": 99, "size": 10, "smallest": "00", "largest": "00",
                      "min_v": 1, "max_v": 1, "entries": 1, "tombstones": 0}]}, "keyspace"),
    ({"add_tables": [{"ks": 0, "file": 99, "size": 10, "smallest": "01", "largest": "00",
                      "min_v": 1, "max_v": 1, "entries": 1, "tombstones": 0}]}, "smallest"),
    ({"add_tables": [{"ks": 0, "file": 99, "size": 10, "smallest": "00", "largest": "00",
                      "min_v": 5, "max_v": 1, "entries": 1, "tombstones": 0}]}, "min_v"),
    ({"time_map": [[1]]}, "time_map"),
    ({"time_map": {"a": 1}}, "time_map"),
    ({"format": "1"}, "format"),
    ({"_keyspaces": [[0, "default"]]}, "_keyspaces"),
    ({"bogus": 1}, "unknown"),
    ({}, "empty"),
    ([1, 2], "object"),
    ("text", "object"),
]


@pytest.mark.parametrize("edit,what", WRONG, ids=[w + str(i) for i, (_e, w) in enumerate(WRONG)])
def test_wrong_shapes_name_file_and_offset(base: tuple[Path, Path, bytes], edit: Any, what: str) -> None:
    path, manifest, original = base
    manifest.write_bytes(original + frame(edit))
    try:
        for ro in (True, False):
            with pytest.raises(CorruptionError, match=what) as info:
                banyanstore.open(path, read_only=ro, **OPTS)
            assert info.value.path == str(manifest) and info.value.offset == len(original)
        report = verify_path(str(path))
        assert not report.ok and any(p.offset == len(original) for p in report.problems)
    finally:
        manifest.write_bytes(original)
