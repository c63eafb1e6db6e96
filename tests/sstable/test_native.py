"""The compiled core against the pure-Python engine, result for result.

Both implementations are run in this process whatever BANYANSTORE_PURE_PYTHON says:
the pure path is the reader with ``core`` None, the native one a reader opened while
``reader.native`` is the extension.  Inputs are random (hypothesis) and adversarial:
keys with common prefixes, zero-length keys and values, versions spanning blocks,
and damaged payloads -- which must raise CorruptionError, never crash or read out of
bounds (the fuzz harness in tests/fuzz/ drives the same decoders longer).
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banyanstore import accel
from banyanstore.errors import CorruptionError
from banyanstore.io.posix import PosixEnv
from banyanstore.sstable import BlockCache, TableReader
from banyanstore.sstable import reader as reader_mod
from banyanstore.sstable.block import MISS, Block, BlockFormatError, LazyBlock, encode_block

from .helpers import (
    build,
    internal_sorted,
    model_get,
    offsets_damaged_table,
    random_entries,
    read_paths,
)

native = accel.load_native()
if native is not None:
    reader_mod.bind_native(native)
pytestmark = pytest.mark.skipif(native is None, reason="the compiled core is not built")
TOP = 2**64 - 1


def test_native_core_is_built_where_required():
    """CI sets BANYANSTORE_TEST_REQUIRE_NATIVE: there the extension must have built."""
    if os.environ.get("BANYANSTORE_TEST_REQUIRE_NATIVE"):
        assert native is not None


def full_scan_errors(pure, nat) -> list[tuple[str, str | None, int | None]]:
    """The CorruptionError (message, path, offset) of a full scan by the Python reader and by
    a MergeScan over the compiled core: each must raise."""
    errors = []
    for r in (pure, nat):
        with pytest.raises(CorruptionError) as info:
            if r is nat:
                list(native.MergeScan([nat.core], None, None, TOP, 0, False, None, False, nat))
            else:
                list(r.scan())
        errors.append((str(info.value), info.value.path, info.value.offset))
    return errors


def open_both(env, path, cache_bytes=1 << 20):
    """(pure reader, native reader) of one table file."""
    saved = reader_mod.native
    try:
        reader_mod.native = None
        pure = TableReader.open(env, path, BlockCache(cache_bytes))
        reader_mod.native = native
        cache = BlockCache(cache_bytes)
        cache.native_counters = native.Counters()  # None when the environment says pure Python
        nat = TableReader.open(env, path, cache)
    finally:
        reader_mod.native = saved
    assert pure.core is None and nat.core is not None
    return pure, nat


# -- blocks ------------------------------------------------------------------------------------
keys_st = st.lists(st.binary(max_size=6), min_size=1, max_size=40, unique=True)
fixed_keys_st = st.integers(0, 8).flatmap(
    lambda w: st.lists(st.binary(min_size=w, max_size=w), min_size=1, max_size=40, unique=True))


@st.composite
def block_entries(draw):
    keys = sorted(draw(st.one_of(keys_st, fixed_keys_st)))
    fixed_value = draw(st.one_of(st.none(), st.integers(0, 5)))
    entries = []
    for k in keys:
        versions = sorted(draw(st.sets(st.integers(1, 30), min_size=1, max_size=3)), reverse=True)
        for v in versions:
            if draw(st.integers(0, 5)) == 0:
                entries.append((k, v, None))
            else:
                n = fixed_value if fixed_value is not None else draw(st.integers(0, 6))
                entries.append((k, v, draw(st.binary(min_size=n, max_size=n))))
    return entries


def payload_of(entries):
    return encode_block([e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries])


@settings(max_examples=300, deadline=None)
@given(block_entries(), st.lists(st.tuples(st.binary(max_size=7), st.integers(0, 32)), max_size=20))
def test_block_lookup_matches_python(entries, probes):
    block = Block(payload_of(entries))
    keys = sorted({e[0] for e in entries})
    probes = probes + [(k, v) for k in keys for v in (0, 1, 15, 31, TOP)]
    for key, version in probes:
        assert native.block_lookup(block, key, version) == block.lookup(key, version), (key, version)


@st.composite
def damaged_payloads(draw):
    data = bytearray(payload_of(draw(block_entries())))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set32", "cut", "grow", "offset"]))
        if kind == "offset" and _offsets_arrays(bytes(data)):
            # one offset of a variable-width section changed: only its order can tell
            at, n = draw(st.sampled_from(_offsets_arrays(bytes(data))))
            i = draw(st.integers(0, n - 1))
            old = struct.unpack_from("<I", data, at + 4 * i)[0]
            new = draw(st.sampled_from([old + 1, max(old - 1, 0), 0, 0xFFFFFFFF]))
            struct.pack_into("<I", data, at + 4 * i, new)
        elif kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set32" and len(data) >= 4:
            i = draw(st.integers(0, len(data) - 4))
            data[i:i + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF,
                                                                    len(data), len(data) + 1])))
        elif kind == "cut":
            del data[draw(st.integers(0, len(data))):]
        else:
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_payloads(), st.binary(max_size=7), st.integers(0, 40))
def test_damaged_block_payloads_never_crash(data, key, version):
    """A payload is a CorruptionError in C exactly when the Python decoder rejects it (offsets
    out of order included: both check them when the block is decoded); one both accept
    (with, say, scrambled keys) gives an answer of the right shape -- never a crash or an
    out-of-bounds read -- and, while its keys are in order, the Python lookup's answer."""
    try:
        block: Block | None = Block(data)
    except BlockFormatError:
        block = None
    try:
        got = native.block_lookup_payload(data, key, version)
    except CorruptionError:
        assert block is None
        return
    assert block is not None
    assert got == MISS or (got[0] is True and isinstance(got[2], int)
                           and (got[1] is None or isinstance(got[1], bytes)))
    keys = block.keys
    if keys == sorted(keys):  # (out of order, the two searches may land on different copies)
        assert got == block.lookup(key, version)


