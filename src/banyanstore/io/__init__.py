"""IO backends.  :func:`make_env` picks one from the ``io_mode`` option."""

from __future__ import annotations

from .base import Env, FileLock, RandomAccessFile, ReadRequest, WritableFile
from .posix import PosixEnv

__all__ = ["Env", "FileLock", "RandomAccessFile", "ReadRequest", "WritableFile", "PosixEnv",
           "make_env", "check_env"]


def make_env(options: object) -> Env:
    """The backend named by ``options.io_mode`` (see ``io/select.py``)."""
    from .select import make_env as _make
    return _make(options)


def check_env(env: object) -> None:
    """An ``env=`` argument: None or an :class:`Env`; anything else is a TypeError naming
    it, raised before any file is touched (not an AttributeError from deep inside)."""
    if env is not None and not isinstance(env, Env):
        raise TypeError(f"env must be a banyanstore.io.Env or None, not {type(env).__name__}")
