"""atheris harness for the compiled core's decoders (src/banyanstore/_native.c).

Each input is split (atheris.FuzzedDataProvider) into block payloads, an index, keys,
bounds and versions, and driven through every entry point that reads bytes from disk:
``block_lookup_payload``, ``TableCore`` (index and filter validation, ``get``,
``locate``), ``MergeScan`` over blocks whose payloads were never validated by the
Python decoder, forward and in reverse, and the compaction merge (``MergeBuild``) over
the same payloads as two tables' blocks.  The only acceptable failure is
:class:`CorruptionError`; anything else -- another exception, a crash, or (under
AddressSanitizer) an out-of-bounds read -- is a finding.  So is a payload the C decoders
and the Python one (``Block``) judge differently -- one refusing what the other takes, an
offsets array out of order included -- or a lookup in a payload both take, with its keys
in order, that answers differently.  A damaged flush buffer goes to
the C table build (``TableBuilder.add_flush_buffer``) and to the pure-Python one: both
must raise the same ValueError or write the same table; and to both decoders
(``decode_flush_buffer`` and ``flushbuf.decode``): the same columns or the same ValueError.

The cache-miss path: a real table file (entries, widths, compression and block size from
the input) with stored blocks damaged behind a recomputed checksum, bytes flipped, or cut
short, is opened by the pure reader and by the core (which reads it with ``pread`` itself,
checks, decompresses and decodes each block) and read by both -- point reads,
``multi_get`` batches, scans both ways with bounds -- with no block cached: the same
answers and the same ``CorruptionError`` (message, file, offset), wherever the damage left
the blocks saying what the index and the properties say of them (``reads_as_written``).

Bounded run (what the test suite and CI do, from a corpus directory of random seed inputs
of 256 B to 4 KiB -- from an empty corpus libFuzzer mutates a 1-byte input the whole run,
see test_fuzz_bounded.py)::

    python tests/fuzz/fuzz_native.py -runs=20000 -seed=1 -len_control=0 corpus_dir/

Long run (a developer's machine; add ``-jobs=2`` to use both cores)::

    python tests/fuzz/fuzz_native.py -max_total_time=3600 corpus_dir/

Under AddressSanitizer (the extension built with ``-fsanitize=address``, see .ci/run)::

    LD_PRELOAD=$(gcc -print-file-name=libasan.so) \\
        ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \\
        python tests/fuzz/fuzz_native.py -runs=20000

The C extension is not compiled with coverage instrumentation (that needs clang's
``-fsanitize=fuzzer-no-link``), so mutation is guided by the Python side only; the
structure-aware split above is what reaches the C decoders' branches.
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import atheris
import lz4.block

with atheris.instrument_imports():
    from banyanstore import accel
    from banyanstore.errors import CorruptionError
    from banyanstore.io.memory import MemoryEnv
    from banyanstore.io.posix import PosixEnv
    from banyanstore.lsm import flushbuf
    from banyanstore.lsm.memtable import PyMemtable
    from banyanstore.lsm.view import View
    from banyanstore.options import Options
    from banyanstore.sstable import reader as reader_mod
    from banyanstore.sstable.block import Block, BlockFormatError, encode_block
    from banyanstore.sstable.builder import TableBuilder
    from banyanstore.sstable.cache import BlockCache
    from banyanstore.sstable.format import TRAILER, crc32c
    from banyanstore.sstable.meta import encode_index

native = accel.load_native()
if native is None:
    sys.exit("the compiled core is not built")
reader_mod.bind_native(native)
MASKS = bytes(8 << 14)
TOP = 2**64 - 1
# the table files of the miss path: read with pread by the core, as a store's are
TABLE_DIR = tempfile.mkdtemp(prefix="fuzz-native-")
atexit.register(shutil.rmtree, TABLE_DIR, True)
POSIX = PosixEnv()


def raw_block(data: bytes) -> Block:
    """A Block holding ``data`` without the Python decoder's checks (as if a bug or a
    checksum collision had let a damaged payload through)."""
    block = Block.__new__(Block)
    block.data = data
    return block


def payload(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A block payload: arbitrary bytes, or a well-formed block with a few bytes damaged
    (which reaches far deeper into the decoder than random bytes do)."""
    if fdp.ConsumeIntInRange(0, 3) == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    n = fdp.ConsumeIntInRange(1, 12)
    width = fdp.ConsumeIntInRange(0, 4) if fdp.ConsumeBool() else None
    keys = sorted(fdp.ConsumeBytes(width if width is not None else fdp.ConsumeIntInRange(0, 5))
                  for _ in range(n))
    versions = [fdp.ConsumeIntInRange(1, 2**64 - 1) for _ in range(n)]
    values = [None if fdp.ConsumeIntInRange(0, 4) == 0 else fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 6))
              for _ in range(n)]
    data = bytearray(encode_block(keys, versions, values))
    if fdp.ConsumeIntInRange(0, 3) == 0:  # one offset changed: only their order can tell
        arrays = offsets_arrays(bytes(data))
        if arrays:
            at, n = arrays[fdp.ConsumeIntInRange(0, len(arrays) - 1)]
            i = fdp.ConsumeIntInRange(0, n - 1)
            old = struct.unpack_from("<I", data, at + 4 * i)[0]
            struct.pack_into("<I", data, at + 4 * i, (old + fdp.ConsumeIntInRange(-3, 3)) % 2**32)
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        at = fdp.ConsumeIntInRange(0, len(data) - 1)
        data[at] ^= fdp.ConsumeIntInRange(1, 255)
    if fdp.ConsumeBool():
        del data[fdp.ConsumeIntInRange(0, len(data)):]
    return bytes(data)


