"""On-disk constants of a banyanstore table (SSTable): magic, format version,
block trailer, footer, properties; and the block codec (compression + checksum).

Byte grammar of a whole table file (all integers little-endian)::

    table       := data_block* filter_block? index_block range_block? props_block footer
    data_block  := stored_block                  (payload layout: see block.py)
    filter_block:= stored_block                  (payload layout: see bloom.py; absent when
                                                  bloom_bits_per_key == 0, handle = (0, 0))
    index_block := stored_block                  (payload layout: see reader.py / builder.py)
    range_block := stored_block                  (format 3 only: the range tombstones,
                                                  payload layout: see rangedels.py)
    props_block := stored_block                  (payload layout: PROPS below)
    stored_block:= body trailer
    body        := the payload, compressed as `ctype` says
                   (none: the payload itself; lz4: lz4.block with its u32 size prefix;
                    zstd: one zstd frame with the content size in its header)
    trailer     := ctype:u8 crc:u32              crc = crc32c(body || ctype)
    footer      := index_off:u64 index_len:u32 filter_off:u64 filter_len:u32
                   props_off:u64 props_len:u32 footer_crc:u32 format_version:u32
                   magic:8 bytes                 (FOOTER_SIZE = 52 bytes, at the very end)
                   footer_crc = crc32c(handles (first 36 bytes) || format_version)
    *_off/*_len := where the stored block starts and the length of its body
                   (the 5-byte trailer follows the body)

    PROPS := entry_count:u64 tombstone_count:u64 key_count:u64 raw_size:u64 data_size:u64
             min_version:u64 max_version:u64 block_count:u32 block_size:u32
             compression:u8 reserved:3 bytes bloom_bits_per_key:u32
             smallest_len:u32 largest_len:u32 smallest_key largest_key
             range_props                         (format version 3 only: rangedels.py)
             origin                              (format version 2; optional in 3)
    origin:= keyspace_id:u32 name_len:u32 covers_min:u64 covers_max:u64 history_floor:u64
             keyspace_name:name_len bytes (UTF-8)
             -- which keyspace of which store the table belongs to, and the versions it
             stands for: covers_min..covers_max (its own versions for a flush; the union
             of its inputs' for a merge, which may have dropped some) and the merge's
             history floor (0 for a flush).  ``banyanstore repair`` rebuilds a lost
             manifest from it.

Format versions: 1 (no origin: tables built outside a store, and stores written
before version 2), 2 (with origin: every table a store writes) and 3 (a table
holding range tombstones: the range block, its ``range_props``, and an origin if
the table has one).  A table without range tombstones is still written as 1 or 2,
so builds that predate version 3 read it.  The reader reads all three.

The reader checks the footer in the order magic -> format version -> checksum,
so a file from a future writer (whose footer may differ) is reported as an
unknown format version rather than as a checksum failure.
"""

from __future__ import annotations

import struct
import sys
import threading
from array import array
from collections.abc import Sequence

import lz4.block
import zstandard

from ..crc import crc32c
from ..errors import CorruptionError

__all__ = [
    "MAGIC", "FORMAT_VERSION", "FORMAT_VERSION_RANGES", "FORMAT_VERSIONS", "ORIGIN",
    "MAX_KEYSPACE_NAME", "FOOTER",
    "FOOTER_SIZE", "TRAILER", "TRAILER_SIZE", "PROPS",
    "COMPRESSION_NONE", "COMPRESSION_LZ4", "COMPRESSION_ZSTD", "COMPRESSION_CODES",
    "MAX_VERSION", "crc32c", "wrap_block", "wrap_block_parts", "unwrap_block", "u32_list", "u64_list",
    "u32_bytes", "u64_bytes", "u64_array", "LITTLE_ENDIAN_HOST",
]

MAGIC = b"\x8bBNYSST\x1a"
"""Last 8 bytes of every table.  Non-ASCII first byte and ^Z: a text file never matches."""

