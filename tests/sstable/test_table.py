"""Tables end to end over every IO backend, checked against a sorted-list model."""

from __future__ import annotations

import random
from itertools import islice

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banyanstore.io.base import Env
from banyanstore.options import Options
from banyanstore.sstable import (
    MISS,
    BlockCache,
    TableBuilder,
    TableReader,
    key_hash,
    read_blocks,
)
from banyanstore.sstable.reader import RUN_FIRST, LazyIndexKeys

from .helpers import build, model_get, model_scan, new_path, open_table, random_entries

EnvDir = tuple[Env, str]
TOP = 2**64 - 1


def check_against_model(reader: TableReader, entries: list, rng: random.Random, probes: int = 60) -> None:
    keys = sorted({e[0] for e in entries})
    candidates = keys + [k + b"\x00" for k in keys[:10]] + [b"", b"\xff" * 13]
    for _ in range(probes):
        key = rng.choice(candidates)
        version = rng.choice([TOP, rng.randrange(0, 64)])
        assert reader.get(key, version) == model_get(entries, key, version), (key, version)
        assert reader.get(key, version, key_hash(key)) == model_get(entries, key, version)
        if reader.core is None and reader.meta.smallest_key <= key <= reader.meta.largest_key:
            # the Python path of a view's loop: fences checked and the key hashed by the caller
            assert reader.probe(key, version, key_hash(key)) == model_get(entries, key, version)
            assert reader.probe_block(key, version, key_hash(key)) == reader.locate(key, version)
    for key in rng.sample(keys, min(len(keys), 10)):
        assert reader.history(key) == [(v, val) for k, v, val in entries if k == key]
    bounds = [None, b"", b"\x80", b"\xff\xff"] + rng.sample(keys, min(len(keys), 6))
    for _ in range(12):
        start, end = rng.choice(bounds), rng.choice(bounds)
        for reverse in (False, True):
            got = list(reader.scan(start, end, reverse=reverse))
            assert got == model_scan(entries, start, end, reverse), (start, end, reverse)
            runs = list(reader.scan_runs(start, end, reverse=reverse))
            assert all(runs) and all(run == sorted(run, key=lambda e: (e[0], -e[1])) for run in runs)
            flat = [e for run in runs for e in (reversed(run) if reverse else run)]
            assert flat == got


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), nkeys=st.integers(1, 120),
       block_size=st.sampled_from([1024, 2048, 16384]),
       compression=st.sampled_from(["none", "lz4", "zstd"]),
       fixed=st.booleans(), bloom=st.sampled_from([0, 4, 12]))
def test_round_trip_against_model(env_dir: EnvDir, seed: int, nkeys: int, block_size: int,
                                  compression: str, fixed: bool, bloom: int) -> None:
    env, root = env_dir
    rng = random.Random(seed)
    entries = random_entries(rng, nkeys, max_versions=4, key_len=8 if fixed else None,
                             value_len=30 if fixed else None, tombstone_rate=0.2)
    path, meta = build(env, root, entries, block_size=block_size, compression=compression,
                       bloom_bits_per_key=bloom)
    assert meta.entry_count == len(entries)
    assert meta.key_count == len({e[0] for e in entries})
    assert meta.tombstone_count == sum(e[2] is None for e in entries)
    assert (meta.smallest_key, meta.largest_key) == (entries[0][0], entries[-1][0])
    assert (meta.min_version, meta.max_version) == (min(e[1] for e in entries), max(e[1] for e in entries))
    assert meta.file_size == env.file_size(path)
    cache_bytes = rng.choice([0, 20_000, 1 << 24])
    with open_table(env, path, cache_bytes) as reader:
        assert reader.meta == meta
        assert list(reader.scan()) == entries
        check_against_model(reader, entries, rng)
        if cache_bytes == 0:
            assert len(reader.cache) == 0
        assert reader.cache.usage <= reader.cache.capacity


