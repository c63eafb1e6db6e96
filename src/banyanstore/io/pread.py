"""``PosixRandomAccessFile``: positional reads (``pread``) of one open descriptor.

Its own module because two backends open it -- :mod:`banyanstore.io.posix` (buffered
reads) and :mod:`banyanstore.io.direct` (its O_DIRECT subclass) -- and the posix env
picks between them, so neither of the two imports the other's module back.

Closing a file other threads may be reading (:meth:`PosixRandomAccessFile.retire`)
------------------------------------------------------------------------------------

A read takes the descriptor's number (``self.fd``, here or in the compiled core) and
then calls ``pread(2)`` with it.  Closing the descriptor in between frees the number,
and the next file the process opens -- on any thread -- gets it: the read then reads
*that* file (a false CorruptionError, or for a file laid out alike, a wrong answer that
passes every checksum).  So a file that readers may still hold is *retired*, not closed:
``dup2(2)`` atomically points its number at a descriptor every read fails on (the write
end of a pipe: EBADF), which releases the file itself at once -- reads already inside
the kernel finish on it, every later read fails -- while the number stays taken.  The
number is closed only when the object is freed, and every read holds the object (its
``self``, the compiled core's reference, a ``read_batch`` request) while it may use the
number, so no read can reach another file.  Reads pay nothing for this.
"""

from __future__ import annotations

import os
import threading

from ..errors import from_oserror
from .base import RandomAccessFile

__all__ = ["PosixRandomAccessFile", "dead_descriptor"]

_dead = -1
_dead_lock = threading.Lock()


def dead_descriptor() -> int:
    """A descriptor every read fails on (EBADF), shared by the whole process: the write
    end of a pipe whose read end is closed (no filesystem needed, nothing ever blocks)."""
    global _dead
    if _dead < 0:
        with _dead_lock:
            if _dead < 0:
                r, w = os.pipe()  # (not inheritable: close-on-exec)
                os.close(r)
                _dead = w
    return _dead


class PosixRandomAccessFile(RandomAccessFile):
    direct = False  # True for O_DIRECT files (io/direct.py): reads need aligned spans
    _retired = False

    def __init__(self, path: str, fd: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self._size = size
        self._retired = False

    def read(self, offset: int, length: int) -> bytes:
        try:
            return os.pread(self.fd, length, offset)
        except OSError as exc:
            raise from_oserror(f"pread({length} bytes at {offset})", self.path, exc) from exc

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        """Close the descriptor now (REQUIRES: no other thread reads this file; else
        :meth:`retire`).  After :meth:`retire` it changes nothing: the number is released
        when the object is freed."""
        if self._retired:
            return
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def retire(self) -> None:
        """Close the file while other threads may still be reading it (see the module
        docstring): reads in the kernel finish, later reads raise StorageIOError (EBADF),
        and the descriptor's number is released only when this object is freed.
        Idempotent; never raises (should ``dup2`` fail, the descriptor stays open until
        the object is freed)."""
        if self._retired or self.fd < 0:
            return
        self._retired = True
        try:
            os.dup2(dead_descriptor(), self.fd, inheritable=False)
        except OSError:
            pass

    def __del__(self) -> None:
        # Nothing can read through this object any more: the number may go now -- a
        # retired one, and a table dropped by a merge, which is not closed explicitly
        # (readers holding an older view may still use it).
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