def _offsets_arrays(data: bytes) -> list[tuple[int, int]]:
    """``(position, length)`` of each variable-width offsets array of a block that parses."""
    try:
        b = Block(data)
    except BlockFormatError:
        return []
    return [(at, b.count + 1) for flag, at in ((1, b.keys_at), (2, b.values_at))
            if not b.flags & flag]


def _slots_of(block):
    return {name: getattr(block, name) for name in Block.__slots__}


@settings(max_examples=300, deadline=None)
@given(block_entries(), st.data())
def test_block_built_in_c_equals_python_block(entries, data):
    """The Block a cache miss builds in C has every slot Block(payload) has -- also for
    damaged payloads, which both refuse (the C side leaves them to Block())."""
    payload = payload_of(entries)
    built = native.block_from_payload(payload)
    if payload[12] & 1:  # fixed-width keys: built in C with data, ref and nbytes alone
        assert type(built) is LazyBlock
        with pytest.raises(AttributeError):
            object.__getattribute__(built, "count")
    assert _slots_of(built) == _slots_of(Block(payload))  # the rest parsed on first use
    damaged = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    damaged_bytes = bytes(damaged)
    try:
        want = _slots_of(Block(damaged_bytes))
    except BlockFormatError:
        with pytest.raises(BlockFormatError):
            native.block_from_payload(damaged_bytes)
    else:
        assert _slots_of(native.block_from_payload(damaged_bytes)) == want


def test_bind_refuses_a_lazy_block_type_with_another_layout():
    """The core writes a LazyBlock's slots at Block's offsets: a class that is not a
    Block subclass of the same layout is refused, and the binding stays as it was."""
    class Wider(Block):
        __slots__ = ("extra",)

    for bad in (Wider, int):
        with pytest.raises(TypeError, match="lazy_block_type"):
            native.bind(Block, CorruptionError, reader_mod._xxh3, MISS, None, bad)
    payload = encode_block([b"k" * 8] * 2, [2, 1], [b"v", b"w"])
    assert type(native.block_from_payload(payload)) is LazyBlock


# -- tables --------------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["none", "lz4"])
@pytest.mark.parametrize("shape", ["random", "fixed", "common-prefix", "long-history"])
def test_table_get_and_locate_match_python(tmp_path, compression, shape):
    rng = random.Random(hash((compression, shape)) & 0xFFFF)
    if shape == "random":
        entries = random_entries(rng, 400)
    elif shape == "fixed":
        entries = random_entries(rng, 400, key_len=8, value_len=20)
    elif shape == "common-prefix":
        entries = internal_sorted([(b"service/checkout/span/%06d" % i, v, os.urandom(rng.randrange(30)))
                                   for i in range(300) for v in rng.sample(range(1, 9), 2)])
    else:  # one key's versions span many blocks
        entries = [(b"hot", v, b"x" * 50) for v in range(1000, 0, -1)]
        entries += [(b"z%03d" % i, 1, b"y") for i in range(50)]
    env = PosixEnv()
    path, _ = build(env, str(tmp_path), entries, block_size=1024, compression=compression,
                    bloom_bits_per_key=10)
    pure, nat = open_both(env, path)
    try:
        keys = sorted({e[0] for e in entries})
        probes = [(k, v) for k in keys for v in (0, 1, 2, 5, 200, TOP)]
        probes += [(k + b"\x00", TOP) for k in keys[:50]] + [(b"", TOP), (b"\xff" * 9, TOP)]
        for key, version in probes:
            want = model_get(entries, key, version)
            assert pure.get(key, version) == want
            assert nat.get(key, version) == want, (key, version)
            assert nat.locate(key, version) == pure.locate(key, version)
        assert nat.bloom_useful > 0 and nat.cache.stats()["hits"] > 0
    finally:
        pure.close()
        nat.close()