def test_versions_spanning_many_blocks(env_dir: EnvDir) -> None:
    """One key with 300 versions across many 1 KiB blocks, between two other keys."""
    env, root = env_dir
    entries = [(b"a", 5, b"A")]
    entries += [(b"hot", v, b"%05d" % v + b"." * 40 if v % 10 else None) for v in range(600, 0, -2)]
    entries += [(b"z", 1, b"Z")]
    path, meta = build(env, root, entries, block_size=1024)
    with open_table(env, path) as r:
        assert r.block_count > 10
        # several blocks end in b"hot": the index must step over them
        assert sum(k == b"hot" for k in r._last_keys) > 5
        for v in [1, 2, 3, 59, 60, 61, 301, 599, 600, 601, TOP]:
            assert r.get(b"hot", v) == model_get(entries, b"hot", v), v
        assert r.history(b"hot") == [(v, val) for k, v, val in entries if k == b"hot"]
        assert list(r.scan(b"hot", b"hot\x00", reverse=True)) == model_scan(entries, b"hot", b"hot\x00", True)
        assert r.get(b"a", 4) == MISS and r.get(b"z", 1) == (True, b"Z", 1)
        # batched path agrees with get()
        ks = [b"hot"] * 6 + [b"a", b"z", b"nope"]
        vs = [1, 60, 61, 333, 600, TOP, TOP, TOP, TOP]
        for k, v in zip(ks, vs, strict=True):
            no = r.locate(k, v)
            got = MISS if no < 0 else r.get_in_block(r.load_blocks([no])[no], k, v)
            assert got == r.get(k, v) == model_get(entries, k, v), (k, v)


def test_big_values_empty_values_and_empty_key(env_dir: EnvDir) -> None:
    env, root = env_dir
    big = bytes(range(256)) * 200  # 51 KiB, bigger than a block
    entries = [(b"", 3, b""), (b"", 2, None), (b"b", 9, big), (b"b", 8, b""), (b"c", 1, big[:5000] * 3)]
    for comp in ("none", "lz4", "zstd"):
        path, meta = build(env, root, entries, block_size=1024, compression=comp)
        with open_table(env, path) as r:
            assert list(r.scan()) == entries
            assert r.get(b"", TOP) == (True, b"", 3) and r.get(b"", 2) == (True, None, 2)
            assert r.get(b"b", 9) == (True, big, 9)
            assert list(r.scan(reverse=True)) == entries[::-1]
        if comp != "none":
            assert meta.data_size < meta.raw_size  # the repetitive big values compressed


def test_builder_rejects_bad_input(env_dir: EnvDir) -> None:
    env, root = env_dir
    b = TableBuilder(env, new_path(root), Options(max_key_size=8, max_value_size=10))
    b.add(b"b", 5, b"x")
    for bad in [(b"b", 5, b"x"), (b"b", 6, b"x"), (b"a", 1, b"x"), (b"c", 0, b"x"), (b"c", 2**64, b"x"),
                (b"k" * 9, 1, b"x"), (b"c", 1, b"v" * 11)]:
        with pytest.raises(ValueError):
            b.add(*bad)
        with pytest.raises(ValueError):
            b.add_many([bad])
    # add_many keeps the good prefix of a batch, refuses the bad entry, stays usable
    with pytest.raises(ValueError):
        b.add_many([(b"b", 4, b"y"), (b"c", 1, b"z"), (b"c", 1, b"dup")])
    b.add(b"d", 1, None)
    meta = b.finish()
    assert (meta.entry_count, meta.key_count, meta.tombstone_count) == (4, 3, 1)
    with pytest.raises(ValueError):
        b.add(b"e", 1, b"")
    with TableReader.open(env, meta.path) as r:
        assert list(r.scan()) == [(b"b", 5, b"x"), (b"b", 4, b"y"), (b"c", 1, b"z"), (b"d", 1, None)]


