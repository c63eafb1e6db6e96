"""O_DIRECT reads: aligned spans into page-aligned buffers.

O_DIRECT bypasses the page cache, so the kernel insists that the file offset,
the length and the user buffer address are multiples of the device's logical
block size.  We align everything to :data:`DIRECT_ALIGN` (4 KiB), which covers
both 512 B and 4 KiB devices, and read into an anonymous ``mmap`` (always
page-aligned) before slicing out the bytes the caller asked for.

Only *reads* go direct: writes stay buffered (the WAL and tables are written
sequentially and synced; O_DIRECT writes would need aligned tails).  Linux
flushes dirty cached pages of a range before an O_DIRECT read of it, so a
direct read always sees what a buffered write put there.
"""

from __future__ import annotations

import mmap
import os
import threading

from ..errors import from_oserror
from .pread import PosixRandomAccessFile

__all__ = ["DIRECT_ALIGN", "KEPT_SCRATCH", "aligned_span", "AlignedBuffer", "DirectRandomAccessFile",
           "open_direct"]

DIRECT_ALIGN = 4096
KEPT_SCRATCH = 1 << 20
"""The largest scratch buffer a reading thread keeps between reads, shared by every file
it reads.  A larger span gets a buffer of its own, unmapped once the read is copied out:
a buffer kept per file (and thread), as large as its largest read, held that memory per
table for as long as the table was open -- a store reading a 20 MiB value from each of 8
tables kept 160 MiB resident, outside the block cache's budget."""
_scratch = threading.local()  # .buf: the thread's AlignedBuffer, at most KEPT_SCRATCH


def aligned_span(offset: int, length: int) -> tuple[int, int]:
    """``(start, size)`` of the smallest aligned range covering ``[offset, offset+length)``.

    >>> aligned_span(5000, 100)
    (4096, 4096)
    >>> aligned_span(4095, 2)
    (0, 8192)
    """
    start = offset - offset % DIRECT_ALIGN
    end = -(-(offset + length) // DIRECT_ALIGN) * DIRECT_ALIGN
    return start, max(end - start, DIRECT_ALIGN)


class AlignedBuffer:
    """A page-aligned, growable scratch buffer (an anonymous mmap)."""

    def __init__(self, size: int = 1 << 16) -> None:
        self.mm = mmap.mmap(-1, max(size, DIRECT_ALIGN))

    def ensure(self, size: int) -> mmap.mmap:
        """The buffer, grown (to a power of two) if it is smaller than ``size``."""
        if len(self.mm) < size:
            self.mm.close()
            self.mm = mmap.mmap(-1, 1 << (size - 1).bit_length())
        return self.mm

    def close(self) -> None:
        self.mm.close()


class DirectRandomAccessFile(PosixRandomAccessFile):
    """A file opened with O_DIRECT: each read covers an aligned span."""

    direct = True

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        start, span = aligned_span(offset, length)
        if span > KEPT_SCRATCH:
            own = AlignedBuffer(span)
            try:
                return self._read_via(own.mm, offset, length, start, span)
            finally:
                own.close()
        return self._read_via(_thread_scratch(span), offset, length, start, span)

    def _read_via(self, mm: mmap.mmap, offset: int, length: int, start: int, span: int) -> bytes:
        """``length`` bytes at ``offset``, read as the aligned ``[start, start+span)`` into ``mm``."""
        try:
            got = os.preadv(self.fd, [memoryview(mm)[:span]], start)
        except OSError as exc:
            raise from_oserror(f"pread O_DIRECT({length} bytes at {offset})", self.path, exc) from exc
        skip = offset - start
        return mm[skip:max(skip, min(got, skip + length))]


def _thread_scratch(span: int) -> mmap.mmap:
    """This thread's scratch buffer, of at least ``span`` bytes.  REQUIRES: ``span <= KEPT_SCRATCH``."""
    buf = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = AlignedBuffer(span)
    return buf.ensure(span)


def open_direct(path: str) -> PosixRandomAccessFile:
    """Open ``path`` with O_DIRECT, or buffered where the filesystem refuses it (EINVAL,
    e.g. old tmpfs).  Missing file: plain ``FileNotFoundError``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno != 22:  # EINVAL: no O_DIRECT here
            raise from_oserror("open for reading (O_DIRECT)", path, exc) from exc
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise
        except OSError as exc2:
            raise from_oserror("open for reading", path, exc2) from exc2
        cls: type[PosixRandomAccessFile] = PosixRandomAccessFile
    else:
        cls = DirectRandomAccessFile
    try:
        size = os.fstat(fd).st_size
    except OSError as exc:
        os.close(fd)
        raise from_oserror("fstat", path, exc) from exc
    return cls(path, fd, size)