def test_tables_get_across_tables_matches_python(tmp_path):
    """tables_get / tables_entry over several tables with overlapping keys, newest first."""
    rng = random.Random(5)
    env = PosixEnv()
    tables = []
    version = 0
    all_entries = []
    for _ in range(4):
        keys = rng.sample(range(300), 120)
        entries = []
        for k in keys:
            version += 1
            entries.append((b"k%04d" % k, version, None if rng.random() < 0.2 else b"v%d" % version))
        entries = internal_sorted(entries)
        all_entries += entries
        path, _ = build(env, str(tmp_path), entries, block_size=1024, bloom_bits_per_key=8)
        tables.append(open_both(env, path))
    tables.reverse()  # newest first
    cores = tuple(n.core for _, n in tables)
    try:
        for k in range(310):
            key = b"k%04d" % k
            for v in (0, 1, version // 3, version // 2, version):
                want = model_get(all_entries, key, v)
                assert native.tables_entry(cores, key, v) == want
                assert native.tables_get(cores, key, v) == want[1]
    finally:
        for p, n in tables:
            p.close()
            n.close()


@pytest.mark.parametrize("cache_bytes", [0, 4000, 1 << 22])
def test_tables_multi_get_matches_python(tmp_path, cache_bytes):
    """tables_multi_get over several tables with overlapping keys (newest first): the same
    entries as one tables_entry per key -- absent keys, duplicates, filter false
    positives, versions between the tables' -- with its misses read in one read_batch
    call (or through the readers' loaders without one)."""
    rng = random.Random(cache_bytes)
    env = PosixEnv()
    tables = []
    version = 0
    all_entries = []
    for _ in range(4):
        entries = []
        for k in rng.sample(range(400), 150):
            version += 1
            entries.append((b"k%04d" % k, version, None if rng.random() < 0.2 else b"v%d" % version))
        entries = internal_sorted(entries)
        all_entries += entries
        path, _ = build(env, str(tmp_path), entries, block_size=1024, bloom_bits_per_key=2)
        tables.append(open_both(env, path, cache_bytes))
    tables.reverse()  # newest first
    cores = tuple(n.core for _, n in tables)
    batches: list[list[object]] = []

    def read_batch(requests):
        batches.append(requests)
        return env.read_batch(requests)
    try:
        for v in (0, 1, version // 3, version // 2, version, TOP, -1):
            keys = [b"k%04d" % rng.randrange(420) for _ in range(60)]
            keys += keys[:5] + [b"", b"\xff"]
            for rb in (read_batch, None):
                want = [model_get(all_entries, k, max(v, 0)) if v >= 0 else MISS for k in keys]
                batches.clear()
                assert native.tables_multi_get(cores, keys, v, rb) == want, (v, rb)
                assert len(batches) <= 1
                if batches:
                    assert len(set(batches[0])) == len(batches[0])  # each block once
        assert native.tables_multi_get(cores, [], version, read_batch) == []
        with pytest.raises(TypeError):
            native.tables_multi_get(cores, ["k"], version, read_batch)
    finally:
        for p, n in tables:
            p.close()
            n.close()


def test_cache_miss_goes_through_the_reader(tmp_path):
    """With a tiny cache every lookup loads its block through the reader (and its
    checksum): same answers, and a damaged block is a CorruptionError naming the file."""
    env = PosixEnv()
    entries = random_entries(random.Random(3), 300, key_len=6, value_len=30)
    path, _ = build(env, str(tmp_path), entries, block_size=1024)
    pure, nat = open_both(env, path, cache_bytes=0)
    for k, v, _val in entries[::7]:
        assert nat.get(k, v) == pure.get(k, v)
    pure.close()
    nat.close()
    data = bytearray(env.read_file(path))
    data[10] ^= 0x40  # inside the first data block
    with open(path, "wb") as f:
        f.write(bytes(data))
    _, nat = open_both(env, path, cache_bytes=0)
    with pytest.raises(CorruptionError) as info:
        nat.get(entries[0][0], TOP)
    assert info.value.path == path and info.value.offset == 0
    nat.close()


def _visible(entries, start, end, reverse):
    """The model of a one-table MergeScan at the top version: newest entry per key, values only."""
    out, last = [], None
    for k, _v, val in entries:
        if k == last or (start is not None and k < start) or (end is not None and k >= end):
            continue
        last = k
        if val is not None:
            out.append((k, val))
    return out[::-1] if reverse else out


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
@pytest.mark.parametrize("cache_blocks", [0, 3, 10_000])
def test_miss_path_in_c_matches_python(tmp_path, compression, cache_blocks):
    """Cache misses read, verified, decompressed and cached by the core (zstd through the
    reader's decoder): the same answers and the same cache misses as the Python reader, for
    point lookups and for scans with their read-ahead, both directions."""
    rng = random.Random(hash((compression, cache_blocks)) & 0xFFFF)
    entries = random_entries(rng, 600, key_len=10, value_len=40)
    env = PosixEnv()
    path, _ = build(env, str(tmp_path), entries, block_size=1024, compression=compression)
    pure, nat = open_both(env, path, cache_bytes=cache_blocks * 2000)
    try:
        keys = sorted({e[0] for e in entries})
        for key in rng.sample(keys, 200) + [b"\x00" * 10, b"\xff" * 10]:
            assert nat.get(key, TOP) == pure.get(key, TOP) == model_get(entries, key, TOP)
        assert nat.cache.stats()["misses"] == pure.cache.stats()["misses"] > 0
        for start, end in [(None, None), (keys[100], None), (None, keys[-50]), (keys[5], keys[400])]:
            for reverse in (False, True):
                got = list(native.MergeScan([nat.core], start, end, TOP, 0, reverse, None, False, nat))
                assert got == _visible(entries, start, end, reverse), (start, end, reverse)
                for _k, _v, _val in pure.scan(start, end, reverse=reverse):
                    pass
        if cache_blocks != 3:  # (a small cache: a scan's first block is marked referenced
            # by the core, not by the Python scan, so CLOCK may evict differently)
            assert nat.cache.stats()["misses"] == pure.cache.stats()["misses"]
            assert nat.cache.stats()["blocks"] == pure.cache.stats()["blocks"]
    finally:
        pure.close()
        nat.close()


class _ShortReads(PosixEnv):
    """While ``short`` is set, reads return one byte less than asked."""

    short = False

    def open_readable(self, path):
        inner = super().open_readable(path)
        env = self

        class File(type(inner)):
            def read(self, offset, length):
                data = super().read(offset, length)
                return data[:-1] if env.short and length > 1 else data
        inner.__class__ = File
        return inner


class _CountedReads(PosixEnv):
    """Counts the reads of the files it opens (a file type the core reads through its
    ``read()``, not with its own pread)."""

    reads = 0

    def open_readable(self, path):
        inner = super().open_readable(path)
        env = self

        class File(type(inner)):
            def read(self, offset, length):
                env.reads += 1
                return super().read(offset, length)
        inner.__class__ = File
        return inner


def test_bounded_scan_reads_the_blocks_of_its_range_at_once(tmp_path):
    """A scan with both bounds and no limit reads the missing blocks of its range in each
    table with one read (a range of a time series spans a few blocks of every table), in
    either direction; cached blocks inside the range are taken from the cache (each counted as
    a hit and marked referenced) and the rest still come in one read.  A scan with a limit keeps the
    read-ahead that starts at one block."""
    env = _CountedReads()
    entries = random_entries(random.Random(3), 400, max_versions=1, key_len=8, value_len=30,
                             tombstone_rate=0)
    path, _ = build(env, str(tmp_path), entries, block_size=1024, compression="none")
    pure, nat = open_both(env, path, cache_bytes=1 << 20)
    try:
        firsts = [nat.cached(no) or nat.load_block(no) for no in range(nat.block_count)]
        first_keys = [b.decode(0, 1)[0][0] for b in firsts]
        nat.cache.clear()
        assert nat.block_count > 10
        start, end = first_keys[3] + b"\x00", first_keys[8] + b"\x00"  # blocks 3..8
        for reverse in (False, True):
            nat.cache.clear()
            before = env.reads
            got = list(native.MergeScan([nat.core], start, end, TOP, 0, reverse, None, False, nat))
            assert got == _visible(entries, start, end, reverse)
            assert env.reads - before == 1, reverse
        nat.cache.clear()
        # the first block cached (read by the core, as a lookup's miss does: its own block
        # type) and one inside the range: hits, marked referenced for CLOCK, the rest in one read
        assert nat.core.get(first_keys[3], TOP)[0]
        nat.load_block(6)
        assert nat.cached(3).ref is False and nat.cached(6).ref is False
        hits, before = nat.cache.stats()["hits"], env.reads
        got = list(native.MergeScan([nat.core], start, end, TOP, 0, False, None, False, nat))
        assert got == _visible(entries, start, end, False)
        assert env.reads - before == 1 and nat.cache.stats()["hits"] == hits + 2
        assert nat.cached(3).ref is True and nat.cached(6).ref is True
        nat.cache.clear()
        before = env.reads
        got = list(native.MergeScan([nat.core], start, end, TOP, 0, False, 3, False, nat))
        assert got == _visible(entries, start, end, False)[:3]
        assert env.reads - before == 1  # one block: a limit stops the read-ahead short
    finally:
        pure.close()
        nat.close()


def test_miss_path_in_c_reports_damage_like_python(tmp_path):
    """A damaged block met by a point lookup or by a scan's read-ahead (one read spanning
    several blocks), and a short read, are the Python reader's CorruptionError naming the
    file and the block's offset."""
    env = _ShortReads()
    entries = random_entries(random.Random(8), 400, key_len=8, value_len=30)
    path, _ = build(env, str(tmp_path), entries, block_size=1024)
    pure, nat = open_both(env, path, cache_bytes=0)
    starts = [pure.block_request(no)[1] for no in range(pure.block_count)]
    pure.close()
    nat.close()
    data = bytearray(env.read_file(path))
    data[starts[5] + 3] ^= 0x10  # inside block 5
    with open(path, "wb") as f:
        f.write(bytes(data))
    pure, nat = open_both(env, path, cache_bytes=0)
    errors = full_scan_errors(pure, nat)
    assert errors[0] == errors[1] and errors[1][1:] == (path, starts[5])
    pure.close()
    nat.close()
    pure, nat = open_both(env, path, cache_bytes=0)
    env.short = True
    try:
        for r in (pure, nat):
            with pytest.raises(CorruptionError, match="short read of data block 0") as info:
                r.get(entries[0][0], TOP)
            assert info.value.offset == 0
    finally:
        env.short = False
        pure.close()
        nat.close()


def test_table_file_cut_after_open_is_corruption_in_both_readers(tmp_path):
    """A table file cut short after it was opened (its index already read): a point lookup
    (a miss read with pread into the core's own buffer) and a scan (a read-ahead span decoded
    in place) meeting a block past the cut raise the Python reader's CorruptionError naming
    the file and that block's offset -- never a shorter answer."""
    env = PosixEnv()
    entries = random_entries(random.Random(9), 400, key_len=8, value_len=30)
    path, _ = build(env, str(tmp_path), entries, block_size=1024)
    pure, nat = open_both(env, path, cache_bytes=0)
    try:
        starts = [pure.block_request(no)[1] for no in range(pure.block_count)]
        cut = 6
        os.truncate(path, starts[cut] + 10)
        keys = sorted({e[0] for e in entries})
        late = next(k for k in keys if pure.locate(k, TOP) > cut)
        errors = []
        for r in (pure, nat):
            with pytest.raises(CorruptionError) as info:
                r.get(late, TOP)
            errors.append((str(info.value), info.value.path, info.value.offset))
        assert errors[0] == errors[1] and errors[1][1] == path and errors[1][2] in starts[cut + 1:]
        errors = full_scan_errors(pure, nat)
        assert errors[0] == errors[1] and errors[1][1:] == (path, starts[cut])
    finally:
        pure.close()
        nat.close()



def _error(call) -> tuple[type, str, str | None, int | None]:
    with pytest.raises(CorruptionError) as info:
        call()
    return type(info.value), str(info.value), info.value.path, info.value.offset


@pytest.mark.parametrize("layout, section", [("variable", "key"), ("variable", "value"),
                                             ("fixed-keys", "value")])
@pytest.mark.parametrize("how", ["above the next", "past the heap", "below the previous"])
def test_offsets_out_of_order_are_the_same_error_in_both_engines(tmp_path, monkeypatch, layout,
                                                                  section, how):
    """A data block whose offsets are out of order behind a valid checksum (the repro: the
    core's get raised while the Python get answered (True, b'', 1), and both scans returned
    garbled values): the same CorruptionError -- text, file and the block's offset -- from
    both engines on every read path, and from the core's own entry points (the merge in C
    names the file and offset but not the block number: compared without the text)."""
    env = PosixEnv()
    root = str(tmp_path)
    path, _, off, keys = offsets_damaged_table(env, root, layout, section, how)
    pure, nat = open_both(env, path)
    names = list(read_paths(pure, keys, root))
    pure.close()
    nat.close()
    for name in names:
        pure, nat = open_both(env, path)  # fresh readers and caches for each path
        try:
            monkeypatch.setattr(accel, "native", None)  # (the compaction's choice of merge)
            want = _error(read_paths(pure, keys, root)[name])
            monkeypatch.setattr(accel, "native", native)
            got = _error(read_paths(nat, keys, root)[name])
        finally:
            pure.close()
            nat.close()
        assert want[2:] == (path, off) and f"{section} offsets are out of order" in want[1]
        if name == "compaction":
            assert got[0] == want[0] and got[2:] == want[2:]
            assert got[1].split("does not parse: ")[1] == want[1].split("does not parse: ")[1]
        else:
            assert got == want, name
    k = keys[3]
    core_calls = {
        "tables_get": lambda c: native.tables_get((c,), k, TOP),
        "tables_entry": lambda c: native.tables_entry((c,), k, TOP),
        "tables_multi_get": lambda c: native.tables_multi_get((c,), [keys[0], k], TOP, env.read_batch),
        "tables_multi_get (loader)": lambda c: native.tables_multi_get((c,), [k], TOP, None),
        "MergeScan": lambda c: list(native.MergeScan([c], None, None, TOP, 0)),
        "MergeScan reverse": lambda c: list(native.MergeScan([c], None, None, TOP, 0, True)),
        "MergeScan seek": lambda c: list(native.MergeScan([c], k, None, TOP, 0, False, 3)),
    }
    for name, call in core_calls.items():
        pure, nat = open_both(env, path)
        try:
            assert _error(lambda: call(nat.core)) == _error(lambda: pure.get(k, TOP)), name
        finally:
            pure.close()
            nat.close()

@pytest.mark.skipif(accel.native is None, reason="the store runs on pure Python here")
@pytest.mark.parametrize("failing", ["first", "last"])
def test_merge_scan_after_a_failed_init_just_ends(failing):
    """A MergeScan whose __init__ raised (here: a source's iterator of runs raises) holds
    no half-opened source: iterating it afterwards ends at once instead of reading one
    (which crashed the interpreter)."""
    def bad_runs():
        raise ValueError("boom")
        yield  # pragma: no cover - a generator that raises at its first next()

    good = iter([[(b"a", 1, b"x")], [(b"b", 1, b"y")]])
    sources = [bad_runs(), good] if failing == "first" else [good, bad_runs()]
    scan = native.MergeScan.__new__(native.MergeScan)
    with pytest.raises(ValueError, match="boom"):
        scan.__init__(sources, None, None, TOP, 0)
    assert list(scan) == []


class _FailingReads(PosixEnv):
    """While ``failing`` is set, reads raise an OSError."""

    failing = False

    def open_readable(self, path):
        inner = super().open_readable(path)
        env = self

        class File(type(inner)):
            def read(self, offset, length):
                if env.failing:
                    raise OSError(5, "injected read error")
                return super().read(offset, length)
        inner.__class__ = File
        return inner


def test_merge_scan_runs_its_guard_in_stretches_and_after_io_errors(tmp_path):
    """MergeScan's guard runs before the first entry, then every 16, 64, 256, 1024 entries,
    at the end; and after an IO error, whose exception then becomes the guard's context
    (a close() racing with a read is reported as the close)."""
    env = _FailingReads()
    entries = [(b"k%05d" % i, 1, b"v" * 200) for i in range(2000)]  # 4 entries a block
    path, _ = build(env, str(tmp_path), entries, block_size=1024)
    _, nat = open_both(env, path, cache_bytes=0)
    seen: list[int] = []
    got: list[object] = []
    it = native.MergeScan([nat.core], None, None, TOP, 0, False, None, True, nat,
                          lambda: seen.append(len(got)))
    for key in it:
        got.append(key)
    assert len(got) == 2000 and seen == [0, 16, 80, 336, 1360, 2000]

    closed = []

    def guard():
        if closed:
            raise RuntimeError("closed")
    it = native.MergeScan([nat.core], None, None, TOP, 0, False, None, True, nat, guard)
    assert next(it) == b"k00000"
    env.failing = True
    with pytest.raises(OSError):  # an IO error while open is the IO error
        list(it)
    env.failing = False
    it = native.MergeScan([nat.core], None, None, TOP, 0, False, None, True, nat, guard)
    next(it)
    env.failing = True
    closed.append(True)
    with pytest.raises(RuntimeError, match="closed") as info:
        list(it)
    assert isinstance(info.value.__context__, OSError)
    nat.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.binary(max_size=200))
def test_damaged_index_or_filter_is_refused_or_safe(index, filt):
    """TableCore validates index and filter payloads whole: arbitrary bytes are refused
    with CorruptionError, or accepted and then looked up safely."""
    slots_needed = struct.unpack_from("<I", index)[0] if len(index) >= 4 else 0
    slots = [None] * min(slots_needed, 1000)
    filt_arg = filt if filt else None
    masks = bytes(8 << 14)
    try:
        core = native.TableCore(b"", b"\xff" * 4, 0, index, filt_arg, masks, slots,
                                lambda no: pytest.fail("no block should load"), "t.sst",
                                native.Counters())
    except (CorruptionError, ValueError):
        return
    # accepted: lookups must stay inside the payloads (every probe misses: no blocks)
    for key in (b"", b"a", b"\x00\x01", b"\xff" * 4):
        try:
            assert core.locate(key, TOP) >= -1
        except IndexError:  # pragma: no cover - not expected: slots match the index
            pytest.fail("locate ran past the slots")



def test_table_core_errors_name_the_index_and_filter_blocks():
    """TableCore's refusal of a damaged index or filter names the block's offset when the
    reader passes it (index_offset, filter_offset), as the Python reader's errors do."""
    from banyanstore.sstable.meta import encode_index
    index = bytearray(encode_index([0, 10, 20, 30], [3, 2, 1], [b"a", b"bb", b"c"]))
    at = 8 + 8 * 4 + 8 * 3
    struct.pack_into("<I", index, at + 4, 3)  # key offsets 0, 3, 3, 4 -> 0, 3, 1, 4: decreasing
    struct.pack_into("<I", index, at + 8, 1)
    args = (b"a", b"c", 1, bytes(index), None, bytes(8 << 14), [None] * 3, lambda no: None,
            "t.sst", native.Counters())
    for kw, offset in (({}, None), ({"index_offset": 4096}, 4096)):
        with pytest.raises(CorruptionError, match="index key offsets are not increasing") as info:
            native.TableCore(*args, **kw)
        assert (info.value.path, info.value.offset) == ("t.sst", offset)
    good = encode_index([0, 10, 20, 30], [3, 2, 1], [b"a", b"bb", b"c"])
    args = (b"a", b"c", 1, good, b"\x00" * 15, bytes(8 << 14), [None] * 3, lambda no: None,
            "t.sst", native.Counters())
    with pytest.raises(CorruptionError, match="filter block") as info:
        native.TableCore(*args, index_offset=4096, filter_offset=2048)
    assert info.value.offset == 2048

# -- merged scans across memtables and tables ------------------------------------------------
ops_st = st.lists(st.tuples(st.sampled_from(["put", "put", "delete", "flush"]),
                            st.binary(min_size=0, max_size=3), st.binary(max_size=5)),
                  min_size=1, max_size=120)
bound_st = st.one_of(st.none(), st.binary(max_size=3))


@pytest.mark.skipif(accel.native is None, reason="the store runs on pure Python here")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(ops=ops_st, scans=st.lists(st.tuples(bound_st, bound_st, st.booleans(),
                                            st.one_of(st.none(), st.integers(0, 12)),
                                            st.floats(0, 1)), min_size=1, max_size=12))
def test_merged_scans_match_python(tmp_path_factory, ops, scans):
    """MergeScan over memtables and tables gives exactly the Python merge's results, at
    every version, both directions, any bounds and limits (seek path included)."""
    import banyanstore
    from banyanstore.lsm.view import View
    path = tmp_path_factory.mktemp("merge")
    with banyanstore.open(path, compaction=False, history_retention=1e9, block_size=1024) as s:
        for op, key, value in ops:
            if op == "put":
                s.put(key, value)
            elif op == "delete":
                s.delete(key)
            else:
                s.flush()
        view = s._ks.view
        assert view.cores is not None
        pure = View(view.mem, view.imms, view.tables)
        pure.cores = None
        top = s.version
        for start, end, reverse, limit, at in scans:
            version = int(top * at)
            for floor in (0, version // 2):
                args = (start, end, version, floor, reverse, limit, lambda: None)
                want = list(pure.scan(*args))
                assert list(view.scan(*args)) == want, args
                assert list(view.scan(*args, keys_only=True)) == [k for k, _ in want], args


# -- the write path ----------------------------------------------------------------------------
wal_ops_st = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=20),
                                st.one_of(st.none(), st.binary(max_size=40))), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), wal_ops_st)
