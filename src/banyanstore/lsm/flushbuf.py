"""The flush hand-off: a memtable's entries as the table builder receives them.

A flush hands the table builder (in this process, or in a worker process in
``compaction_mode="process"``) the memtable's entries in table order: key ascending,
version descending.  The compiled memtable hands over ONE bytes buffer, encoded in C
with the GIL released, instead of three lists of Python objects that would be built
and pickled under the GIL: :class:`Pieces` makes it piece by piece (``PIECE_BYTES``
each), so a worker receives it streamed and the store never holds a second copy of the
memtable at once.  The pure-Python memtable hands over the three lists
(``keys, versions, values``) as before.  :func:`columns` turns either into the lists
:meth:`TableBuilder.add_sorted_columns` takes, so a table built from either is the
same, byte for byte.

To a worker the pieces go as frames, ``length:u64 (little-endian) piece``, ended by a
frame of length 0 (:meth:`Pieces.send`, :func:`read_frames`).  The compiled memtable
writes them itself (``flush_to_fd``) with the GIL released from the first piece to the
last: made and sent one by one from Python, every piece waited for the GIL behind the
writer thread, and a 64 MiB memtable's flush during a fill took 1.0-1.9 s instead of
0.6-0.8 s -- with the memtable, and the next one filling meanwhile, resident all that
time.

The buffer (all integers little-endian)::

    flush_buffer := magic:"BSMF" format:u32(=1) count:u64 entry{count}
    entry        := version:u64 klen:u32 vlen:u32 key:(klen bytes) value:(vlen bytes)
                    (vlen = 0xFFFFFFFF: a tombstone, no value bytes)

>>> buf = encode(([b"a", b"a", b"b"], [7, 3, 5], [None, b"x", b"yz"]))
>>> columns(buf)
([b'a', b'a', b'b'], [7, 3, 5], [None, b'x', b'yz'])
>>> is_empty(encode(([], [], []))), is_empty(buf)
(True, False)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Final

from .. import accel

if TYPE_CHECKING:
    from ..sstable.builder import TableBuilder

__all__ = ["Columns", "FlushEntries", "Pieces", "PIECE_BYTES", "columns", "decode", "encode",
           "is_empty", "load_into", "read_frames", "send_frames"]

Columns = tuple[list[bytes], list[int], list[bytes | None]]
PIECE_BYTES: Final = 1 << 20
"""The size of one piece of a streamed flush buffer (a key's entries are never split)."""


class Pieces:
    """A flush buffer made on demand, piece by piece: iterating yields the pieces,
    :meth:`join` the whole buffer, :meth:`send` writes them as frames.
    ``make(start, max_bytes)`` returns ``(piece, next)`` (``next`` None after the last
    piece) -- the compiled memtable's ``flush_piece``; ``to_fd(fd, max_bytes)``, if
    given, writes the frames of the same pieces to a file descriptor -- its
    ``flush_to_fd``."""

    __slots__ = ("count", "_make", "_to_fd")

    def __init__(self, count: int, make: Callable[[int, int], tuple[bytes, int | None]],
                 to_fd: Callable[[int, int], None] | None = None) -> None:
        self.count = count  # entries
        self._make = make
        self._to_fd = to_fd

    def send(self, out: IO[bytes]) -> None:
        """The pieces to ``out`` as frames, the end frame last."""
        if self._to_fd is None:
            send_frames(out, self)
            return
        out.flush()  # what was written before the frames goes first
        self._to_fd(out.fileno(), PIECE_BYTES)

    def __iter__(self) -> Iterator[bytes]:
        start: int | None = 0
        while start is not None:
            piece, start = self._make(start, PIECE_BYTES)
            yield piece

    def join(self) -> bytes:
        """The whole buffer."""
        return self._make(0, 1 << 62)[0]


FRAME: Final = struct.Struct("<Q")
MAX_FRAME: Final = 1 << 40
"""No piece is this long: a larger length read is a damaged stream."""


def send_frames(out: IO[bytes], pieces: Iterable[bytes]) -> None:
    """Each of ``pieces`` to ``out`` as a frame, made one at a time, then the end frame."""
    for piece in pieces:
        if piece:  # a frame of length 0 is the end
            out.write(FRAME.pack(len(piece)))
            out.write(piece)
    out.write(FRAME.pack(0))


def read_frames(inp: IO[bytes]) -> list[bytes]:
    """The pieces of the frames :func:`send_frames` (or ``flush_to_fd``) wrote, up to the
    end frame.  EOFError if the stream ends before it, ValueError for a length no piece
    has."""
    pieces: list[bytes] = []
    while True:
        head = inp.read(FRAME.size)
        if len(head) != FRAME.size:
            raise EOFError("flush stream ended before its end frame")
        (size,) = FRAME.unpack(head)
        if size == 0:
            return pieces
        if size > MAX_FRAME:
            raise ValueError(f"flush stream: a frame of {size} bytes")
        piece = inp.read(size)
        if len(piece) != size:
            raise EOFError("flush stream ended inside a frame")
        pieces.append(piece)


FlushEntries = Pieces | bytes | Columns
"""What a memtable hands a flush: a flush buffer (whole or in pieces) or the columns."""

MAGIC: Final = b"BSMF"
FORMAT: Final = 1
HEADER: Final = struct.Struct("<4sIQ")  # magic, format, count
ENTRY: Final = struct.Struct("<QII")  # version, klen, vlen
TOMBSTONE_LEN: Final = 0xFFFFFFFF
assert HEADER.size == 16 and ENTRY.size == 16


def is_empty(entries: FlushEntries) -> bool:
    """Whether ``entries`` hold no entry."""
    if isinstance(entries, Pieces):
        return entries.count == 0
    if isinstance(entries, bytes):
        return len(entries) <= HEADER.size
    return not entries[0]


def columns(entries: FlushEntries) -> Columns:
    """``entries`` as ``(keys, versions, values)``: a buffer is decoded (by the compiled
    core when it is built, whatever ``BANYANSTORE_PURE_PYTHON`` says: only a compiled
    memtable makes buffers)."""
    if isinstance(entries, Pieces):
        entries = entries.join()
    if not isinstance(entries, bytes):
        return entries
    native = accel.load_native()
    if native is not None:
        result: Columns = native.decode_flush_buffer(entries)
        return result
    return decode(entries)


def load_into(builder: TableBuilder, entries: FlushEntries) -> None:
    """Bulk-load ``entries`` into a fresh ``builder``: a buffer straight into the compiled
    core's table building (:meth:`TableBuilder.add_flush_buffer`) when the compiled core
    is in use, else the columns into :meth:`TableBuilder.add_sorted_columns`.  The table
    is the same, byte for byte."""
    if accel.native is not None and not isinstance(entries, tuple):
        builder.add_flush_buffer(entries.join() if isinstance(entries, Pieces) else entries)
    else:
        builder.add_sorted_columns(*columns(entries))


def decode(buf: bytes) -> Columns:
    """The pure-Python decoder of a flush buffer (the reference for the C one): every
    length is checked against the buffer; a buffer that does not add up raises
    ValueError naming the offset."""
    if len(buf) < HEADER.size:
        raise ValueError("flush buffer: bad magic or short header at offset 0")
    magic, fmt, count = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise ValueError("flush buffer: bad magic or short header at offset 0")
    if fmt != FORMAT:
        raise ValueError("flush buffer: unknown format at offset 4")
    if count > (len(buf) - HEADER.size) // ENTRY.size:
        raise ValueError("flush buffer: count larger than the buffer at offset 8")
    keys: list[bytes] = []
    versions: list[int] = []
    values: list[bytes | None] = []
    off, size, prev = HEADER.size, len(buf), b""
    for _ in range(count):
        if size - off < ENTRY.size:
            raise ValueError(f"flush buffer: entry header past the end at offset {off}")
        version, klen, vlen = ENTRY.unpack_from(buf, off)
        body = klen + (0 if vlen == TOMBSTONE_LEN else vlen)
        if size - off - ENTRY.size < body:
            raise ValueError(f"flush buffer: entry past the end at offset {off}")
        k = off + ENTRY.size
        key = buf[k:k + klen]
        if key == prev:
            key = prev  # a key's versions share one object, as the C decoder does
        keys.append(key)
        prev = key
        versions.append(version)
        values.append(None if vlen == TOMBSTONE_LEN else buf[k + klen:k + body])
        off = k + body
    if off != size:
        raise ValueError(f"flush buffer: trailing bytes at offset {off}")
    return keys, versions, values


def encode(cols: Columns) -> bytes:
    """The buffer of ``cols`` (entries already in table order): what the compiled
    memtable's ``flush_buffer`` makes; used to test the decoders."""
    keys, versions, values = cols
    parts = [HEADER.pack(MAGIC, FORMAT, len(keys))]
    for key, version, value in zip(keys, versions, values, strict=True):
        vlen = TOMBSTONE_LEN if value is None else len(value)
        parts.append(ENTRY.pack(version, len(key), vlen) + key + (value or b""))
    return b"".join(parts)
