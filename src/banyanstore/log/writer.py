"""The block-fragmenting record writer of one segment, over a user-space buffer.

Records are framed (see :mod:`banyanstore.log.format`) into a ``bytearray``
and handed to the :class:`~banyanstore.io.base.WritableFile` in large chunks:
one syscall per record would cost about a microsecond each (docs/facts.md), which
is more than the whole append path.  The writer is not thread-safe; the
:class:`~banyanstore.log.log.Log` serialises it under its append lock.

While writing, the writer also maintains the segment's sparse index (the
offset of every ``index_interval``-th record), so reads of fresh segments never
have to scan.

REQUIRES: ``crc32c``; the file's end is a record boundary (recovery cut any torn tail).
"""

from __future__ import annotations

from crc32c import crc32c

from ..io.base import WritableFile
from .format import BLOCK_SIZE, FRAG_HEADER_SIZE, FULL, FULL_HEADER, SEQ, fragment
from .segment import Segment

__all__ = ["SegmentWriter"]

_SMALL = FULL_HEADER.size  # framing bytes of a one-fragment record: header + seq
_ZEROS = bytes(FRAG_HEADER_SIZE)
_CRC_FULL = crc32c(bytes((FULL,)))  # the CRC covers the type byte first
_pack_full = FULL_HEADER.pack
_pack_seq = SEQ.pack


class SegmentWriter:
    """Appends framed records to ``file`` (whose current end is a record boundary).

    ``offset`` is the logical end of the segment (file plus buffer);
    ``flushed`` the part already handed to the file, records up to ``flushed_seq``.
    ``segment.end`` follows ``flushed`` so readers never see a partial record.
    """

    def __init__(self, file: WritableFile, segment: Segment, *, last_seq: int, index_interval: int,
                 flush_bytes: int, segment_size: int) -> None:
        assert segment.index is not None
        self.file = file
        self.segment = segment
        self.index = index = segment.index
        self.buf = bytearray()
        self.flushed = self.offset = file.size
        self.flushed_seq = last_seq
        self._interval = index_interval
        self._flush_bytes = flush_bytes
        self._limit = segment_size
        self._next_index = index.seqs[-1] + index_interval if index.seqs else 0
        self._left = BLOCK_SIZE - self.offset % BLOCK_SIZE
        if self._left < FRAG_HEADER_SIZE:  # a fragment header never straddles a block
            self._pad()

    def _pad(self) -> None:
        self.buf += _ZEROS[:self._left]
        self.offset += self._left
        self._left = BLOCK_SIZE

    def add(self, seq: int, data: bytes) -> bool:
        """Frame record ``seq`` (``data`` must be ``bytes``) into the buffer.

        Returns True when the segment has reached ``segment_size`` (time to rotate).
        """
        if seq >= self._next_index:
            self.index.add(seq, self.offset)
            self._next_index = seq + self._interval
        size = len(data) + _SMALL
        left = self._left - size
        if left >= FRAG_HEADER_SIZE:
            # The hot path: one FULL fragment.  CRC-32C covers type || seq || data.
            buf = self.buf
            buf += _pack_full(crc32c(data, crc32c(_pack_seq(seq), _CRC_FULL)), size - FRAG_HEADER_SIZE,
                              FULL, seq)
            buf += data
            self._left = left
            self.offset += size
            if len(buf) >= self._flush_bytes:
                self.flush(seq)
        else:
            self._add_slow(seq, data)
        return self.offset >= self._limit

    def add_many(self, first_seq: int, records: list[bytes]) -> bool:
        """:meth:`add` for consecutive seqs, with the loop's lookups hoisted; True when full."""
        buf, interval, seq = self.buf, self._interval, first_seq
        for data in records:
            if seq >= self._next_index:
                self.index.add(seq, self.offset)
                self._next_index = seq + interval
            size = len(data) + _SMALL
            left = self._left - size
            if left >= FRAG_HEADER_SIZE:
                buf += _pack_full(crc32c(data, crc32c(_pack_seq(seq), _CRC_FULL)),
                                  size - FRAG_HEADER_SIZE, FULL, seq)
                buf += data
                self._left = left
                self.offset += size
            else:
                self._add_slow(seq, data)
                buf = self.buf  # the slow path may have flushed (swapped) the buffer
            seq += 1
        if len(buf) >= self._flush_bytes:
            self.flush(seq - 1)
        return self.offset >= self._limit

    def _add_slow(self, seq: int, data: bytes) -> None:
        for _kind, framed in fragment(seq, data, self._left):
            self.buf += framed
            self.offset += len(framed)
            self._left -= len(framed)
            if self._left == 0:
                self._left = BLOCK_SIZE
        if self._left < FRAG_HEADER_SIZE:
            self._pad()
        if len(self.buf) >= self._flush_bytes:
            self.flush(seq)

    def flush(self, upto_seq: int) -> None:
        """Hand the buffer, records up to ``upto_seq``, to the file (the OS; not yet durable)."""
        if self.buf:
            # Swap before writing: if the write fails the bytes are not written twice.
            data, self.buf = self.buf, bytearray()
            self.file.write(data)
            self.flushed += len(data)
            self.segment.end = self.flushed  # readers may now see these records
        self.flushed_seq = upto_seq

    def pending(self) -> int:
        """Bytes buffered but not yet written to the file."""
        return len(self.buf)