def offsets_arrays(data: bytes) -> list[tuple[int, int]]:
    """``(position, length)`` of each variable-width offsets array of a well-formed payload."""
    b = Block(data)
    return [(at, b.count + 1) for flag, at in ((1, b.keys_at), (2, b.values_at))
            if not b.flags & flag]


def python_block(data: bytes) -> Block | None:
    """``Block(data)``, or None where the Python decoder refuses the payload."""
    try:
        return Block(data)
    except BlockFormatError:
        return None


def check_block_decoders(data: bytes, key: bytes, version: int) -> None:
    """The C decoders refuse exactly the payloads the Python one refuses, and look up what
    both take as it does (while the keys are in order: out of order, the two searches may
    land on different copies of a key)."""
    block = python_block(data)
    try:
        got = native.block_lookup_payload(data, key, version)
    except CorruptionError:
        assert block is None, "the C decoder refuses a payload Block() takes"
    else:
        assert block is not None, "the C decoder takes a payload Block() refuses"
        keys = block.keys
        if keys == sorted(keys):
            assert got == block.lookup(key, version)
    try:  # the Block a cache miss builds in C (refused: left to Block(), which raises)
        native.block_from_payload(data)
    except BlockFormatError:
        assert block is None
    else:
        assert block is not None


def flush_buffer(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A flush buffer: entries in or out of order, then a few bytes damaged or cut."""
    n = fdp.ConsumeIntInRange(0, 8)
    keys = sorted(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4)) for _ in range(n))
    versions = [fdp.ConsumeIntInRange(0, 9) for _ in range(n)]
    values = [None if fdp.ConsumeIntInRange(0, 3) == 0 else fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 9))
              for _ in range(n)]
    data = bytearray(flushbuf.encode((keys, versions, values)))
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        data[fdp.ConsumeIntInRange(0, len(data) - 1)] ^= fdp.ConsumeIntInRange(1, 255)
    if fdp.ConsumeBool():
        del data[fdp.ConsumeIntInRange(0, len(data)):]
    return bytes(data)


def table_or_error(buf: bytes, opts: Options, in_c: bool) -> bytes | str:
    """The table the C or the pure builder writes from ``buf``, or its ValueError."""
    env = MemoryEnv()
    builder = TableBuilder(env, "/t.sst", opts)
    try:
        if in_c:
            builder.add_flush_buffer(buf)
        else:
            builder.add_sorted_columns(*flushbuf.decode(buf))
    except ValueError as exc:
        builder.abandon()
        return str(exc)
    if not builder.entry_count:
        builder.abandon()
        return "empty"
    builder.finish()
    return env.read_file("/t.sst")


def columns_or_error(decode: Callable[[bytes], Any], buf: bytes) -> Any:
    try:
        return decode(buf)
    except ValueError as exc:
        return str(exc)


def table_entries(fdp: atheris.FuzzedDataProvider) -> list[tuple[bytes, int, bytes | None]]:
    """Entries in table order: keys sharing a prefix or not, a key's versions newest first,
    tombstones, empty and large values."""
    prefix = b"series/00000001/" if fdp.ConsumeBool() else b""
    keys = sorted({prefix + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4))
                   for _ in range(fdp.ConsumeIntInRange(1, 60))})
    big = fdp.ConsumeIntInRange(0, 7) == 7  # blocks past the core's 16 KiB stack buffer
    out = []
    for k in keys:
        for v in sorted({fdp.ConsumeIntInRange(1, 40) for _ in range(fdp.ConsumeIntInRange(1, 3))},
                        reverse=True):
            kind = fdp.ConsumeIntInRange(0, 5)
            value = (None if kind == 0 else b"\x01" * 20000 if big and kind == 1
                     else fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)))
            out.append((k, v, value))
    return out


def restamp(data: bytearray, start: int, end: int) -> None:
    """The checksum of the stored block ``data[start:end]`` (body, kind byte, crc) made
    right again, so that only the decoders can find what was changed in it."""
    struct.pack_into("<I", data, end - 4, crc32c(data[end - TRAILER.size:end - 4],
                                                 crc32c(bytes(data[start:end - TRAILER.size]))))


def damaged_table(fdp: atheris.FuzzedDataProvider) -> tuple[str, list[tuple[bytes, int]]]:
    """A table file written to TABLE_DIR, then damaged: ``(path, the (key, version) each
    data block ended with before the damage)``."""
    compression = ("none", "lz4", "zstd")[fdp.ConsumeIntInRange(0, 2)]
    opts = Options(compression=compression, bloom_bits_per_key=fdp.ConsumeIntInRange(0, 10))
    object.__setattr__(opts, "block_size", fdp.ConsumeIntInRange(1, 2048))
    env = MemoryEnv()
    builder = TableBuilder(env, "/t.sst", opts)
    builder.add_many(table_entries(fdp))
    builder.finish()
    with reader_mod.TableReader.open(env, "/t.sst") as r:
        blocks = [r.block_request(no)[1:] for no in range(r.block_count)]
        decoded = r.load_blocks(range(r.block_count)).values()
        ends = [(b.keys[-1], b.versions[-1]) for b in decoded]
    data = bytearray(env.read_file("/t.sst"))
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        how = fdp.ConsumeIntInRange(0, 3)
        off, length = blocks[fdp.ConsumeIntInRange(0, len(blocks) - 1)]
        at = off + fdp.ConsumeIntInRange(0, length - 1)
        data[at] ^= fdp.ConsumeIntInRange(1, 255)
        if how:  # behind a good checksum: for the block decoders (how 0: for the checksum)
            restamp(data, off, off + length)
    if fdp.ConsumeIntInRange(0, 7) == 7:  # (not 0: what a spent input gives)
        del data[fdp.ConsumeIntInRange(0, len(data)):]
    path = os.path.join(TABLE_DIR, "t.sst")
    with open(path, "wb") as f:
        f.write(data)
    return path, ends


def outcome(call: Callable[[], Any]) -> Any:
    """What ``call()`` returns (a list for an iterator), or its CorruptionError's message,
    file and offset."""
    try:
        got = call()
        return list(got) if hasattr(got, "__next__") else got
    except CorruptionError as exc:
        return ("CorruptionError", str(exc), exc.path, exc.offset)


def readers(path: str) -> tuple[Any, Any] | None:
    """(pure, native) readers of ``path`` with no block cached, or None where both refuse
    it alike at open."""
    saved = reader_mod.native
    try:
        reader_mod.native = None
        pure = outcome(lambda: reader_mod.TableReader.open(POSIX, path, BlockCache(0)))
        reader_mod.native = native
        cache = BlockCache(0)
        cache.native_counters = native.Counters()
        nat = outcome(lambda: reader_mod.TableReader.open(POSIX, path, cache))
    finally:
        reader_mod.native = saved
    assert isinstance(nat, tuple) == isinstance(pure, tuple), \
        f"the core opens a table, or refuses it, unlike the Python reader: {pure}, {nat}"
    if isinstance(pure, tuple):
        assert nat == pure, "the core refuses a table unlike the Python reader"
        return None
    assert nat.core is not None and pure.core is None
    return pure, nat


def reads_as_written(reader: Any, ends: list[tuple[bytes, int]]) -> bool:
    """Whether the blocks the Python reader decodes still say what the table's index and
    properties say of them: entries in table order, each block ending at its index entry,
    versions and keys within the table's range, and for a table its properties call plain
    (a key an entry, no tombstone: read without a visibility pass) no second version and no
    tombstone.  Undetected damage that breaks one of these answers apart -- two binary
    searches over unsorted keys land on different entries; a plain table's scan trusts the
    properties -- as in any store."""
    prev = None
    for no in range(reader.block_count):
        try:
            block = reader.load_blocks([no])[no]
        except CorruptionError:
            continue
        entries = list(zip(block.keys, block.versions, block.values, strict=True))
        if (entries[-1][:2] != ends[no]
                or (reader.plain and any(value is None for _, _, value in entries))):
            return False
        for key, version, _ in entries:
            if ((prev is not None and (key, -version) <= (prev[0], -prev[1]))
                    or (reader.plain and prev is not None and key == prev[0])
                    or not reader.min_version <= version <= reader.max_version
                    or not reader.smallest_key <= key <= reader.largest_key):
                return False
            prev = (key, version)
    return True


def check_table_reads(fdp: atheris.FuzzedDataProvider, key: bytes, start: bytes | None,
                      end: bytes | None) -> None:
    """The miss path: a damaged table file read by the core and by the Python reader."""
    path, ends = damaged_table(fdp)
    pair = readers(path)
    if pair is None:
        return
    pure, nat = pair
    try:
        if not reads_as_written(pure, ends):  # the answers may differ; only CorruptionError may come
            outcome(lambda: nat.get(key, TOP))
            outcome(lambda: native.MergeScan([nat.core], start, end, TOP, 0, False, None, False, nat))
            return
        views = [View(PyMemtable(), (), (r,)) for r in (pure, nat)]
        keys = [key, *(k for k in (start, end) if k is not None)]
        version = fdp.ConsumeIntInRange(0, 45)
        floor = fdp.ConsumeIntInRange(0, 10)
        reverse = fdp.ConsumeBool()
        calls: list[Callable[[View], Any]] = [
            lambda v: [v.get(k, version, floor) for k in keys],
            lambda v: [v.get_entry(k, version) for k in keys],
            lambda v: v.multi_get(keys, version, floor, POSIX),
            lambda v: v.scan(start, end, version, floor, reverse, None, lambda: None)]
        for call in calls:
            got = [outcome(lambda v=v: call(v)) for v in views]
            assert got[0] == got[1], f"the core reads the table file unlike Python: {got}"
    finally:
        pure.close()
        nat.close()


@atheris.instrument_func
def one_input(buf: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(buf)
    flush = flush_buffer(fdp)
    assert (columns_or_error(native.decode_flush_buffer, flush)
            == columns_or_error(flushbuf.decode, flush)), "the flush buffer decoders disagree"
    opts = Options(max_key_size=3, max_value_size=8, bloom_bits_per_key=fdp.ConsumeIntInRange(0, 3))
    object.__setattr__(opts, "block_size", fdp.ConsumeIntInRange(1, 100))
    assert table_or_error(flush, opts, True) == table_or_error(flush, opts, False)
    nblocks = fdp.ConsumeIntInRange(1, 4)
    payloads = [payload(fdp) for _ in range(nblocks)]
    last_keys = sorted(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 6)) for _ in range(nblocks))
    last_versions = [fdp.ConsumeIntInRange(0, 2**64 - 1) for _ in range(nblocks)]
    key = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
    start = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4)) if fdp.ConsumeBool() else None
    end = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4)) if fdp.ConsumeBool() else None
    version = fdp.ConsumeIntInRange(0, 2**64 - 1)
    if fdp.ConsumeBool():  # an arbitrary index payload instead of a well-formed one
        index = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
    else:
        index = encode_index(list(range(0, 10 * nblocks + 1, 10)), last_versions, last_keys)
    filt = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)) if fdp.ConsumeBool() else None
    rest = fdp.ConsumeBytes(64)
    # the lz4 decoder: arbitrary bodies, and a real one with a byte changed; whatever it
    # decodes must be what the lz4 package decodes
    for body in (rest, _lz4_damaged(payloads[0], rest)):
        got = native.lz4_decompress(body)
        if got is not None:
            assert got == lz4.block.decompress(body)
    for data in payloads:
        check_block_decoders(data, key, version)
    # the compaction merge in C over the same payloads as two tables' blocks
    cut = fdp.ConsumeIntInRange(0, nblocks)
    floor = fdp.ConsumeIntInRange(0, 2**64 - 1)
    merge = native.MergeBuild([list(enumerate(payloads[:cut])), list(enumerate(payloads[cut:]))],
                              ["a.sst", "b.sst"], sorted({floor, version}), floor, 0,
                              fdp.ConsumeBool(), fdp.ConsumeIntInRange(1, 100), 8, 8,
                              fdp.ConsumeIntInRange(0, 3), 1, MASKS)
    try:
        for out in merge:
            native.block_lookup_payload(out, key, version)  # the C reader takes what it wrote
    except (CorruptionError, ValueError):
        pass  # ValueError: what add_many refuses (order, sizes, version 0)
    else:  # a merge that read every block took only what Block() takes
        assert all(python_block(p) is not None for p in payloads)
    check_table_reads(fdp, key, start, end)
    slots = [raw_block(p) for p in payloads]
    try:
        core = native.TableCore(min(last_keys), max(last_keys) + rest[:2], 0, index, filt, MASKS,
                                slots, slots.__getitem__, "fuzz.sst", native.Counters())
    except (CorruptionError, ValueError):
        return
    for call in (lambda: core.get(key, version), lambda: core.locate(key, version),
                 lambda: list(native.MergeScan([core], start, end, version, 0)),
                 lambda: list(native.MergeScan([core, [[(key, 1, rest)]]], start, end, version, 0,
                                               True, 5))):
        try:
            call()
        except (CorruptionError, IndexError):
            # IndexError: an arbitrary index naming more blocks than there are slots
            pass


def _lz4_damaged(data: bytes, noise: bytes) -> bytes:
    body = bytearray(lz4.block.compress(data))
    if noise:
        body[noise[0] % len(body)] ^= noise[-1] | 1
    return bytes(body)


def main() -> None:
    atheris.Setup(sys.argv, one_input, internal_libfuzzer=True)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
