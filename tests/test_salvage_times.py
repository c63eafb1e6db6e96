"""Salvage and the time map (lsm/timemap.py): a salvage that cannot read every manifest
edit's ``(version, second)`` samples must never make live data of a TTL keyspace
expire.  A version whose write time no surviving sample or WAL record bounds counts as
written when the salvage ran; the report says so.

Each store: a keyspace with a 30-day TTL holding fresh keys, flushed; more flushes in
the default keyspace after it.  The manifest is then damaged three ways -- a flipped
bit in, zeros over, or the whole record of the first edit that carries time samples --
and ``repair`` salvages.  Then a store with hundreds of samples loses each of its edits
in turn: no version may be dated earlier than the writer's own map dated it.
"""

from __future__ import annotations

import bisect
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.crc import crc32c
from banyanstore.lsm.manifest import FILE_HEADER, replay, walk_manifest
from banyanstore.tools.repair import repair
from banyanstore.tools.verify import verify_path

TTL = 30 * 86400
N = 50
OPTS: dict[str, Any] = dict(io_mode="sync", compaction=False, compression="none")


def manifest_of(path: Path) -> Path:
    return path / (path / "CURRENT").read_text().split()[2]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """The TTL keyspace, then more keyspaces (so the first edit with time samples lies
    past byte 512), the TTL keyspace's keys, flushed, then three flushes of the default
    keyspace.  Every write an hour ago by a clock that stands still, so the first flush
    edit is the only one with a time sample."""
    path = tmp_path / "db"
    written = time.time() - 3600
    with banyanstore.open(path, clock=lambda: written, **OPTS) as s:
        sess = s.keyspace("sess", ttl=TTL)
        for i in range(8):
            s.keyspace(f"padding-keyspace-{i}")
        for i in range(N):
            sess.put(b"s%02d" % i, b"alive")
        s.flush()
        for r in range(3):
            for i in range(N):
                s.put(b"k%02d" % i, b"round%d" % r)
            s.flush()
    assert visible(path) == N
    return path


def first_sampled_edit(path: Path) -> tuple[int, int]:
    """Offset and length of the first manifest record whose edit carries time samples."""
    m = manifest_of(path)
    for rec in walk_manifest(m.read_bytes(), str(m)):
        assert rec.edit is not None
        if rec.edit.get("time_map") and rec.offset > FILE_HEADER.size:
            return rec.offset, rec.length
    raise AssertionError("no edit carries time samples")


def visible(path: Path, clock: float | None = None) -> int:
    with banyanstore.open(path, read_only=True, clock=None if clock is None else lambda: clock) as s:
        return sum(1 for _ in s.keyspace("sess").scan())


def check_salvage_keeps_them_alive(path: Path) -> None:
    """repair salvages without loss, says how it dated the versions, and every key of
    the TTL keyspace stays visible -- also after compact() -- until its TTL has run
    from the salvage on."""
    began = time.time()
    res = repair(str(path))
    assert res.lost == [], res.lost
    assert any("salvage" in d for d in res.done), res.done
    assert visible(path) == N
    assert any("written at" in d and "this salvage" in d for d in res.done), res.done
    assert verify_path(str(path)).ok
    with banyanstore.open(path, **OPTS) as s:
        s.compact()
        assert sum(t["entries"] for t in s.stats()["keyspaces"]["sess"]["table_list"]) == N
        assert sum(1 for _ in s.keyspace("sess").scan()) == N
    assert visible(path, began + TTL - 60) == N  # the TTL runs from the salvage ...
    assert visible(path, time.time() + TTL + 60) == 0  # ... and still ends


def test_flipped_bit_in_the_first_sampled_edit(store: Path) -> None:
    offset, _length = first_sampled_edit(store)
    m = manifest_of(store)
    data = bytearray(m.read_bytes())
    at = offset + 8 + data[offset + 8:].index(b'"time_map"') + 2
    data[at] ^= 0x01
    m.write_bytes(bytes(data))
    with pytest.raises(banyanstore.CorruptionError):
        banyanstore.open(store, read_only=True)
    check_salvage_keeps_them_alive(store)


def test_zeroed_sector_over_the_first_sampled_edit(store: Path) -> None:
    offset, length = first_sampled_edit(store)
    m = manifest_of(store)
    data = bytearray(m.read_bytes())
    assert 512 <= offset < 1024 < len(data), (offset, length, len(data))
    data[512:1024] = bytes(512)
    m.write_bytes(bytes(data))
    check_salvage_keeps_them_alive(store)


def test_first_sampled_edit_left_out(store: Path) -> None:
    """Every record keeps a valid checksum; only the edit is missing (its table is then
    named by no edit, so repair salvages)."""
    offset, length = first_sampled_edit(store)
    m = manifest_of(store)
    data = m.read_bytes()
    m.write_bytes(data[:offset] + data[offset + 8 + length:])
    length_left, crc = struct.unpack_from("<II", m.read_bytes(), offset)  # still framed
    assert crc == crc32c(m.read_bytes()[offset + 8:offset + 8 + length_left])
    check_salvage_keeps_them_alive(store)


def test_an_intact_time_map_is_kept(store: Path) -> None:
    """A salvage for another reason (a default-keyspace table is damaged; every
    manifest edit is intact) dates each version when it was written, not at the
    salvage: the TTL keyspace's keys, an hour old, expire when they would have."""
    tables = sorted((store / "tables").glob("*.sst"))
    data = bytearray(tables[-1].read_bytes())
    data[20] ^= 0x01
    tables[-1].write_bytes(bytes(data))
    res = repair(str(store))
    assert [loss.what for loss in res.lost] == [str(tables[-1])]
    assert not any("this salvage" in d for d in res.done), res.done
    assert visible(store) == N
    assert visible(store, time.time() + TTL - 3000) == 0


