"""A flush's table built in C (TableBuilder.add_flush_buffer, native/tablebuild.c) against
the pure-Python builder (add_sorted_columns over the decoded buffer), file for file.

Both run in this process whatever BANYANSTORE_PURE_PYTHON says.  Inputs are random
(hypothesis) and adversarial: tombstones only, fixed and variable key and value widths
mixed, one key with many versions, empty keys and values, values at max_value_size,
block sizes from 1 byte to 2 GiB, no filter and filters of 1..64 bits per key, every
compression, range tombstones.  Whole table files must be identical, and so must the
ValueError a bad input raises; damaged buffers (every truncation, flipped length and
count bytes) raise ValueError in both, never crash or read out of bounds.  The same
block encoder from Python lists (``_native.encode_block``, which TableBuilder.add and
add_many use: compaction's output) is compared with sstable/block.py's.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banyanstore import accel
from banyanstore.io.posix import PosixEnv
from banyanstore.lsm import flushbuf
from banyanstore.options import Options
from banyanstore.sstable import builder as builder_mod
from banyanstore.sstable.block import encode_block
from banyanstore.sstable.bloom import build_filter, key_hash, mask_table, probes_for
from banyanstore.sstable.builder import TableBuilder
from banyanstore.sstable.format import u64_bytes
from banyanstore.sstable.meta import TableMeta

native = accel.load_native()
pytestmark = pytest.mark.skipif(native is None, reason="the compiled core is not built")
TOP = 2**64 - 1
Columns = flushbuf.Columns


def options(block_size: int = 4096, **kw: object) -> Options:
    """Options with any block size (the builders take what Options would refuse)."""
    opts = Options(**kw)  # type: ignore[arg-type]
    object.__setattr__(opts, "block_size", block_size)
    return opts


def build_both(tmp_path, cols: Columns, opts: Options, range_dels=()) -> tuple[bytes, TableMeta]:
    """The table of ``cols`` from both builders: asserts the files and metas agree."""
    buf = flushbuf.encode(cols)
    results = []
    for name in ("py", "c"):
        path = str(tmp_path / f"{name}.sst")
        builder = TableBuilder(PosixEnv(), path, opts)
        if name == "py":
            builder.add_sorted_columns(*flushbuf.decode(buf))
        else:
            builder.add_flush_buffer(buf)
        builder.add_range_dels(range_dels)
        meta = builder.finish()
        with open(path, "rb") as f:
            results.append((f.read(), meta))
    (py_file, py_meta), (c_file, c_meta) = results
    assert c_file == py_file
    assert c_meta == py_meta.__class__(**{**py_meta.__dict__, "path": c_meta.path})
    return c_file, c_meta


def make_columns(rng: random.Random, nkeys: int, *, key_len: int | None = None,
                 value_len: int | None = None, tombstones: float = 0.1,
                 versions: int = 3) -> Columns:
    keys = sorted({rng.randbytes(key_len if key_len is not None else rng.randrange(0, 12))
                   for _ in range(nkeys)})
    cols: Columns = ([], [], [])
    for key in keys:
        newest = rng.randrange(versions, 1 << 31)
        for version in range(newest, newest - rng.randrange(1, versions + 1), -1):
            cols[0].append(key)
            cols[1].append(version)
            cols[2].append(None if rng.random() < tombstones else
                           rng.randbytes(value_len if value_len is not None else rng.choice((0, 3, 100))))
    return cols


entry = st.tuples(st.binary(max_size=6), st.integers(1, TOP),
                  st.one_of(st.none(), st.binary(max_size=20), st.just(b"v" * 8)))


@settings(max_examples=300, deadline=None)
@given(st.lists(entry, min_size=1, max_size=80),
       st.sampled_from([1, 30, 64, 200, 1024, 4096, 1 << 31]),
       st.sampled_from([0, 1, 10, 12, 64]), st.sampled_from(["none", "lz4", "zstd"]),
       st.lists(st.tuples(st.binary(max_size=3), st.binary(min_size=1, max_size=3),
                          st.integers(1, TOP)), max_size=3))
def test_random_tables_are_identical(tmp_path_factory, entries, block_size, bits, compression,
                                     ranges):
    entries = sorted({(k, v): x for k, v, x in entries}.items(), key=lambda e: (e[0][0], -e[0][1]))
    cols: Columns = ([k for (k, _), _ in entries], [v for (_, v), _ in entries],
                     [x for _, x in entries])
    ranges = [(s, s + e, v) for s, e, v in ranges]
    build_both(tmp_path_factory.mktemp("t"), cols,
               options(block_size, bloom_bits_per_key=bits, compression=compression), ranges)


ADVERSARIAL = {
    "tombstones only": dict(tombstones=1.0),
    "no tombstones, fixed widths": dict(key_len=16, value_len=100, tombstones=0.0),
    "fixed keys, variable values": dict(key_len=8),
    "variable keys, fixed values": dict(value_len=7, tombstones=0.0),
    "empty keys and values": dict(key_len=0, value_len=0),
    "padding over the limit": dict(key_len=4, value_len=600, tombstones=0.5),
    "many versions": dict(versions=40),
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
@pytest.mark.parametrize("block_size", [1, 256, 4096, 1 << 31])
@pytest.mark.parametrize("compression,bits", [("lz4", 12), ("zstd", 0), ("none", 1)])
def test_adversarial_tables_are_identical(tmp_path, case, block_size, compression, bits):
    cols = make_columns(random.Random(case), 400, **ADVERSARIAL[case])  # type: ignore[arg-type]
    build_both(tmp_path, cols, options(block_size, bloom_bits_per_key=bits, compression=compression))


def test_one_key_many_versions_and_extreme_values(tmp_path):
    """One key with 5,000 versions across blocks; a value of exactly max_value_size; the
    versions 1 and 2**64-1."""
    key = b"k" * 20
    cols: Columns = ([key] * 5000, list(range(TOP, TOP - 4999, -1)) + [1],
                     [None if i % 7 == 0 else b"%d" % i for i in range(5000)])
    build_both(tmp_path, cols, options(1024, compression="lz4"))
    big: Columns = ([b"a", b"b", b"c"], [3, 2, 1], [b"x" * 5000, None, b""])
    build_both(tmp_path, big, options(1024, max_value_size=5000))


def test_a_flush_sized_table_is_identical(tmp_path):
    """Thousands of blocks: 20,000 fixed-width entries in 4 KiB blocks with a filter."""
    cols = make_columns(random.Random(3), 20_000, key_len=16, value_len=100, versions=1)
    data, meta = build_both(tmp_path, cols, options(4096, compression="lz4"))
    assert meta.block_count > 500 and meta.entry_count == len(cols[0])


def test_filter_is_the_same_hashed_in_python(tmp_path):
    """The fallback where xxhash's C function is not found (every key hashed through
    xxh3_64_intdigest) makes the same filter as the direct calls and as build_filter."""
    cols = make_columns(random.Random(9), 3000)
    distinct = list(dict.fromkeys(cols[0]))
    buf = flushbuf.encode(cols)
    k = probes_for(10)
    masks = u64_bytes(mask_table(k))
    want = build_filter([key_hash(key) for key in distinct], len(distinct), 10)
    for direct in (True, False):
        table = native.TableBuild(buf, 4096, 1 << 16, 1 << 20, 10, k, masks, direct)
        assert table.filter == want and table.keys == len(distinct)
    assert isinstance(native.TableBuild.direct_hash(), bool)


def errors_of(cols: Columns, opts: Options, tmp_path) -> list[str]:
    """The ValueError text (or "ok") of both builders for ``cols``."""
    buf = flushbuf.encode(cols)
    out = []
    for name in ("py", "c"):
        builder = TableBuilder(PosixEnv(), str(tmp_path / f"{name}.sst"), opts)
        try:
            if name == "py":
                builder.add_sorted_columns(*flushbuf.decode(buf))
            else:
                builder.add_flush_buffer(buf)
            out.append("ok")
        except ValueError as exc:
            out.append(str(exc))
        builder.abandon()
    return out


@pytest.mark.parametrize("cols,kw", [
    (([b"b", b"a"], [1, 1], [b"v", b"v"]), {}),
    (([b"a", b"a"], [1, 2], [b"v", b"v"]), {}),
    (([b"a", b"a", b"b", b"b"], [5, 4, 3, 3], [b"v", None, b"v", b"v"]), {}),
    (([b"a", b"b"], [0, 1], [b"v", b"v"]), {}),
    (([b"a", b"bcd"], [1, 1], [b"v", b"v"]), {"max_key_size": 2}),
    (([b"a", b"b"], [1, 1], [b"vvv", None]), {"max_value_size": 2}),
    (([b"b", b"a"], [0, 1], [b"vvv", b"v"]), {"max_value_size": 2}),  # order is checked first
    (([b"a", b"a"], [0, 1], [b"vvv", b"v"]), {"max_key_size": 1, "max_value_size": 2}),
    (([b"\x00'\"", b"\x00'\""], [7, 9], [None, None]), {}),  # repr of odd keys
    (([], [], []), {}),
])
def test_bad_input_raises_the_same_valueerror(tmp_path, cols, kw):
    py, c = errors_of(cols, Options(**kw), tmp_path)
    assert c == py


def test_damaged_buffers_raise_valueerror_in_both(tmp_path):
    """Every truncation, and every byte of every length, count and header field flipped:
    both builders raise the same ValueError or build the same table."""
    cols: Columns = ([b"", b"ab", b"ab", b"cd"], [9, 8, 7, 6], [b"xy", None, b"", b"z" * 30])
    buf = flushbuf.encode(cols)
    opts = options(64)
    damaged = [buf[:n] for n in range(len(buf))] + [buf + b"\x00"]
    fields = list(range(0, 16))  # magic, format, count
    off = 16
    for key, value in zip(cols[0], cols[2], strict=True):
        fields += range(off, off + 16)  # version, klen, vlen
        off += 16 + len(key) + len(value or b"")
    for at in fields:
        for flip in (0x01, 0x80, 0xFF):
            data = bytearray(buf)
            data[at] ^= flip
            damaged.append(bytes(data))
    for i, data in enumerate(damaged):
        outcomes = []
        for name in ("py", "c"):
            path = str(tmp_path / f"{name}{i}.sst")
            builder = TableBuilder(PosixEnv(), path, opts)
            try:
                if name == "py":
                    builder.add_sorted_columns(*flushbuf.decode(data))
                else:
                    builder.add_flush_buffer(data)
                if builder.entry_count:
                    builder.finish()
                    with open(path, "rb") as f:
                        outcomes.append(f.read())
                else:
                    builder.abandon()
                    outcomes.append(b"empty")
            except ValueError as exc:
                builder.abandon()
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1], (i, outcomes)


def test_bad_arguments():
    buf = flushbuf.encode(([b"a"], [1], [b"v"]))
    masks = u64_bytes(mask_table(5))
    with pytest.raises(TypeError):
        native.TableBuild(bytearray(buf), 4096, 10, 10, 12, 5, masks)  # mutable: refused
    for args, name in (((0, 10, 10, 12, 5, masks), "block_size"),
                       ((4096, -1, 10, 12, 5, masks), "max_key_size"),
                       ((4096, 10, -1, 12, 5, masks), "max_value_size"),
                       ((4096, 10, 10, -1, 5, masks), "bloom_bits_per_key"),
                       ((4096, 10, 10, 12, 0, masks), "probes"),
                       ((4096, 10, 10, 12, 5, masks[:-8]), "masks")):
        with pytest.raises(ValueError, match=name):
            native.TableBuild(buf, *args)
    with pytest.raises(TypeError):
        native.TableBuild(buf, 4096, 10, 10, 12, 5, None)
    assert native.TableBuild(buf, 4096, 10, 10, 0, 0, None).filter is None


def test_the_bulk_loaded_builder_takes_no_more_entries(tmp_path):
    builder = TableBuilder(PosixEnv(), str(tmp_path / "t.sst"), Options())
    builder.add_flush_buffer(flushbuf.encode(([b"a"], [2], [b"v"])))
    for add in (lambda: builder.add(b"b", 1, b"v"), lambda: builder.add_many([(b"b", 1, None)]),
                lambda: builder.add_flush_buffer(flushbuf.encode(([b"b"], [1], [b"v"])))):
        with pytest.raises(ValueError):
            add()
    assert builder.finish().entry_count == 1


def test_load_into_takes_the_c_path_only_with_the_compiled_core(tmp_path, monkeypatch):
    """flushbuf.load_into: a buffer goes to add_flush_buffer when accel.native is loaded,
    to add_sorted_columns otherwise (BANYANSTORE_PURE_PYTHON=1) and for columns."""
    cols: Columns = ([b"a", b"b"], [2, 1], [b"v", None])
    calls: list[str] = []
    monkeypatch.setattr(TableBuilder, "add_flush_buffer",
                        lambda self, buf: calls.append("buffer"))
    monkeypatch.setattr(TableBuilder, "add_sorted_columns",
                        lambda self, *c: calls.append("columns"))
    builder = TableBuilder(PosixEnv(), str(tmp_path / "t.sst"), Options())
    monkeypatch.setattr(accel, "native", native)
    flushbuf.load_into(builder, flushbuf.encode(cols))
    flushbuf.load_into(builder, flushbuf.Pieces(2, lambda s, n: (flushbuf.encode(cols), None)))
    flushbuf.load_into(builder, cols)
    monkeypatch.setattr(accel, "native", None)
    flushbuf.load_into(builder, flushbuf.encode(cols))
    builder.abandon()
    assert calls == ["buffer", "buffer", "columns", "columns"]


def test_flush_buffer_header_layout():
    """The grammar the C builder reads (flushbuf.py): a 16-byte header, 16-byte entries."""
    buf = flushbuf.encode(([b"k"], [5], [None]))
    assert struct.unpack_from("<4sIQQII", buf) == (b"BSMF", 1, 1, 5, 1, 0xFFFFFFFF)


# -- the block encoder for entries given one by one (compaction's output) -----------------

@settings(max_examples=400, deadline=None)
@given(st.lists(entry, min_size=1, max_size=300))
def test_native_encode_block_matches_python(entries):
    keys, versions, values = (list(c) for c in zip(*entries, strict=True))
    assert native.encode_block(keys, versions, values) == encode_block(keys, versions, values)


def test_native_encode_block_leaves_other_items_to_python():
    for keys, versions, values in (([bytearray(b"k")], [1], [b"v"]), ([b"k"], [1], [memoryview(b"v")]),
                                   ([b"k"], [2**64], [b"v"]), ([b"k"], [-1], [None]),
                                   ([b"k"], [True], [b"v"])):
        assert native.encode_block(keys, versions, values) is None
    for bad in (([], [], []), ([b"k"], [1, 2], [b"v"])):
        with pytest.raises(ValueError):
            native.encode_block(*bad)
    with pytest.raises(TypeError):
        native.encode_block((b"k",), [1], [b"v"])


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_tables_built_entry_by_entry_are_identical(tmp_path, monkeypatch, compression):
    """add_many (a merge's output) writes the same file with the C block encoder as
    without it."""
    cols = make_columns(random.Random(4), 3000, tombstones=0.3)
    entries = list(zip(*cols, strict=True))
    files = []
    for name, encoder in (("c", native), ("py", None)):
        monkeypatch.setattr(builder_mod, "_native", encoder)
        path = tmp_path / f"{name}.sst"
        builder = TableBuilder(PosixEnv(), str(path), options(512, compression=compression))
        builder.add_many(entries)
        builder.finish()
        files.append(path.read_bytes())
    assert files[0] == files[1]