def test_empty_table_and_abandon(env_dir: EnvDir) -> None:
    env, root = env_dir
    path = new_path(root)
    b = TableBuilder(env, path)
    with pytest.raises(ValueError):
        b.finish()
    b.abandon()
    b.abandon()
    assert not env.exists(path)
    path2 = new_path(root)
    with pytest.raises(RuntimeError), TableBuilder(env, path2) as b2:
        b2.add_many((b"k%06d" % i, 1, b"v" * 50) for i in range(5000))
        raise RuntimeError("compaction failed")
    assert not env.exists(path2)
    assert all(not n.endswith(".sst") for n in env.listdir(root))


def test_cache_use_and_close_evicts(env_dir: EnvDir) -> None:
    env, root = env_dir
    entries = [(b"k%06d" % i, 1, b"v" * 60) for i in range(3000)]
    path, _ = build(env, root, entries, block_size=2048)
    cache = BlockCache(1 << 24)
    r1 = TableReader.open(env, path, cache)
    r2 = TableReader.open(env, path, cache)
    assert r1.table_id != r2.table_id
    for i in range(0, 3000, 7):
        assert r1.get(b"k%06d" % i, TOP) == (True, b"v" * 60, 1)
    loaded = cache.total_misses
    assert loaded == len(cache) <= r1.block_count
    for i in range(0, 3000, 7):
        r1.get(b"k%06d" % i, TOP)
    assert cache.total_misses == loaded and cache.total_hits >= 3000 // 7
    list(r2.scan(fill_cache=False))
    assert len(cache) == loaded  # a no-fill scan leaves the cache alone
    list(r2.scan())  # (the cache has room: every block read ahead is admitted)
    r1.close()
    r1.close()
    assert len(cache) == r2.block_count  # only r2's blocks remain
    r2.close()
    assert len(cache) == 0 and cache.usage == 0


def test_small_cache_stays_bounded(env_dir: EnvDir) -> None:
    env, root = env_dir
    entries = [(b"k%06d" % i, 1, b"v" * 60) for i in range(4000)]
    path, _ = build(env, root, entries, block_size=1024)
    with open_table(env, path, cache_bytes=30_000) as r:
        rng = random.Random(3)
        for _ in range(2000):
            i = rng.randrange(4000)
            assert r.get(b"k%06d" % i, TOP) == (True, b"v" * 60, 1)
        assert 0 < r.cache.usage <= 30_000
        assert r.cache.evictions > 0


def test_read_blocks_batches_across_tables(env_dir: EnvDir) -> None:
    env, root = env_dir
    rng = random.Random(11)
    tables = []
    for t in range(3):
        entries = [(b"k%05d" % i, 10 + t, b"t%d-%d" % (t, i)) for i in range(t, 3000, 3)]
        path, _ = build(env, root, entries, block_size=1024)
        tables.append((open_table(env, path), entries))
    calls = []
    real = env.read_batch

    def counting(reqs):  # type: ignore[no-untyped-def]
        calls.append(len(reqs))
        return real(reqs)

    env.read_batch = counting  # type: ignore[method-assign]
    try:
        wanted = [b"k%05d" % rng.randrange(3000) for _ in range(200)] + [b"zzz", b"k02999x"]
        hashes = [key_hash(k) for k in wanted]
        requests, where = [], []
        for r, _ in tables:
            plan = r.plan_blocks(wanted, TOP, hashes)
            assert plan == r.plan_blocks(wanted, TOP)
            for k, no in zip(wanted, plan, strict=True):
                if no >= 0:
                    requests.append((r, no))
                    where.append((r, k))
        blocks = read_blocks(env, requests)
        assert calls == [len({(r.table_id, no) for r, no in requests})]  # one batch, deduplicated
        found = {}
        for (r, k), blk in zip(where, blocks, strict=True):
            hit = r.get_in_block(blk, k, TOP)
            if hit[0]:
                found[k] = hit
        for k in wanted:
            expect = next((model_get(e, k, TOP) for _, e in tables if model_get(e, k, TOP)[0]), MISS)
            assert found.get(k, MISS) == expect
        # second round: everything is cached, no IO at all
        read_blocks(env, requests)
        assert len(calls) == 1
    finally:
        del env.read_batch
        for r, _ in tables:
            r.close()


