"""``banyanstore repair`` of a damaged table keeps every entry of its intact blocks:
one damaged data block costs that block's keys, not the table (tools/rescue.py).

Each test writes a store whose tables' blocks are known (entries read block by block
before the damage), damages one part of a table, repairs, and compares the store
with what was written: every key of an intact block holds its newest value, a key
of a lost block none -- or, where an older table holds one, its older value (as after
LevelDB's repair) -- and the report names the lost key ranges.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import banyanstore
from banyanstore.cli import main
from banyanstore.sstable.format import FOOTER, FOOTER_SIZE
from banyanstore.sstable.reader import TableReader
from banyanstore.tools.common import make_env
from banyanstore.tools.repair import repair
from banyanstore.tools.verify import verify_path

KEYS = 4320
Blocks = list[tuple[int, int, list[bytes]]]  # (offset, stored length, keys)


def _key(i: int) -> bytes:
    return b"k%05d" % i


def _write(path: Path, n: int = KEYS, step: int = 1, tag: bytes = b"v",
           compression: str = "lz4") -> dict[bytes, bytes | None]:
    """Put every ``step``-th of ``n`` keys (one flush: one table); its model."""
    model: dict[bytes, bytes | None] = {}
    with banyanstore.open(str(path), block_size=1024, compression=compression) as s:
        for i in range(0, n, step):
            model[_key(i)] = tag + b"%05d" % i * 6
            s.put(_key(i), model[_key(i)])
        s.flush()
    return model


def _table(store: Path) -> str:
    """The newest table."""
    return str(max((store / "tables").glob("*.sst")))


def _blocks(path: str) -> Blocks:
    out = []
    with TableReader.open(make_env(), path, None) as r:
        for no, block in enumerate(r.iter_blocks()):
            _f, off, length = r.block_request(no)
            out.append((off, length, sorted(set(block.keys))))
    return out


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def _contents(store: Path) -> dict[bytes, bytes]:
    with banyanstore.open(str(store)) as s:
        return dict(s.scan())


def _repair_cli(store: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["repair", str(store)])
    return code, capsys.readouterr().out


def _check(store: Path, model: dict[bytes, bytes | None], lost_keys: set[bytes]) -> None:
    """Every key the model holds a value for is there with it, but those of
    ``lost_keys`` -- absent; no key holds a value the model does not."""
    assert verify_path(str(store)).ok
    got = _contents(store)
    want = {k: v for k, v in model.items() if v is not None and k not in lost_keys}
    assert got == want


def _check_older(store: Path, model: dict[bytes, bytes | None], lo: bytes, hi: bytes) -> None:
    """As _check, but the keys of the lost range ``(lo, hi]`` hold the older table's value
    (``_write(tag=b"old")``: every key)."""
    assert verify_path(str(store)).ok
    got = _contents(store)
    older = {k: b"old" + k[1:] * 6 for k in model}
    want = {k: older[k] if lo < k <= hi else v for k, v in model.items()}
    assert got == {k: v for k, v in want.items() if v is not None}


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_a_damaged_data_block_costs_only_its_keys(tmp_path: Path, which: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Failed before: the whole table (every key) was moved to lost/."""
    store = tmp_path / "s"
    model = _write(store)
    table = _table(store)
    blocks = _blocks(table)
    no = {"first": 0, "middle": len(blocks) // 2, "last": len(blocks) - 1}[which]
    off, length, keys = blocks[no]
    _flip(table, off + length // 2)
    code, out = _repair_cli(store, capsys)
    assert code == 1, out
    first = keys[0] if no == 0 else blocks[no - 1][2][-1]
    assert f"keys {first.decode()!r}..{keys[-1].decode()!r}" in out
    assert f"the table lost {len(keys)} of its {KEYS} entries in all" in out
    _check(store, model, set(keys))
    moved = list((store / "lost").glob("*/tables/" + os.path.basename(table)))
    assert len(moved) == 1  # the damaged original is kept, not deleted


def test_several_damaged_blocks_are_each_reported(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s"
    model = _write(store)
    table = _table(store)
    blocks = _blocks(table)
    damaged = [3, 4, 40]
    for no in damaged:
        _flip(table, blocks[no][0] + 7)
    code, out = _repair_cli(store, capsys)
    assert code == 1
    assert out.count("NOT recovered:") == len(damaged), out
    _check(store, model, {k for no in damaged for k in blocks[no][2]})


@pytest.mark.parametrize("part", ["index", "footer", "filter", "properties"])
def test_damaged_meta_blocks_lose_nothing(tmp_path: Path, part: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The data blocks are found through the index, or by their own framing when the
    index or the footer that locates it is damaged.  Failed before: the table was lost."""
    store = tmp_path / "s"
    model = _write(store)
    table = _table(store)
    size = os.path.getsize(table)
    with open(table, "rb") as f:
        f.seek(size - FOOTER_SIZE)
        index_off, _il, filter_off, _fl, props_off, *_rest = FOOTER.unpack(f.read(FOOTER_SIZE))
    where = {"index": index_off + 20, "footer": size - FOOTER_SIZE + 3,
             "filter": filter_off + 9, "properties": props_off + 2}[part]
    _flip(table, where)
    assert not verify_path(str(store)).ok
    code, out = _repair_cli(store, capsys)
    assert code == 0, out
    assert "NOT recovered:" not in out
    _check(store, model, set())
    assert list((store / "lost").glob("*/tables/" + os.path.basename(table)))


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_without_the_index_blocks_are_framed_by_their_checksums(
        tmp_path: Path, compression: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Raw and compressed blocks alike: every block is found from its trailer."""
    store = tmp_path / "s"
    model = _write(store, compression=compression)
    table = _table(store)
    with open(table, "rb") as f:
        f.seek(os.path.getsize(table) - FOOTER_SIZE)
        index_off = FOOTER.unpack(f.read(FOOTER_SIZE))[0]
    _flip(table, index_off + 30)
    code, out = _repair_cli(store, capsys)
    assert code == 0 and f"from the {KEYS} entries of its intact blocks" in out, out
    _check(store, model, set())


def test_a_damaged_index_and_data_block_lose_the_rest_of_the_data(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without the index, framing stops at a damaged block: the blocks after it are lost
    too, their keys from the last rescued one to the table's largest."""
    store = tmp_path / "s"
    model = _write(store)
    table = _table(store)
    blocks = _blocks(table)
    with open(table, "rb") as f:
        f.seek(os.path.getsize(table) - FOOTER_SIZE)
        index_off = FOOTER.unpack(f.read(FOOTER_SIZE))[0]
    _flip(table, index_off + 20)
    _flip(table, blocks[10][0] + 5)
    code, out = _repair_cli(store, capsys)
    assert code == 1
    last_kept = blocks[9][2][-1]
    assert f"keys {last_kept.decode()!r}..{_key(KEYS - 1).decode()!r}" in out, out
    _check(store, model, {k for _o, _l, keys in blocks[10:] for k in keys})


def test_a_cut_table_is_lost_whole_and_says_why(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Cut, a table's range-tombstone block and properties are gone: whether it held range
    tombstones (which may delete its own entries) cannot be told, so none of it is kept."""
    store = tmp_path / "s"
    _write(store)
    table = _table(store)
    os.truncate(table, os.path.getsize(table) // 2)
    code, out = _repair_cli(store, capsys)
    assert code == 1
    assert "whether it held range tombstones cannot be told" in out, out
    assert verify_path(str(store)).ok
    assert _contents(store) == {}


def _two_tables(store: Path) -> tuple[dict[bytes, bytes | None], str]:
    """An older table of every key (values "old"), a newer one of every even key: a
    tombstone for every fourth, a new value for the others; the newer table's path."""
    model = _write(store, tag=b"old")
    with banyanstore.open(str(store), block_size=1024) as s:
        for i in range(0, KEYS, 2):
            if i % 4 == 0:
                s.delete(_key(i))
                model[_key(i)] = None
            else:
                model[_key(i)] = b"new%05d" % i
                s.put(_key(i), model[_key(i)])
        s.flush()
    return model, _table(store)


def test_a_lost_blocks_keys_keep_their_older_tables_values(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The newer table's lost block held tombstones and new values of its keys; the older
    table still holds their old values, which show again (as the report says) -- and the
    odd keys of the range, which only the older table holds, keep theirs: nothing intact
    is hidden."""
    store = tmp_path / "s"
    model, table = _two_tables(store)
    blocks = _blocks(table)
    no = 5
    _flip(table, blocks[no][0] + 11)
    code, out = _repair_cli(store, capsys)
    assert code == 1
    lo, hi = blocks[no - 1][2][-1], blocks[no][2][-1]
    assert f"keys {lo.decode()!r}..{hi.decode()!r}" in out
    assert "may show again" in out
    _check_older(store, model, lo, hi)


def test_range_tombstones_of_a_rescued_table_are_kept(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s"
    model = _write(store, tag=b"old")
    with banyanstore.open(str(store), block_size=1024) as s:
        for i in range(1, KEYS, 2):
            model[_key(i)] = b"new%05d" % i
            s.put(_key(i), model[_key(i)])
        s.delete_range(_key(3000), _key(3100))
        for i in range(3000, 3100):
            model[_key(i)] = None
        s.flush()
    table = _table(store)
    blocks = _blocks(table)
    _flip(table, blocks[2][0] + 3)
    code, out = _repair_cli(store, capsys)
    assert code == 1
    lo, hi = blocks[1][2][-1], blocks[2][2][-1]
    _check_older(store, model, lo, hi)


def test_a_damaged_range_tombstone_block_loses_the_table(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Its range tombstones may delete entries of the table itself: none of it is kept."""
    store = tmp_path / "s"
    _write(store, n=200)
    with banyanstore.open(str(store), block_size=1024) as s:
        s.put(b"k00001", b"x")
        s.delete_range(_key(10), _key(20))
        s.flush()
    table = _table(store)
    size = os.path.getsize(table)
    with open(table, "rb") as f:
        f.seek(size - FOOTER_SIZE)
        index_off, index_len, _fo, _fl, props_off, *_rest = FOOTER.unpack(f.read(FOOTER_SIZE))
    assert index_off + index_len + 5 < props_off  # a range-tombstone block between
    _flip(table, index_off + index_len + 5 + 3)
    code, out = _repair_cli(store, capsys)
    assert code == 1
    assert "range-tombstone block" in out, out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), min_size=1, max_size=4))
def test_random_damage_never_gives_a_key_a_value_it_did_not_have(
        tmp_path_factory: pytest.TempPathFactory, flips: list[float]) -> None:
    """Flip random bytes of the newer of two tables; repair.  No key holds a value it
    never had (its newest, or the older table's where the newer table's block is lost);
    with the meta blocks intact, every key whose block is intact holds its newest value.
    Failed before: a flip in a data block lost the whole newer table."""
    template = tmp_path_factory.getbasetemp() / "two-tables"
    if not template.exists():
        _two_tables(template)
    old = {_key(i): b"old" + b"%05d" % i * 6 for i in range(KEYS)}
    new = {_key(i): (None if i % 4 == 0 else b"new%05d" % i) for i in range(0, KEYS, 2)}
    store = tmp_path_factory.mktemp("fuzz") / "s"
    shutil.copytree(template, store)
    table = _table(store)
    blocks = _blocks(table)
    size = os.path.getsize(table)
    offsets = sorted({int(f * size) for f in flips})
    for off in offsets:
        _flip(table, off)
    res = repair(str(store))
    assert verify_path(str(store)).ok
    got = _contents(store)
    for key, value in got.items():
        assert value in (new.get(key, old[key]), old[key]), key
    data_end = blocks[-1][0] + blocks[-1][1]
    if all(off < data_end for off in offsets):  # meta blocks intact: the index finds every block
        damaged = [no for no, (o, n, _k) in enumerate(blocks) if any(o <= off < o + n for off in offsets)]
        lost = [(blocks[no - 1][2][-1] if no else b"", blocks[no][2][-1]) for no in damaged]
        for key in old:
            value = new.get(key, old[key])
            if value is not None and not any(lo <= key <= hi for lo, hi in lost):
                assert got.get(key) == value, key
        assert bool(res.lost) == bool(damaged)


def test_wal_records_of_a_rescued_tables_versions_go_into_it(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The WAL still holding the records a damaged table was flushed from (its segments
    copied back): a lost block's keys come back from them, into the rebuilt table."""
    store = tmp_path / "s"
    model: dict[bytes, bytes | None] = {}
    with banyanstore.open(str(store), block_size=1024) as s:
        for i in range(KEYS):
            model[_key(i)] = b"w%05d" % i
            s.put(_key(i), model[_key(i)])
        wal_copy = tmp_path / "wal-before-flush"
        shutil.copytree(store / "wal", wal_copy)
        s.flush()
    for seg in wal_copy.iterdir():
        if seg.name != "LOCK" and not (store / "wal" / seg.name).exists():
            shutil.copy(seg, store / "wal" / seg.name)
    table = _table(store)
    blocks = _blocks(table)
    _flip(table, blocks[7][0] + 9)
    code, out = _repair_cli(store, capsys)
    assert f"with {KEYS} WAL entries of its versions" in out, out
    _check(store, model, set())
    assert repair(str(store)).lost == []  # nothing more to do


def test_a_dry_run_changes_nothing_and_says_what_it_would_rebuild(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s"
    _write(store)
    table = _table(store)
    _flip(table, _blocks(table)[1][0] + 4)
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    assert main(["repair", str(store), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert f"would rebuild {table} from the" in out and "NOT recovered:" in out, out
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_a_rescued_store_needs_no_second_repair(tmp_path: Path) -> None:
    store = tmp_path / "s"
    model = _write(store)
    table = _table(store)
    blocks = _blocks(table)
    _flip(table, blocks[12][0] + 4)
    assert repair(str(store)).lost
    again = repair(str(store))
    assert again.lost == [] and again.refused == [] and not any("salvage" in d for d in again.done)
    _check(store, model, set(blocks[12][2]))
