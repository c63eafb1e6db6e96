"""A merge of tables in C (TableBuilder.add_merged, native/mergebuild.c) against the
pure-Python merge (merge.merge_entries into TableBuilder.add_many), file for file.

Both run in this process whatever BANYANSTORE_PURE_PYTHON says (``accel.native`` is
switched per run; build_merged reads it per merge).  Inputs are random (hypothesis) and
adversarial: overlapping keys across tables, many versions of one key across blocks and
tables, tombstones only, fixed and variable key and value widths, empty keys and values,
every reclamation rule (floor, snapshots below it, TTL floor, bottom merges), block sizes
from 1 byte up, filters on and off, keys or values over the output's limits, the same
version of a key in two tables, and merges where nothing survives.  The output files (or
the ValueError) must be identical.  Damaged payloads given straight to MergeBuild raise
CorruptionError naming the table and the block's offset, never crash.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banyanstore import accel
from banyanstore.errors import CorruptionError, StoreClosedError
from banyanstore.io.posix import PosixEnv
from banyanstore.lsm.merge import MergeSpec, build_merged
from banyanstore.options import Options
from banyanstore.sstable import reader as reader_mod
from banyanstore.sstable.block import Block, BlockFormatError, encode_block
from banyanstore.sstable.builder import TableBuilder
from banyanstore.sstable.cache import BlockCache
from banyanstore.sstable.reader import TableReader

native = accel.load_native()
pytestmark = pytest.mark.skipif(native is None, reason="the compiled core is not built")
if native is not None:  # its CorruptionError, also where BANYANSTORE_PURE_PYTHON=1 left it unbound
    reader_mod.bind_native(native)
Entry = tuple[bytes, int, "bytes | None"]
MASKS = bytes(8 << 14)


def options(block_size: int = 4096, **kw: Any) -> Options:
    """Options with any block size (the builders take what Options would refuse)."""
    opts = Options(**kw)
    object.__setattr__(opts, "block_size", block_size)
    return opts


def write_table(path: Path, entries: list[Entry], opts: Options) -> str:
    builder = TableBuilder(PosixEnv(), str(path), opts)
    builder.add_many(entries)
    builder.finish()
    return str(path)


def make_tables(tmp_path: Path, rng: random.Random, ntables: int, *, pool: int = 60,
                key_len: int | None = None, value_len: int | None = None,
                tombstones: float = 0.15, versions: int = 3,
                opts: Options | None = None) -> tuple[list[str], list[int]]:
    """``ntables`` tables, newest first, over one pool of keys (so they overlap), with
    disjoint version ranges as a keyspace's adjacent tables have; returns their paths and
    every version written."""
    opts = opts or options(256)
    keys = sorted({rng.randbytes(key_len if key_len is not None else rng.randrange(0, 10))
                   for _ in range(pool)})
    paths: list[str] = []
    written: list[int] = []
    next_version = 1
    tables: list[list[Entry]] = []
    for _ in range(ntables):  # oldest first: versions grow
        entries: list[Entry] = []
        for key in sorted(rng.sample(keys, rng.randrange(1, len(keys) + 1))):
            n = rng.randrange(1, versions + 1)
            vs = list(range(next_version + n - 1, next_version - 1, -1))
            next_version += n
            for v in vs:
                value = None if rng.random() < tombstones else rng.randbytes(
                    value_len if value_len is not None else rng.randrange(0, 12))
                entries.append((key, v, value))
                written.append(v)
        tables.append(entries)
    for i, entries in enumerate(reversed(tables)):  # newest first
        paths.append(write_table(tmp_path / f"in{i}-{rng.random()}.sst", entries, opts))
    return paths, written


def merge_once(paths: list[str], out: str, opts: Options, spec: MergeSpec, use_c: bool,
               monkeypatch: pytest.MonkeyPatch) -> Any:
    """The output file's bytes (None if nothing survived), or the error (type, text)."""
    monkeypatch.setattr(accel, "native", native if use_c else None)
    env = PosixEnv()
    readers = [TableReader.open(env, p, BlockCache(0)) for p in paths]
    try:
        meta = build_merged(env, readers, out, opts, spec)
    except (ValueError, CorruptionError) as exc:
        return type(exc), str(exc)
    finally:
        for r in readers:
            r.close()
    if meta is None:
        assert not Path(out).exists()
        return None
    return Path(out).read_bytes(), {k: v for k, v in meta.__dict__.items() if k != "path"}


def merge_both(tmp_path: Path, paths: list[str], opts: Options, spec: MergeSpec,
               monkeypatch: pytest.MonkeyPatch) -> Any:
    tag = random.random()
    py = merge_once(paths, str(tmp_path / f"py-{tag}.sst"), opts, spec, False, monkeypatch)
    c = merge_once(paths, str(tmp_path / f"c-{tag}.sst"), opts, spec, True, monkeypatch)
    assert c == py
    return c