FORMAT_VERSION = 2  # what this build writes for a table with an origin; it reads 1, 2 and 3
FORMAT_VERSION_RANGES = 3  # what it writes for a table holding range tombstones
FORMAT_VERSIONS = (1, 2, 3)
MAX_VERSION = (1 << 64) - 1

FOOTER = struct.Struct("<QIQIQIII8s")
FOOTER_SIZE = FOOTER.size
assert FOOTER_SIZE == 52, FOOTER_SIZE
FOOTER_HANDLES_SIZE = 36  # the three (offset, length) handles, covered by footer_crc
FOOTER_CRC_OFFSET = 36
FOOTER_VERSION_OFFSET = 40

TRAILER = struct.Struct("<BI")
TRAILER_SIZE = TRAILER.size
assert TRAILER_SIZE == 5, TRAILER_SIZE

PROPS = struct.Struct("<QQQQQQQIIB3xIII")
assert PROPS.size == 7 * 8 + 4 + 4 + 1 + 3 + 4 + 4 + 4 == 80, PROPS.size
ORIGIN = struct.Struct("<IIQQQ")
assert ORIGIN.size == 4 + 4 + 3 * 8 == 32, ORIGIN.size
MAX_KEYSPACE_NAME = 1024

COMPRESSION_NONE = 0
COMPRESSION_LZ4 = 1
COMPRESSION_ZSTD = 2
COMPRESSION_CODES = {"none": COMPRESSION_NONE, "lz4": COMPRESSION_LZ4, "zstd": COMPRESSION_ZSTD}
COMPRESSION_NAMES = {v: k for k, v in COMPRESSION_CODES.items()}
# lz4's LZ4_MAX_INPUT_SIZE: it refuses a larger input, and max_value_size goes up to 2 GiB
LZ4_MAX_INPUT = 0x7E000000


# Fixed-width arrays are little-endian on disk.  On a little-endian host
# (every platform we run on) memoryview.cast() reads them in one C call with no
# copy; a big-endian host goes through array + byteswap.
LITTLE_ENDIAN_HOST = sys.byteorder == "little"
assert array("I").itemsize == 4 and array("Q").itemsize == 8


def u32_list(buf: bytes | memoryview, offset: int, count: int) -> list[int]:
    """``count`` little-endian u32 at ``offset`` of ``buf`` as a list (one C call)."""
    mv = memoryview(buf)[offset:offset + 4 * count]
    if LITTLE_ENDIAN_HOST:
        return mv.cast("I").tolist()
    arr = array("I", mv.tobytes())  # pragma: no cover - big-endian hosts only
    arr.byteswap()  # pragma: no cover
    return arr.tolist()  # pragma: no cover


def u64_array(buf: bytes | memoryview, offset: int, count: int) -> array[int]:
    """``count`` little-endian u64 at ``offset`` of ``buf`` as an ``array("Q")``: 8 bytes
    an item where a list of ints takes 40 (a table reader's index keeps two such
    arrays for as long as the table is open)."""
    arr = array("Q")
    arr.frombytes(memoryview(buf)[offset:offset + 8 * count])
    if not LITTLE_ENDIAN_HOST:  # pragma: no cover - big-endian hosts only
        arr.byteswap()
    return arr


def u64_list(buf: bytes | memoryview, offset: int, count: int) -> list[int]:
    """``count`` little-endian u64 at ``offset`` of ``buf`` as a list (one C call)."""
    mv = memoryview(buf)[offset:offset + 8 * count]
    if LITTLE_ENDIAN_HOST:
        return mv.cast("Q").tolist()
    arr = array("Q", mv.tobytes())  # pragma: no cover - big-endian hosts only
    arr.byteswap()  # pragma: no cover
    return arr.tolist()  # pragma: no cover


def u32_bytes(values: list[int] | array) -> bytes:
    """Encode ints as little-endian u32 (OverflowError if one does not fit)."""
    arr = array("I", values)
    if not LITTLE_ENDIAN_HOST:  # pragma: no cover
        arr.byteswap()
    return arr.tobytes()


