"""``PosixRandomAccessFile``: positional reads (``pread``) of one open descriptor.

Its own module because two backends open it -- :mod:`banyanstore.io.posix` (buffered
reads) and :mod:`banyanstore.io.direct` (its O_DIRECT subclass) -- and the posix env
picks between them, so neither of the two imports the other's module back.
"""

from __future__ import annotations

import os

from ..errors import from_oserror
from .base import RandomAccessFile

__all__ = ["PosixRandomAccessFile"]


class PosixRandomAccessFile(RandomAccessFile):
    direct = False  # True for O_DIRECT files (io/direct.py): reads need aligned spans

    def __init__(self, path: str, fd: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self._size = size

    def read(self, offset: int, length: int) -> bytes:
        try:
            return os.pread(self.fd, length, offset)
        except OSError as exc:
            raise from_oserror(f"pread({length} bytes at {offset})", self.path, exc) from exc

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        # Tables dropped by a merge are not closed explicitly (readers holding an
        # older view may still use them): the descriptor goes with the last reference.
        try:
            self.close()
        except OSError:
            pass
