"""Property tests of every raw decoder (hypothesis): arbitrary bytes, and real payloads
with bytes changed, cut or added, give the decoder's documented error or a value that
can be used without another exception -- never ``IndexError``, ``struct.error``,
``KeyError``, ``TypeError``...  Hypothesis shrinks a failure to a minimal input.

The file-level fuzzer (:mod:`tests.torture.fuzz`) reaches the same decoders through
the readers, the store and the Log; this reaches each directly, with inputs a
checksum would otherwise filter out.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banyanstore.errors import CorruptionError
from banyanstore.io.memory import MemoryEnv
from banyanstore.log import format as logfmt
from banyanstore.lsm import manifest as mf
from banyanstore.lsm import wal
from banyanstore.options import Options
from banyanstore.sstable import format as tf
from banyanstore.sstable.block import BlockFormatError, decode_block
from banyanstore.sstable.bloom import BloomFilter
from banyanstore.sstable.builder import TableBuilder
from banyanstore.sstable.meta import decode_index, decode_props
from banyanstore.sstable.rangedels import decode_range_dels
from tests.lsm.crashenv import soak

from . import mutate

EXAMPLES = 3000 if soak() else 250


@cache
def _table_payloads() -> dict[str, list[bytes]]:
    """The payloads of every block of two small real tables (fixed and variable widths)."""
    out: dict[str, list[bytes]] = {"data": [], "index": [], "props": [], "filter": [], "stored": [],
                                   "ranges": []}
    fixed = [b"k%05d" % i for i in range(200)]
    variable = [b"k" * (i % 9) + b"%d" % i for i in range(200)]
    for n, keys in enumerate((fixed, variable)):
        env = MemoryEnv()
        env.mkdir("/t")
        entries = sorted(((k, 10 + i, None if i % 7 == 0 else b"v%d" % i * (1 + i % 3))
                          for i, k in enumerate(keys)), key=lambda e: (e[0], -e[1]))
        b = TableBuilder(env, "/t/1.sst", Options(block_size=1024, compression="none", bloom_bits_per_key=10))
        b.add_many(entries)
        if n:  # format 3: a range-tombstone block, and range_props in the properties
            ks = sorted(keys)
            b.add_range_dels([(ks[3], ks[90], 30), (b"", b"k", 12), (ks[5], ks[6], 150)])
        b.finish()
        data = env.read_file("/t/1.sst")
        for region, blocks in mutate.table_regions(data).items():
            for off, length in blocks:
                stored = data[off:off + length + tf.TRAILER_SIZE]
                out[region].append(tf.unwrap_block(stored, "t", off))
                out["stored"].append(stored)
        out["footer"] = [data[-tf.FOOTER_SIZE:]] if n == 0 else out["footer"]
    return out


@cache
def _other_payloads() -> dict[str, list[bytes]]:
    records = [wal.encode_one(7, 1000, 0, b"key", b"value"), wal.encode_one(8, 1000, 1, b"k", None),
               wal.encode_batch(9, 1000, [(0, b"a", b"1"), (1, b"b", None), (0, b"c", b"3" * 40)]),
               wal.encode_with_ranges(10, 1000, [(0, b"a", b"1")], [(1, b"b", b"d"), (0, b"", b"z")])]
    state = mf.ManifestState()
    manifest = (mf.FILE_HEADER.pack(mf.MAGIC, 1, 0)[:12])
    manifest += struct.pack("<I", mf.crc32c(manifest))
    for edit in (state.snapshot_edit(), {"add_keyspace": [1, "idx"]}, {"history_floor": 3}):
        payload = mf._encode(edit)  # noqa: SLF001 -- the writer's own encoding
        manifest += mf.RECORD_HEADER.pack(len(payload), mf.crc32c(payload)) + payload
    from banyanstore.backups.waltail import TailWriter
    tail = io.BytesIO()
    writer = TailWriter(tail)
    for v, r in zip((7, 8, 9, 10), records, strict=True):
        writer.add(r, v)
    return {"wal": records, "segment_header": [logfmt.encode_header(17)], "manifest": [manifest],
            "current": [mf.current_text("MANIFEST-000007").encode()], "tail": [tail.getvalue()]}


def _inputs(kind: str) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, or a real payload of ``kind`` with a few changes."""
    def real() -> list[bytes]:
        return {**_table_payloads(), **_other_payloads()}[kind]

    @st.composite
    def changed(draw: Any) -> bytes:
        buf = bytearray(draw(st.sampled_from(real())))
        for _ in range(draw(st.integers(0, 4))):
            if not buf:
                break
            at = draw(st.integers(0, len(buf) - 1))
            buf[at] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            cut = draw(st.integers(0, len(buf)))
            buf = buf[:cut] + draw(st.binary(max_size=16))
        if draw(st.integers(0, 3)) == 0 and len(buf) >= 8:  # an integer field gone wild
            at = draw(st.integers(0, len(buf) - 4))
            buf[at:at + 4] = draw(st.sampled_from(mutate.INTERESTING_U32)).to_bytes(4, "little")
        return bytes(buf)

    return st.one_of(st.binary(max_size=400), changed())


