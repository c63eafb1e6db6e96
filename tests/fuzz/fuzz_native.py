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
must raise the same ValueError or write the same table.

Bounded run (what the test suite and CI do)::

    python tests/fuzz/fuzz_native.py -runs=20000 -seed=1 -len_control=0

Long run (a developer's machine; add ``-jobs=2`` to use both cores)::

    python tests/fuzz/fuzz_native.py -max_total_time=3600 corpus_dir/

Under AddressSanitizer (the extension built with ``-fsanitize=address``, see .ci/run)::

    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \\
        python tests/fuzz/fuzz_native.py -runs=20000

The C extension is not compiled with coverage instrumentation (that needs clang's
``-fsanitize=fuzzer-no-link``), so mutation is guided by the Python side only; the
structure-aware split above is what reaches the C decoders' branches.
"""

from __future__ import annotations

import struct
import sys

import atheris
import lz4.block

with atheris.instrument_imports():
    from banyanstore import accel
    from banyanstore.errors import CorruptionError
    from banyanstore.io.memory import MemoryEnv
    from banyanstore.lsm import flushbuf
    from banyanstore.options import Options
    from banyanstore.sstable import reader as reader_mod
    from banyanstore.sstable.block import Block, BlockFormatError, encode_block
    from banyanstore.sstable.builder import TableBuilder
    from banyanstore.sstable.meta import encode_index

native = accel.load_native()
if native is None:
    sys.exit("the compiled core is not built")
reader_mod.bind_native(native)
MASKS = bytes(8 << 14)


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


@atheris.instrument_func
def one_input(buf: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(buf)
    flush = flush_buffer(fdp)
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