def random_spec(rng: random.Random, written: list[int]) -> MergeSpec:
    top = max(written)
    floor = rng.choice([top + 1, top, rng.randrange(1, top + 2), 1])
    below = [v for v in written if v < floor]
    snapshots = tuple(sorted(set(rng.sample(below, min(len(below), rng.randrange(0, 4))))))
    ttl = rng.choice([0, 0, 0, rng.randrange(1, top + 2)])
    return MergeSpec(floor, snapshots, ttl, rng.random() < 0.5)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ntables=st.integers(1, 5),
       block_size=st.sampled_from([1, 40, 200, 4096]), bits=st.sampled_from([0, 1, 10]),
       fixed_keys=st.booleans(), fixed_values=st.booleans(),
       compression=st.sampled_from(["none", "lz4"]))
def test_random_merges_write_the_same_table(tmp_path_factory: Any, seed: int, ntables: int,
                                            block_size: int, bits: int, fixed_keys: bool,
                                            fixed_values: bool, compression: str) -> None:
    tmp_path = tmp_path_factory.mktemp("m")
    rng = random.Random(seed)
    opts = options(block_size, bloom_bits_per_key=bits, compression=compression)
    paths, written = make_tables(tmp_path, rng, ntables, key_len=8 if fixed_keys else None,
                                 value_len=5 if fixed_values else None,
                                 tombstones=rng.choice([0.0, 0.2, 0.6]))
    with pytest.MonkeyPatch.context() as mp:
        for _ in range(3):
            merge_both(tmp_path, paths, opts, random_spec(rng, written), mp)


def test_one_key_with_thousands_of_versions_across_tables_and_snapshots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    opts = options(512)
    tables: list[list[Entry]] = [[], [], []]
    v = 1
    for t in range(3):  # oldest first
        run = [(b"k", v + i, None if i % 7 == 0 else b"x" * (i % 13)) for i in range(2000)]
        v += 2000
        tables[t] = sorted(run, key=lambda e: -e[1])
    paths = [write_table(tmp_path / f"t{i}.sst", e, opts) for i, e in enumerate(reversed(tables))]
    snaps = tuple(sorted(rng.sample(range(1, 4000), 40)))
    for spec in (MergeSpec(5000, snaps, 0, True), MergeSpec(5000, snaps, 0, False),
                 MergeSpec(6001, (), 0, True), MergeSpec(3000, snaps[:5], 1000, True)):
        assert merge_both(tmp_path, paths, opts, spec, monkeypatch) is not None


def test_tombstones_only_in_a_bottom_merge_leave_nothing(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(6)
    paths, written = make_tables(tmp_path, rng, 3, tombstones=1.0)
    assert merge_both(tmp_path, paths, options(), MergeSpec(max(written) + 1, (), 0, True),
                      monkeypatch) is None
    assert merge_both(tmp_path, paths, options(), MergeSpec(1, (), max(written) + 1, False),
                      monkeypatch) is None  # everything past its TTL
    assert merge_both(tmp_path, paths, options(), MergeSpec(max(written) + 1, (), 0, False),
                      monkeypatch) is not None  # not the bottom: the tombstones stay


@pytest.mark.parametrize("limit", ["max_key_size", "max_value_size"])
def test_an_entry_over_the_outputs_limits_raises_the_same_value_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str) -> None:
    paths, written = make_tables(tmp_path, random.Random(7), 2, key_len=9, value_len=11)
    opts = options(256, **{limit: 4})
    err = merge_both(tmp_path, paths, opts, MergeSpec(max(written) + 1, (), 0, False), monkeypatch)
    assert err[0] is ValueError and "exceeds " + limit in err[1]


def test_the_same_version_in_two_tables_raises_the_same_value_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = options(64)
    a = write_table(tmp_path / "a.sst", [(b"a", 9, b"1"), (b"k", 5, b"new")], opts)
    b = write_table(tmp_path / "b.sst", [(b"k", 5, b"old"), (b"z", 2, b"2")], opts)
    # kept twice (at the floor): the builder's order check refuses the second
    err = merge_both(tmp_path, [a, b], opts, MergeSpec(5, (), 0, False), monkeypatch)
    assert err == (ValueError, "out of order: b'k'@5 after b'k'@5")
    # below the floor the older twin hides behind the newer one: both merges drop it
    assert merge_both(tmp_path, [a, b], opts, MergeSpec(10, (), 0, False), monkeypatch) is not None