def _use_block(data: bytes) -> None:
    block = decode_block(data)
    keys, versions, values = block.decode()
    list(block.entries())
    list(block.reversed_entries())
    for key in keys[:3] + [b"", b"\xff" * 8]:
        block.lookup(key, 1 << 40)
        block.seek(key)


def _use_bloom(data: bytes) -> None:
    f = BloomFilter(data)
    f.may_contain(b"k00001")
    f.may_contain(b"")


def _use_tail(data: bytes) -> None:
    from banyanstore.backups.waltail import read_tail
    list(read_tail(io.BytesIO(data), "tail", records=4, first_version=7, last_version=10,
                   keyspaces={0, 1}))


def _exactly(*types: type[BaseException]) -> Callable[[BaseException], bool]:
    return lambda exc: type(exc) in types


DECODERS: dict[str, tuple[str, Callable[[bytes], Any], Callable[[BaseException], bool]]] = {
    "block": ("data", _use_block, _exactly(BlockFormatError)),
    "index": ("index", decode_index, _exactly(ValueError)),
    "props": ("props", lambda d: decode_props(d, "t", 1 << 20, tf.COMPRESSION_NAMES), _exactly(ValueError)),
    "props v3": ("props", lambda d: decode_props(d, "t", 1 << 20, tf.COMPRESSION_NAMES, 3),
                 _exactly(ValueError)),
    "range tombstones": ("ranges", lambda d: decode_range_dels(d, 3, 1, 1 << 40), _exactly(ValueError)),
    "bloom": ("filter", _use_bloom, _exactly(ValueError)),
    "stored block": ("stored", lambda d: tf.unwrap_block(d, "t", 0), _exactly(CorruptionError)),
    "wal record": ("wal", lambda d: wal.decode(d, "wal"), _exactly(CorruptionError)),
    "log segment header": ("segment_header", lambda d: logfmt.decode_header(d, "seg"),
                           lambda e: isinstance(e, CorruptionError)),  # ForeignFileError too
    "manifest": ("manifest", lambda d: mf.replay(d, "MANIFEST"), _exactly(CorruptionError)),
    "current": ("current", lambda d: mf.parse_current(d, "CURRENT"), _exactly(CorruptionError)),
    "backup wal tail": ("tail", _use_tail, _exactly(CorruptionError)),
}


@pytest.mark.parametrize("name", list(DECODERS))
def test_raw_decoder(name: str) -> None:
    kind, decode, allowed = DECODERS[name]

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_inputs(kind))
    def check(data: bytes) -> None:
        try:
            decode(data)
        except Exception as exc:  # noqa: BLE001 -- the property is about which exceptions
            if not allowed(exc):
                raise AssertionError(f"{name}: {type(exc).__name__}: {exc} for {data[:64]!r}") from exc

    check()
