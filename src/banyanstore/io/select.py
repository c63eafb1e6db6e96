"""Pick the backend named by ``options.io_mode``.

* ``"sync"`` -> :class:`~banyanstore.io.posix.PosixEnv`
* ``"nonblocking"`` -> :class:`~banyanstore.io.threaded.ThreadedEnv` (``io_threads`` workers)
* ``"io_uring"`` -> :class:`~banyanstore.io.uring.UringEnv`, or
  :class:`~banyanstore.errors.IOModeUnavailableError` with the probe's reason
* ``"auto"`` -> io_uring when the probe succeeds, else sync; the fallback is
  logged once per process (logger ``banyanstore.io``) and reported by
  ``env.describe()`` as ``io_mode_fallback_reason``.

>>> from banyanstore.options import Options
>>> env = make_env(Options(io_mode="sync"))
>>> env.describe()["io_mode"]
'sync'
>>> env.close()
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import IOModeUnavailableError
from .base import Env
from .posix import PosixEnv

__all__ = ["make_env"]

log = logging.getLogger("banyanstore.io")
_logged: set[str] = set()
_logged_mu = threading.Lock()


def make_env(options: Any = None, *, directory: str | None = None) -> Env:
    """The backend for ``options`` (a :class:`~banyanstore.options.Options`, or None for
    the defaults).  ``directory`` (the store's) is where the O_DIRECT probe runs."""
    if options is None:
        from ..options import Options
        options = Options()
    mode = options.io_mode
    direct = bool(options.direct_io)
    if mode == "sync":
        return PosixEnv(direct_io=direct)
    if mode == "nonblocking":
        from .threaded import ThreadedEnv
        return ThreadedEnv(threads=options.io_threads, direct_io=direct)
    if mode not in ("io_uring", "auto"):
        raise ValueError(f"unknown io_mode {mode!r}")
    reason = _try_uring(options, directory)
    if isinstance(reason, Env):
        if mode == "auto":
            _mark(reason, None)
        return reason
    if mode == "io_uring":
        raise IOModeUnavailableError(f"io_mode='io_uring' is unavailable: {reason}; "
                                     "use io_mode='auto' to fall back to 'sync'")
    with _logged_mu:
        first = reason not in _logged
        _logged.add(reason)
    if first:
        log.warning("io_mode='auto': io_uring is unavailable (%s); using 'sync'", reason)
    env = PosixEnv(direct_io=direct)
    _mark(env, reason)
    return env


def _try_uring(options: Any, directory: str | None) -> Env | str:
    """A working UringEnv, or the reason there is none."""
    from .uring_probe import probe_io_uring
    reason = probe_io_uring(options, directory=directory)
    if reason is not None:
        return reason
    from .uring import UringEnv
    try:
        return UringEnv(entries=options.io_uring_entries, direct_io=bool(options.direct_io))
    except IOModeUnavailableError as exc:  # e.g. a larger ring than the probe's hits memlock
        return str(exc)


def _mark(env: Env, reason: str | None) -> None:
    assert isinstance(env, PosixEnv)
    env.io_mode_requested = "auto"
    env.io_mode_fallback_reason = reason