def test_wal_encoding_is_byte_identical(version, ms, ops):
    from banyanstore.lsm import wal
    assert native.wal_encode_batch(version, ms, ops) == wal.py_encode_batch(version, ms, ops)
    for ks, key, value in ops:
        assert (native.wal_encode_one(version, ms, ks, key, value)
                == wal.py_encode_one(version, ms, ks, key, value))
        assert wal.decode(native.wal_encode_one(version, ms, ks, key, value)) == (
            version, ms, [(ks, key, value)], [])


def test_wal_encoding_rejects_what_does_not_fit():
    with pytest.raises(ValueError, match="keyspace"):
        native.wal_encode_one(1, 1, 2**32, b"k", b"v")
    with pytest.raises(ValueError, match="version"):
        native.wal_encode_one(-1, 1, 0, b"k", b"v")
    with pytest.raises(TypeError):
        native.wal_encode_one(1, 1, 0, "k", b"v")
    with pytest.raises(TypeError):
        native.wal_encode_batch(1, 1, [(0, b"k")])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=10), unique=True, max_size=300))
def test_sort_keys_matches_sorted(keys):
    assert native.sort_keys(list(keys)) == sorted(keys)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=4), st.one_of(st.none(), st.binary(max_size=6))),
                min_size=1, max_size=200))