def time_map_of(path: Path) -> list[tuple[int, int]]:
    m = manifest_of(path)
    return [(v, s) for v, s in replay(m.read_bytes(), str(m)).time_map.samples]


def second_of(samples: list[tuple[int, int]], version: int) -> int:
    """The second the time map dates ``version`` to (lsm/timemap.py)."""
    return samples[bisect.bisect_right(samples, (version, 1 << 62)) - 1][1]


@pytest.fixture(scope="module")
def clocked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]], int]:
    """A store opened and written three times, by a clock that ticks 0.37 s a write (with
    quiet gaps), so its time map has hundreds of samples spread over several flush
    edits; its time map and last version."""
    path = tmp_path_factory.mktemp("clocked") / "db"
    now = [time.time() - 10 * 86400]

    def clock() -> float:
        now[0] += 0.37
        return now[0]
    for opening in range(3):
        with banyanstore.open(path, memtable_size=64 * 1024, clock=clock, **OPTS) as s:
            sess = s.keyspace("sess", ttl=TTL)
            for i in range(600):
                (sess if i % 3 else s).put(b"k%04d" % (i % 250), b"%d-%d" % (opening, i) + b"x" * 200)
                if i % 97 == 0:
                    now[0] += 5
    samples = time_map_of(path)
    assert len(samples) > 500
    return path, samples, 1800


def damaged_copies(base: Path, tmp_path: Path) -> list[tuple[str, Path]]:
    """Copies of ``base``, each damaged one way: one manifest edit left out, one edit's
    byte flipped (every edit but the first), a table's byte flipped."""
    m = manifest_of(base)
    data = m.read_bytes()
    out = []
    for rec in list(walk_manifest(data, str(m)))[1:]:
        for how in ("left out", "flipped"):
            copy = tmp_path / f"{rec.offset}-{how.replace(' ', '-')}"
            shutil.copytree(base, copy)
            if how == "left out":
                damaged = data[:rec.offset] + data[rec.offset + 8 + rec.length:]
            else:
                damaged = data[:rec.offset + 11] + bytes([data[rec.offset + 11] ^ 1]) + data[rec.offset + 12:]
            manifest_of(copy).write_bytes(damaged)
            out.append((f"edit at {rec.offset} {how}", copy))
    copy = tmp_path / "table"
    shutil.copytree(base, copy)
    table = sorted((copy / "tables").glob("*.sst"))[0]
    table.write_bytes(table.read_bytes()[:30] + b"\xff" + table.read_bytes()[31:])
    out.append(("table damaged", copy))
    return out


def test_salvage_never_dates_a_version_earlier(clocked: tuple[Path, list[tuple[int, int]], int],
                                               tmp_path: Path) -> None:
    """Whatever edit is lost, every version's second in the salvaged time map is at or
    after the one the writer's own map gave it; with every edit intact (a damaged table
    is the reason to salvage) the two agree."""
    base, samples, top = clocked
    for what, copy in damaged_copies(base, tmp_path):
        res = repair(str(copy))
        salvaged = time_map_of(copy)
        early = [v for v in range(1, top + 1) if second_of(salvaged, v) < second_of(samples, v)]
        assert early == [], (what, early[:5], res.done)
        if what == "table damaged":
            assert any("salvage" in d for d in res.done)
            assert all(second_of(salvaged, v) == second_of(samples, v) for v in range(1, top + 1))


def test_a_clock_stepped_back_before_a_crash_dates_nothing_earlier(tmp_path: Path) -> None:
    """Keys of a TTL keyspace written and flushed, then the clock stepped back 1000 s
    and more writes, left in the WAL by a crash: the writer's map dates those writes
    at the keys' second (it never goes back), and so must a salvage (here for a damaged
    default-keyspace table) -- a WAL record's earlier second must not date the keys
    before it, which made them expire up to 1000 s early."""
    import subprocess
    import sys
    path = tmp_path / "db"
    written = int(time.time()) - 2000
    child = f"""
import os, banyanstore
now = [{written} + 1000.5]
s = banyanstore.open({str(path)!r}, clock=lambda: now[0], io_mode="sync", compaction=False,
                     compression="none")
sess = s.keyspace("sess", ttl=1500)
for i in range({N}):
    sess.put(b"s%02d" % i, b"alive")
s.flush()
for i in range({N}):
    s.put(b"k%02d" % i, b"v")
s.flush()
now[0] -= 1000  # the clock is stepped back
for i in range({N}):
    s.put(b"w%02d" % i, b"v", sync=True)
os._exit(0)  # no close: the last writes are in the WAL only
"""
    subprocess.run([sys.executable, "-c", child], check=True)
    before = time_map_of(path)
    assert visible(path) == N  # written "1000 s ago" by the clock, with a TTL of 1500 s
    table = sorted((path / "tables").glob("*.sst"))[-1]  # the default keyspace's
    table.write_bytes(table.read_bytes()[:20] + bytes([table.read_bytes()[20] ^ 1]) + table.read_bytes()[21:])
    res = repair(str(path))
    assert [loss.what for loss in res.lost] == [str(table)]
    salvaged = time_map_of(path)
    top = 3 * N
    early = [v for v in range(1, top + 1) if second_of(salvaged, v) < second_of(before, v)]
    assert early == [], (early[:5], before, salvaged)
    assert visible(path) == N