def cancel_after(tmp_path: Path, seed: int, spec_of: Any, answers: int) -> int:
    """Merge three tables with ``cancelled()`` saying True after ``answers`` Falses:
    StoreClosedError, no output file; returns how often it was asked."""
    paths, written = make_tables(tmp_path, random.Random(seed), 3, pool=400)
    env = PosixEnv()
    readers = [TableReader.open(env, p, BlockCache(0)) for p in paths]
    asked = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) > answers
    out = tmp_path / "out.sst"
    with pytest.raises(StoreClosedError):
        build_merged(env, readers, str(out), options(256), spec_of(max(written)), cancelled)
    assert not out.exists()
    return len(asked)


def test_a_merge_cancelled_between_blocks_leaves_no_file(tmp_path: Path) -> None:
    assert cancel_after(tmp_path, 8, lambda top: MergeSpec(top + 1), 3) == 4


def test_a_merge_dropping_everything_still_asks_to_stop_between_input_blocks(
        tmp_path: Path) -> None:
    """Every entry past its TTL: no output block ever comes, yet the merge stops."""
    assert cancel_after(tmp_path, 9, lambda top: MergeSpec(1, (), top + 1, True), 5) == 6


# -- MergeBuild given damaged input directly ------------------------------------------------

def merge_build(sources: list[list[Any]], **kw: Any) -> Any:
    args: dict[str, Any] = dict(points=[10], floor=10, ttl_floor=0, bottom=False, block_size=64,
                                max_key_size=100, max_value_size=100, bloom_bits_per_key=0,
                                probes=0, masks=None)
    args.update(kw)
    assert native is not None
    return native.MergeBuild(sources, [f"t{i}.sst" for i in range(len(sources))], **args)


def test_a_block_that_does_not_parse_is_corruption_naming_table_and_offset() -> None:
    good = encode_block([b"a", b"b"], [3, 2], [b"x", None])
    for bad in (b"", b"\x01", good[:-1], good + b"\x00", b"\xff" * 40):
        with pytest.raises(CorruptionError) as info:
            list(merge_build([[(0, good)], [(4096, good), (8192, bad)]]))
        assert info.value.path == "t1.sst" and info.value.offset == 8192


@pytest.mark.parametrize("section", ["key", "value"])
def test_damaged_offsets_are_corruption_not_a_crash(section: str) -> None:
    """An offset out of order is refused when the block is parsed, as Block() refuses it
    (before, a key's offset past its heap was found only when the merge read that key, and
    a value's offset below the previous one not at all: the value merged as empty)."""
    block = bytearray(encode_block([b"a", b"bb", b"ccc"], [3, 2, 1], [b"x", b"yy", b"zzz"]))
    # variable-width keys and values (offsets 0, 1, 3, 6 each): the key offsets after the
    # header and the versions, then the key heap (6 bytes), then the value offsets; the
    # third offset of either set to 1000 or 0
    at = 16 + 3 * 8 + 8 if section == "key" else 16 + 3 * 8 + 16 + 6 + 8
    for bad in (1000, 0):
        block[at:at + 4] = bad.to_bytes(4, "little")
        with pytest.raises(CorruptionError, match=f"{section} offsets are out of order") as info:
            list(merge_build([[(7, bytes(block))]]))
        assert info.value.offset == 7
        with pytest.raises(BlockFormatError, match=f"{section} offsets are out of order"):
            Block(bytes(block))


def test_a_source_out_of_order_is_corruption() -> None:
    first = encode_block([b"b"], [3], [b"x"])
    second = encode_block([b"a"], [2], [b"y"])  # a later block going backwards
    with pytest.raises(CorruptionError, match="out of order") as info:
        list(merge_build([[(0, first), (100, second)]]))
    assert info.value.offset == 100
    same = encode_block([b"a", b"a"], [2, 3], [b"x", b"y"])  # versions must descend
    with pytest.raises(CorruptionError, match="out of order"):
        list(merge_build([[(0, same)]]))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), cut=st.integers(0, 300))
def test_arbitrary_payloads_raise_corruption_or_merge(data: bytes, cut: int) -> None:
    good = encode_block([b"k1", b"k2"], [5, 4], [b"v", None])
    damaged = (good[:cut] + data)[:len(good) + 40]
    for payload in (data, damaged):
        try:
            list(merge_build([[(0, payload)], [(0, good)]]))
        except (CorruptionError, ValueError):
            pass


def test_bad_arguments_name_the_argument() -> None:
    good = [(0, encode_block([b"a"], [1], [b"x"]))]
    with pytest.raises(ValueError, match="block_size"):
        merge_build([good], block_size=0)
    with pytest.raises(ValueError, match="points"):
        merge_build([good], points=[5, 5])
    with pytest.raises(ValueError, match="masks"):
        merge_build([good], bloom_bits_per_key=10, probes=3, masks=b"short")
    with pytest.raises(TypeError, match="pairs"):
        list(merge_build([[b"not a pair"]]))
    with pytest.raises(TypeError):
        merge_build([good], points=(1, 2))
    with pytest.raises(TypeError, match="check"):
        merge_build([good], check=3)


