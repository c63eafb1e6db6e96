"""IO backends.  :func:`make_env` picks one from the ``io_mode`` option."""

from __future__ import annotations

from .base import Env, FileLock, RandomAccessFile, ReadRequest, WritableFile
from .posix import PosixEnv

__all__ = ["Env", "FileLock", "RandomAccessFile", "ReadRequest", "WritableFile", "PosixEnv",
           "make_env"]


def make_env(options: object) -> Env:
    """The backend named by ``options.io_mode`` (see ``io/select.py``)."""
    from .select import make_env as _make
    return _make(options)