def test_flush_columns_match_python(writes):
    """The memtable's columns (every version of every key, table order) from C and Python."""
    from banyanstore.lsm import memtable as memtable_mod
    mem = memtable_mod.PyMemtable()
    for version, (key, value) in enumerate(writes, 1):
        mem.add(key, version // 2 + 1, value)  # pairs of writes share a version: last one wins
    saved = memtable_mod._native
    try:
        memtable_mod._native = None
        want = mem.flush_columns()
    finally:
        memtable_mod._native = saved
    assert native.flush_columns(mem._data, mem.sorted_keys()) == want


def test_a_dropped_reader_is_freed_at_once(tmp_path):
    """The core calls back into its reader weakly: a table a merge dropped must close its
    descriptor when the last reference goes, not at some later cyclic collection."""
    import gc
    import weakref
    env = PosixEnv()
    path, _ = build(env, str(tmp_path), random_entries(random.Random(9), 50))
    _, nat = open_both(env, path)
    cores = (nat.core,)
    assert native.tables_get(cores, b"absent", TOP) is None
    ref = weakref.ref(nat)
    gc.disable()
    try:
        del nat, cores
        assert ref() is None
    finally:
        gc.enable()


# -- range tombstones --------------------------------------------------------------------------
range_ops_st = st.lists(st.tuples(st.sampled_from(["put", "put", "put", "delete", "range", "flush"]),
                                  st.binary(min_size=0, max_size=3), st.binary(max_size=3)),
                        min_size=1, max_size=100)


@pytest.mark.skipif(accel.native is None, reason="the store runs on pure Python here")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(ops=range_ops_st, probes=st.lists(st.tuples(bound_st, bound_st, st.booleans(),
                                                   st.one_of(st.none(), st.integers(0, 12)),
                                                   st.floats(0, 1)), min_size=1, max_size=8))
def test_range_tombstones_read_the_same_in_both_modes(tmp_path_factory, monkeypatch, ops, probes):
    """A store with range tombstones in memtables and tables answers every get,
    multi_get, scan and seek at every version the same on the compiled core (a writer)
    as on pure Python (a follower whose tables were opened without the core)."""
    import banyanstore
    path = tmp_path_factory.mktemp("ranges")
    keys = sorted({k for _op, k, _v in ops} | {b"", b"\xff"})
    with banyanstore.open(path, compaction=False, history_retention=1e9, block_size=1024) as s:
        for op, key, other in ops:
            if op == "put":
                s.put(key, other)
            elif op == "delete":
                s.delete(key)
            elif op == "range":
                lo, hi = sorted((key, other))
                s.delete_range(lo, hi + b"\x00")
            else:
                s.flush()
        s.sync()
        assert s._ks.view.cores is not None
        with monkeypatch.context() as m:
            m.setattr(reader_mod, "native", None)
            pure = banyanstore.open(path, read_only=True)
        try:
            assert all(t.core is None for t in pure._ks.view.tables)
            top = s.version
            for start, end, reverse, limit, at in probes:
                v = int(top * at)
                assert s.multi_get(keys, version=v) == pure.multi_get(keys, version=v), v
                assert [s.get(k, version=v) for k in keys] == [pure.get(k, version=v) for k in keys]
                args = dict(start=start, end=end, version=v, reverse=reverse, limit=limit)
                assert list(s.scan(**args)) == list(pure.scan(**args)), args
                assert list(s.scan(**args, keys_only=True)) == list(pure.scan(**args, keys_only=True))
        finally:
            pure.close()


# -- the lz4 decoder ----------------------------------------------------------------------------
def _lz4_python(body: bytes) -> bytes | None:
    import lz4.block
    try:
        return lz4.block.decompress(body)
    except (lz4.block.LZ4BlockError, ValueError, MemoryError):
        return None


def _lz4_inputs(rng: random.Random) -> list[bytes]:
    """Payloads of every kind a table stores: random, runs, repeats at short and long
    distances (overlapping matches), and real data blocks."""
    out = [bytes([rng.randrange(256)]) * rng.randrange(1, 5000),
           rng.randbytes(rng.randrange(1, 3000)),
           bytes(rng.choice(b"ab") for _ in range(rng.randrange(1, 4000))),
           (rng.randbytes(rng.randrange(1, 9)) * 700)[:rng.randrange(1, 5000)],
           (rng.randbytes(300) + bytes(40)) * rng.randrange(1, 30)]
    keys = sorted({b"key%08d" % rng.randrange(10**8) for _ in range(rng.randrange(1, 60))})
    versions, values = [rng.randrange(1, 99) for _ in keys], [rng.randbytes(50) * 2 for _ in keys]
    out.append(encode_block(keys, versions, values))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_lz4_decoder_matches_the_lz4_package(seed):
    """Every body the lz4 package makes (its default, fast and high-compression modes) decodes
    to the same bytes; damaged bodies (bit flips, truncation, a wrong size prefix) either
    decode exactly as the package decodes them or are left to it (None) -- never a result
    where the package raises."""
    import lz4.block
    rng = random.Random(seed)
    for data in _lz4_inputs(rng):
        for kw in ({}, {"mode": "fast", "acceleration": 8}, {"mode": "high_compression"}):
            body = lz4.block.compress(data, **kw)
            assert native.lz4_decompress(body) == data
            for _ in range(40):
                bad = bytearray(body)
                what = rng.randrange(4)
                if what == 0:
                    bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
                elif what == 1:
                    del bad[rng.randrange(4, len(bad)):]
                elif what == 2:
                    bad[0:4] = struct.pack("<I", max(0, len(data) + rng.choice([-3, -1, 1, 7, 10**6])))
                else:
                    bad[rng.randrange(4, len(bad))] = rng.choice([0, 15, 255])
                want, got = _lz4_python(bytes(bad)), native.lz4_decompress(bytes(bad))
                assert got is None or got == want, (seed, what)


def test_lz4_decoder_refuses_malformed_blocks():
    """Hand-made edge cases: offset 0, an offset before the output, a match into the last
    five bytes, literals running past the input, and sizes that do not add up."""
    hdr = struct.Struct("<I").pack
    cases = [
        b"",                                   # no size
        hdr(0),                                # nothing to decode
        hdr(5) + b"\x50abcd",                  # literals run past the input
        hdr(4) + b"\x50abcde",                 # more output than declared
        hdr(20) + b"\x40abcd\x00\x00" + b"\x50vwxyz",   # offset 0
        hdr(20) + b"\x40abcd\x09\x00" + b"\x50vwxyz",   # offset past the start
        hdr(12) + b"\x43abcd\x04\x00" + b"\x10z",       # a match into the last 5 bytes
        hdr(10**9) + b"\x50abcde",             # an absurd size claim
    ]
    for body in cases:
        assert native.lz4_decompress(body) is None, body
        assert _lz4_python(body) in (None, native.lz4_decompress(body))
    assert native.lz4_decompress(hdr(5) + b"\x50abcde") == b"abcde"


def _lz4_stream(rng: random.Random, size: int) -> tuple[bytes, bool]:
    """A hand-built LZ4 block body of about ``size`` output bytes -- short sequences (the
    decoder's fixed-copy path: literals <= 14, matches <= 18, offsets 1..40, overlapping
    ones too) mixed with long ones, ending with literals; now and then an offset of 0 or
    past the start, or an end too close to the last match, as damage would leave it -- and
    whether it keeps the format's rules (valid offsets, >= 5 final literals, the last match
    starting >= 12 bytes before the end)."""
    out, seqs, valid, ml = 0, bytearray(), True, 0
    while out < size:
        lit = rng.choice([0, 1, 3, 7, 8, 13, 14, 15, 16, 30, 300]) if out else rng.randrange(1, 20)
        ml = rng.choice([4, 5, 8, 11, 17, 18, 19, 20, 40, 600])
        literals = rng.randbytes(lit)
        out += lit
        offset = min(rng.choice([1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 40, out]), out)
        if rng.random() < 0.004:
            offset = rng.choice([0, out + 1])
        valid = valid and 1 <= offset <= min(out, 65535)
        token = (min(lit, 15) << 4) | min(ml - 4, 15)
        seqs.append(token)
        if lit >= 15:
            seqs += b"\xff" * ((lit - 15) // 255) + bytes([(lit - 15) % 255])
        seqs += literals + struct.pack("<H", max(0, min(offset, 65535)))
        if ml - 4 >= 15:
            seqs += b"\xff" * ((ml - 19) // 255) + bytes([(ml - 19) % 255])
        out += ml
    last = rng.choice([5, 6, 12, 20]) if rng.random() < 0.9 else rng.randrange(0, 5)
    valid = valid and last >= 5 and ml + last >= 12
    seqs.append(min(last, 15) << 4)
    if last >= 15:
        seqs.append(last - 15)
    seqs += rng.randbytes(last)
    out += last
    return struct.pack("<I", out) + bytes(seqs), valid


@pytest.mark.parametrize("seed", range(4))
def test_lz4_decoder_short_sequences_as_the_lz4_package(seed):
    """Hand-built bodies of many short sequences (the decoder's fixed-size-copy path) near
    and far from both ends: a body that keeps the format's rules decodes to the lz4
    package's bytes; any other is refused (left to the package) or decoded as it does."""
    rng = random.Random(seed)
    kept = 0
    for _ in range(400):
        body, valid = _lz4_stream(rng, rng.choice([10, 40, 100, 1000, 5000]))
        want, got = _lz4_python(body), native.lz4_decompress(body)
        if valid:
            assert want is not None and got == want, (seed, body[:40])
            kept += 1
        else:
            assert got is None or got == want, (seed, body[:40])
    assert kept > 250


def _lz4_seq(lit: bytes, offset: int | None = None, match_len: int = 4) -> bytes:
    """One LZ4 sequence: ``lit`` then (unless ``offset`` is None: the last sequence) a
    match of ``match_len`` bytes ``offset`` back, length fields extended as the format says."""
    n, m = len(lit), match_len - 4
    out = bytearray([(min(n, 15) << 4) | (min(m, 15) if offset is not None else 0)])
    if n >= 15:
        out += b"\xff" * ((n - 15) // 255) + bytes([(n - 15) % 255])
    out += lit
    if offset is not None:
        out += struct.pack("<H", offset)
        if m >= 15:
            out += b"\xff" * ((m - 15) // 255) + bytes([(m - 15) % 255])
    return bytes(out)


def test_lz4_decoder_at_the_edges_of_its_fixed_size_copies():
    """The decoder's fast paths copy in fixed 16- and 32-byte strides and take a short
    sequence only with 24 bytes of input and 37 of output room left; every other sequence
    takes the checked path.  A literal run of each length around the strides and the 15 and
    255 extension steps, then a short sequence (overlapping or not), then a last literal
    run of every length that puts that sequence on, just inside and just outside both
    limits: every body keeping the format's rules decodes to the lz4 package's bytes, one
    ending too close to its last match (fewer than 5 literals after it, or the match
    starting fewer than 12 before the end) is refused or decoded as the package does, and
    one whose size prefix is a few bytes short or long is refused.
    (Under ``make test-asan`` a stride past either buffer fails here.)"""
    pat = bytes(range(1, 256)) * 3
    checked = 0
    for first in (1, 2, 13, 14, 15, 16, 17, 29, 30, 31, 32, 33, 34, 47, 48, 49, 63, 64, 270, 300):
        for first_match in (4, 19, 300):
            head = _lz4_seq(pat[:first], 1, first_match)
            out = first + first_match
            for lit2, match2, offset2 in ((0, 4, 1), (14, 18, 1), (14, 18, 8), (1, 17, 16),
                                           (13, 4, 7), (0, 18, 40)):
                mid = _lz4_seq(pat[first:first + lit2], min(offset2, out + lit2), match2)
                for last in range(0, 44):
                    body = head + mid + _lz4_seq(pat[:last])
                    size = out + lit2 + match2 + last
                    want, got = (_lz4_python(struct.pack("<I", size) + body),
                                 native.lz4_decompress(struct.pack("<I", size) + body))
                    if last >= 5 and match2 + last >= 12:
                        assert want is not None and got == want, (first, first_match, lit2, last)
                        checked += 1
                    else:
                        assert got is None or got == want, (first, first_match, lit2, last)
                    for wrong in (size - 9, size - 6, size - 3, size - 1, size + 1):
                        # a damaged size: less room than the body writes, or more
                        assert native.lz4_decompress(struct.pack("<I", wrong) + body) is None
    # one literal run alone: every length around the strides and extension steps
    for n in [*range(1, 70), 269, 270, 271, 524, 525, 526]:
        body = struct.pack("<I", n) + _lz4_seq(pat[:n] if n <= len(pat) else bytes(n))
        assert native.lz4_decompress(body) == _lz4_python(body) == (pat[:n] if n <= len(pat) else bytes(n))
    assert checked > 12000


@pytest.mark.parametrize("kind", [2, 0xFF])
def test_a_kind_byte_other_than_0_or_1_is_refused_by_both_engines(kind):
    """The C decoder refuses what Block() refuses: a kind byte other than 0 or 1."""
    payload = encode_block([b"k" * 8, b"l" * 8], [2, 1], [b"v", None])
    damaged = payload[:-2] + bytes([kind]) + payload[-1:]
    with pytest.raises(BlockFormatError):
        Block(damaged)
    with pytest.raises(BlockFormatError):
        native.block_from_payload(damaged)