def test_properties_are_none_until_the_merge_is_exhausted() -> None:
    m = merge_build([[(0, encode_block([b"a", b"b"], [2, 1], [b"x", b"y"]))]], block_size=1)
    assert m.entries is None and m.last_keys is None and m.filter is None
    assert [len(p) > 0 for p in m] == [True, True]
    assert (m.entries, m.keys, m.smallest, m.largest) == (2, 2, b"a", b"b")
    assert m.last_keys == [b"a", b"b"] and m.last_versions == [2, 1]


def test_a_table_cut_short_after_it_was_opened_is_corruption_naming_it(tmp_path: Path) -> None:
    paths, written = make_tables(tmp_path, random.Random(10), 2, pool=300)
    env = PosixEnv()
    readers = [TableReader.open(env, p, BlockCache(0)) for p in paths]
    with open(paths[1], "r+b") as f:
        f.truncate(300)
    with pytest.raises(CorruptionError, match="short read") as info:
        build_merged(env, readers, str(tmp_path / "out.sst"), options(256),
                     MergeSpec(max(written) + 1))
    assert info.value.path == paths[1] and not (tmp_path / "out.sst").exists()


def test_a_damaged_block_on_disk_is_the_readers_corruption_error(tmp_path: Path) -> None:
    paths, written = make_tables(tmp_path, random.Random(11), 2, pool=300)
    with open(paths[0], "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0x40]))
    env = PosixEnv()
    readers = [TableReader.open(env, p, BlockCache(0)) for p in paths]
    with pytest.raises(CorruptionError, match="checksum") as info:
        build_merged(env, readers, str(tmp_path / "out.sst"), options(256),
                     MergeSpec(max(written) + 1))
    assert info.value.path == paths[0]


def test_floors_past_the_last_version_merge_as_the_pure_merge(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """At version exhaustion a floor is 2**64: the merge must not wrap it (build_merged
    takes the pure merge then; MergeBuild itself refuses it with OverflowError)."""
    paths, written = make_tables(tmp_path, random.Random(12), 2)
    top = 2**64
    assert merge_both(tmp_path, paths, options(), MergeSpec(10, (), top, False), monkeypatch) is None
    assert merge_both(tmp_path, paths, options(), MergeSpec(top, (), 0, True), monkeypatch) is not None
    good = [(0, encode_block([b"a"], [1], [b"x"]))]
    for kw in ({"floor": top}, {"ttl_floor": top}, {"floor": -1}):
        with pytest.raises(OverflowError):
            merge_build([good], **kw)


def test_a_callback_calling_next_again_is_refused_not_a_short_table() -> None:
    """A source's iterator asking the merge for its next block while the merge is asking
    it: that call raises ValueError (as a running generator's does), and the merge goes
    on to its end -- before, the inner call broke the merge off and the outer one ended
    early with 5 of 100 entries and no error."""
    box: list[Any] = []
    inner: list[BaseException] = []

    class Blocks:
        def __init__(self, prefix: bytes, version: int) -> None:
            self.todo = [(0, encode_block([prefix + b"%03d" % i for i in range(j, j + 5)],
                                          [version] * 5, [b"x" * 50] * 5)) for j in range(0, 50, 5)]
            self.calls = 0

        def __iter__(self) -> Any:
            return self

        def __next__(self) -> Any:
            self.calls += 1
            if self.calls == 2 and not inner:
                try:
                    next(box[0])
                except ValueError as exc:
                    inner.append(exc)
            if not self.todo:
                raise StopIteration
            return self.todo.pop(0)
    m = merge_build([Blocks(b"a", 100), Blocks(b"b", 50)], points=[10], block_size=200)
    box.append(m)
    assert len(list(m)) > 2 and m.entries == 100
    assert [str(e) for e in inner] == ["MergeBuild already executing"]


def test_sources_changed_by_an_iter_call_do_not_crash() -> None:
    srcs: list[Any] = []

    class Clears:
        def __iter__(self) -> Any:
            srcs.clear()
            return iter([(0, encode_block([b"a"], [1], [b"x"]))])
    srcs.extend([Clears(), Clears(), Clears()])
    m = merge_build(srcs)  # the sources as they were when MergeBuild was called
    assert len(list(m)) == 1 and m.entries == 1


def test_properties_of_a_failed_merge_are_none() -> None:
    good = encode_block([b"b"], [3], [b"x"])
    m = merge_build([[(0, good), (8, b"junk")]])
    with pytest.raises(CorruptionError):
        list(m)
    assert m.entries is None and m.smallest is None and list(m) == []