def test_seek_and_short_scans(env_dir: EnvDir) -> None:
    env, root = env_dir
    entries = [(b"k%06d" % i, v, b"x" * 20) for i in range(0, 4000, 2) for v in (3, 1)]
    path, _ = build(env, root, entries, block_size=1024)
    with open_table(env, path) as r:
        rng = random.Random(5)
        for _ in range(100):
            start = b"k%06d" % rng.randrange(4000)
            got = list(islice(r.scan(start), 10))
            assert got == model_scan(entries, start, None)[:10]
            got = list(islice(r.scan(None, start, reverse=True), 10))
            assert got == model_scan(entries, None, start, True)[:10]
        for _ in range(30):  # (long ranges: a short one comes whole, below)
            start = b"k%06d" % rng.randrange(3000)
            run = next(iter(r.scan_runs(start)))
            assert 0 < len(run) <= 2 * RUN_FIRST  # a seek's first run is short
            assert run == model_scan(entries, start, None)[:len(run)]
            start = b"k%06d" % rng.randrange(1000, 4000)
            run = next(iter(r.scan_runs(None, start, reverse=True)))
            assert 0 < len(run) <= 2 * RUN_FIRST
            assert run == model_scan(entries, None, start)[-len(run):]
        for _ in range(60):  # a range in one or two blocks: a list of its runs, read at the call
            a = rng.randrange(4000)
            start, end = b"k%06d" % a, b"k%06d" % (a + rng.randrange(1, 16))
            for reverse in (False, True):
                runs = r.scan_runs(start, end, reverse=reverse)
                assert isinstance(runs, list) and all(runs)
                flat = [e for run in (reversed(runs) if reverse else runs) for e in run]
                assert flat == model_scan(entries, start, end)
        assert not isinstance(r.scan_runs(b"k000100", b"k000300"), list)  # ~8 blocks: lazy
        assert list(r.scan(b"k9", b"k1")) == [] and list(r.scan(b"zz")) == []
        assert list(r.scan(None, b"a")) == [] and list(r.scan(b"k000000", b"k000000")) == []