def u64_bytes(values: Sequence[int]) -> bytes:
    """Encode ints as little-endian u64 (OverflowError if one does not fit)."""
    arr = array("Q", values)
    if not LITTLE_ENDIAN_HOST:  # pragma: no cover
        arr.byteswap()
    return arr.tobytes()


# -- block codec ---------------------------------------------------------------------------

class _ZstdContexts(threading.local):
    """zstandard (de)compressor objects are not safe to share between threads."""

    def __init__(self) -> None:
        self.decompressor = zstandard.ZstdDecompressor()
        self.compressors: dict[int, zstandard.ZstdCompressor] = {}


_zstd = _ZstdContexts()


def wrap_block(payload: bytes, compression: int, zstd_level: int = 3) -> bytes:
    """``payload`` compressed (when that saves at least 1/8) plus its trailer.

    Incompressible blocks (random values) are stored raw so the reader does not
    pay for a decompression that saves nothing; so are blocks lz4 cannot take.
    """
    return b"".join(wrap_block_parts(payload, compression, zstd_level))


def wrap_block_parts(payload: bytes, compression: int, zstd_level: int = 3) -> tuple[bytes, bytes]:
    """:func:`wrap_block`'s body and trailer apart: a writer of a block of megabytes
    writes the body as it is (a raw body *is* the payload) instead of a joined copy."""
    ctype = COMPRESSION_NONE
    body: bytes = payload
    if compression != COMPRESSION_NONE and 64 <= len(payload) and not (
            compression == COMPRESSION_LZ4 and len(payload) > LZ4_MAX_INPUT):
        if compression == COMPRESSION_LZ4:
            packed = lz4.block.compress(payload, store_size=True)
        elif compression == COMPRESSION_ZSTD:
            comp = _zstd.compressors.get(zstd_level)
            if comp is None:
                comp = _zstd.compressors[zstd_level] = zstandard.ZstdCompressor(
                    level=zstd_level, write_content_size=True, write_checksum=False)
            packed = comp.compress(payload)
        else:
            raise ValueError(f"unknown compression code {compression}")
        if len(packed) <= len(payload) - (len(payload) >> 3):
            body, ctype = packed, compression
    tail = bytes((ctype,))
    crc = crc32c(tail, crc32c(body))
    return body, TRAILER.pack(ctype, crc)


def unwrap_block(stored: bytes, path: str, offset: int, *, verify: bool = True,
                 what: str = "block", block_no: int | None = None) -> bytes:
    """The payload of a stored block (body + trailer) read from ``path`` at ``offset``.

    Raises :class:`CorruptionError` naming the file and offset on a short read,
    a checksum mismatch, an unknown compression type or a failed decompression.
    ``what`` names the block in the message, followed by ``block_no`` when one is given
    (a data block's number: formatted only for the error, not on each of the table
    reader's cache misses).
    """
    n = len(stored)
    if n < TRAILER_SIZE:
        raise CorruptionError(f"truncated {_block_name(what, block_no)}: {n} bytes", path=path,
                              offset=offset)
    ctype, crc = TRAILER.unpack_from(stored, n - TRAILER_SIZE)
    view = memoryview(stored)
    if verify and crc32c(view[:n - 4]) != crc:
        raise CorruptionError(f"{_block_name(what, block_no)} checksum mismatch", path=path,
                              offset=offset)
    try:
        if ctype == COMPRESSION_NONE:
            return stored[:n - TRAILER_SIZE]
        if ctype == COMPRESSION_LZ4:
            return lz4.block.decompress(view[:n - TRAILER_SIZE])
        if ctype == COMPRESSION_ZSTD:
            return _zstd.decompressor.decompress(view[:n - TRAILER_SIZE])
    except (lz4.block.LZ4BlockError, zstandard.ZstdError, ValueError, MemoryError) as exc:
        raise CorruptionError(f"{_block_name(what, block_no)} does not decompress ({exc})",
                              path=path, offset=offset) from exc
    raise CorruptionError(f"{_block_name(what, block_no)} has unknown compression type {ctype}",
                          path=path, offset=offset)


def _block_name(what: str, block_no: int | None) -> str:
    return what if block_no is None else f"{what} {block_no}"
