"""Helpers for tests of every layer: one env per IO mode, and a fresh root for it.

``tests/conftest.py`` builds the ``env_dir`` / ``real_env_dir`` fixtures on these.

>>> env = make_test_env("memory")
>>> root = new_root(env)
>>> env.listdir(root)
[]
>>> env.close()
"""

from __future__ import annotations

import itertools
import os
import tempfile

from .base import Env

__all__ = ["ALL_MODES", "REAL_MODES", "TEST_URING_ENTRIES", "available_real_modes", "make_test_env",
           "new_root", "io_uring_skip_reason"]

REAL_MODES = ("sync", "nonblocking", "io_uring")
ALL_MODES = (*REAL_MODES, "memory")
# A deliberately small ring, so that every test with a batch of more than 32 reads
# exercises chunking and ring wrap-around (production default: 256).
TEST_URING_ENTRIES = 32
_roots = itertools.count(1)


def io_uring_skip_reason() -> str | None:
    """None if the io_uring backend works here, else why not (the probe's reason)."""
    from .uring_probe import probe_io_uring
    return probe_io_uring(None)


def available_real_modes() -> list[str]:
    """The real backends that work here: :data:`REAL_MODES`, without io_uring where its probe fails."""
    return [m for m in REAL_MODES if m != "io_uring" or io_uring_skip_reason() is None]


def make_test_env(mode: str, *, direct_io: bool = False) -> Env:
    """A fresh env of ``mode`` (one of :data:`ALL_MODES`).  The caller closes it.

    ``nonblocking`` uses 4 threads; ``io_uring`` a ring of :data:`TEST_URING_ENTRIES`
    (raises :class:`~banyanstore.errors.IOModeUnavailableError` where it cannot work).
    """
    if mode == "sync":
        from .posix import PosixEnv
        return PosixEnv(direct_io=direct_io)
    if mode == "nonblocking":
        from .threaded import ThreadedEnv
        return ThreadedEnv(threads=4, direct_io=direct_io)
    if mode == "io_uring":
        from .uring import UringEnv
        return UringEnv(entries=TEST_URING_ENTRIES, direct_io=direct_io)
    if mode == "memory":
        from .memory import MemoryEnv
        return MemoryEnv()
    raise ValueError(f"unknown test io mode {mode!r}; expected one of {ALL_MODES}")


def new_root(env: Env, base: str | None = None) -> str:
    """An empty, existing directory for a test: ``/mem/<n>`` in a MemoryEnv, else a new
    directory under ``base`` (default: a fresh temp dir)."""
    if env.mode == "memory":
        root = f"/mem/{next(_roots)}"
        env.mkdir(root)
        return root
    if base is None:
        return tempfile.mkdtemp(prefix="banyanstore-test-")
    os.makedirs(base, exist_ok=True)
    return base