def test_index_keys_are_decoded_only_when_python_code_asks(env_dir: EnvDir) -> None:
    """With the compiled core the reader keeps no Python list of the index keys (the core
    reads its copy of the index block: about 65 bytes a block less); a Python path that
    needs them (``history``, ``approximate_range``) decodes them on first use, with the
    same answers."""
    env, root = env_dir
    entries = random_entries(random.Random(5), 400, key_len=8, value_len=30)
    path, meta = build(env, root, entries, block_size=1024)
    reader = open_table(env, path)
    try:
        keys = reader._last_keys
        if reader.core is not None:
            assert isinstance(keys, LazyIndexKeys) and not keys.decoded
        else:
            assert type(keys) is list
        key = entries[len(entries) // 2][0]
        assert reader.history(key) == [(v, val) for k, v, val in entries if k == key]
        assert type(reader._last_keys) is list  # a scan's bisect then probes a list, no calls
        assert len(keys) == meta.block_count and keys[-1] == meta.largest_key
        if reader.core is not None:
            assert keys.as_list() is reader._last_keys
        assert all(a <= b for a, b in zip(keys[:-1], keys[1:], strict=True))
        assert reader.approximate_range(None, None)[1] > 0
        with pytest.raises(AttributeError, match="no_such_thing"):
            reader.no_such_thing  # noqa: B018 - the lookup is the test
    finally:
        reader.close()


def test_table_reader_has_no_getattr_hook() -> None:
    """No ``__getattr__`` on TableReader or its bases: a class that defines one has every
    attribute read of its instances take CPython's slow hook, never specialised -- with one
    (for the lazy index keys) a pure-Python point read cost 65,641 instructions instead of
    43,030 (cachegrind; about ten reader attributes a table a get)."""
    assert all("__getattr__" not in vars(cls) for cls in TableReader.__mro__)


def test_table_reader_attributes_stay_within_cpythons_shared_keys(env_dir: EnvDir) -> None:
    """At most 29 instance attributes on a reader, pure-Python or compiled: CPython 3.11
    keeps that many names in the dict keys a class's instances share, and reads every
    attribute of an instance with more more slowly (a method reading three attributes:
    42.0 ns at 29, 45.7 ns at 30).  A 30th (``plain``, now a property) cost a seek over
    nine tables 1.5% more instructions (599,889 against 591,758, cachegrind)."""
    env, root = env_dir
    path, _ = build(env, root, [(b"k%04d" % i, 1, b"v") for i in range(300)], block_size=1024)
    with open_table(env, path) as r:
        r.scan_runs(None, None)
        list(r.scan(None))
        r.history(b"k0001")  # (decodes the lazy index keys where the core serves the reader)
        assert len(vars(r)) <= 29, sorted(vars(r))


def test_blocks_past_lz4s_input_limit_are_stored_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    """lz4 refuses an input over LZ4_MAX_INPUT_SIZE (0x7E000000 bytes, less than the
    largest max_value_size, 2 GiB): a block holding such a value is stored raw, as an
    incompressible one is, instead of failing its flush or merge for ever."""
    import lz4.block

    from banyanstore.sstable import format as table_format
    assert table_format.LZ4_MAX_INPUT == 0x7E000000
    with pytest.raises(lz4.block.LZ4BlockError):  # refused before it reads a byte
        lz4.block.compress(bytes(table_format.LZ4_MAX_INPUT + 1), store_size=True)
    monkeypatch.setattr(table_format, "LZ4_MAX_INPUT", 1000)  # the same path, in KiB
    for size, ctype in ((1000, table_format.COMPRESSION_LZ4), (1001, table_format.COMPRESSION_NONE)):
        payload = b"a" * size
        stored = table_format.wrap_block(payload, table_format.COMPRESSION_LZ4)
        assert stored[-table_format.TRAILER_SIZE] == ctype
        assert table_format.unwrap_block(stored, "t", 0) == payload


def test_unwrap_block_names_a_numbered_block_as_the_formatted_name_did() -> None:
    """The table reader passes a data block's number apart (``block_no``), formatted only
    when the block is damaged: every error names it as ``what=f"data block {no}"`` did."""
    from banyanstore.errors import CorruptionError
    from banyanstore.sstable import format as table_format

    good = table_format.wrap_block(b"abcdefgh" * 64, table_format.COMPRESSION_LZ4)
    body = good[:-table_format.TRAILER_SIZE]
    bad_lz4 = b"\xff" * len(body)
    damaged = {
        "truncated": good[:3],
        "checksum": good[:10] + bytes([good[10] ^ 1]) + good[11:],
        "decompress": bad_lz4 + table_format.TRAILER.pack(
            table_format.COMPRESSION_LZ4, table_format.crc32c(bad_lz4 + bytes([1]))),
        "unknown type": body + table_format.TRAILER.pack(9, table_format.crc32c(body + bytes([9]))),
    }
    for how, stored in damaged.items():
        messages = []
        for kwargs in ({"what": "data block 7"}, {"what": "data block", "block_no": 7}):
            with pytest.raises(CorruptionError) as info:
                table_format.unwrap_block(stored, "t.sst", 4096, **kwargs)  # type: ignore[arg-type]
            assert info.value.offset == 4096 and info.value.path == "t.sst", how
            messages.append(str(info.value))
        assert messages[0] == messages[1] and "data block 7" in messages[0], (how, messages)
    assert table_format.unwrap_block(good, "t.sst", 0, what="data block", block_no=7) == b"abcdefgh" * 64
